"""The enterprise patient index: matching registrations, the duplicate work queue, merge and unmerge.

This package's `__init__` imports nothing at module level: `garrison.db.schema` imports
`garrison.empi.tables`, which must not pull the FHIR layer in. `register()` adds the index's FHIR
operations (`Patient/$match`, `Patient/$merge`, `Patient/$unmerge`); the web application and the
command line call it at start-up.
"""

from __future__ import annotations


def register() -> None:
    """Make the patient index's FHIR operations available to the router (idempotent)."""
    from garrison.empi.operations import MatchOperation, MergeOperation, UnmergeOperation
    from garrison.fhir.operations import register_operation

    for operation in (MatchOperation(), MergeOperation(), UnmergeOperation()):
        register_operation(operation)
