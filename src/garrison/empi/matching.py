"""`match_patient` and `register_patient`: who, already on file, might this patient be?

Candidates come from the search index (garrison.empi.candidates), are read through the
repository (so the caller's access rules apply to what is returned), and are scored with the
same Splink model as the batch deduplication. Records retired by a merge (`Patient.link`
replaced-by) are never offered: their surviving record is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from garrison.empi.candidates import candidate_ids, name_shares
from garrison.empi.features import extract_features, is_merged_away
from garrison.empi.model import Grade, grade_for, threshold_of
from garrison.empi.splink_engine import PairScorer
from garrison.errors import BadRequest
from garrison.fhir.repository import Repository
from garrison.fhir.resource import StoredResource
from garrison.fhir.search.query import SearchRequest
from garrison.fhir.search.values import normalize_string

DEFAULT_COUNT = 10
# Registration warns before creating when a candidate is at least this likely.
WARN_GRADES = (Grade.CERTAIN, Grade.PROBABLE)


@dataclass(frozen=True, slots=True)
class MatchCandidate:
    patient: StoredResource
    probability: float  # Splink's match probability, 0..1 (FHIR search.score)
    weight: float  # the match weight (log2 Bayes factor), for review screens
    grade: Grade


@dataclass(frozen=True, slots=True)
class Registration:
    """The outcome of `register_patient`: a new record, or the likely duplicates instead."""

    created: StoredResource | None
    candidates: list[MatchCandidate] = field(default_factory=list)

    @property
    def likely_duplicates(self) -> list[MatchCandidate]:
        return [c for c in self.candidates if c.grade in WARN_GRADES]


@cache
def default_scorer() -> PairScorer:
    """One scorer per process: compiling the model's SQL takes a few hundred milliseconds."""
    return PairScorer()


def _first_given(patient: dict[str, Any]) -> str | None:
    for name in patient.get("name") or []:
        given = name.get("given") or []
        if given and isinstance(given[0], str):
            return normalize_string(given[0])
    return None


def _families(patient: dict[str, Any]) -> list[str]:
    return [
        normalize_string(n["family"]) for n in patient.get("name") or [] if isinstance(n.get("family"), str)
    ]


def _scoring_record(
    patient: dict[str, Any], first: dict[str, float], family: dict[str, float]
) -> dict[str, Any]:
    record = extract_features(patient).as_record()
    given = _first_given(patient)
    families = _families(patient)
    record["tf_first_name"] = first.get(given) if given else None
    record["tf_surname"] = family.get(families[0]) if families else None
    return record


def match_patient(
    repo: Repository,
    patient: dict[str, Any],
    *,
    count: int | None = None,
    min_grade: Grade = Grade.POSSIBLE,
) -> list[MatchCandidate]:
    """Patients on file that may be the same person as `patient`, most likely first.

    Only candidates graded `min_grade` or better are returned; at most `count` of them.
    """
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        raise BadRequest("Matching needs a Patient resource")
    features = extract_features(patient)
    ids = candidate_ids(repo.connection, patient, features)
    if not ids:
        return []
    page = repo.search(
        SearchRequest("Patient", [("_id", ",".join(ids)), ("_count", str(len(ids))), ("_total", "none")])
    )
    stored = {s.id: s for s in page.matches}
    parsed = {sid: s.parsed() for sid, s in stored.items()}
    parsed = {sid: p for sid, p in parsed.items() if not is_merged_away(p)}
    if not parsed:
        return []
    first_names = {n for p in [patient, *parsed.values()] if (n := _first_given(p))}
    surnames = {n for p in [patient, *parsed.values()] for n in _families(p)}
    first_tf, family_tf = name_shares(repo.connection, first_names, surnames)
    query = _scoring_record(patient, first_tf, family_tf)
    query["unique_id"] = "__query__"
    records = [_scoring_record(p, first_tf, family_tf) for p in parsed.values()]
    lowest = threshold_of(min_grade)
    found: list[MatchCandidate] = []
    for candidate_id, weight, probability in default_scorer().score(query, records):
        grade = grade_for(probability)
        if grade is not None and probability >= lowest:
            found.append(MatchCandidate(stored[candidate_id], probability, weight, grade))
    found.sort(key=lambda c: (-c.weight, c.patient.id))
    return found[:count] if count is not None else found


def register_patient(repo: Repository, patient: dict[str, Any], *, confirm_new: bool = False) -> Registration:
    """Create `patient` unless it is likely already on file.

    Runs `match_patient` first. When a certain or probable candidate exists and `confirm_new` is
    False, nothing is created and the candidates come back for the registrar to review (use the
    existing record, or register again with `confirm_new=True`).
    """
    candidates = match_patient(repo, patient)
    result = Registration(None, candidates)
    if result.likely_duplicates and not confirm_new:
        return result
    outcome = repo.create(patient, resource_type="Patient")
    return Registration(outcome.stored, candidates)
