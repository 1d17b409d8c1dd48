"""The portal's health record at the service level, on both databases, over the synthetic
population plus a few resources the generator does not make (documents, care plans, sensitive
results, adolescent-confidential items).

`RecordWorld` is shared with the page tests (tests/test_portal_record_pages.py).
"""

from __future__ import annotations

import base64
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from garrison import clock
from garrison.db.engine import read_transaction, write_transaction
from garrison.errors import Forbidden, NotFound
from garrison.fhir.access import AccessContext
from garrison.fhir.authz.scopes import ScopeSet
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.identity import accounts
from garrison.portal import (
    care_plans,
    documents,
    immunizations,
    labs,
    record,
    record_demo,
    record_lists,
    visits,
    vitals,
)
from garrison.portal.charts import Band, Point, Series, line_chart
from garrison.portal.record_seen import mark_seen
from garrison.portal.release import RULES, ReleasePolicy, release_result
from garrison.settings import Settings
from tests.conftest import clear_tables
from tests.portal_fixtures import populate, system_repo

Json = dict[str, Any]
LOINC = "http://loinc.org"
ADOL = {"system": "http://garrison.health/fhir/CodeSystem/security-label", "code": "ADOL"}
LAB = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory",
        }
    ]
}
HIV_CODE = "75622-1"
XHTML = "http://www.w3.org/1999/xhtml"
CHLAMYDIA_CODE = "21613-5"


@dataclass(frozen=True)
class RecordWorld:
    engine: Engine
    settings: Settings
    adult: str  # a generated patient with many lab results
    teen: str  # a 15-year-old added for the proxy rules
    other: str  # another generated patient
    hiv: str  # the adult's HIV test, issued now: held 3 days by default
    genetic: str  # the adult's genetic report: held until a clinician releases it
    fresh_a1c: str  # the adult's HbA1c of today (new for everyone)
    note: str  # a DocumentReference of the adult
    summary: str  # a Composition of the adult
    teen_secret_lab: str  # ADOL-labelled
    teen_secret_condition: str  # ADOL-labelled
    teen_plain_lab: str


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _lab(patient: str, code: str, display: str, value: float, unit: str, when: Any, **extra: Any) -> Json:
    body: Json = {
        "resourceType": "Observation",
        "status": "final",
        "category": [LAB],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": _stamp(when),
        "issued": _stamp(when),
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }
    body.update(extra)
    return body


def _text_attachment(text: str, content_type: str, title: str) -> Json:
    return {"contentType": content_type, "data": base64.b64encode(text.encode()).decode(), "title": title}


