"""The privacy office's records: break-the-glass grants and the privacy officer's alerts.

The tables live here, below `garrison.fhir`, so that `garrison.db.schema` can load them without
importing the FHIR layer (tests/test_architecture.py); the logic is `garrison.fhir.authz.break_glass`.
"""
