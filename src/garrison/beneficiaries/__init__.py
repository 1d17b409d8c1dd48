"""Sponsors, families and beneficiaries: how military identity is written into FHIR resources."""
