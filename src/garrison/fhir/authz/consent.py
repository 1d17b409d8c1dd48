"""FHIR R4 Consent decisions (patient-privacy scope): pure functions, no database (checklist P5, P6).

A Consent is a tree of provisions (https://hl7.org/fhir/R4/consent.html). A provision *matches* a
question when every condition it states matches; within one condition the listed values are
alternatives (R4: "Multiple types are or'ed together"), and a condition with no values matches
everything. Evaluation is depth-first: a matching provision's nested provisions are exceptions to
it ("Rules which provide exceptions to the base rule or subrules", Consent.provision.provision), so
a matching child's decision overrides its parent's and the most specific matching provision wins.
A provision with no `type` decides nothing itself; it only scopes its children.

Several decisions (sibling provisions, or several Consents of one patient) are combined with
*deny overrides*: "a deny decision should have priority over a permit decision" (FHIR's rule
combining code `deny-overrides`, http://hl7.org/fhir/permission-rule-combining, which R5's
Permission resource uses for the same problem). For a patient's privacy directives a restriction
must never be silently undone by another directive, so deny wins.

Which Consents count: only `status = active`, scope `patient-privacy`, issued (`dateTime`) at or
before the instant, with the root provision's `period` covering the instant. A Consent the engine
cannot fully understand (a modifierExtension, an unparseable date, an unknown provision type)
denies everything while it is active: failing closed is the only safe reading of a restriction we
cannot parse.

Condition semantics, from the R4 element definitions:
- actor: an entry matches when its reference is one of the requester's references (the user, their
  PractitionerRole, their organisation, the client); its role (security-role-type) is checked only
  when the question states the roles the requester acts in.
- action: consentaction codes; the question's action defaults to `access`.
- securityLabel: (system, code) pairs. For confidentiality codes the label is a high-water mark:
  "If the consent specifies a security label of 'R' then it applies to all resources that are
  labeled 'R' or lower" (Consent.provision.securityLabel). Other labels match exactly (the v3
  sensitivity codes used here are not nested).
- purpose: v3-ActReason codes, matched exactly (the code system's hierarchy is not part of the R4
  definitions, so TREAT does not subsume ETREAT here).
- class: the resource type (system http://hl7.org/fhir/resource-types) or a profile/format code
  the question lists; code: (system, code) pairs of the resource's codes.
- period / dataPeriod: inclusive FHIR Periods at their stated precision; `period` is checked
  against the question's instant, `dataPeriod` against the data's clinical time (unknown time:
  no match).
- data: `instance` names the resource itself; `dependents` also the resources it refers to;
  `authoredby` a reference among the resource's references; `related` (what the named instance
  refers to) needs the database, so only the instance itself matches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from garrison.fhir.search.values import date_range

Decision = Literal["permit", "deny", "none"]
Label = tuple[str, str]  # (system, code) of a Coding in meta.security

V3_ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V3_CONFIDENTIALITY: Final = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
RESOURCE_TYPES: Final = "http://hl7.org/fhir/resource-types"
CONSENT_SCOPE: Final = "http://terminology.hl7.org/CodeSystem/consentscope"
PATIENT_PRIVACY: Final = "patient-privacy"

# 42 CFR Part 2 substance-use-disorder data carries the v3 sensitivity code ETH.
ETH: Final[Label] = (V3_ACT_CODE, "ETH")

# Confidentiality codes from lowest to highest (v3-Confidentiality: U, L, M, N, R, V).
_CONFIDENTIALITY_RANK: Final = {"U": 0, "L": 1, "M": 2, "N": 3, "R": 4, "V": 5}

# 42 CFR 2.32(a)(1), "Statement 1", as amended by the 2024 final rule (89 FR 12472, compliance by
# 16 February 2026). Every disclosure made with the patient's written consent carries it.
PART2_NOTICE: Final = (
    "This record which has been disclosed to you is protected by Federal confidentiality rules "
    "(42 CFR part 2). These rules prohibit you from using or disclosing this record, or testimony "
    "that describes the information contained in this record, in any civil, criminal, "
    "administrative, or legislative proceedings by any Federal, State, or local authority, against "
    "the patient, unless authorized by the consent of the patient, except as provided at 42 CFR "
    "2.12(c)(5) or as authorized by a court in accordance with 42 CFR 2.64 or 2.65. In addition, "
    "the Federal rules prohibit you from making any other use or disclosure of this record unless "
    "at least one of the following applies: (i) Further use or disclosure is expressly permitted by "
    "the written consent of the individual whose information is being disclosed in this record or "
    "as otherwise permitted by 42 CFR part 2. (ii) You are a covered entity or business associate "
    "and have received the record for treatment, payment, or health care operations, or (iii) You "
    "have received the record from a covered entity or business associate as permitted by 45 CFR "
    "part 164, subparts A and E. A general authorization for the release of medical or other "
    "information is NOT sufficient to meet the required elements of written consent to further "
    "use or redisclose the record (see 42 CFR 2.31)."
)
# 42 CFR 2.32(a)(2), "Statement 2": the abbreviated notice, for fields too small for Statement 1.
PART2_NOTICE_SHORT: Final = "42 CFR part 2 prohibits unauthorized use or disclosure of these records."


@dataclass(frozen=True, slots=True)
class ConsentQuestion:
    """Who asks for what, why and when. Collections are frozensets (tuples/sets are converted).

    `actors`: every reference the requester acts as, e.g. {"Practitioner/1", "Organization/va"}.
    `actor_roles`: security-role-type / ParticipationType codes the requester acts in (e.g.
    "PRCP"); empty means unknown, and provision actor roles are then not checked.
    `security_labels`: the resource's meta.security (system, code) pairs.
    `classes`/`codes`: extra (system, code) the resource is an instance of / carries.
    `data_time`: the clinically relevant time of the data (for dataPeriod), if known.
    `resource`/`references`: the resource's own reference and the references it makes.
    """

    actors: frozenset[str]
    instant: datetime
    actor_roles: frozenset[str] = frozenset()
    purpose_of_use: str | None = None
    security_labels: frozenset[Label] = frozenset()
    resource_type: str | None = None
    classes: frozenset[Label] = frozenset()
    codes: frozenset[Label] = frozenset()
    action: str = "access"
    data_time: datetime | None = None
    resource: str | None = None
    references: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.instant.tzinfo is None or (self.data_time is not None and self.data_time.tzinfo is None):
            raise ValueError("ConsentQuestion times must be timezone-aware")
        for name in ("actors", "actor_roles", "security_labels", "classes", "codes", "references"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(f"ConsentQuestion.{name} is a collection, not a string")
            if not isinstance(value, frozenset):
                object.__setattr__(self, name, frozenset(value))

    def with_labels(self, labels: Iterable[Label]) -> ConsentQuestion:
        """The same question about a resource carrying exactly `labels`."""
        return dataclasses.replace(self, security_labels=frozenset(labels))


class _Unintelligible(Exception):
    """The Consent uses something the engine cannot interpret (it then fails closed)."""


@dataclass(frozen=True, slots=True)
class _Span:
    """An inclusive interval of aware datetimes; None bounds are open."""

    low: datetime | None
    high: datetime | None

    def covers(self, moment: datetime) -> bool:
        return (self.low is None or self.low <= moment) and (self.high is None or moment <= self.high)


@dataclass(frozen=True, slots=True)
class _Actor:
    reference: str
    roles: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Provision:
    type: Literal["permit", "deny"] | None
    period: _Span | None
    actors: tuple[_Actor, ...]
    actions: frozenset[str]
    labels: frozenset[Label]
    purposes: frozenset[str]
    classes: frozenset[Label]
    codes: frozenset[Label]
    data_period: _Span | None
    data: tuple[tuple[str, str], ...]  # (meaning, reference)
    children: tuple[_Provision, ...]


@dataclass(frozen=True, slots=True)
class _Consent:
    issued: datetime | None  # Consent.dateTime (start of its precision)
    root: _Provision | None
    unintelligible: bool


# -- parsing -------------------------------------------------------------------------------------


def _instant(value: Any, *, high: bool) -> datetime:
    bounds = date_range(value) if isinstance(value, str) else None
    if bounds is None:
        raise _Unintelligible(f"not a FHIR date/dateTime: {value!r}")
    return datetime.fromisoformat(bounds[1] if high else bounds[0]).replace(tzinfo=UTC)


def _span(period: Any) -> _Span | None:
    if period is None:
        return None
    if not isinstance(period, Mapping):
        raise _Unintelligible("Period is not an object")
    start, end = period.get("start"), period.get("end")
    return _Span(
        None if start is None else _instant(start, high=False),
        None if end is None else _instant(end, high=True),
    )


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Unintelligible("expected a list")
    return value


def _coding_pairs(codings: Iterable[Any]) -> set[Label]:
    pairs: set[Label] = set()
    for coding in codings:
        if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
            pairs.add((str(coding.get("system") or ""), coding["code"]))
    return pairs


def _concept_pairs(concepts: Iterable[Any]) -> set[Label]:
    pairs: set[Label] = set()
    for concept in concepts:
        if isinstance(concept, Mapping):
            pairs |= _coding_pairs(_list(concept.get("coding")))
    return pairs


def _literal_reference(element: Any) -> str | None:
    """`element.reference.reference` (actor and data entries hold a Reference)."""
    reference = element.get("reference") if isinstance(element, Mapping) else None
    literal = reference.get("reference") if isinstance(reference, Mapping) else None
    return literal if isinstance(literal, str) else None


# https://hl7.org/fhir/R4/valueset-consent-data-meaning.html
_DATA_MEANINGS: Final = ("instance", "related", "dependents", "authoredby")


def _provision(raw: Any) -> _Provision:
    if not isinstance(raw, Mapping):
        raise _Unintelligible("provision is not an object")
    if raw.get("modifierExtension"):
        raise _Unintelligible("provision has a modifierExtension")
    kind = raw.get("type")
    if kind not in (None, "permit", "deny"):
        raise _Unintelligible(f"unknown provision type {kind!r}")
    actors = []
    for actor in _list(raw.get("actor")):
        reference = _literal_reference(actor)
        if reference is None:
            # An actor we cannot identify would widen the rule to nobody in particular.
            raise _Unintelligible("provision actor without a literal reference")
        roles = {code for _, code in _concept_pairs([actor.get("role")])}
        actors.append(_Actor(reference, frozenset(roles)))
    data = []
    for item in _list(raw.get("data")):
        reference = _literal_reference(item)
        meaning = item.get("meaning") if isinstance(item, Mapping) else None
        if reference is None or meaning not in _DATA_MEANINGS:
            raise _Unintelligible("provision data without a literal reference and known meaning")
        data.append((meaning, reference))
    return _Provision(
        type=kind,
        period=_span(raw.get("period")),
        actors=tuple(actors),
        actions=frozenset(code for _, code in _concept_pairs(_list(raw.get("action")))),
        labels=frozenset(_coding_pairs(_list(raw.get("securityLabel")))),
        purposes=frozenset(code for _, code in _coding_pairs(_list(raw.get("purpose")))),
        classes=frozenset(_coding_pairs(_list(raw.get("class")))),
        codes=frozenset(_concept_pairs(_list(raw.get("code")))),
        data_period=_span(raw.get("dataPeriod")),
        data=tuple(data),
        children=tuple(_provision(child) for child in _list(raw.get("provision"))),
    )


def _is_privacy_directive(consent: Mapping[str, Any]) -> bool:
    scope = consent.get("scope")
    codings = scope.get("coding") if isinstance(scope, Mapping) else None
    return isinstance(codings, list) and any(
        isinstance(c, Mapping)
        and c.get("code") == PATIENT_PRIVACY
        and c.get("system") in (None, CONSENT_SCOPE)
        for c in codings
    )


def _compile(consent: Mapping[str, Any]) -> _Consent | None:
    """The active privacy directive in `consent`, or None when it does not count at all."""
    if consent.get("resourceType", "Consent") != "Consent" or consent.get("status") != "active":
        return None
    if not _is_privacy_directive(consent):
        return None
    try:
        if consent.get("modifierExtension"):
            raise _Unintelligible("Consent has a modifierExtension")
        issued = consent.get("dateTime")
        raw = consent.get("provision")
        return _Consent(
            issued=None if issued is None else _instant(issued, high=False),
            root=None if raw is None else _provision(raw),
            unintelligible=False,
        )
    except _Unintelligible:
        return _Consent(issued=None, root=None, unintelligible=True)


# -- matching ------------------------------------------------------------------------------------


def _label_matches(wanted: Label, labels: frozenset[Label]) -> bool:
    if wanted in labels:
        return True
    system, code = wanted
    ceiling = _CONFIDENTIALITY_RANK.get(code) if system == V3_CONFIDENTIALITY else None
    if ceiling is None:
        return False
    return any(
        s == V3_CONFIDENTIALITY and _CONFIDENTIALITY_RANK.get(c, ceiling + 1) <= ceiling for s, c in labels
    )


def _data_matches(meaning: str, reference: str, q: ConsentQuestion) -> bool:
    if meaning != "authoredby" and reference == q.resource:
        return True
    return meaning in ("dependents", "authoredby") and reference in q.references


def _matches(p: _Provision, q: ConsentQuestion) -> bool:
    if p.period is not None and not p.period.covers(q.instant):
        return False
    if p.actors and not any(
        a.reference in q.actors and (not q.actor_roles or not a.roles or a.roles & q.actor_roles)
        for a in p.actors
    ):
        return False
    if p.actions and q.action not in p.actions:
        return False
    if p.labels and not any(_label_matches(label, q.security_labels) for label in p.labels):
        return False
    if p.purposes and q.purpose_of_use not in p.purposes:
        return False
    if p.classes and not (
        (q.resource_type is not None and (RESOURCE_TYPES, q.resource_type) in p.classes)
        or not p.classes.isdisjoint(q.classes)
    ):
        return False
    if p.codes and p.codes.isdisjoint(q.codes):
        return False
    if p.data_period is not None and (q.data_time is None or not p.data_period.covers(q.data_time)):
        return False
    return not p.data or any(_data_matches(meaning, ref, q) for meaning, ref in p.data)


# A decision with whether a permit is *explicit* for Part 2: the chain of provisions leading to it
# names the recipient (actor), the purpose and the ETH label (42 CFR 2.31(a): a consent names the
# recipient and the purpose of the disclosure).
_Result = tuple[Literal["permit", "deny"], bool]
_ACTOR, _PURPOSE, _ETH = 1, 2, 4
_EXPLICIT = _ACTOR | _PURPOSE | _ETH


def _evaluate(p: _Provision, q: ConsentQuestion, named: int) -> _Result | None:
    if not _matches(p, q):
        return None
    named |= (_ACTOR if p.actors else 0) | (_PURPOSE if p.purposes else 0) | (_ETH if ETH in p.labels else 0)
    results = [r for r in (_evaluate(child, q, named) for child in p.children) if r is not None]
    if results:
        # Matching exceptions override this provision; among siblings, deny overrides.
        if any(decision == "deny" for decision, _ in results):
            return ("deny", False)
        return ("permit", any(explicit for _, explicit in results))
    if p.type is None:
        return None
    return (p.type, p.type == "permit" and named == _EXPLICIT)


def _consent_result(c: _Consent, q: ConsentQuestion) -> _Result | None:
    if c.unintelligible:
        return ("deny", False)
    if c.issued is not None and c.issued > q.instant:
        return None  # not yet in force
    return None if c.root is None else _evaluate(c.root, q, 0)


_TICK: Final = timedelta(microseconds=1)  # datetime's resolution, and so the question's instant's
_LAST_INSTANT: Final = datetime.max.replace(tzinfo=UTC)


def _period_changes(p: _Provision, found: set[datetime]) -> None:
    if p.period is not None:
        if p.period.low is not None:
            found.add(p.period.low)  # covered from `low` on
        high = p.period.high
        if high is not None and high < _LAST_INSTANT:
            found.add(high + _TICK)  # `high` is inclusive: no longer covered one microsecond later
    for child in p.children:
        _period_changes(child, found)


# -- public API ----------------------------------------------------------------------------------


class ConsentPolicy:
    """A patient's Consents compiled once, to answer many questions cheaply.

    Precondition: `consents` are the Consent resources of the patient whose data is asked about.
    """

    __slots__ = ("_consents",)

    def __init__(self, consents: Iterable[Mapping[str, Any]]) -> None:
        compiled = (_compile(c) for c in consents)
        self._consents = tuple(c for c in compiled if c is not None)

    def _combined(self, q: ConsentQuestion) -> tuple[Decision, bool]:
        permit = explicit = False
        for consent in self._consents:
            result = _consent_result(consent, q)
            if result is None:
                continue
            if result[0] == "deny":
                return ("deny", False)  # deny overrides (see module docstring)
            permit = True
            explicit = explicit or result[1]
        return ("permit", explicit) if permit else ("none", False)

    def change_instants(self) -> frozenset[datetime]:
        """The instants at which a decision may change only because time passes.

        The question's instant is compared with Consent.dateTime (in force from then on) and with
        the `period` of each provision, nothing else: so between two consecutive instants of this
        set (each interval including its start) every question differing only in `instant` gets
        the same decision. `dataPeriod` is compared with the data's time, not the instant.
        """
        found: set[datetime] = set()
        for consent in self._consents:
            if consent.issued is not None:
                found.add(consent.issued)
            if consent.root is not None:
                _period_changes(consent.root, found)
        return frozenset(found)

    def decide(self, question: ConsentQuestion) -> Decision:
        """permit, deny, or none when no Consent speaks to the question."""
        return self._combined(question)[0]

    def part2_permitted(self, question: ConsentQuestion) -> bool:
        """May ETH (42 CFR Part 2) data go to this requester for this purpose?

        Only when the combined decision for the data (its labels plus ETH) is permit and at least
        one permitting provision chain explicitly names the requester (actor), the purpose and the
        ETH label. Anything less, including no Consent at all, withholds the data.
        """
        decision, explicit = self._combined(question.with_labels(question.security_labels | {ETH}))
        return decision == "permit" and explicit

    def label_set_decisions(
        self, question: ConsentQuestion, label_sets: Iterable[Collection[Label]]
    ) -> dict[frozenset[Label], Decision]:
        """The exact decision for resources carrying each set of labels (e.g. the distinct
        meta.security sets found among a patient's resources)."""
        out: dict[frozenset[Label], Decision] = {}
        for labels in label_sets:
            key = frozenset(labels)
            if key not in out:
                out[key] = self.decide(question.with_labels(key))
        return out

    def label_decisions(self, question: ConsentQuestion, labels: Iterable[Label]) -> dict[Label, Decision]:
        """The decision for a resource carrying exactly one label, per label.

        Exact for single-labelled resources. For a resource with several labels the exact answer
        is `decide` on its full set (or `label_set_decisions`): a nested exception keyed on one
        label can turn the decision another label gets on its own.
        """
        return {label: self.decide(question.with_labels((label,))) for label in set(labels)}

    def blanket_decision(self, question: ConsentQuestion) -> Decision:
        """The decision for a resource with no security labels."""
        return self.decide(question.with_labels(()))


def decide(consents: Sequence[Mapping[str, Any]], question: ConsentQuestion) -> Decision:
    """Combine the patient's Consents into one decision for `question` (see module docstring)."""
    return ConsentPolicy(consents).decide(question)


def part2_permitted(consents: Sequence[Mapping[str, Any]], question: ConsentQuestion) -> bool:
    """Whether a Consent explicitly permits ETH data for this actor and purpose (42 CFR 2.31)."""
    return ConsentPolicy(consents).part2_permitted(question)


def label_decisions(
    consents: Sequence[Mapping[str, Any]], question_without_labels: ConsentQuestion, labels: Iterable[Label]
) -> dict[Label, Decision]:
    """Per label, the decision for a resource carrying that one label (Consents compiled once)."""
    return ConsentPolicy(consents).label_decisions(question_without_labels, labels)


def blanket_decision(
    consents: Sequence[Mapping[str, Any]], question_without_labels: ConsentQuestion
) -> Decision:
    """The decision for a resource without security labels."""
    return ConsentPolicy(consents).blanket_decision(question_without_labels)
