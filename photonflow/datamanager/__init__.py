"""The DataManager's core (no Tango): experiment structure, run catalogue, run tables of computed
variables (DAMNIT's model) and processing jobs."""
