"""The `garrison` command, run for real in a subprocess against the test database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, create_engine, delete, func, insert, inspect, select

from garrison.db.engine import read_transaction, write_transaction
from garrison.db.schema import INDEX_TABLES, resource
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.settings import Settings
from tests.conftest import clear_tables

# The two smallest Synthea patients (70 and 101 entries): enough variety, quick to load.
SYNTHEA_FILES = (
    "Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json",
    "Osvaldo_Graham_4fd1c2c4-9b09-4037-b218-a755900d1a8e.json",
)


def database_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def garrison(
    *args: str | Path, url: str, data_dir: Path, expect: int | None = 0
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GARRISON_DATABASE_URL": url, "GARRISON_DATA_DIR": str(data_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "garrison.cli.main", *map(str, args)],
        env=env,
        cwd=data_dir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if expect is not None:
        assert result.returncode == expect, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def synthea(shared_testdata: Path) -> list[Path]:
    return [shared_testdata / "synthea" / name for name in SYNTHEA_FILES]


def bundle_counts(paths: list[Path]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in paths:
        for entry in orjson.loads(path.read_bytes())["entry"]:
            counts[entry["resource"]["resourceType"]] += 1
    return counts


def stored_counts(engine: Engine) -> Counter[str]:
    with read_transaction(engine) as connection:
        rows = connection.execute(
            select(resource.c.resource_type, func.count())
            .where(resource.c.deleted.is_(False))
            .group_by(resource.c.resource_type)
        ).all()
    return Counter({row[0]: row[1] for row in rows})


def stored_resources(engine: Engine) -> dict[tuple[str, str], dict[str, Any]]:
    """Every current resource, without the meta the server stamps on each write."""
    with read_transaction(engine) as connection:
        rows = connection.execute(
            select(resource.c.resource_type, resource.c.id, resource.c.content).where(
                resource.c.deleted.is_(False)
            )
        ).all()
    found = {}
    for row in rows:
        content = orjson.loads(row.content)
        meta = content.pop("meta", {})
        assert meta["versionId"] == "1" and meta["lastUpdated"]
        found[(row.resource_type, row.id)] = content
    return found


def index_rows(
    engine: Engine, *, skip_params: frozenset[str] = frozenset()
) -> dict[str, Counter[tuple[Any, ...]]]:
    """Every search index row, per table, as a multiset."""
    snapshot: dict[str, Counter[tuple[Any, ...]]] = {}
    with read_transaction(engine) as connection:
        for name, table in INDEX_TABLES.items():
            rows = connection.execute(select(table)).all()
            snapshot[name] = Counter(tuple(row) for row in rows if row.param not in skip_params)
    return snapshot


def test_db_upgrade_creates_the_schema(
    engine: Engine, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # A brand-new database of the same kind as the test engine.
    if engine.dialect.name == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        url = cluster.create_database(f"garrison_cli_{uuid.uuid4().hex[:12]}")
    else:
        url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    result = garrison("db", "upgrade", url=url, data_dir=tmp_path)
    assert "database is up to date" in result.stdout
    fresh = create_engine(url)
    try:
        tables = set(inspect(fresh).get_table_names())
    finally:
        fresh.dispose()
    assert {"resource", "resource_history", *(t.name for t in INDEX_TABLES.values())} <= tables
    # Upgrading again is a no-op.
    garrison("db", "upgrade", url=url, data_dir=tmp_path)


def test_import_export_and_reimport(engine: Engine, shared_testdata: Path, tmp_path: Path) -> None:
    url = database_url(engine)
    files = synthea(shared_testdata)
    expected = bundle_counts(files)

    imported = garrison("import", "--no-map-network", *files, url=url, data_dir=tmp_path)
    summary = re.search(r"imported ([\d,]+) resources from (\d+) files", imported.stdout)
    assert summary, imported.stdout
    assert int(summary[1].replace(",", "")) == expected.total() == 171
    assert summary[2] == "2"
    listed = {
        m[1]: int(m[2].replace(",", "")) for m in re.finditer(r"^\s+(\w+)\s+([\d,]+)$", imported.stdout, re.M)
    }
    assert listed == dict(expected)
    assert stored_counts(engine) == expected

    out = tmp_path / "export"
    exported = garrison("export", "--out", out, url=url, data_dir=tmp_path)
    assert f"exported {expected.total()} resources" in exported.stdout
    files_written = {p.stem: p for p in out.glob("*.ndjson")}
    assert set(files_written) == set(expected)
    for resource_type, path in files_written.items():
        lines = path.read_bytes().splitlines()
        assert len(lines) == expected[resource_type]
        assert {orjson.loads(line)["resourceType"] for line in lines} == {resource_type}
        assert f"{path}: {expected[resource_type]}" in exported.stdout
    only = tmp_path / "only-patients"
    garrison("export", "--out", only, "--type", "Patient", url=url, data_dir=tmp_path)
    assert [p.name for p in only.iterdir()] == ["Patient.ndjson"]

    before = stored_resources(engine)
    # lastUpdated differs between the two loads; every other index row must be identical.
    rows_before = index_rows(engine, skip_params=frozenset({"_lastUpdated"}))
    clear_tables(engine)
    reimported = garrison("import", "--no-map-network", out, url=url, data_dir=tmp_path)
    assert f"imported {expected.total()} resources from {len(expected)} files" in reimported.stdout
    assert stored_resources(engine) == before  # same ids, same content
    assert index_rows(engine, skip_params=frozenset({"_lastUpdated"})) == rows_before

    # Importing the export again updates in place: ids kept, a second version each.
    garrison(
        "import", "--no-map-network", "--workers", "1", out / "Patient.ndjson", url=url, data_dir=tmp_path
    )
    with read_transaction(engine) as connection:
        versions = connection.execute(
            select(resource.c.version_id).where(resource.c.resource_type == "Patient")
        ).scalars()
        assert list(versions) == [2, 2]
    assert stored_counts(engine) == expected


def search_ids(engine: Engine, definitions: Definitions, resource_type: str, **params: str) -> list[str]:
    settings = Settings(database_url=database_url(engine))
    with read_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("tests:cli"))
        request = SearchRequest(resource_type=resource_type, params=[*params.items(), ("_count", "1000")])
        return sorted(m.id for m in repo.search(request).matches)


def test_reindex_leaves_search_unchanged(
    engine: Engine, definitions: Definitions, shared_testdata: Path, tmp_path: Path
) -> None:
    url = database_url(engine)
    garrison("import", "--no-map-network", *synthea(shared_testdata), url=url, data_dir=tmp_path)
    patient = search_ids(engine, definitions, "Patient", family="Kreiger")
    assert len(patient) == 1
    queries: list[tuple[str, dict[str, str]]] = [
        ("Patient", {"family": "Kreiger"}),
        ("Observation", {"subject": f"Patient/{patient[0]}", "code": "http://loinc.org|8302-2"}),
        ("Observation", {"date": "ge2015", "category": "vital-signs"}),
        ("Encounter", {"patient": patient[0]}),
        ("Immunization", {"date": "lt2020"}),
    ]
    results = {f"{t}?{p}": search_ids(engine, definitions, t, **p) for t, p in queries}
    assert all(results.values()), results
    before = index_rows(engine)
    assert sum(c.total() for c in before.values()) > 1000

    # Make the index stale: lose a table's rows, keep a row for a resource that no longer says so.
    token = INDEX_TABLES["token"]
    string = INDEX_TABLES["string"]
    with write_transaction(engine) as connection:
        connection.execute(delete(string))
        connection.execute(
            insert(token).values(
                resource_type="Patient",
                resource_id=patient[0],
                param="gender",
                grp=0,
                system=None,
                code="robot",
            )
        )
    assert search_ids(engine, definitions, "Patient", family="Kreiger") == []

    result = garrison("reindex", url=url, data_dir=tmp_path)
    assert f"reindexed {stored_counts(engine).total()} resources" in result.stdout
    assert index_rows(engine) == before
    assert {f"{t}?{p}": search_ids(engine, definitions, t, **p) for t, p in queries} == results


def transaction(*resources: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": r, "request": {"method": "POST", "url": r["resourceType"]}} for r in resources
            ],
        }
    )


def cli_patient(value: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": "urn:test:cli", "value": value}], **extra}


def test_import_of_broken_files_reports_and_fails(engine: Engine, tmp_path: Path) -> None:
    url = database_url(engine)
    good = tmp_path / "good.json"
    good.write_bytes(transaction(cli_patient("good-1"), cli_patient("good-2")))
    # The third entry is invalid: the whole transaction, and so the whole file, is refused.
    broken = tmp_path / "broken.json"
    broken.write_bytes(
        transaction(cli_patient("broken-1"), cli_patient("broken-2"), cli_patient("broken-3", gender="robot"))
    )
    not_json = tmp_path / "truncated.json"
    not_json.write_bytes(transaction(cli_patient("truncated-1"))[:-10])

    result = garrison(
        "import", "--no-map-network", good, broken, not_json, url=url, data_dir=tmp_path, expect=1
    )
    output = result.stdout + result.stderr
    assert "imported 2 resources from 3 files" in result.stdout
    assert re.search(r"error: broken\.json: .*gender", output), output
    assert "error: truncated.json:" in output
    assert stored_counts(engine) == Counter({"Patient": 2})
    stored_values = {r["identifier"][0]["value"] for r in stored_resources(engine).values()}
    assert stored_values == {"good-1", "good-2"}

    # NDJSON loads line by line (as a bulk export would be read back): each bad line is reported
    # with its line number and the command fails, while the valid lines are kept.
    ndjson = tmp_path / "mixed.ndjson"
    ndjson.write_bytes(
        b"\n".join(
            [
                orjson.dumps(cli_patient("nd-1", id="nd-1")),
                b'{"resourceType": "Patient", "id": "nd-2",',
                orjson.dumps(cli_patient("nd-3", id="nd-3", birthDate="1990-13-45")),
                orjson.dumps(cli_patient("nd-4", id="nd-4")),
            ]
        )
    )
    result = garrison("import", "--workers", "1", ndjson, url=url, data_dir=tmp_path, expect=1)
    output = result.stdout + result.stderr
    assert "mixed.ndjson:2: not JSON" in output
    assert re.search(r"mixed\.ndjson:3: Patient/nd-3 invalid: .*birthDate", output), output
    ids = {key[1] for key in stored_resources(engine) if key[1].startswith("nd-")}
    assert ids == {"nd-1", "nd-4"}

    # Nothing to import at all is refused before touching the database.
    missing = garrison("import", tmp_path / "absent.json", url=url, data_dir=tmp_path, expect=2)
    assert "does not exist" in missing.stderr


def test_imported_synthea_care_is_mapped_onto_the_network(
    engine: Engine, shared_testdata: Path, tmp_path: Path, definitions: Definitions, settings: Settings
) -> None:
    """Issue 4: Synthea patients join their nearest MTF; their civilian hospitals join the
    network as TRICARE providers, so that facility's staff see the whole record."""
    from garrison.beneficiaries.vocabulary import TRICARE_NETWORK_PROVIDER
    from garrison.network.catalogue import facility_by_code

    url = database_url(engine)
    garrison("import", *synthea(shared_testdata), url=url, data_dir=tmp_path)
    with read_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("tests"))
        patients = repo.search(SearchRequest("Patient", [("_count", "10")])).matches
        assert len(patients) == 2
        for stored in patients:
            patient = stored.parsed()
            home = repo.read(
                "Organization", patient["managingOrganization"]["reference"].split("/")[1]
            ).parsed()
            code = next(i["value"] for i in home["identifier"] if "dmis" in i["system"])
            facility = facility_by_code(code)
            assert facility.agency.value == "dod"
            assert any(i["system"].endswith(f"/mrn/{code}") for i in patient["identifier"])
            # A physician at that MTF sees the patient's encounters at the civilian hospitals.
            doctor = AccessContext(actor="Practitioner/x", role="physician", facility=home["id"])
            seen = Repository(connection, definitions, settings, doctor).search(
                SearchRequest("Encounter", [("patient", stored.id), ("_count", "500")])
            )
            assert (
                seen.matches
                and seen.total
                == repo.search(SearchRequest("Encounter", [("patient", stored.id), ("_count", "500")])).total
            )
        providers = repo.search(
            SearchRequest("Organization", [("identifier", f"{TRICARE_NETWORK_PROVIDER}|"), ("_count", "500")])
        )
        synthea_orgs = [
            m for m in providers.matches if m.parsed()["identifier"][-1]["value"].startswith("S-")
        ]
        assert synthea_orgs
    # The job is audited once, with what it loaded (per-resource audit is for callers, not jobs).
    garrison("export", "--out", tmp_path / "out", url=url, data_dir=tmp_path)
    from garrison.audit.schema import audit_log

    with read_transaction(engine) as connection:
        jobs = connection.execute(
            select(audit_log.c.action, audit_log.c.detail).order_by(audit_log.c.seq)
        ).all()
    actions = [row.action for row in jobs]
    assert actions.count("system:job:import") == 1
    assert actions.count("system:job:export") == 1
    assert "171" in jobs[actions.index("system:job:import")].detail
