"""The DataManager's core: experiment structures with meaning, the data policy and the run catalogue.

Imports no Tango: the ``PhotonflowDataManager`` device turns its properties into these objects'
arguments and their errors into DevFailed.
"""
