"""The Consent decision engine against a separately written oracle, plus worked examples.

checklist P6: random Consent provisions vs a small reference decision function, >= 5,000 cases,
0 mismatches; revocation takes effect on the next decision. checklist P5: ETH (42 CFR Part 2) data
only with a Consent naming the recipient and purpose; the 2.32 notice text.
"""

from __future__ import annotations

import calendar
import json
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from garrison.fhir.authz.consent import (
    PART2_NOTICE,
    PART2_NOTICE_SHORT,
    ConsentPolicy,
    ConsentQuestion,
    blanket_decision,
    decide,
    label_decisions,
    part2_permitted,
)
from garrison.fhir.definitions import Definitions
from garrison.fhir.validation import validator_for

CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
TYPES = "http://hl7.org/fhir/resource-types"
ETH = (ACT, "ETH")
VA = "Organization/va-exchange"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


# -- the oracle ----------------------------------------------------------------------------------
# Written independently of the engine, straight over the JSON: the decision of a Consent comes from
# its "frontier", the applying provisions with a type that have no applying typed provision below
# them (the most specific ones); across all frontiers deny overrides permit.

RANK = {"U": 0, "L": 1, "M": 2, "N": 3, "R": 4, "V": 5}


def o_bounds(text: str) -> tuple[datetime, datetime]:
    """Inclusive [first, last] microsecond a FHIR date/dateTime covers (formats the tests emit)."""
    if len(text) == 7:  # YYYY-MM
        year, month = int(text[:4]), int(text[5:7])
        first = datetime(year, month, 1, tzinfo=UTC)
        days = calendar.monthrange(year, month)[1]
        return first, first + timedelta(days=days) - timedelta(microseconds=1)
    if len(text) == 10:  # YYYY-MM-DD
        first = datetime.fromisoformat(text).replace(tzinfo=UTC)
        return first, first + timedelta(days=1) - timedelta(microseconds=1)
    first = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    return first, first + timedelta(seconds=1) - timedelta(microseconds=1)


def o_in_period(period: Mapping[str, str] | None, moment: datetime | None) -> bool:
    if period is None:
        return True
    if moment is None:
        return False
    if "start" in period and moment < o_bounds(period["start"])[0]:
        return False
    return not ("end" in period and moment > o_bounds(period["end"])[1])


def o_codes(concepts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c.get("system", ""), c["code"]) for concept in concepts for c in concept.get("coding", [])]


def o_applies(p: dict[str, Any], q: ConsentQuestion) -> bool:
    if not o_in_period(p.get("period"), q.instant):
        return False
    actors = p.get("actor", [])
    if actors:
        ok = False
        for actor in actors:
            roles = {code for _, code in o_codes([actor["role"]])}
            if actor["reference"]["reference"] in q.actors and (
                not q.actor_roles or not roles or roles & q.actor_roles
            ):
                ok = True
        if not ok:
            return False
    actions = {code for _, code in o_codes(p.get("action", []))}
    if actions and q.action not in actions:
        return False
    labels = p.get("securityLabel", [])
    if labels:
        ok = False
        for coding in labels:
            if (coding["system"], coding["code"]) in q.security_labels:
                ok = True
            if coding["system"] == CONF:
                for system, code in q.security_labels:
                    if system == CONF and RANK[code] <= RANK[coding["code"]]:
                        ok = True
        if not ok:
            return False
    purposes = [c["code"] for c in p.get("purpose", [])]
    if purposes and q.purpose_of_use not in purposes:
        return False
    classes = [(c["system"], c["code"]) for c in p.get("class", [])]
    if classes and not any(
        (s == TYPES and code == q.resource_type) or (s, code) in q.classes for s, code in classes
    ):
        return False
    codes = o_codes(p.get("code", []))
    if codes and not any(pair in q.codes for pair in codes):
        return False
    if "dataPeriod" in p and not o_in_period(p["dataPeriod"], q.data_time):
        return False
    data = p.get("data", [])
    if data:
        ok = False
        for item in data:
            ref, meaning = item["reference"]["reference"], item["meaning"]
            if meaning in ("instance", "related", "dependents") and ref == q.resource:
                ok = True
            if meaning in ("dependents", "authoredby") and ref in q.references:
                ok = True
        if not ok:
            return False
    return True


