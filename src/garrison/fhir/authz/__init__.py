"""Authorisation inside the FHIR repository."""
