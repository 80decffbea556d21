"""Thin Tango device classes over the photonflow core; installed as ``photonflow.devices``."""