def oracle(consents: list[dict[str, Any]], q: ConsentQuestion) -> tuple[str, bool]:
    """(decision, whether some permitting frontier provision's chain names actor, purpose and ETH)."""
    frontier: list[tuple[str, list[dict[str, Any]]]] = []

    def walk(p: dict[str, Any], chain: list[dict[str, Any]]) -> bool:
        if not o_applies(p, q):
            return False
        chain = [*chain, p]
        below = [walk(child, chain) for child in p.get("provision", [])]
        if any(below):
            return True
        if "type" in p:
            frontier.append((p["type"], chain))
            return True
        return False

    for consent in consents:
        if consent["status"] != "active":
            continue
        if not any(c["code"] == "patient-privacy" for c in consent["scope"]["coding"]):
            continue
        if "dateTime" in consent and o_bounds(consent["dateTime"])[0] > q.instant:
            continue
        if "provision" in consent:
            walk(consent["provision"], [])
    kinds = [kind for kind, _ in frontier]
    if "deny" in kinds:
        return "deny", False
    if not kinds:
        return "none", False

    def explicit(chain: list[dict[str, Any]]) -> bool:
        return (
            any(p.get("actor") for p in chain)
            and any(p.get("purpose") for p in chain)
            and any(
                c["system"] == ACT and c["code"] == "ETH" for p in chain for c in p.get("securityLabel", [])
            )
        )

    return "permit", any(explicit(chain) for _, chain in frontier)


# -- generators ----------------------------------------------------------------------------------
# Hypothesis draws one byte string per case and a small decoder turns it into Consents and a
# question. One draw per case keeps 5,000 cases fast (a draw per choice costs ~30 us), and shrinking
# still works: bytes shrink towards 0, which the decoder reads as the simplest choice (no condition,
# first value of a pool, no nesting).

ACTORS = ["Practitioner/1", VA, "Organization/dha", "Practitioner/2"]
ROLES = ["PRCP", "IRCP", "AUT"]
PURPOSES = ["TREAT", "ETREAT", "HPAYMT"]
LABELS = [(CONF, c) for c in RANK] + [(ACT, c) for c in ("ETH", "PSY", "HIV", "SDV")]
RESOURCE_TYPES = ["Observation", "Condition", "MedicationRequest"]
PROFILE = ("urn:ietf:rfc:3986", "http://hl7.org/fhir/StructureDefinition/lipidprofile")
CLASSES = [(TYPES, t) for t in RESOURCE_TYPES] + [PROFILE]
CODES = [
    ("http://loinc.org", "2093-3"),
    ("http://loinc.org", "4548-4"),
    ("http://snomed.info/sct", "66071002"),
]
ACTIONS = ["access", "use", "disclose", "correct", "collect"]
REFERENCES = ["Observation/1", "Observation/2", "Encounter/9", "Practitioner/1"]
MEANINGS = ["instance", "related", "dependents", "authoredby"]
STATUSES = [
    "active",
    "inactive",
    "active",
    "draft",
    "active",
    "active",
    "active",
    "entered-in-error",
    "active",
]
ZONES = [UTC, timezone(timedelta(hours=5)), timezone(timedelta(hours=-7, minutes=-30))]
WINDOW_START = datetime(2025, 1, 1, tzinfo=UTC)
WINDOW_SECONDS = 90 * 24 * 3600


