"""Feature extraction, nicknames, grades and the model's accuracy on synthetic registrations."""

from __future__ import annotations

import pytest

from garrison.empi.features import extract_features, is_merged_away, name_frequencies
from garrison.empi.model import Grade, grade_for
from garrison.empi.nicknames import formal_names, name_group, names_in_group
from garrison.empi.splink_engine import PairScorer, predict_pairs
from garrison.empi.synthetic import synthetic_population
from tests.empi_fixtures import SPONSOR_EDIPI, carter_family


def test_features_of_a_beneficiary() -> None:
    john = carter_family()["john"]
    john["name"][0]["given"] = ["José", "Michael"]
    john["address"][0]["line"] = ["418 Maple  Drive"]
    john["address"][0]["postalCode"] = "76544-1234"
    features = extract_features(john)
    assert features.unique_id == "carter-john"
    assert features.first_name == "jose"
    assert features.middle_name == "michael"
    assert features.surname == "carter"
    assert features.suffix == ""
    assert features.birth_date == "1980-03-11"
    assert features.birth_date_swapped == "1980-11-03"
    assert features.birth_year == "1980"
    assert features.sex == "male"
    assert features.postal_code == "76544"
    assert features.address_line == "418 maple dr"
    assert features.phone == "2545550142"
    assert features.edipi == SPONSOR_EDIPI
    assert features.sponsor_edipi == SPONSOR_EDIPI
    assert features.fmp == "20"
    assert features.va_icn is None


def test_former_names_and_suffix() -> None:
    family = carter_family()
    maria = extract_features(family["maria"])
    assert maria.surname == "carter"
    assert maria.surnames == ["carter", "lopez"]
    assert extract_features(family["junior"]).suffix == "jr"


def test_partial_or_unswappable_birth_dates() -> None:
    patient = carter_family()["ava"]
    patient["birthDate"] = "2012-05"
    features = extract_features(patient)
    assert (features.birth_date, features.birth_year) == (None, "2012")
    patient["birthDate"] = "2012-05-25"  # day 25 cannot be a month
    assert extract_features(patient).birth_date_swapped is None
    patient["birthDate"] = "2012-05-05"  # swapping changes nothing
    assert extract_features(patient).birth_date_swapped is None


def test_nicknames() -> None:
    assert "william" in formal_names("bill")
    assert formal_names("chris") == ("chris", "christian", "christina", "christopher")
    assert name_group("chris") == name_group("christopher") == name_group("tina")
    assert name_group("zebulon") == "zebulon"
    assert {"bill", "william", "liam"} <= names_in_group(name_group("william"))


def test_merged_away_records_are_recognised() -> None:
    patient = carter_family()["john"]
    assert not is_merged_away(patient)
    patient["link"] = [{"other": {"reference": "Patient/x"}, "type": "replaced-by"}]
    assert is_merged_away(patient)


@pytest.mark.parametrize(
    ("probability", "grade"),
    [
        (1.0, Grade.CERTAIN),
        (0.999, Grade.CERTAIN),
        (0.99, Grade.PROBABLE),
        (0.6, Grade.POSSIBLE),
        (0.3, None),
    ],
)
def test_grades(probability: float, grade: Grade | None) -> None:
    assert grade_for(probability) == grade


def _record(patient: dict[str, object]) -> dict[str, object]:
    return extract_features(patient).as_record() | {"tf_first_name": 0.01, "tf_surname": 0.01}


def test_scorer_tells_family_members_from_duplicates() -> None:
    family = carter_family()
    scorer = PairScorer()
    typo = _record(family["john"]) | {"unique_id": "dup", "first_name": "jonh", "edipi": None}
    query = _record(family["john"])
    others = [_record(p) for key, p in family.items() if key != "john"]
    scores = {cid: p for cid, _w, p in scorer.score(query, [*others, typo])}
    assert grade_for(scores["dup"]) == Grade.CERTAIN
    assert all(grade_for(scores[p["unique_id"]]) is None for p in others)  # type: ignore[index]


def test_batch_model_accuracy_on_synthetic_registrations() -> None:
    """Precision and recall at "probable" on 2,000 people with planted duplicates and families."""
    population = synthetic_population(2000, seed=5)
    features = [extract_features(p) for p in population.patients]
    first_tf, surname_tf = name_frequencies(features)
    pairs = predict_pairs(features, min_probability=0.95, first_name_tf=first_tf, surname_tf=surname_tf)
    found = {frozenset((p.left, p.right)) for p in pairs}
    true_positives = len(found & population.duplicates)
    precision = true_positives / len(found)
    recall = true_positives / len(population.duplicates)
    assert precision >= 0.99, precision
    assert recall >= 0.97, recall
    hard = set().union(*population.hard_pairs.values())
    assert hard and not found & hard
