"""FHIR operations, one module each, registered by name (`$everything`, `$validate`,
`$break-the-glass`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from garrison.fhir.repository import Repository


@dataclass(frozen=True, slots=True)
class OperationCall:
    resource_type: str | None
    resource_id: str | None
    params: tuple[tuple[str, str], ...]
    body: Any
    method: str
    base_url: str


class Operation(Protocol):
    name: str
    definition: str

    def applies_to(self, resource_type: str | None, resource_id: str | None) -> bool: ...

    def run(self, repo: Repository, call: OperationCall) -> tuple[int, dict[str, Any]]: ...


def _registry() -> dict[str, Operation]:
    from garrison.fhir.operations.break_glass import BreakTheGlass, EndBreakTheGlass
    from garrison.fhir.operations.everything import PatientEverything
    from garrison.fhir.operations.validate import ValidateOperation

    operations: list[Operation] = [
        PatientEverything(),
        ValidateOperation(),
        BreakTheGlass(),
        EndBreakTheGlass(),
    ]
    return {op.name: op for op in operations}


OPERATIONS: dict[str, Operation] = _registry()


def register_operation(operation: Operation) -> None:
    """Add an operation defined by a domain package (e.g. the patient index's `Patient/$match`).

    garrison.fhir never imports domain packages (the layering in docs/ARCHITECTURE.md); each
    registers its operations at start-up instead. Registering the same name again replaces it.
    """
    OPERATIONS[operation.name] = operation
