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
from garrison.fhir.authz.policy import RolePolicy
from garrison.fhir.names import short_name
from garrison.fhir.repository import Repository
from garrison.fhir.resource import StoredResource, format_instant
from garrison.fhir.search.query import SearchRequest
from garrison.portal.record_text import Json, codings, concept_text, first_when, read_many
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


# -- the staff list of held results ----------------------------------------------------------------

HELD_LIST_LIMIT = 200
# Results held "until a clinician releases them" have no end, so their search needs a bound: the
# list looks this far back (the page says so). Older unreleased results are still held, and can be
# released from the patient's record by id.
UNRELEASED_LOOKBACK = timedelta(days=365)
# How long after the sample a result may be issued (pathology and genetic tests take weeks): a
# result issued inside a hold's window has a clinical date no earlier than the window plus this.
ISSUE_DELAY = timedelta(days=90)


@dataclass(frozen=True, slots=True)
class HeldResult:
    """A result the portal does not show yet, as the staff list shows it."""

    resource_type: str
    id: str
    patient_id: str
    patient_name: str
    test: str
    issued: datetime | None
    why: str  # the hold rule's description
    releases_at: datetime | None  # None: only when a clinician releases it


@dataclass(frozen=True, slots=True)
class HeldList:
    results: list[HeldResult]
    complete: bool  # False when the bounded search may have left some out
    lookback_days: int | None  # how far back "until released" results are looked for (None: no such hold)
    holds: list[str]  # the configured holds in plain words


def may_release(role: RolePolicy | None) -> bool:
    """Roles that read results and may act on them (the policy lets them update Observations and
    DiagnosticReports): who `release_result` accepts. Patients and proxies never."""
    return (
        role is not None
        and role.patients != "own"
        and all(
            role.allows(interaction, resource_type)
            for resource_type in RESULT_TYPES
            for interaction in ("read", "search", "update")
        )
    )


def held_at_reach(repo: Repository, *, limit: int = HELD_LIST_LIMIT) -> HeldList:
    """Results the caller may read (the access policy's reach: for facility staff, the patients in
    their facility's care) that the portal still holds back, newest first, at most `limit`.

    Bounded searches, one per hold rule, result type and the way the rule recognises a result
    (codes, categories, labels), issued within the hold's window (`_since`), newest first, at
    most `limit` each. Then the exact decision of `ResultGate` for each; the page audits what it
    lists."""
    policy = ReleasePolicy.from_settings(repo.settings)
    now = clock.now()
    found: dict[tuple[str, str], StoredResource] = {}
    complete = True
    lookback: int | None = None
    for hold in policy.holds:
        if hold.days == 0:
            continue  # released at once
        window = timedelta(days=hold.days) if hold.days is not None else UNRELEASED_LOOKBACK
        if hold.days is None:
            lookback = UNRELEASED_LOOKBACK.days
        for resource_type in sorted(RESULT_TYPES):
            if not repo.guard.allows("search", resource_type):
                continue
            for facet in _facets(hold.rule):
                page = repo.search(
                    SearchRequest(
                        resource_type,
                        [
                            facet,
                            *_since(resource_type, now - window),
                            ("_count", str(limit)),
                        ],
                    )
                )
                complete = complete and page.next_cursor is None
                for stored in page.matches:
                    found.setdefault((stored.resource_type, stored.id), stored)
    candidates = [(stored, stored.parsed()) for stored in found.values()]
    gate = ResultGate.load(repo, [body for _, body in candidates])
    held = [(stored, body) for stored, body in candidates if _subject(body) and not gate.admits(body)]
    held.sort(key=lambda pair: issued_at(pair[1]) or now, reverse=True)
    if len(held) > limit:
        held, complete = held[:limit], False
    patients = read_many(repo, [("Patient", str(_subject(body))) for _, body in held])
    results = []
    for stored, body in held:
        patient = str(_subject(body))
        applied = policy.hold_for(body)
        assert applied is not None  # only held results are left
        results.append(
            HeldResult(
                resource_type=stored.resource_type,
                id=stored.id,
                patient_id=patient,
                patient_name=short_name(patients.get(("Patient", patient), {}), "Patient"),
                test=concept_text(body.get("code")) or "A test result",
                issued=issued_at(body),
                why=applied.rule.description,
                releases_at=gate.released_at(body),
            )
        )
    if repo.context.audited:
        repo.audit.extend(
            access_records(repo.context, "workspace:results:search", [s for s, _ in held], {"held": True})
        )
    return HeldList(results, complete, lookback, describe_policy(repo.settings))


def _since(resource_type: str, start: datetime) -> list[tuple[str, str]]:
    """Search parameters for "issued since `start`", newest first. DiagnosticReport has an
    `issued` search parameter; Observation has only its clinical date (`date`, effective[x]), so
    the window is widened by `ISSUE_DELAY`. (Not `_lastUpdated`: after a bulk load every result
    looks recent, and the clinical date keeps the search on its index.)"""
    if resource_type == "DiagnosticReport":
        return [("issued", f"ge{format_instant(start)}"), ("_sort", "-issued")]
    return [("date", f"ge{format_instant(start - ISSUE_DELAY)}"), ("_sort", "-date")]


def _facets(rule: HoldRule) -> list[tuple[str, str]]:
    """The search parameters that find a rule's results (each is one search: FHIR search has no
    OR across parameters). Bare codes, as `HoldRule.matches` compares them."""
    facets = []
    if rule.codes:
        facets.append(("code", ",".join(sorted(rule.codes))))
    if rule.categories:
        facets.append(("category", ",".join(sorted(rule.categories))))
    if rule.labels:
        facets.append(("_security", ",".join(f"{system}|{code}" for system, code in sorted(rule.labels))))
    return facets


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
