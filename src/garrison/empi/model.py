"""The patient-matching model: a Fellegi-Sunter model expressed as Splink settings.

Parameters are set explicitly, not trained, so matching is deterministic, needs no data to start
and runs offline. Each level's m probability (how often a true duplicate pair looks like this) and
u probability (how often two different people do) comes from what we know about registrations:
typo rates, how often people move (PCS) or change surname, how rare a shared DoD ID is; first
names and surnames get term-frequency adjustments (a shared rare name counts for more).

Fellegi-Sunter treats comparisons as independent, but inside a family they are not: twins share
birth date, surname, address and phone; a spouse and a namesake son share surname and home. Left
alone, the model would count that one fact (same household) several times and call family
members duplicates. So a few levels carry deliberately strong Bayes factors, the patterns that
tell family members apart:
- same sponsor but another family member prefix (FMP): 2^-30;
- recorded birth orders that differ (`multipleBirthInteger`): 2^-20;
- another first name (no nickname, typo or middle name explains it) with the same birth date and
  home: a twin, 2^-20;
- another birth date (no typo or transposition explains it) under the same roof: about 2^-9;
- birth years a generation apart, a differing suffix (Jr.): moderately negative;
- address and phone form one household comparison, not two.
The model was checked against the population generator's planted duplicates and look-alikes
(benchmarks/bench_empi.py reports precision and recall).

Grades (https://hl7.org/fhir/R4/valueset-match-grade.html) by match probability:
certain >= 0.999, probable >= 0.95, possible >= 0.50; a pair below 0.50 is not a candidate.
Registration warns on certain and probable; the review queue takes probable and better.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

PROBABILITY_TWO_RANDOM_RECORDS_MATCH = 1e-4


class Grade(StrEnum):
    CERTAIN = "certain"
    PROBABLE = "probable"
    POSSIBLE = "possible"


# Lowest match probability of each grade.
GRADE_THRESHOLDS: tuple[tuple[Grade, float], ...] = (
    (Grade.CERTAIN, 0.999),
    (Grade.PROBABLE, 0.95),
    (Grade.POSSIBLE, 0.50),
)


def grade_for(probability: float) -> Grade | None:
    for grade, threshold in GRADE_THRESHOLDS:
        if probability >= threshold:
            return grade
    return None


def threshold_of(grade: Grade) -> float:
    return dict(GRADE_THRESHOLDS)[grade]


def _null(*columns: str) -> dict[str, Any]:
    condition = " OR ".join(f'"{c}_l" IS NULL OR "{c}_r" IS NULL' for c in columns)
    return {"sql_condition": condition, "label_for_charts": "missing", "is_null_level": True}


def _level(sql: str, label: str, m: float, u: float, **extra: Any) -> dict[str, Any]:
    return {"sql_condition": sql, "label_for_charts": label, "m_probability": m, "u_probability": u, **extra}


def _else(m: float, u: float) -> dict[str, Any]:
    return _level("ELSE", "else", m, u)


def _tf(column: str) -> dict[str, Any]:
    # Agreeing on a rare name says more than agreeing on "Smith": the u probability of the exact
    # level becomes the name's share of the population (floored, so a unique name is not proof).
    return {"tf_adjustment_column": column, "tf_adjustment_weight": 1.0, "tf_minimum_u_value": 1e-4}


def _comparison(name: str, description: str, levels: list[dict[str, Any]]) -> dict[str, Any]:
    return {"output_column_name": name, "comparison_description": description, "comparison_levels": levels}


COMPARISONS: list[dict[str, Any]] = [
    _comparison(
        "edipi",
        "DoD ID (EDIPI): personal and permanent; a mismatch is usually two people, rarely a typo",
        [
            _null("edipi"),
            _level('"edipi_l" = "edipi_r"', "same DoD ID", 0.998, 2e-6),
            # DoD IDs come from the ID card and DEERS, rarely typed: a mismatch is two people.
            _else(0.002, 0.999998),
        ],
    ),
    _comparison(
        "va_icn",
        "VA Integration Control Number",
        [
            _null("va_icn"),
            _level('"va_icn_l" = "va_icn_r"', "same ICN", 0.97, 2e-6),
            _else(0.03, 0.999998),
        ],
    ),
    _comparison(
        "sponsor",
        "Sponsor DoD ID and family member prefix: one family member per prefix",
        [
            _null("sponsor_edipi", "fmp"),
            _level(
                '"sponsor_edipi_l" = "sponsor_edipi_r" AND "fmp_l" = "fmp_r"',
                "same sponsor, same FMP",
                0.90,
                5e-5,
            ),
            # Near-conclusive by design (see the module docstring): 2^-30.
            _level('"sponsor_edipi_l" = "sponsor_edipi_r"', "same sponsor, other FMP", 1e-9, 1.0),
            # A sponsor changes with marriage, divorce or a child's own enlistment.
            _level('"fmp_l" = "fmp_r"', "other sponsor, same FMP", 0.06, 0.35),
            _else(0.04, 0.65),
        ],
    ),
    _comparison(
        "first_name",
        "First given name, with nicknames, typos and the middle name used first",
        [
            _null("first_name"),
            _level('"first_name_l" = "first_name_r"', "exact", 0.86, 0.004, **_tf("first_name")),
            _level('list_has_any("first_name_formal_l", "first_name_formal_r")', "nickname", 0.06, 0.002),
            _level(
                'jaro_winkler_similarity("first_name_l", "first_name_r") >= 0.92 '
                'OR damerau_levenshtein("first_name_l", "first_name_r") <= 1',
                "typo",
                0.04,
                0.003,
            ),
            _level(
                '"first_name_l" = "middle_name_r" OR "middle_name_l" = "first_name_r"',
                "middle name first",
                0.02,
                0.001,
            ),
            # Another first name, but the same birthday and home: a twin, not a typo. Near-
            # conclusive by design (2^-20): birth date, surname and household agree within a
            # family, and independent comparisons would count that agreement three times.
            _level(
                '"birth_date_l" = "birth_date_r" AND ("phone_l" = "phone_r" OR '
                '("address_line_l" = "address_line_r" AND "postal_code_l" = "postal_code_r"))',
                "sibling born the same day",
                1e-6,
                1.0,
            ),
            _level('jaro_winkler_similarity("first_name_l", "first_name_r") >= 0.80', "similar", 0.005, 0.03),
            _else(0.015, 0.96),
        ],
    ),
    _comparison(
        "surname",
        "Family name, with former names (marriage) and typos",
        [
            _null("surname"),
            _level('"surname_l" = "surname_r"', "exact", 0.85, 0.003, **_tf("surname")),
            _level('list_has_any("surnames_l", "surnames_r")', "former name", 0.06, 0.0005),
            _level('jaro_winkler_similarity("surname_l", "surname_r") >= 0.92', "typo", 0.05, 0.002),
            _level('jaro_winkler_similarity("surname_l", "surname_r") >= 0.80', "similar", 0.01, 0.02),
            _else(0.03, 0.9745),
        ],
    ),
    _comparison(
        "suffix",
        "Generational suffix: John Smith and John Smith Jr. are two people",
        [
            _null("suffix"),  # never fires: no suffix is "" (the two records must differ)
            _level('"suffix_l" = "suffix_r"', "same", 0.97, 0.98),
            _else(0.03, 0.5),
        ],
    ),
    _comparison(
        "birth_date",
        "Date of birth, with day/month transposed and single-character typos",
        [
            _null("birth_date"),
            _level('"birth_date_l" = "birth_date_r"', "exact", 0.93, 6e-5),
            _level('"birth_date_swapped_l" = "birth_date_r"', "day and month transposed", 0.025, 6e-5),
            _level('damerau_levenshtein("birth_date_l", "birth_date_r") <= 1', "one typo", 0.035, 0.002),
            # Another birthday (no typo explains it) under one roof: a brother or sister, a parent.
            _level(
                '"phone_l" = "phone_r" '
                'OR ("address_line_l" = "address_line_r" AND "postal_code_l" = "postal_code_r")',
                "another birthday, same home",
                0.0005,
                0.3,
            ),
            _level(
                'abs(CAST("birth_year_l" AS INTEGER) - CAST("birth_year_r" AS INTEGER)) <= 1',
                "within a year",
                0.006,
                0.03,
            ),
            # A generation apart: a parent and a child who share a name are two people.
            _level(
                'abs(CAST("birth_year_l" AS INTEGER) - CAST("birth_year_r" AS INTEGER)) >= 12',
                "a generation apart",
                0.0005,
                0.5,
            ),
            _else(0.0035, 0.468),
        ],
    ),
    _comparison(
        "birth_order",
        "Birth order of a multiple birth (https://hl7.org/fhir/R4/patient.html#multiplebirth)",
        [
            _null("birth_order"),
            _level('"birth_order_l" = "birth_order_r"', "same", 0.99, 0.5),
            # Twins, recorded as such: near-conclusive by design (2^-20).
            _else(1e-6, 1.0),
        ],
    ),
    _comparison(
        "sex",
        "Administrative sex",
        [
            _null("sex"),
            _level('"sex_l" = "sex_r"', "same", 0.98, 0.5),
            _else(0.02, 0.5),
        ],
    ),
    _comparison(
        "household",
        "Home address and phone: one household, counted once",
        [
            _level(
                '"address_line_l" = "address_line_r" AND "postal_code_l" = "postal_code_r" '
                'AND "phone_l" = "phone_r"',
                "same address and phone",
                0.35,
                1e-4,
            ),
            _level(
                '("address_line_l" = "address_line_r" AND "postal_code_l" = "postal_code_r") '
                'OR "phone_l" = "phone_r"',
                "same address or phone",
                0.25,
                3e-4,
            ),
            _level(
                'jaro_winkler_similarity("address_line_l", "address_line_r") >= 0.90 '
                'AND "postal_code_l" = "postal_code_r"',
                "similar address",
                0.05,
                5e-4,
            ),
            _level('"postal_code_l" = "postal_code_r"', "same postal code", 0.05, 0.02),
            # People move (PCS): a registration elsewhere often has a new address and phone.
            {
                "sql_condition": '("address_line_l" IS NULL OR "address_line_r" IS NULL) '
                'AND ("phone_l" IS NULL OR "phone_r" IS NULL)',
                "label_for_charts": "missing",
                "is_null_level": True,
            },
            _else(0.30, 0.9795),
        ],
    ),
]

# Candidate pairs for batch deduplication: each rule is an equi-join, so 100,000 records stay
# tractable. A true duplicate needs to share only one of these keys.
BLOCKING_RULES: list[str] = [
    "l.edipi = r.edipi",
    "l.va_icn = r.va_icn",
    "l.birth_date = r.birth_date",
    "l.birth_date_swapped = r.birth_date",
    "l.first_name_group = r.first_name_group AND l.surname = r.surname",
    "l.first_name_group = r.first_name_group AND l.postal_code = r.postal_code",
    "l.surname = r.surname AND l.birth_year = r.birth_year",
    "l.phone = r.phone",
    "l.sponsor_edipi = r.sponsor_edipi AND l.fmp = r.fmp",
]


def settings_dict() -> dict[str, Any]:
    """The Splink settings (a dedupe model over PatientFeatures records)."""
    return {
        "link_type": "dedupe_only",
        "unique_id_column_name": "unique_id",
        "probability_two_random_records_match": PROBABILITY_TWO_RANDOM_RECORDS_MATCH,
        "comparisons": COMPARISONS,
        "blocking_rules_to_generate_predictions": BLOCKING_RULES,
        "retain_matching_columns": False,
        "retain_intermediate_calculation_columns": False,
    }