def build_world(engine: Engine, definitions: Definitions) -> RecordWorld:
    settings = Settings(database_url=engine.url.render_as_string(hide_password=False))
    populate(engine, definitions, settings)
    now = clock.now()
    with write_transaction(engine) as connection:
        repo = system_repo(connection, definitions, settings)
        # The adult: the patient with the longest HbA1c history (a diabetic, with a trend to show).
        a1c = repo.search(SearchRequest("Observation", [("code", f"{LOINC}|4548-4"), ("_count", "1000")]))
        by_patient = Counter(m.parsed()["subject"]["reference"].split("/")[1] for m in a1c.matches)
        (adult, _), (other, _) = by_patient.most_common(2)
        teen = repo.create(
            {
                "resourceType": "Patient",
                "name": [{"family": "Record", "given": ["Teen"]}],
                "birthDate": (now.date() - timedelta(days=15 * 365 + 30)).isoformat(),
            }
        ).stored.id

        def create(body: Json) -> str:
            return repo.create(body).stored.id

        hiv = create(
            _lab(
                adult,
                HIV_CODE,
                "HIV 1+2 Ab+HIV1 p24 Ag [Presence] in Serum or Plasma by Immunoassay",
                0,
                "{index}",
                now - timedelta(hours=2),
                interpretation=[{"coding": [{"code": "N"}]}],
            )
        )
        genetic = create(
            {
                "resourceType": "DiagnosticReport",
                "status": "final",
                "category": [
                    {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "GE"}]}
                ],
                "code": {
                    "coding": [{"system": LOINC, "code": "51969-4", "display": "Genetic analysis report"}]
                },
                "subject": {"reference": f"Patient/{adult}"},
                "effectiveDateTime": _stamp(now - timedelta(days=1)),
                "issued": _stamp(now - timedelta(days=1)),
                "presentedForm": [
                    _text_attachment("BRCA1: no variant found.", "text/plain", "Genetic report")
                ],
            }
        )
        fresh_a1c = create(
            _lab(
                adult,
                "4548-4",
                "Hemoglobin A1c/Hemoglobin.total in Blood",
                8.4,
                "%",
                now - timedelta(hours=5),
                referenceRange=[{"low": {"value": 4.0, "unit": "%"}, "high": {"value": 5.6, "unit": "%"}}],
            )
        )
        note = create(
            {
                "resourceType": "DocumentReference",
                "status": "current",
                "type": {"coding": [{"system": LOINC, "code": "11506-3", "display": "Progress note"}]},
                "category": [{"text": "Visit note"}],
                "subject": {"reference": f"Patient/{adult}"},
                "date": _stamp(now - timedelta(days=3)),
                "description": "Follow-up visit note",
                "author": [{"display": "Dr. Demo"}],
                "content": [
                    {
                        "attachment": _text_attachment(
                            "Blood pressure is better.\nKeep walking daily.", "text/plain", "Visit note"
                        )
                    },
                    {
                        "attachment": _text_attachment(
                            "<p>Plan: <b>recheck</b> in 3 months</p><script>alert('x')</script>",
                            "text/html",
                            "Plan <details>/../evil",
                        )
                    },
                ],
            }
        )
        summary = create(
            {
                "resourceType": "Composition",
                "status": "final",
                "type": {
                    "coding": [{"system": LOINC, "code": "34133-9", "display": "Summary of episode note"}]
                },
                "subject": {"reference": f"Patient/{adult}"},
                "date": _stamp(now - timedelta(days=10)),
                "author": [{"display": "Dr. Demo"}],
                "title": "Discharge summary",
                "section": [
                    {
                        "title": "Instructions",
                        "text": {
                            "status": "generated",
                            "div": f'<div xmlns="{XHTML}"><p>Rest for two days.</p></div>',
                        },
                    }
                ],
            }
        )
        goal_a1c = create(
            {
                "resourceType": "Goal",
                "lifecycleStatus": "active",
                "achievementStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/goal-achievement",
                            "code": "in-progress",
                        }
                    ]
                },
                "description": {"text": "Bring my HbA1c below 7%"},
                "subject": {"reference": f"Patient/{adult}"},
                "startDate": (now.date() - timedelta(days=200)).isoformat(),
                "target": [
                    {
                        "measure": {
                            "coding": [{"system": LOINC, "code": "4548-4"}],
                            "text": "Hemoglobin A1c",
                        },
                        "detailRange": {"high": {"value": 7.0, "unit": "%"}},
                    }
                ],
            }
        )
        create(
            {
                "resourceType": "Goal",
                "lifecycleStatus": "active",
                "description": {"text": "Keep my blood pressure under 130"},
                "subject": {"reference": f"Patient/{adult}"},
                "startDate": (now.date() - timedelta(days=700)).isoformat(),
                "target": [
                    {
                        "measure": {
                            "coding": [{"system": LOINC, "code": "8480-6"}],
                            "text": "Systolic blood pressure",
                        },
                        "detailQuantity": {"value": 130, "comparator": "<", "unit": "mmHg"},
                    }
                ],
            }
        )
        create(
            {
                "resourceType": "CarePlan",
                "status": "active",
                "intent": "plan",
                "title": "Diabetes care plan",
                "subject": {"reference": f"Patient/{adult}"},
                "period": {"start": (now.date() - timedelta(days=200)).isoformat()},
                "goal": [{"reference": f"Goal/{goal_a1c}"}],
                "activity": [
                    {
                        "detail": {
                            "status": "in-progress",
                            "code": {"text": "Walk 30 minutes"},
                            "description": "five days a week",
                        }
                    }
                ],
            }
        )
        create(
            {
                "resourceType": "AllergyIntolerance",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                            "code": "active",
                        }
                    ]
                },
                "criticality": "high",
                "category": ["medication"],
                "code": {"text": "Penicillin"},
                "patient": {"reference": f"Patient/{adult}"},
                "reaction": [
                    {"manifestation": [{"text": "Hives"}, {"text": "Swelling"}], "severity": "severe"}
                ],
            }
        )
        create(
            {
                "resourceType": "Immunization",
                "status": "completed",
                "vaccineCode": {
                    "coding": [
                        {"system": "http://hl7.org/fhir/sid/cvx", "code": "24", "display": "anthrax vaccine"}
                    ]
                },
                "patient": {"reference": f"Patient/{adult}"},
                "occurrenceDateTime": _stamp(now - timedelta(days=400)),
                "lotNumber": "AV1234",
            }
        )
        teen_plain_lab = create(_lab(teen, "2339-0", "Glucose", 88, "mg/dL", now - timedelta(days=2)))
        teen_secret_lab = create(
            _lab(
                teen,
                CHLAMYDIA_CODE,
                "Chlamydia trachomatis DNA [Presence]",
                0,
                "{index}",
                now - timedelta(days=1),
                meta={"security": [ADOL]},
            )
        )
        teen_secret_condition = create(
            {
                "resourceType": "Condition",
                "meta": {"security": [ADOL]},
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {"text": "Confidential problem"},
                "subject": {"reference": f"Patient/{teen}"},
                "onsetDateTime": (now.date() - timedelta(days=20)).isoformat(),
            }
        )
        create(
            {
                "resourceType": "Condition",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {"text": "Asthma"},
                "subject": {"reference": f"Patient/{teen}"},
                "onsetDateTime": "2020-01-01",
            }
        )
    return RecordWorld(
        engine,
        settings,
        adult,
        teen,
        other,
        hiv,
        genetic,
        fresh_a1c,
        note,
        summary,
        teen_secret_lab,
        teen_secret_condition,
        teen_plain_lab,
    )


