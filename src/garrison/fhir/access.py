"""Who is calling: every repository is bound to an AccessContext.

This issue's platform runs every call under an explicit context; the security work builds role-,
compartment- and label-based decisions on this same object, in the repository.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AccessContext:
    actor: str  # "system/<job>", "Practitioner/123", "Patient/456", "client/<id>"
    role: str  # "system", "physician", "patient", ...
    purpose_of_use: str = "TREAT"  # http://terminology.hl7.org/CodeSystem/v3-ActReason
    facility: str | None = None

    @classmethod
    def system(cls, job: str) -> AccessContext:
        """An explicit, named context for internal jobs (import, reindex, tests); never implicit."""
        return cls(actor=f"system/{job}", role="system", purpose_of_use="HOPERAT")
