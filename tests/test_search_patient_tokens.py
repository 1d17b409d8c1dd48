"""search_token.patient: a token row carries the Patients its resource's `patient` parameter
refers to, and `patient=X&<token>=Y` starts from those rows (schema.search_token, migration 0019,
conditions._patient_driver). The results must be exactly those of the patient filter as written:
local references only, every Patient of a resource with several, none counted twice."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, inspect, select, text

from garrison.db.engine import make_engine, read_transaction, write_transaction
from garrison.db.migrate import alembic_config, upgrade
from garrison.db.schema import search_token
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.ingest import reindex
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest, execute_search
from garrison.settings import Settings
from tests.conftest import BACKENDS, clear_tables
from tests.pg_cluster import PgCluster

BASE = "http://127.0.0.1:8000/fhir"
LOINC = "http://loinc.org"


def _obs(oid: str, subject: str | None, code: str = "8480-6") -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": code}]},
    }
    if subject is not None:
        body["subject"] = {"reference": subject}
    return body


def _appointment(aid: str, *patients: str) -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "id": aid,
        "status": "booked",
        "participant": [{"actor": {"reference": f"Patient/{p}"}, "status": "accepted"} for p in patients],
    }


RESOURCES: list[dict[str, Any]] = [
    *({"resourceType": "Patient", "id": pid} for pid in ("pa", "pb", "pz")),
    _obs("o-relative", "Patient/pa"),
    _obs("o-absolute-local", f"{BASE}/Patient/pa"),
    _obs("o-versioned", "Patient/pa/_history/1"),
    _obs("o-other-server", "http://other.example.org/fhir/Patient/pa"),
    _obs("o-pb", "Patient/pb"),
    _obs("o-no-subject", None),
    _obs("o-pa-other-code", "Patient/pa", code="8867-4"),
    _appointment("ap-both", "pa", "pb"),
    _appointment("ap-pb", "pb"),
]


def _settings() -> Settings:
    return Settings(base_url=BASE)


def _load(engine: Engine, definitions: Definitions, resources: list[dict[str, Any]]) -> None:
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, _settings(), AccessContext.system("tests"))
        for body in resources:
            repo.update(body["resourceType"], body["id"], body)


@pytest.fixture
def db(backend_engine: Engine, definitions: Definitions) -> Iterator[Engine]:
    clear_tables(backend_engine)
    _load(backend_engine, definitions, RESOURCES)
    yield backend_engine
    clear_tables(backend_engine)


def _search(
    db: Engine, definitions: Definitions, resource_type: str, query: str
) -> tuple[list[str], int | None]:
    with read_transaction(db) as connection:
        page = execute_search(
            connection,
            definitions,
            _settings(),
            SearchRequest(resource_type, parse_qsl(query, keep_blank_values=True)),
        )
    return sorted(m.id for m in page.matches), page.total


PA_CODE = ["o-absolute-local", "o-relative", "o-versioned"]


@pytest.mark.parametrize(
    ("resource_type", "query", "expected"),
    [
        # Local references only: relative, absolute under this base, versioned; not another server's.
        ("Observation", "patient=pa&code=8480-6", PA_CODE),
        ("Observation", "patient=Patient/pa&code=http://loinc.org|8480-6", PA_CODE),
        ("Observation", f"patient={BASE}/Patient/pa&code=8480-6", PA_CODE),
        ("Observation", "patient:Patient=pa&category=vital-signs&code=8480-6", PA_CODE),
        ("Observation", "patient=pa,pb&code=8480-6", [*PA_CODE[:2], "o-pb", PA_CODE[2]]),
        ("Observation", "patient=pa&code=8867-4", ["o-pa-other-code"]),
        ("Observation", "patient=pz&code=8480-6", []),
        ("Observation", "patient=Group/pa&code=8480-6", []),
        # A resource with two patients is found under each, once.
        ("Appointment", "patient=pa&status=booked", ["ap-both"]),
        ("Appointment", "patient=pb&status=booked", ["ap-both", "ap-pb"]),
        ("Appointment", "patient=pa,pb&status=booked", ["ap-both", "ap-pb"]),
        ("Appointment", "patient=pb&status:not=booked", []),
    ],
)
def test_results_are_the_patient_filters_as_written(
    db: Engine, definitions: Definitions, resource_type: str, query: str, expected: list[str]
) -> None:
    found, total = _search(db, definitions, resource_type, query + "&_total=accurate")
    assert found == sorted(expected)
    assert total == len(expected)


def test_they_agree_with_the_same_search_driven_by_the_reference_rows(
    db: Engine, definitions: Definitions
) -> None:
    """`subject=Patient/X` names the same references on Observation but does not use the column."""
    for patients, code in itertools.product(["pa", "pb", "pz", "pa,pb"], ["8480-6", "8867-4"]):
        subjects = ",".join(f"Patient/{p}" for p in patients.split(","))
        by_column = _search(db, definitions, "Observation", f"patient={patients}&code={code}")
        by_reference = _search(db, definitions, "Observation", f"subject={subjects}&code={code}")
        assert by_column == by_reference, (patients, code)


def _patients_of(db: Engine, resource_type: str, resource_id: str) -> set[str | None]:
    with read_transaction(db) as connection:
        rows = connection.execute(
            select(search_token.c.param, search_token.c.patient).where(
                search_token.c.resource_type == resource_type, search_token.c.resource_id == resource_id
            )
        ).all()
    assert rows, f"{resource_type}/{resource_id} has token rows"
    by_param: dict[str, set[str | None]] = {}
    for param, patient in rows:
        by_param.setdefault(param, set()).add(patient)
    patients = {patient for _, patient in rows}
    assert all(found == patients for found in by_param.values()), "every token row has every patient"
    return patients


def test_token_rows_carry_every_patient_of_the_resource(db: Engine) -> None:
    assert _patients_of(db, "Appointment", "ap-both") == {"pa", "pb"}
    assert _patients_of(db, "Observation", "o-versioned") == {"pa"}
    # The column narrows only; the reference's own row says whether it is local.
    assert _patients_of(db, "Observation", "o-other-server") == {"pa"}
    assert _patients_of(db, "Observation", "o-no-subject") == {None}
    assert _patients_of(db, "Patient", "pa") == {None}


def test_an_update_moves_the_rows_to_the_new_patient(db: Engine, definitions: Definitions) -> None:
    _load(db, definitions, [_obs("o-relative", "Patient/pz"), _appointment("ap-both", "pb")])
    assert _search(db, definitions, "Observation", "patient=pa&code=8480-6")[0] == [
        "o-absolute-local",
        "o-versioned",
    ]
    assert _search(db, definitions, "Observation", "patient=pz&code=8480-6")[0] == ["o-relative"]
    assert _search(db, definitions, "Appointment", "patient=pa&status=booked")[0] == []
    assert _patients_of(db, "Appointment", "ap-both") == {"pb"}


def test_reindex_rebuilds_the_column(db: Engine, definitions: Definitions) -> None:
    with write_transaction(db) as connection:
        connection.execute(search_token.update().values(patient=None))
    assert _search(db, definitions, "Observation", "patient=pa&code=8480-6")[0] == []
    reindex(db, definitions)
    assert _search(db, definitions, "Observation", "patient=pa&code=8480-6")[0] == PA_CODE
    assert _patients_of(db, "Appointment", "ap-both") == {"pa", "pb"}


# --------------------------------------------------------------------------------- migration 0019


@pytest.fixture(params=BACKENDS)
def at_0018(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A database migrated to 0018 only (before search_token.patient)."""
    if request.param == "postgresql":
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        name = f"garrison_0018_{uuid.uuid4().hex[:12]}"
        url = cluster.create_database(name)
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('m0019') / 'garrison.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine, "0018")
    yield engine
    engine.dispose()
    if request.param == "postgresql":
        server = create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}"'))
        server.dispose()