@pytest.fixture(scope="module")
def world(backend_engine: Engine, definitions: Definitions) -> Iterator[RecordWorld]:
    clear_tables(backend_engine)
    yield build_world(backend_engine, definitions)


def patient(patient_id: str, account: str | None = None) -> AccessContext:
    return AccessContext(
        actor=f"Patient/{patient_id}",
        role="patient",
        patient=patient_id,
        account=account or f"acct-{patient_id}",
    )


def proxy(patient_id: str, account: str) -> AccessContext:
    return AccessContext(actor="RelatedPerson/guardian", role="proxy", patient=patient_id, account=account)


def read(world: RecordWorld, definitions: Definitions, context: AccessContext, work: Any) -> Any:
    with read_transaction(world.engine) as connection:
        return work(Repository(connection, definitions, world.settings, context))


def write(world: RecordWorld, definitions: Definitions, context: AccessContext, work: Any) -> Any:
    with write_transaction(world.engine) as connection:
        return work(Repository(connection, definitions, world.settings, context))


def _generated(
    world: RecordWorld, definitions: Definitions, kind: str, patient_id: str, **params: str
) -> list[Json]:
    def search(repo: Repository) -> list[Json]:
        query = [("patient", patient_id), *params.items(), ("_count", "1000")]
        return [m.parsed() for m in repo.search(SearchRequest(kind, query)).matches]

    return list(read(world, definitions, AccessContext.system("tests"), search))


# -- results ---------------------------------------------------------------------------------------


def test_lab_results_are_grouped_per_test_with_values_ranges_and_flags(
    world: RecordWorld, definitions: Definitions
) -> None:
    results = read(world, definitions, patient(world.adult), labs.lab_results)
    stored = _generated(world, definitions, "Observation", world.adult, category="laboratory")
    expected_codes = {o["code"]["coding"][0]["code"] for o in stored} - {HIV_CODE}
    assert {t.code for t in results.tests} == expected_codes  # the held HIV test is not listed
    counts = Counter(o["code"]["coding"][0]["code"] for o in stored)
    a1c = next(t for t in results.tests if t.code == "4548-4")
    assert a1c.count == counts["4548-4"]
    assert a1c.name == "Hemoglobin A1c (average blood sugar)"
    assert a1c.latest.id == world.fresh_a1c and a1c.latest.text == "8.4 %"
    assert a1c.latest.range is not None and (a1c.latest.range.low, a1c.latest.range.high) == (4.0, 5.6)
    assert a1c.latest.range.text == "4.0 to 5.6 %"
    assert a1c.latest.flag is not None and a1c.latest.flag.text == "High"  # worked out from the range
    # Every generated value is shown with its own interpretation, in words.
    for test in results.tests:
        source = next(o for o in stored if o["id"] == test.latest.id)
        flag = source.get("interpretation", [{}])[0].get("coding", [{}])[0].get("code")
        if flag == "H":
            assert (
                test.latest.flag is not None and test.latest.flag.text == "High" and test.latest.flag.symbol
            )
        elif flag == "L":
            assert test.latest.flag is not None and test.latest.flag.text == "Low"
        elif flag == "N":
            assert test.latest.flag is None
    dates = [t.latest.moment for t in results.tests]
    assert dates == sorted(dates, reverse=True)  # the most recent test first


