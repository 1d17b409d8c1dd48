"""The patient index's non-clinical tables: the record of every merge, for audit and unmerge.

A merge changes clinical resources (new versions in the FHIR store, with a Provenance); these
rows remember exactly which versions it wrote, so an unmerge can put back what was there.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, PrimaryKeyConstraint, String, Table, Text

from garrison.db.schema import ID_LEN, TYPE_LEN, metadata

empi_merge = Table(
    "empi_merge",
    metadata,
    Column("id", String(ID_LEN), primary_key=True),
    Column("source_id", String(ID_LEN), nullable=False),  # the Patient retired by the merge
    Column("target_id", String(ID_LEN), nullable=False),  # the surviving Patient
    Column("status", String(16), nullable=False),  # "merged" or "unmerged"
    # Who and when (AccessContext.actor; ISO-8601 UTC, fixed width like resource.last_updated).
    Column("merged_by", String(200), nullable=False),
    Column("merged_at", String(32), nullable=False),
    Column("unmerged_by", String(200), nullable=True),
    Column("unmerged_at", String(32), nullable=True),
    Column("provenance_id", String(ID_LEN), nullable=True),
    Column("unmerge_provenance_id", String(ID_LEN), nullable=True),
    Index("ix_empi_merge_source", "source_id"),
    Index("ix_empi_merge_target", "target_id"),
)

# One row per resource version a merge wrote. `role` is "source" or "target" (the two Patients),
# "repointed" (a resource whose references moved to the target) or "task" (a duplicate-review
# Task the merge closed). `changes` is JSON: for re-pointed resources the list of
# {"path": [...], "from": "Patient/<source>", "to": "Patient/<target>"} edits.
empi_merge_change = Table(
    "empi_merge_change",
    metadata,
    Column("merge_id", String(ID_LEN), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("role", String(16), nullable=False),
    Column("resource_type", String(TYPE_LEN), nullable=False),
    Column("resource_id", String(ID_LEN), nullable=False),
    Column("version_before", Integer, nullable=False),
    Column("version_after", Integer, nullable=False),
    Column("version_restored", Integer, nullable=True),  # the version the unmerge wrote
    Column("changes", Text, nullable=False),
    PrimaryKeyConstraint("merge_id", "seq"),
)
