"""Who is calling: every repository is bound to an AccessContext.

The context says who the caller is (actor, role, facility), whose record is in view for
patient-facing sessions and tokens, which SMART scopes narrow a third-party app, and which
patients are open under break-the-glass. The repository's guard (`garrison.fhir.authz.guard`)
turns it, with the access policy, into decisions and SQL conditions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from garrison.fhir.authz.scopes import ScopeSet


@dataclass(frozen=True, slots=True)
class AccessContext:
    actor: str  # "system/<job>", "Practitioner/123", "Patient/456", "RelatedPerson/7", "client/<id>"
    role: str  # a role of the access policy: "physician", "patient", "system", ...
    purpose_of_use: str = "TREAT"  # http://terminology.hl7.org/CodeSystem/v3-ActReason
    facility: str | None = None  # the Organization id a staff member works at
    patient: str | None = None  # patient-facing contexts: the one patient whose record is in view
    scopes: ScopeSet | None = None  # a token's SMART scopes; None for first-party sessions and jobs
    break_glass: frozenset[str] = frozenset()  # patients opened by an active break-the-glass grant
    account: str | None = None
    session: str | None = None  # a session id or token id (jti): never the secret itself
    source: str | None = None  # the caller's network address
    client: str | None = None  # the OAuth client, for apps and backend systems
    audited: bool = True  # False only for internal jobs, which audit themselves once per job

    @classmethod
    def system(cls, job: str, *, audited: bool = False) -> AccessContext:
        """An explicit, named context for internal jobs (import, reindex, tests); never implicit."""
        return cls(actor=f"system/{job}", role="system", purpose_of_use="HOPERAT", audited=audited)

    def with_break_glass(self, patients: frozenset[str]) -> AccessContext:
        return replace(self, break_glass=patients)