def test_a_trend_is_sorted_by_date_with_a_chart_of_every_point_and_the_range_band(
    world: RecordWorld, definitions: Definitions
) -> None:
    trend = read(world, definitions, patient(world.adult), lambda repo: labs.lab_trend(repo, "4548-4"))
    stored = _generated(world, definitions, "Observation", world.adult, code="4548-4")
    assert len(trend.readings) == len(stored) > 2
    moments = [r.moment for r in trend.readings]
    assert moments == sorted(moments)
    assert trend.readings[-1].id == world.fresh_a1c
    svg = str(trend.chart)
    assert svg.count('class="chart-point') == len(stored)
    assert len(re.findall(r'class="chart-point chart-point-flagged', svg)) == sum(
        1 for r in trend.readings if r.flag is not None
    )
    assert 'class="chart-band"' in svg and 'data-low="4.0"' in svg and 'data-high="5.6"' in svg
    assert "Normal range: 4.0 to 5.6 %" in svg
    assert 'role="img"' in svg and "<title" in svg and "<desc" in svg
    with pytest.raises(NotFound):
        read(world, definitions, patient(world.adult), lambda repo: labs.lab_trend(repo, "0000-0"))
    with pytest.raises(NotFound):
        read(world, definitions, patient(world.adult), lambda repo: labs.lab_trend(repo, "../x"))


def test_the_chart_maps_values_onto_the_band_and_escapes_its_words() -> None:
    start = clock.now()
    points = tuple(
        Point(start + timedelta(days=30 * i), value, f"{value} on day {i}", flagged=value > 100)
        for i, value in enumerate([80.0, 95.0, 120.0])
    )
    svg = str(
        line_chart(
            chart_id="t<1>",
            title="Glucose <script>",
            unit="mg/dL",
            series=[Series("Glucose", points)],
            band=Band(70, 100, "Normal range: 70 to 100"),
            description="d",
        )
    )
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    circles = [float(y) for y in re.findall(r'<circle[^>]* cy="([\d.]+)"', svg)]
    diamonds = re.findall(r'<path class="chart-point chart-point-flagged[^"]*" d="M([\d.]+) ([\d.]+)', svg)
    assert len(circles) == 2 and len(diamonds) == 1
    band = re.search(r'<rect class="chart-band" x="\d+" y="([\d.]+)" width="\d+" height="([\d.]+)"', svg)
    assert band is not None
    top, bottom = float(band.group(1)), float(band.group(1)) + float(band.group(2))
    assert all(top <= y <= bottom for y in circles)  # 80 and 95 lie in the 70-100 band
    assert float(diamonds[0][1]) + 7 < top  # 120 (the diamond's tip is 7 above its centre) is above it
    assert line_chart(chart_id="x", title="t", unit="", series=[Series("s", ())]) is None


def test_vital_signs_show_blood_pressure_as_a_pair_with_two_lines(
    world: RecordWorld, definitions: Definitions
) -> None:
    found = read(world, definitions, patient(world.adult), vitals.vital_signs)
    panels = _generated(world, definitions, "Observation", world.adult, code="85354-9")
    bp = next(s for s in found.signs if s.key == "blood-pressure")
    assert found.signs[0] is bp and len(bp.rows) == len(panels)
    assert re.fullmatch(r"\d+/\d+ mmHg", bp.latest.text)
    assert str(bp.chart).count("<polyline") == 2 and "Bottom number (diastolic)" in str(bp.chart)
    weights = _generated(world, definitions, "Observation", world.adult, code="29463-7")
    if weights:
        weight = next(s for s in found.signs if s.key == "29463-7")
        assert weight.name == "Weight" and len(weight.rows) == len(weights)


# -- release policy --------------------------------------------------------------------------------------


def test_held_results_are_hidden_and_not_counted_until_released(
    world: RecordWorld, definitions: Definitions
) -> None:
    viewer = patient(world.adult, "acct-holds")
    before = read(world, definitions, viewer, labs.lab_results)
    assert before.waiting and HIV_CODE not in {t.code for t in before.tests}
    with pytest.raises(NotFound, match="waiting for your care team"):
        read(world, definitions, viewer, lambda repo: labs.lab_trend(repo, HIV_CODE))
    highlights = read(world, definitions, viewer, record.record_highlights)
    assert highlights.waiting and "waiting for your care team" in highlights.text
    items, waiting = read(world, definitions, viewer, documents.documents)
    assert waiting and world.genetic not in {i.id for i in items}
    with clock.travel(timedelta(days=3, hours=1)):  # the HIV hold is 3 days by default
        after = read(world, definitions, viewer, labs.lab_results)
        hiv = next(t for t in after.tests if t.code == HIV_CODE)
        assert hiv.new == 1 and after.new == before.new + 1
        items, waiting = read(world, definitions, viewer, documents.documents)
        assert world.genetic not in {i.id for i in items} and waiting  # genetics wait for a clinician


