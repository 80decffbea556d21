"""The web page of the run table and the series under way: its plain logic (``run_table``,
``live``, ``access``); the server is ``photonflow.clients.web``."""
