"""What a resource version says about itself for access decisions: its security labels and the
patients whose compartment it is in."""

from __future__ import annotations

from typing import Any

import orjson

from garrison.fhir.definitions import Definitions
from garrison.fhir.search.indexer import IndexRows

Label = tuple[str, str]


def security_labels(content: str | None) -> set[Label]:
    """`meta.security` as (system, code) pairs (https://hl7.org/fhir/R4/security-labels.html)."""
    if not content:
        return set()
    meta = orjson.loads(content).get("meta") or {}
    labels: list[Any] = meta.get("security") or []
    return {(str(c.get("system", "")), str(c.get("code", ""))) for c in labels if isinstance(c, dict)}


def compartment_patients(
    definitions: Definitions, resource_type: str, resource_id: str, index_rows: IndexRows, base_url: str
) -> set[str]:
    """Ids of this server's patients whose compartment this version is in, from its own reference
    rows (https://hl7.org/fhir/R4/compartmentdefinition-patient.html): relative references and
    absolute ones under `base_url` (this server's FHIR base), as searches count them
    (`predicates.local_reference`); another server's patients are not this server's."""
    params = set(definitions.compartments["Patient"].get(resource_type, ()))
    local = base_url.rstrip("/") + "/"
    patients = {
        row["target_id"]
        for row in index_rows.dicts("reference")
        if row["param"] in params
        and row.get("target_type") == "Patient"
        and (row.get("url") is None or str(row["url"]).startswith(local))
    }
    if resource_type == "Patient":
        patients.add(resource_id)
    return patients