def test_a_clinician_releases_a_held_report_and_a_patient_cannot(
    world: RecordWorld, definitions: Definitions
) -> None:
    with write_transaction(world.engine) as connection:
        report = (
            system_repo(connection, definitions, world.settings)
            .create(
                {
                    "resourceType": "DiagnosticReport",
                    "status": "final",
                    "category": [
                        {
                            "coding": [
                                {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "GE"}
                            ]
                        }
                    ],
                    "code": {"text": "Carrier screening"},
                    "subject": {"reference": f"Patient/{world.other}"},
                    "issued": _stamp(clock.now()),
                    "conclusion": "No variants found.",
                }
            )
            .stored.id
        )
    viewer = patient(world.other, "acct-release")
    items, waiting = read(world, definitions, viewer, documents.documents)
    assert waiting and report not in {i.id for i in items}
    with pytest.raises(Forbidden):
        write(world, definitions, viewer, lambda repo: release_result(repo, "DiagnosticReport", report))
    # A physician at a facility that saw the patient (the "care" reach of the access policy).
    seen_at = _generated(world, definitions, "Encounter", world.other)[0]["serviceProvider"]["reference"]
    clinician = AccessContext(actor="Practitioner/doc", role="physician", facility=seen_at.split("/")[1])
    assert write(world, definitions, clinician, lambda repo: release_result(repo, "DiagnosticReport", report))
    assert not write(
        world, definitions, clinician, lambda repo: release_result(repo, "DiagnosticReport", report)
    )
    items, waiting = read(world, definitions, viewer, documents.documents)
    released = next(i for i in items if i.id == report)
    assert released.new and released.kind == "report"
    view = read(world, definitions, viewer, lambda repo: documents.document(repo, report, "report"))
    assert [s.text for s in view.sections] == ["No variants found."]


def test_the_policy_is_configurable() -> None:
    assert ReleasePolicy.from_settings(Settings(portal_result_holds={})).holds == ()
    custom = ReleasePolicy.from_settings(Settings(portal_result_holds={"pathology": 7}))
    report = {"resourceType": "DiagnosticReport", "category": [{"coding": [{"code": "SP"}]}], "code": {}}
    hold = custom.hold_for(report)
    assert hold is not None and hold.days == 7 and hold.rule is RULES["pathology"]
    assert custom.hold_for({"resourceType": "Observation", "code": {"coding": [{"code": HIV_CODE}]}}) is None
    labelled = {
        "resourceType": "Observation",
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HIV"}]},
    }
    assert ReleasePolicy.from_settings(Settings()).hold_for(labelled) is not None
    with pytest.raises(ValueError, match="unknown rule"):
        ReleasePolicy.from_settings(Settings(portal_result_holds={"astrology": 1}))


def test_no_holds_releases_everything_at_once(world: RecordWorld, definitions: Definitions) -> None:
    open_settings = Settings(database_url=world.settings.database_url, portal_result_holds={})
    with read_transaction(world.engine) as connection:
        repo = Repository(connection, definitions, open_settings, patient(world.adult, "acct-open"))
        results = labs.lab_results(repo)
    assert not results.waiting and HIV_CODE in {t.code for t in results.tests}


# -- new markers --------------------------------------------------------------------------------------------


def test_new_markers_are_per_account_and_opening_a_test_marks_it_seen(
    world: RecordWorld, definitions: Definitions
) -> None:
    first, second = patient(world.adult, "acct-first"), patient(world.adult, "acct-second")
    start = read(world, definitions, first, labs.lab_results)
    a1c = next(t for t in start.tests if t.code == "4548-4")
    assert a1c.new >= 1 and start.new >= 1
    assert read(world, definitions, first, record.record_highlights).new_results == start.new
    trend = read(world, definitions, first, lambda repo: labs.lab_trend(repo, "4548-4"))
    assert ("Observation", world.fresh_a1c) in trend.unseen
    assert write(world, definitions, first, lambda repo: mark_seen(repo, trend.unseen)) == len(trend.unseen)
    assert write(world, definitions, first, lambda repo: mark_seen(repo, trend.unseen)) == 0
    after = read(world, definitions, first, labs.lab_results)
    assert next(t for t in after.tests if t.code == "4548-4").new == 0
    assert after.new == start.new - a1c.new
    assert read(world, definitions, first, record.record_highlights).new_results == after.new
    # Another account looking at the same record still sees the result as new.
    untouched = read(world, definitions, second, labs.lab_results)
    assert next(t for t in untouched.tests if t.code == "4548-4").new == a1c.new
    # Old results are history, not news.
    assert all(not r.new for r in trend.readings if r.moment < clock.now() - timedelta(days=91))


