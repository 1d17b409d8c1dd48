"""FHIR search: index extraction (writes) and query execution (reads)."""
