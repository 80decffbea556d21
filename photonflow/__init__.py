"""photonflow: detector to standardized, catalogued data.

The core package (everything under ``photonflow`` except the folders mapped in from
``devices/``, ``simulators/`` and ``clients/``) imports no Tango, so every decision it
makes is unit-tested without a server.
"""

__version__ = "0.1.0"