def test_marking_ignores_results_the_caller_cannot_see(world: RecordWorld, definitions: Definitions) -> None:
    parent = proxy(world.teen, "acct-parent-probe")
    keys = [("Observation", world.teen_secret_lab), ("Observation", world.fresh_a1c)]
    assert write(world, definitions, parent, lambda repo: mark_seen(repo, keys)) == 0


# -- proxies and adolescent confidentiality -------------------------------------------------------


def test_a_parent_does_not_see_adolescent_confidential_items_nor_their_counts(
    world: RecordWorld, definitions: Definitions
) -> None:
    teen_view = read(world, definitions, patient(world.teen, "acct-teen"), record.record_summary)
    parent_view = read(world, definitions, proxy(world.teen, "acct-parent"), record.record_summary)
    assert {p.name for p in teen_view.problems} == {"Asthma", "Confidential problem"}
    assert {p.name for p in parent_view.problems} == {"Asthma"}
    assert teen_view.new_results == 2 and parent_view.new_results == 1
    assert {t.code for t in teen_view.recent_results} == {"2339-0", CHLAMYDIA_CODE}
    assert {t.code for t in parent_view.recent_results} == {"2339-0"}
    parent_labs = read(world, definitions, proxy(world.teen, "acct-parent"), labs.lab_results)
    assert parent_labs.new == 1 and not parent_labs.waiting  # not even "waiting": it is not theirs to know
    with pytest.raises(NotFound):
        read(
            world,
            definitions,
            proxy(world.teen, "acct-parent"),
            lambda repo: labs.lab_trend(repo, CHLAMYDIA_CODE),
        )
    highlights = read(world, definitions, proxy(world.teen, "acct-parent"), record.record_highlights)
    assert highlights.new_results == 1


def test_a_scheduling_only_grant_sees_no_results_and_the_summary_leaves_them_out(
    world: RecordWorld, definitions: Definitions
) -> None:
    scheduling = ScopeSet.parse("patient/Patient.rs patient/Appointment.rs patient/MedicationRequest.rs")
    helper = AccessContext(
        actor="RelatedPerson/helper",
        role="proxy",
        patient=world.adult,
        account="acct-helper",
        scopes=scheduling,
    )
    summary = read(world, definitions, helper, record.record_summary)
    assert summary.recent_results is None and summary.problems is None and summary.allergies is None
    assert summary.new_results == 0 and not summary.waiting and summary.medications
    assert summary.upcoming is not None
    assert read(world, definitions, helper, record.record_highlights) is None
    with pytest.raises(Forbidden):
        read(world, definitions, helper, labs.lab_results)


# -- the lists ----------------------------------------------------------------------------------------


def test_the_summary_lists_active_problems_medicines_allergies_and_upcoming(
    world: RecordWorld, definitions: Definitions
) -> None:
    summary = read(world, definitions, patient(world.adult), record.record_summary)
    conditions = _generated(world, definitions, "Condition", world.adult)
    active = {
        c["code"]["text"] if "text" in c["code"] else c["code"]["coding"][0]["display"]
        for c in conditions
        if c["clinicalStatus"]["coding"][0]["code"] == "active"
    }
    assert {p.name for p in summary.problems} == active
    requests = _generated(world, definitions, "MedicationRequest", world.adult, status="active")
    assert len(summary.medications) == len(requests)
    assert summary.allergies.active[0].name == "Penicillin"
    booked = _generated(world, definitions, "Appointment", world.adult, status="booked")
    upcoming = [a for a in booked if a["start"] >= clock.now().date().isoformat()]
    assert summary.upcoming is not None and len(summary.upcoming) == min(3, len(upcoming))
    assert len(summary.recent_results) == min(
        5, len(read(world, definitions, patient(world.adult), labs.lab_results).tests)
    )
    given = record.record_summary
    custom = read(
        world,
        definitions,
        patient(world.adult),
        lambda repo: given(repo, upcoming=[record.Upcoming(None, "Flu clinic")]),
    )
    assert [u.what for u in custom.upcoming] == ["Flu clinic"]


