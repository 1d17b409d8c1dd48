"""When a result reaches the portal: at once, unless a hold rule names it.

Results (Observations and DiagnosticReports) are released to the portal as soon as they are
issued; that is the default, as the 21st Century Cures Act expects of US health systems. A few
kinds of test are different: a positive HIV test, a genetic result or a cancer diagnosis should
come with a conversation, so MHS GENESIS and most MyChart sites hold them for a few days for the
ordering clinician to call first. Garrison keeps that as configuration:

- `RULES` below names the sensitive groups and how a result is recognised (LOINC codes,
  diagnostic-service categories, security labels);
- `Settings.portal_result_holds` says which groups are held and for how long: a number of days
  after the result was issued, or `None` for "until a clinician releases it". An empty mapping
  releases everything at once.

A clinician may release a held result early (`release_result`, a row in `result_release`).
Until then the result is not shown in the portal and not counted; the pages say, without naming
it, that some results are waiting for the care team to review them (an honest "there is more",
never a silent gap). Staff see every result regardless: holds are a portal decision only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from garrison import clock
from garrison.audit.records import AuditRecord
from garrison.db.engine import is_postgres
from garrison.errors import BadRequest, Forbidden
from garrison.fhir.audit_trail import access_records
from garrison.fhir.authz.labels import Label
from garrison.fhir.repository import Repository
from garrison.fhir.resource import format_instant
from garrison.portal.record_text import Json, codings, first_when
from garrison.portal.tables import result_release
from garrison.settings import Settings

V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"  # diagnostic service section
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
RESULT_TYPES = frozenset({"Observation", "DiagnosticReport"})


@dataclass(frozen=True, slots=True)
class HoldRule:
    """A group of sensitive tests, recognised by code, category or security label."""

    name: str
    description: str
    codes: frozenset[str] = frozenset()  # LOINC codes of Observation/DiagnosticReport.code
    categories: frozenset[str] = frozenset()  # codes of .category (v2-0074 sections)
    labels: frozenset[Label] = frozenset()  # meta.security labels

    def matches(self, resource: Json) -> bool:
        codes = {code for _, code in codings(resource.get("code"))}
        if codes & self.codes:
            return True
        categories = resource.get("category")
        if isinstance(categories, dict):  # DiagnosticReport.category is a list; be lenient
            categories = [categories]
        if isinstance(categories, list) and any(
            code in self.categories for c in categories for _, code in codings(c)
        ):
            return True
        security = (resource.get("meta") or {}).get("security") or ()
        found = {(str(c.get("system", "")), str(c.get("code", ""))) for c in security if isinstance(c, dict)}
        return bool(found & self.labels)


RULES: dict[str, HoldRule] = {
    rule.name: rule
    for rule in (
        HoldRule(
            "hiv",
            "HIV tests (antibody, antigen and viral load)",
            codes=frozenset(
                {
                    "7917-8",  # HIV 1 Ab [Presence] in Serum
                    "7918-6",  # HIV 1+2 Ab [Presence] in Serum
                    "5221-7",  # HIV 1 Ab [Presence] in Serum by Immunoblot
                    "31201-7",  # HIV 1+2 Ab [Presence] in Serum or Plasma
                    "56888-1",  # HIV 1+2 Ab + HIV 1 p24 Ag [Presence] by Immunoassay
                    "75622-1",  # HIV 1+2 Ab + HIV 1 p24 Ag, 4th generation
                    "68961-2",  # HIV 1 Ab [Presence] by rapid immunoassay
                    "20447-9",  # HIV 1 RNA [#/volume] (viral load)
                    "25836-8",  # HIV 1 RNA [#/volume] by probe and target amplification
                }
            ),
            labels=frozenset({(V3_ACT_CODE, "HIV")}),
        ),
        HoldRule(
            "genetic",
            "Genetic tests",
            categories=frozenset({"GE"}),
            codes=frozenset({"51969-4", "55232-3", "81247-9"}),  # genetic analysis reports
        ),
        HoldRule(
            "pathology",
            "Pathology and cytology (biopsies, possible cancer)",
            categories=frozenset({"SP", "CP", "PAT"}),
            codes=frozenset(
                {
                    "11526-1",  # Pathology study
                    "60567-5",  # Comprehensive pathology report panel
                    "22637-3",  # Pathology report final diagnosis
                    "33717-0",  # Cytology report
                    "11529-5",  # Surgical pathology study
                }
            ),
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Hold:
    rule: HoldRule
    days: int | None  # None: until a clinician releases it


@dataclass(frozen=True)
class ReleasePolicy:
    holds: tuple[Hold, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> ReleasePolicy:
        return _policy(tuple(sorted(settings.portal_result_holds.items())))

    def hold_for(self, resource: Json) -> Hold | None:
        """The strictest hold that applies to a result (no end beats the longest end), or None."""
        if resource.get("resourceType") not in RESULT_TYPES or not self.holds:
            return None
        found = [h for h in self.holds if h.rule.matches(resource)]
        if not found:
            return None
        return max(found, key=lambda h: float("inf") if h.days is None else h.days)


@cache
def _policy(configured: tuple[tuple[str, int | None], ...]) -> ReleasePolicy:
    holds = []
    for name, days in configured:
        rule = RULES.get(name)
        if rule is None:
            raise ValueError(
                f"portal_result_holds names an unknown rule '{name}'; the rules are {', '.join(RULES)}"
            )
        if days is not None and days < 0:
            raise ValueError(f"portal_result_holds['{name}'] must be a number of days (0 or more) or null")
        holds.append(Hold(rule, days))
    return ReleasePolicy(tuple(holds))


def issued_at(resource: Json) -> datetime | None:
    """When a result became available: `issued`, else its clinically relevant time, else the
    time it was stored."""
    found = first_when(
        resource.get("issued"),
        resource.get("effectiveDateTime"),
        resource.get("effectivePeriod"),
        resource.get("effectiveInstant"),
        (resource.get("meta") or {}).get("lastUpdated"),
    )
    return found.moment if found is not None else None


@dataclass
class ResultGate:
    """Release decisions for the results of one page (one query for the clinicians' releases)."""

    policy: ReleasePolicy
    now: datetime
    released: dict[tuple[str, str], datetime] = field(default_factory=dict)
    held: int = 0  # results this gate kept back

    @classmethod
    def load(cls, repo: Repository, results: Iterable[Json]) -> ResultGate:
        """A gate for `results` (the parsed resources a page is about to show)."""
        policy = ReleasePolicy.from_settings(repo.settings)
        gate = cls(policy, clock.now())
        candidates = [
            (str(r["resourceType"]), str(r["id"])) for r in results if policy.hold_for(r) is not None
        ]
        if candidates:
            gate.released = released_by_clinician(repo.connection, candidates)
        return gate

    def released_at(self, resource: Json) -> datetime | None:
        """When the portal shows this result (possibly in the future), or None while a clinician
        has yet to release it."""
        issued = issued_at(resource) or self.now
        hold = self.policy.hold_for(resource)
        if hold is None:
            return issued
        early = self.released.get((str(resource.get("resourceType")), str(resource.get("id"))))
        if hold.days is None:
            return early
        scheduled = issued + timedelta(days=hold.days)
        return min(scheduled, early) if early is not None else scheduled

    def admits(self, resource: Json) -> bool:
        at = self.released_at(resource)
        return at is not None and at <= self.now

    def filter(self, resources: Iterable[Json]) -> list[Json]:
        """The released ones; counts the rest in `held`."""
        shown = []
        for resource in resources:
            if self.admits(resource):
                shown.append(resource)
            else:
                self.held += 1
        return shown

    @property
    def waiting(self) -> bool:
        return self.held > 0


def released_by_clinician(
    connection: Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], datetime]:
    found: dict[tuple[str, str], datetime] = {}
    by_type: dict[str, list[str]] = {}
    for resource_type, resource_id in keys:
        by_type.setdefault(resource_type, []).append(resource_id)
    t = result_release.c
    for resource_type, ids in by_type.items():
        for start in range(0, len(ids), 500):
            rows = connection.execute(
                select(t.resource_id, t.released_at).where(
                    t.resource_type == resource_type, t.resource_id.in_(ids[start : start + 500])
                )
            )
            for resource_id, released_at in rows:
                found[(resource_type, resource_id)] = datetime.fromisoformat(released_at)
    return found