def _migrate(engine: Engine, revision: str) -> None:
    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        if revision == "0018":
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)


def _rows(engine: Engine, columns: str) -> Counter[tuple[Any, ...]]:
    with read_transaction(engine) as connection:
        return Counter(tuple(r) for r in connection.execute(text(f"SELECT {columns} FROM search_token")))


def test_migration_0019_fills_the_column_from_the_reference_rows(at_0018: Engine) -> None:
    token = (
        "INSERT INTO search_token (resource_type, resource_id, param, grp, system, code, text)"
        " VALUES (:t, :i, :p, 0, :s, :c, :x)"
    )
    reference = (
        "INSERT INTO search_reference (resource_type, resource_id, param, grp, target_type, target_id)"
        " VALUES (:t, :i, :p, 0, 'Patient', :target)"
    )
    with write_transaction(at_0018) as connection:
        for resource_type, rid, param in [
            ("Observation", "o1", "status"),
            ("Observation", "o1", "code"),
            ("Observation", "o2", "status"),
            ("Appointment", "ap", "status"),
        ]:
            values = {"s": f"urn:{rid}", "c": param.upper(), "x": f"{rid} {param}"}
            connection.execute(text(token), {"t": resource_type, "i": rid, "p": param, **values})
        for resource_type, rid, param, target in [
            ("Observation", "o1", "patient", "pa"),
            ("Observation", "o1", "subject", "pa"),
            ("Observation", "o2", "performer", "pb"),  # another parameter only: no patient
            ("Appointment", "ap", "patient", "pb"),
            ("Appointment", "ap", "patient", "pa"),
            ("Appointment", "ap", "patient", "pc"),
        ]:
            connection.execute(text(reference), {"t": resource_type, "i": rid, "p": param, "target": target})

    _migrate(at_0018, "head")
    assert _rows(at_0018, "resource_type, resource_id, param, patient") == Counter(
        [
            ("Observation", "o1", "status", "pa"),
            ("Observation", "o1", "code", "pa"),
            ("Observation", "o2", "status", None),
            ("Appointment", "ap", "status", "pa"),
            ("Appointment", "ap", "status", "pb"),
            ("Appointment", "ap", "status", "pc"),
        ]
    )
    # The copies keep every value of the row they copy.
    copies = _rows(at_0018, "resource_id, grp, system, code, text")
    assert copies[("ap", 0, "urn:ap", "STATUS", "ap status")] == 3
    assert copies[("o1", 0, "urn:o1", "CODE", "o1 code")] == 1

    _migrate(at_0018, "0018")
    with at_0018.connect() as connection:
        assert "patient" not in {c["name"] for c in inspect(connection).get_columns("search_token")}
    assert _rows(at_0018, "resource_type, resource_id, param") == Counter(
        [
            ("Observation", "o1", "status"),
            ("Observation", "o1", "code"),
            ("Observation", "o2", "status"),
            ("Appointment", "ap", "status"),
        ]
    )
