"""`garrison patients ...` in process (click's runner) against the test database."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from garrison.cli.main import main
from garrison.cli.patients import EXIT_LIKELY_DUPLICATE
from tests.empi_fixtures import carter_family, registration_of

Invoke = Callable[..., Result]


@pytest.fixture
def run(engine: Engine, tmp_path: Path) -> Invoke:
    runner = CliRunner()
    env = {
        "GARRISON_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "GARRISON_DATA_DIR": str(tmp_path),
    }

    def invoke(*args: str, expect: int = 0) -> Result:
        result = runner.invoke(main, ["patients", *args], env=env, catch_exceptions=False)
        assert result.exit_code == expect, result.output
        return result

    return invoke


def _found(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match, text
    return match.group(1)


def _file(tmp_path: Path, name: str, content: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(content))
    return str(path)


def test_register_find_review_merge_and_unmerge(run: Invoke, tmp_path: Path) -> None:
    invoke = run
    john = registration_of(carter_family()["john"])
    registered = invoke("register", _file(tmp_path, "john.json", john))
    john_id = _found(r"registered Patient/(\S+)", registered.output)

    again = dict(john, name=[{"use": "official", "family": "Carter", "given": ["Jack"]}])
    again.pop("identifier")
    path = _file(tmp_path, "jack.json", again)
    warned = invoke("register", path, expect=EXIT_LIKELY_DUPLICATE)
    assert "likely already registered" in warned.output
    assert f"Patient/{john_id}" in warned.output
    forced = invoke("register", path, "--confirm-new")
    jack_id = _found(r"registered Patient/(\S+)", forced.output)
    assert f"Patient/{john_id}" in forced.output  # still listed for later review

    assert f"Patient/{john_id}" in invoke("match", path).output
    found = invoke("find-duplicates")
    assert "1 new review tasks" in found.output
    assert "0 new review tasks, 1 already queued" in invoke("find-duplicates").output
    queue = invoke("queue").output
    assert f"Patient/{min(john_id, jack_id)}  Patient/{max(john_id, jack_id)}" in queue

    assert "would re-point" in invoke("merge", jack_id, john_id, "--preview").output
    merged = invoke("merge", f"Patient/{jack_id}", john_id)
    merge_id = _found(r"merge (\S+)", merged.output)
    assert "the duplicate-review queue is empty" in invoke("queue").output
    assert merge_id in invoke("merges", "--patient", john_id).output
    assert "undid merge" in invoke("unmerge", merge_id).output
    task_id = _found(r"Task/(\S+)", invoke("queue").output)
    assert "are two people" in invoke("not-duplicate", task_id).output
    assert "(not-duplicate)" in invoke("queue", "--all").output

    failed = invoke("unmerge", merge_id, expect=1)
    assert "409" in failed.output


def test_register_rejects_what_is_not_a_patient(run: Invoke, tmp_path: Path) -> None:
    invoke = run
    result = invoke("register", _file(tmp_path, "obs.json", {"resourceType": "Observation"}), expect=1)
    assert "not a FHIR Patient" in result.output