def released_since(connection: Connection, patient_id: str, since: datetime) -> list[tuple[str, str]]:
    """Results of a patient a clinician released after `since` (their "new" window)."""
    t = result_release.c
    rows = connection.execute(
        select(t.resource_type, t.resource_id).where(
            t.patient_id == patient_id, t.released_at >= format_instant(since)
        )
    )
    return [(row[0], row[1]) for row in rows]


def release_result(repo: Repository, resource_type: str, resource_id: str) -> bool:
    """A clinician releases a held result to the portal now. Returns False if it was released
    already. The caller must be able to read the result and to update results of its type (the
    clinicians who may act on results); others get Forbidden. Audited as `portal:result:update`."""
    if resource_type not in RESULT_TYPES:
        raise BadRequest("Only results (Observation, DiagnosticReport) are released to the portal")
    stored = repo.read(resource_type, resource_id)  # NotFound / withheld like any read
    if (
        repo.guard.role is None
        or repo.guard.role.patients == "own"
        or not repo.guard.allows("update", resource_type)
    ):
        raise Forbidden("Only the care team may release a result to the patient portal")
    body = stored.parsed()
    patient = _subject(body)
    if patient is None:
        raise BadRequest("This result is not in a patient's record")
    values = {
        "resource_type": resource_type,
        "resource_id": resource_id,
        "patient_id": patient,
        "released_at": format_instant(clock.now()),
        "released_by": repo.context.actor,
    }
    dialect_insert = postgresql.insert if is_postgres(repo.connection) else sqlite.insert
    inserted = repo.connection.execute(
        dialect_insert(result_release)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(result_release.c.resource_id)
    ).first()
    if repo.context.audited:
        records: list[AuditRecord] = access_records(
            repo.context,
            "portal:result:update",
            [stored],
            {"change": "released to the patient portal", "released": inserted is not None},
        )
        repo.audit.extend(records)
    return inserted is not None


def held_results(repo: Repository, patient_id: str, results: Iterable[Json]) -> list[Json]:
    """Of `results` (the patient's, as the caller sees them), those the portal still holds back:
    for a clinician's list of results to release."""
    listed = [r for r in results if _subject(r) == patient_id]
    gate = ResultGate.load(repo, listed)
    return [r for r in listed if not gate.admits(r)]


def _subject(resource: Json) -> str | None:
    reference = (resource.get("subject") or {}).get("reference")
    if isinstance(reference, str) and reference.startswith("Patient/"):
        return reference.removeprefix("Patient/")
    return None


def describe_policy(settings: Settings) -> list[str]:
    """The configured holds in plain words (for help pages and the demo's notes)."""
    lines = []
    for hold in ReleasePolicy.from_settings(settings).holds:
        when = "until a clinician releases them" if hold.days is None else f"for {hold.days} days"
        lines.append(f"{hold.rule.description}: held {when}")
    return lines
