"""Garrison: an open, unified electronic health record on FHIR R4."""

__version__ = "0.1.0"
