"""The synthetic military beneficiary population (`garrison generate`).

Sponsors and families with PCS moves, deployments and status changes over a life, clinical
histories at the facilities where they lived, and deliberate duplicate registrations whose ground
truth is kept in `population_pair` for the patient index. Everything is synthetic and derived
from a seed: the same seed, size and as-of date give byte-identical resources.

This package's `__init__` stays empty of imports: `garrison.db.schema` imports
`garrison.population.tables`, which must not pull the FHIR layer in.
"""
