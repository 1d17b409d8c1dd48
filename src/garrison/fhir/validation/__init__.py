"""Validation of FHIR R4 resources against the official StructureDefinitions."""

from garrison.fhir.validation.validator import Validator, validator_for

__all__ = ["Validator", "validator_for"]
