"""The web layer (ASGI): adapts HTTP to the FHIR router and domain services. Thin by design."""
