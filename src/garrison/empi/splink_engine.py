"""Running the matching model with Splink on an offline, in-process DuckDB.

Two uses of one model (garrison.empi.model):
- `predict_pairs`: batch deduplication of a whole population (blocking rules, then scoring);
- `PairScorer`: one query record against a few hundred candidates, for `$match`. Splink writes the
  scoring SQL once; after that each call registers two small Arrow tables and runs that SQL, so a
  long-running server does not accumulate Splink's per-call tables.

DuckDB is opened with extension auto-install and auto-load off: nothing is downloaded at run time.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from garrison.empi.features import PatientFeatures
from garrison.empi.model import settings_dict

# Splink is chatty at INFO; its warnings still show.
logging.getLogger("splink").setLevel(logging.WARNING)

_LIST = pa.list_(pa.string())
_SCHEMA = pa.schema(
    [
        ("unique_id", pa.string()),
        ("first_name", pa.string()),
        ("first_name_formal", _LIST),
        ("first_name_group", pa.string()),
        ("middle_name", pa.string()),
        ("surname", pa.string()),
        ("surnames", _LIST),
        ("suffix", pa.string()),
        ("birth_date", pa.string()),
        ("birth_date_swapped", pa.string()),
        ("birth_year", pa.string()),
        ("birth_order", pa.string()),
        ("sex", pa.string()),
        ("postal_code", pa.string()),
        ("address_line", pa.string()),
        ("phone", pa.string()),
        ("edipi", pa.string()),
        ("va_icn", pa.string()),
        ("sponsor_edipi", pa.string()),
        ("fmp", pa.string()),
    ]
)
_TF_SCHEMA = _SCHEMA.append(pa.field("tf_first_name", pa.float64())).append(
    pa.field("tf_surname", pa.float64())
)


@dataclass(frozen=True, slots=True)
class ScoredPair:
    left: str
    right: str
    match_weight: float
    match_probability: float


def offline_duckdb() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that never fetches extensions (httpfs, fts, ... try to download)."""
    return duckdb.connect(
        ":memory:",
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
    )


def features_table(features: Sequence[PatientFeatures]) -> pa.Table:
    return pa.Table.from_pylist([f.as_record() for f in features], schema=_SCHEMA)


def predict_pairs(
    features: Sequence[PatientFeatures],
    *,
    min_probability: float,
    first_name_tf: dict[str, float] | None = None,
    surname_tf: dict[str, float] | None = None,
) -> list[ScoredPair]:
    """Every blocked pair scoring at least `min_probability`, best first (ties by id).

    Term frequencies default to the shares within `features`; pass the population's own when
    scoring a subset.
    """
    from splink import DuckDBAPI, Linker

    if len(features) < 2:
        return []
    connection = offline_duckdb()
    try:
        db_api = DuckDBAPI(connection)
        # Splink 5: tables are registered with the database API before the Linker sees them.
        table = db_api.register(features_table(features), dataset_display_name="patients")
        linker = Linker(table, settings_dict(), log_level=None)
        for column, shares in (("first_name", first_name_tf), ("surname", surname_tf)):
            if shares is not None:
                lookup = db_api.register(
                    pa.Table.from_pylist(
                        [{column: k, f"tf_{column}": v} for k, v in shares.items()],
                        schema=pa.schema([(column, pa.string()), (f"tf_{column}", pa.float64())]),
                    )
                )
                linker.table_management.register_term_frequency_lookup(lookup, column)
        predictions = linker.inference.predict(
            threshold_match_probability=min_probability, warning_mode="never"
        )
        rows = connection.sql(
            f"SELECT unique_id_l, unique_id_r, match_weight, match_probability "
            f"FROM {predictions.physical_name}"
        ).fetchall()
    finally:
        connection.close()
    pairs = []
    for a, b, weight, probability in rows:
        left, right = sorted((str(a), str(b)))
        pairs.append(ScoredPair(left, right, float(weight), float(probability)))
    pairs.sort(key=lambda s: (-s.match_weight, s.left, s.right))
    return pairs


class PairScorer:
    """Scores one record against many with the model's SQL, compiled once by Splink."""

    def __init__(self) -> None:
        self._sql = _compile_scoring_sql()
        self._connection = offline_duckdb()
        self._lock = threading.Lock()  # a DuckDB connection serves one thread at a time

    def score(
        self, query: dict[str, Any], candidates: Sequence[dict[str, Any]]
    ) -> list[tuple[str, float, float]]:
        """(candidate id, match weight, match probability) for each candidate, in input order.

        Records are PatientFeatures records plus `tf_first_name` and `tf_surname`.
        """
        if not candidates:
            return []
        left = pa.Table.from_pylist([query], schema=_TF_SCHEMA)
        right = pa.Table.from_pylist(list(candidates), schema=_TF_SCHEMA)
        with self._lock:
            self._connection.register(_LEFT, left)
            self._connection.register(_RIGHT, right)
            try:
                rows = self._connection.sql(self._sql).fetchall()
            finally:
                self._connection.unregister(_LEFT)
                self._connection.unregister(_RIGHT)
        scored = {str(r[0]): (float(r[1]), float(r[2])) for r in rows}
        return [(c["unique_id"], *scored[c["unique_id"]]) for c in candidates]


_LEFT = "garrison_empi_query"
_RIGHT = "garrison_empi_candidates"
_SPLINK_LEFT = re.compile(r"__splink__compare_records_left_[A-Za-z0-9]+")
_SPLINK_RIGHT = re.compile(r"__splink__compare_records_right_[A-Za-z0-9]+")


def _compile_scoring_sql() -> str:
    """Let Splink write the SQL that scores left x right, then point it at fixed table names."""
    from splink import DuckDBAPI
    from splink.internals.realtime import compare_records

    connection = offline_duckdb()
    try:
        sample = {name: None for name in _TF_SCHEMA.names} | {"unique_id": "sample", "suffix": ""}
        sample_table = pa.Table.from_pylist([sample], schema=_TF_SCHEMA)
        result = compare_records(sample_table, sample_table, settings_dict(), DuckDBAPI(connection))
        sql = result.sql_used_to_create
    finally:
        connection.close()
    if not isinstance(sql, str) or not _SPLINK_LEFT.search(sql) or not _SPLINK_RIGHT.search(sql):
        raise RuntimeError("Splink's scoring SQL did not name its input tables as expected")
    sql = _SPLINK_RIGHT.sub(_RIGHT, _SPLINK_LEFT.sub(_LEFT, sql))
    return f"SELECT unique_id_r, match_weight, match_probability FROM ({sql}) AS scored"