class Choices:
    """Reads choices from hypothesis-drawn bytes; past the end every choice is 0 (the simplest)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def below(self, n: int) -> int:
        value = 0
        for _ in range(1 if n <= 256 else 3):
            byte = self.data[self.at] if self.at < len(self.data) else 0
            self.at += 1
            value = value * 256 + byte
        return value % n

    def one_in(self, n: int) -> bool:
        """True with probability 1/n (False when the bytes are exhausted)."""
        return self.below(n) == n - 1

    def pick(self, items: list[Any]) -> Any:
        return items[self.below(len(items))]

    def some(self, items: list[Any], most: int = 2, least: int = 0) -> list[Any]:
        count = least + self.below(most - least + 1)
        return list(dict.fromkeys(self.pick(items) for _ in range(count)))

    def moment(self) -> datetime:
        return WINDOW_START + timedelta(seconds=self.below(WINDOW_SECONDS))


def coding(pair: tuple[str, str]) -> dict[str, str]:
    return {"system": pair[0], "code": pair[1]}


def fhir_time(c: Choices) -> str:
    moment = c.moment()
    form = c.below(4)
    if form == 0:
        return moment.date().isoformat()
    if form == 1:
        return moment.strftime("%Y-%m")
    if form == 2:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.astimezone(c.pick(ZONES)).isoformat(timespec="seconds")


def period(c: Choices) -> dict[str, str]:
    shape = c.below(3)  # 0: start only, 1: end only, 2: both
    out = {}
    if shape != 1:
        out["start"] = fhir_time(c)
    if shape != 0:
        out["end"] = fhir_time(c)
    return out


def provision(c: Choices, depth: int) -> dict[str, Any]:
    p: dict[str, Any] = {}
    kind = c.pick(["permit", "deny", "permit", "deny", None])
    if kind is not None:
        p["type"] = kind
    # Now and then a Part 2 style provision: permit, naming recipient, purpose and ETH.
    part2 = c.one_in(8)
    if part2:
        p["type"] = "permit"
    # Each condition appears with a modest probability so that provisions still match often.
    if c.one_in(8):
        p["period"] = period(c)
    if part2 or c.one_in(4):
        p["actor"] = [
            {"role": {"coding": [coding((PARTICIPATION, c.pick(ROLES)))]}, "reference": {"reference": ref}}
            for ref in c.some(ACTORS, 2, 1)
        ]
    if part2 or c.one_in(4):
        labels = c.some(LABELS, 2, 1)
        p["securityLabel"] = [
            coding(label) for label in dict.fromkeys([ETH, *labels] if part2 or c.below(2) else labels)
        ]
    if part2 or c.one_in(5):
        p["purpose"] = [coding((REASON, code)) for code in c.some(PURPOSES, 2, 1)]
    if c.one_in(8):
        p["action"] = [{"coding": [coding((ACTION, a))]} for a in c.some(ACTIONS, 2, 1)]
    if c.one_in(8):
        p["class"] = [coding(pair) for pair in c.some(CLASSES, 2, 1)]
    if c.one_in(8):
        p["code"] = [{"coding": [coding(pair)]} for pair in c.some(CODES, 2, 1)]
    if c.one_in(10):
        p["dataPeriod"] = period(c)
    if c.one_in(10):
        p["data"] = [
            {"meaning": c.pick(MEANINGS), "reference": {"reference": ref}} for ref in c.some(REFERENCES, 2, 1)
        ]
    if depth > 1:
        children = [provision(c, depth - 1) for _ in range(c.below(3))]
        if children:
            p["provision"] = children
    if not p:
        p["type"] = "deny"  # FHIR JSON has no empty objects
    return p


def consent_from(c: Choices) -> dict[str, Any]:
    scope = "research" if c.one_in(12) else "patient-privacy"
    consent: dict[str, Any] = {
        "resourceType": "Consent",
        "id": f"c{c.below(1000)}",
        "status": c.pick(STATUSES),
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": scope}]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p1"},
        "policyRule": {"coding": [coding((ACT, c.pick(["OPTIN", "OPTOUT"])))]},
    }
    if c.one_in(6):
        consent["dateTime"] = fhir_time(c)
    if not c.one_in(15):
        consent["provision"] = provision(c, 1 + c.below(3))
    return consent


def _boundaries(value: Any) -> list[datetime]:
    """Instants at and around every period bound in the generated Consents (edge cases)."""
    out: list[datetime] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("start", "end", "dateTime") and isinstance(item, str):
                low, high = o_bounds(item)
                out += [low, low - timedelta(microseconds=1), high, high + timedelta(microseconds=1)]
            else:
                out += _boundaries(item)
    elif isinstance(value, list):
        for item in value:
            out += _boundaries(item)
    return out


def case_from(data: bytes) -> tuple[list[dict[str, Any]], ConsentQuestion]:
    c = Choices(data)
    generated = [consent_from(c) for _ in range(1 + c.below(3))]
    edges = _boundaries(generated)

    def moment() -> datetime:
        if edges and c.below(2):
            return edges[c.below(len(edges))]
        return c.moment() + timedelta(microseconds=c.below(1_000_000))

    question = ConsentQuestion(
        actors=frozenset(c.some(ACTORS, 4, 1)),
        instant=moment(),
        actor_roles=frozenset(c.some(ROLES)),
        purpose_of_use=None if c.one_in(8) else c.pick(PURPOSES),
        security_labels=frozenset(c.some(LABELS, 4) + ([ETH] if c.one_in(2) else [])),
        resource_type=c.pick([*RESOURCE_TYPES, None]),
        classes=frozenset(c.some([PROFILE], 1)),
        codes=frozenset(c.some(CODES)),
        action=c.pick(ACTIONS) if c.one_in(3) else "access",
        data_time=None if c.one_in(5) else moment(),
        resource=c.pick([*REFERENCES, None]),
        references=frozenset(c.some(REFERENCES)),
    )
    return generated, question


cases = st.binary(min_size=400, max_size=800).map(case_from)
consents = st.binary(min_size=200, max_size=400).map(lambda data: consent_from(Choices(data)))


# -- property tests --------------------------------------------------------------------------------


def test_engine_agrees_with_oracle() -> None:
    """checklist P6: >= 5,000 generated Consent/question pairs, 0 mismatches (decide, Part 2,
    per-label and blanket decisions)."""
    checked: list[str] = []

    @settings(max_examples=5000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(cases)
    def check(case: tuple[list[dict[str, Any]], ConsentQuestion]) -> None:
        generated, question = case
        expected, _ = oracle(generated, question)
        assert decide(generated, question) == expected
        with_eth = question.with_labels(question.security_labels | {ETH})
        eth_decision, eth_explicit = oracle(generated, with_eth)
        assert part2_permitted(generated, question) == (eth_decision == "permit" and eth_explicit)
        policy = ConsentPolicy(generated)
        per_label = policy.label_decisions(question, LABELS)
        assert per_label == {label: oracle(generated, question.with_labels({label}))[0] for label in LABELS}
        assert policy.blanket_decision(question) == oracle(generated, question.with_labels(()))[0]
        sets = policy.label_set_decisions(question, [question.security_labels])
        assert sets == {question.security_labels: expected}
        checked.append(expected + ("+part2" if eth_decision == "permit" and eth_explicit else ""))

    check()
    assert len(checked) >= 5000
    # The generator must exercise every outcome, or agreement would prove little.
    decisions = [d.split("+")[0] for d in checked]
    assert min(decisions.count(d) for d in ("permit", "deny", "none")) >= 500, Counter(decisions)
    assert checked.count("permit+part2") >= 20, Counter(checked)


def test_generated_consents_are_valid_fhir(definitions: Definitions) -> None:
    """The generated Consents are valid R4 resources (a sample, checked with the project validator)."""
    validator = validator_for(definitions)
    validated: list[int] = []

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(consents)
    def check(consent: dict[str, Any]) -> None:
        assert validator.validate(consent) == []
        validated.append(1)

    check()
    assert len(validated) >= 300


# -- worked examples -------------------------------------------------------------------------------


def consent(provision: dict[str, Any] | None, *, status: str = "active", **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Consent",
        "status": status,
        "scope": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p1"},
        "policyRule": {"coding": [coding((ACT, "OPTIN"))]},
        **extra,
    }
    if provision is not None:
        resource["provision"] = provision
    return resource


def actor(reference: str, role: str = "PRCP") -> dict[str, Any]:
    return {"role": {"coding": [coding((PARTICIPATION, role))]}, "reference": {"reference": reference}}


def ask(
    *actors: str, purpose: str = "TREAT", labels: tuple[tuple[str, str], ...] = (), **more: Any
) -> ConsentQuestion:
    return ConsentQuestion(
        actors=frozenset(actors),
        instant=more.pop("instant", NOW),
        purpose_of_use=purpose,
        security_labels=frozenset(labels),
        resource_type=more.pop("resource_type", "Observation"),
        **more,
    )


def test_opt_out_of_sharing_with_the_va_exchange() -> None:
    """A patient opts out of sharing with the VA exchange; other recipients are unaffected."""
    opt_out = consent(
        {"type": "deny", "actor": [actor(VA)], "action": [{"coding": [coding((ACTION, "access"))]}]}
    )
    assert decide([opt_out], ask(VA)) == "deny"
    assert decide([opt_out], ask("Practitioner/1", "Organization/dha")) == "none"
    assert decide([opt_out], ask(VA, action="correct")) == "none"
    # The same wish written as "share with everyone, except the VA exchange".
    share_but_va = consent({"type": "permit", "provision": [{"type": "deny", "actor": [actor(VA)]}]})
    assert decide([share_but_va], ask(VA)) == "deny"
    assert decide([share_but_va], ask("Practitioner/1")) == "permit"
    # Another Consent permitting everything does not undo the opt-out: deny overrides.
    assert decide([consent({"type": "permit"}), opt_out], ask(VA)) == "deny"


def test_part2_consent_permitting_one_recipient_only() -> None:
    """checklist P5: ETH data goes only to the recipient and purpose the Consent names."""
    part2 = consent(
        {
            "type": "permit",
            "actor": [actor("Organization/clinic-a")],
            "purpose": [coding((REASON, "TREAT"))],
            "securityLabel": [coding(ETH)],
        }
    )
    assert part2_permitted([part2], ask("Practitioner/1", "Organization/clinic-a"))
    assert not part2_permitted([part2], ask(VA))
    assert not part2_permitted([part2], ask("Organization/clinic-a", purpose="HPAYMT"))
    assert not part2_permitted([], ask("Organization/clinic-a"))
    # A general permit is not a Part 2 consent (42 CFR 2.31: recipient and purpose are named).
    general = consent({"type": "permit"})
    assert decide([general], ask(VA, labels=(ETH,))) == "permit"
    assert not part2_permitted([general], ask(VA))
    # A later restriction still wins over the Part 2 consent.
    restriction = consent({"type": "deny", "securityLabel": [coding(ETH)]})
    assert not part2_permitted([part2, restriction], ask("Organization/clinic-a"))


def test_revocation_takes_effect_on_the_next_decision() -> None:
    """checklist P6: a revoked (inactive) Consent no longer counts, immediately."""
    restriction = consent({"type": "deny", "actor": [actor(VA)]})
    assert decide([restriction], ask(VA)) == "deny"
    assert decide([{**restriction, "status": "inactive"}], ask(VA)) == "none"
    part2 = consent(
        {
            "type": "permit",
            "actor": [actor(VA)],
            "purpose": [coding((REASON, "TREAT"))],
            "securityLabel": [coding(ETH)],
        }
    )
    assert part2_permitted([part2], ask(VA))
    assert not part2_permitted([{**part2, "status": "inactive"}], ask(VA))
    for status in ("draft", "proposed", "rejected", "entered-in-error"):
        assert decide([{**restriction, "status": status}], ask(VA)) == "none"


def test_periods_are_inclusive_at_their_precision() -> None:
    timed = consent({"type": "deny", "period": {"start": "2025-01-01", "end": "2025-02-01"}})
    assert decide([timed], ask(VA, instant=datetime(2025, 2, 1, 23, 59, 59, 999999, tzinfo=UTC))) == "deny"
    assert decide([timed], ask(VA, instant=datetime(2025, 2, 2, tzinfo=UTC))) == "none"
    assert decide([timed], ask(VA, instant=datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC))) == "none"
    future = consent({"type": "deny"}, dateTime="2025-06-02")
    assert decide([future], ask(VA)) == "none"
    assert decide([future], ask(VA, instant=datetime(2025, 6, 2, tzinfo=UTC))) == "deny"


def test_confidentiality_label_is_a_high_water_mark() -> None:
    """Consent.provision.securityLabel: a label R applies to resources labelled R or lower."""
    deny_r = consent({"type": "deny", "securityLabel": [coding((CONF, "R"))]})
    assert decide([deny_r], ask(VA, labels=((CONF, "N"),))) == "deny"
    assert decide([deny_r], ask(VA, labels=((CONF, "R"),))) == "deny"
    assert decide([deny_r], ask(VA, labels=((CONF, "V"),))) == "none"
    assert decide([deny_r], ask(VA, labels=((ACT, "PSY"),))) == "none"
    assert blanket_decision([deny_r], ask(VA)) == "none"


def test_nested_exceptions_and_label_sets() -> None:
    """Per-label decisions are exact for one label; several labels need the full set."""
    psy = (ACT, "PSY")
    policy = consent(
        {
            "type": "permit",
            "securityLabel": [coding(psy)],
            "provision": [{"type": "deny", "securityLabel": [coding(ETH)]}],
        }
    )
    assert label_decisions([policy], ask(VA), [psy, ETH]) == {psy: "permit", ETH: "none"}
    assert decide([policy], ask(VA, labels=(psy, ETH))) == "deny"
    sets = ConsentPolicy([policy]).label_set_decisions(ask(VA), [{psy}, {psy, ETH}, set()])
    assert sets == {frozenset({psy}): "permit", frozenset({psy, ETH}): "deny", frozenset(): "none"}


def test_unintelligible_consents_fail_closed() -> None:
    modified = consent(
        {"type": "permit"}, modifierExtension=[{"url": "http://example.org/x", "valueBoolean": True}]
    )
    assert decide([modified], ask("Practitioner/1")) == "deny"
    bad_date = consent({"type": "permit", "period": {"start": "last tuesday"}})
    assert decide([bad_date], ask("Practitioner/1")) == "deny"
    assert decide([{**bad_date, "status": "inactive"}], ask("Practitioner/1")) == "none"
    faceless = consent(
        {"type": "permit", "actor": [{"role": {"text": "someone"}, "reference": {"display": "Dr X"}}]}
    )
    assert decide([faceless], ask("Practitioner/1")) == "deny"
    research = consent({"type": "deny"})
    research["scope"] = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]
    }
    assert decide([research], ask("Practitioner/1")) == "none"


def test_official_examples(shared_testdata: Path) -> None:
    """HL7's R4 examples: 'not Organization f001' and the 'not in 2015' time-limited Consent."""
    examples = shared_testdata / "fhir-r4" / "examples"
    not_org = json.loads((examples / "Consent-consent-example-notOrg.json").read_text())
    assert decide([not_org], ask("Organization/f001")) == "deny"
    assert decide([not_org], ask("Organization/f001", action="disclose")) == "none"
    assert decide([not_org], ask("Organization/other")) == "none"
    not_time = json.loads((examples / "Consent-consent-example-notTime.json").read_text())
    in_window = datetime(2015, 1, 15, tzinfo=UTC)
    # The root has no type: it scopes in time but decides nothing by itself.
    assert decide([not_time], ask("Organization/f001", instant=in_window)) == "none"


def test_question_requires_aware_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ConsentQuestion(actors=frozenset({VA}), instant=datetime(2025, 1, 1))
    with pytest.raises(TypeError):
        ConsentQuestion(actors=VA, instant=NOW)  # type: ignore[arg-type]


def test_part2_notice_text() -> None:
    """checklist P5: the 42 CFR 2.32 statements that accompany a consented disclosure."""
    assert PART2_NOTICE.startswith("This record which has been disclosed to you is protected by Federal")
    assert "42 CFR part 2" in PART2_NOTICE and "(see 42 CFR 2.31)" in PART2_NOTICE
    assert PART2_NOTICE_SHORT == "42 CFR part 2 prohibits unauthorized use or disclosure of these records."
