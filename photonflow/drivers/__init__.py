"""The vendors' interfaces, as their manuals describe them: protocol clients, wire formats, C
structures and constants, one module per interface. The cameras in photonflow.acquisition drive
the detectors through them, and the simulators in photonflow.simulators speak them, so a simulator
never needs the acquisition logic it is tested against. Nothing here imports Tango, the
acquisition logic or a simulator."""
