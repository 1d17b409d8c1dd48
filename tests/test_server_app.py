"""The application of a `garrison serve` worker process (`garrison.web.app.server_app`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import gc, json
from garrison.fhir.search import indexer
from garrison.fhir.validation import validator
from garrison.web.app import server_app
app = server_app()
print(json.dumps({
    "frozen": gc.get_freeze_count(),
    "tracked": len(gc.get_objects()),
    "indexers": len(indexer._INDEXERS),
    "validators": len(validator._cache),
    "routes": len(app.routes),
}))
"""


def test_the_server_compiles_before_serving_and_freezes_what_lives_as_long_as_it(tmp_path: Path) -> None:
    """The validator and the indexer are compiled when the worker starts, not by its first
    request, and the objects built then (definitions, compiled plans) are frozen out of the
    cyclic collector's scans."""
    env = {**os.environ, "GARRISON_DATA_DIR": str(tmp_path)}
    env.pop("GARRISON_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        check=False,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout.strip().splitlines()[-1])
    assert state["indexers"] == 1 and state["validators"] == 1
    # Nearly everything alive once the app is built is frozen (what is left: the objects made
    # after the freeze, this script's included).
    assert state["frozen"] > 20 * state["tracked"], state
    assert state["routes"] > 0