def test_problems_medicines_and_allergies(world: RecordWorld, definitions: Definitions) -> None:
    viewer = patient(world.adult)
    found = read(world, definitions, viewer, record_lists.problems)
    conditions = _generated(world, definitions, "Condition", world.adult)
    assert len(found.active) + len(found.past) == len(conditions)
    assert all(p.facility for p in found.active + found.past)  # named from the visit's facility
    assert all(p.resolved is not None for p in found.past if p.status == "Resolved")
    medicines = read(world, definitions, viewer, record_lists.medications)
    requests = _generated(world, definitions, "MedicationRequest", world.adult)
    assert len(medicines.active) + len(medicines.past) == len(requests)
    for medicine in medicines.active:
        assert medicine.instructions and medicine.prescriber and medicine.status == "Active"
        assert "supply" in medicine.supply
    allergies = read(world, definitions, viewer, record_lists.allergies)
    penicillin = next(a for a in allergies.active if a.name == "Penicillin")
    assert penicillin.high_risk and penicillin.risk == "High risk" and penicillin.category == "Medicine"
    assert [(r.what, r.severity) for r in penicillin.reactions] == [("Hives, Swelling", "Severe")]


def test_immunizations_are_grouped_with_the_military_ones_apart(
    world: RecordWorld, definitions: Definitions
) -> None:
    doses = _generated(world, definitions, "Immunization", world.adult)
    found = read(
        world,
        definitions,
        patient(world.adult),
        lambda repo: immunizations.immunizations(repo, birth_date=date(1980, 1, 1)),
    )
    anthrax = next(g for g in found.military if g.name == "Anthrax")
    assert [d.lot for d in anthrax.doses] == ["AV1234"]
    shown = {d.id for g in found.routine + found.military for d in g.doses}
    assert shown == {d["id"] for d in doses}
    for group in found.routine + found.military:
        moments = [d.when.moment for d in group.doses if d.when]
        assert moments == sorted(moments, reverse=True)
    flu = next((g for g in found.routine if g.name == "Flu (influenza)"), None)
    today = clock.now().date()
    season = date(today.year if today.month >= 8 else today.year - 1, 8, 1)
    flu_due = flu is None or flu.last_given is None or flu.last_given.day < season
    assert ("Flu vaccine" in {d.name for d in found.due}) == flu_due


def test_due_reminders_follow_the_schedule() -> None:
    today = date(2026, 11, 26)
    nothing = immunizations.due_vaccines([], date(1990, 5, 1), today)
    assert {d.name for d in nothing} == {"Flu vaccine", "Tetanus booster (Td or Tdap)"}
    assert immunizations.due_vaccines([], today - timedelta(days=60), today) == []  # a baby of 2 months


def test_visits_and_an_after_visit_summary(world: RecordWorld, definitions: Definitions) -> None:
    viewer = patient(world.adult)
    page = read(world, definitions, viewer, visits.visits)
    encounters = _generated(world, definitions, "Encounter", world.adult)
    assert len(page.visits) == min(50, len(encounters))
    moments = [v.when.moment for v in page.visits]
    assert moments == sorted(moments, reverse=True)
    assert all(v.facility and v.kind for v in page.visits)
    with_labs = {
        o["encounter"]["reference"].split("/")[1]
        for o in _generated(world, definitions, "Observation", world.adult, category="laboratory")
        if "encounter" in o
    }
    visit_id = next(v.id for v in page.visits if v.id in with_labs)
    summary = read(world, definitions, viewer, lambda repo: visits.visit_summary(repo, visit_id))
    at_visit = _generated(world, definitions, "Observation", world.adult, encounter=visit_id)
    lab_ids = {o["id"] for o in at_visit if o["category"][0]["coding"][0]["code"] == "laboratory"}
    assert {r.id for r in summary.results} == lab_ids
    if any(o["code"]["coding"][0]["code"] == "85354-9" for o in at_visit):
        assert summary.vitals[0][0] == "Blood pressure"
    other_visit = _generated(world, definitions, "Encounter", world.other)[0]["id"]
    with pytest.raises(NotFound):
        read(world, definitions, viewer, lambda repo: visits.visit_summary(repo, other_visit))


