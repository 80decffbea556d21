"""Device states shared by the pipeline stages, named as Tango names them.

The core speaks these strings; the Tango layer maps them onto ``tango.DevState`` one to one.
"""

ON = "ON"  # idle and ready to be configured
STANDBY = "STANDBY"  # prepared (armed) and waiting for Start
RUNNING = "RUNNING"  # acquiring, or recording a series
ALARM = "ALARM"  # idle, but the last series did not account for every frame
FAULT = "FAULT"  # needs the operator: read Status, fix, then Init or retry
UNKNOWN = "UNKNOWN"
INIT = "INIT"  # starting: waiting for what it needs (a peer still starting)
