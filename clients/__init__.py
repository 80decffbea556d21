"""Clients of the Tango devices (CLI, Taurus panel); installed as ``photonflow.clients``.
They talk to devices through Tango only."""