def test_documents_show_words_never_markup_and_download_safely(
    world: RecordWorld, definitions: Definitions
) -> None:
    viewer = patient(world.adult, "acct-docs")
    items, _ = read(world, definitions, viewer, documents.documents)
    by_id = {i.id: i for i in items}
    assert {world.note, world.summary} <= set(by_id) and by_id[world.note].new
    view = read(world, definitions, viewer, lambda repo: documents.document(repo, world.note))
    texts = [s.text for s in view.sections]
    assert texts[0] == "Blood pressure is better.\nKeep walking daily."
    assert texts[1] == "Plan: recheck in 3 months" and "alert" not in texts[1]
    assert view.unseen == [("DocumentReference", world.note)]
    summary = read(
        world, definitions, viewer, lambda repo: documents.document(repo, world.summary, "summary")
    )
    assert [(s.title, s.text) for s in summary.sections] == [("Instructions", "Rest for two days.")]
    html = read(world, definitions, viewer, lambda repo: documents.document_file(repo, world.note, 1))
    assert html.content_type == "application/octet-stream"  # never served as a page
    assert html.filename == "Plan_details_._evil.html.txt" and "/" not in html.filename
    text = read(world, definitions, viewer, lambda repo: documents.document_file(repo, world.note, 0))
    assert text.content_type == "text/plain" and text.data.startswith(b"Blood pressure")
    with pytest.raises(NotFound):
        read(world, definitions, viewer, lambda repo: documents.document_file(repo, world.note, 9))
    with pytest.raises(NotFound):  # someone else's document is not in this record
        read(world, definitions, patient(world.other), lambda repo: documents.document(repo, world.note))
    with pytest.raises(NotFound):  # a held report cannot be opened by its id either
        read(world, definitions, viewer, lambda repo: documents.document(repo, world.genetic, "report"))


def test_care_plans_and_goals_track_the_latest_value_against_the_target(
    world: RecordWorld, definitions: Definitions
) -> None:
    found = read(world, definitions, patient(world.adult), care_plans.care_plans)
    plan = found.plans[0]
    assert plan.title == "Diabetes care plan" and plan.status == "Active"
    assert [a.what for a in plan.activities] == ["Walk 30 minutes: five days a week"]
    goal = plan.goals[0]
    assert goal.description == "Bring my HbA1c below 7%" and goal.achievement == "In progress"
    target = goal.targets[0]
    assert target.target == "7.0 % or less" and target.latest == "8.4 %" and target.met is False
    assert target.chart is not None and 'data-high="7.0"' in str(target.chart)
    assert target.readings[0] == (target.latest_date, "8.4 %")
    bp_goal = found.other_goals[0]
    bp_target = bp_goal.targets[0]
    assert bp_target.target == "below 130 mmHg"
    panels = _generated(world, definitions, "Observation", world.adult, code="85354-9")
    if panels:  # the goal's measure is a component of the blood pressure panel
        assert bp_target.latest.endswith("mmHg") and bp_target.met is not None


def test_the_demo_adds_a_care_plan_a_note_new_and_held_results_once(
    world: RecordWorld, definitions: Definitions
) -> None:
    def others(repo: Repository) -> list[str]:
        page = repo.search(SearchRequest("Patient", [("_count", "10"), ("_sort", "_id")]))
        return [m.id for m in page.matches if m.id not in (world.adult, world.other, world.teen)]

    demo_patient = read(world, definitions, AccessContext.system("tests"), others)[0]
    with write_transaction(world.engine) as connection:
        accounts.create_account(
            connection,
            username=record_demo.DEMO_PATIENT,
            kind="patient",
            role="patient",
            display_name="Demo",
            fhir_user=f"Patient/{demo_patient}",
            password=None,
            actor="system/tests",
            actor_role="system",
        )

    def count(repo: Repository) -> int:
        total = 0
        for kind in ("Observation", "DocumentReference", "Goal", "CarePlan"):
            page = repo.search(
                SearchRequest(
                    kind, [("identifier", f"{record_demo.DEMO_IDENTIFIER}|"), ("_summary", "count")]
                )
            )
            total += page.total or 0
        return total

    record_demo.seed_demo(world.engine, definitions, world.settings)
    first = read(world, definitions, AccessContext.system("tests"), count)
    record_demo.seed_demo(world.engine, definitions, world.settings)
    assert read(world, definitions, AccessContext.system("tests"), count) == first >= 8
    viewer = patient(demo_patient, "acct-demo")
    plans = read(world, definitions, viewer, care_plans.care_plans)
    assert plans.plans[0].title == "Heart health plan" and len(plans.plans[0].goals) >= 2
    results = read(world, definitions, viewer, labs.lab_results)
    assert results.waiting and {"18262-6", "2085-9", "2093-3"} <= {t.code for t in results.tests if t.new}
    items, _ = read(world, definitions, viewer, documents.documents)
    assert any(i.title == "Visit note and plan" and i.new for i in items)
