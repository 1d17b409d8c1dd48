"""The FHIR layer: definitions, validation, search, the repository, bundles and the router.

Nothing here imports from `garrison.web`.
"""
