"""The DataManager core: experiment structure, catalogue, run variables and processing jobs (no Tango)."""
