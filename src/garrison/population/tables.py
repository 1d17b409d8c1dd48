"""The generator's ground truth: which registrations are the same person, and which only look alike.

Duplicate registrations are planted on purpose so the patient index can be measured; which pairs
of Patient ids belong to one person is known only to the generator, so it is kept here, in an
ordinary table beside the clinical store, never in the FHIR resources themselves.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Index, Integer, String, Table

from garrison.db.schema import ID_LEN, metadata

population_pair = Table(
    "population_pair",
    metadata,
    # The two Patient ids, the smaller first so that a pair is stored once.
    Column("patient_a", String(ID_LEN), primary_key=True),
    Column("patient_b", String(ID_LEN), primary_key=True),
    # True: two registrations of one person (a planted duplicate). False: two people who are
    # deliberately hard to tell apart (twins, spouses sharing name and address, father and Jr.).
    Column("same_person", Boolean, nullable=False),
    # How the pair came about: nickname, transposed-date, married-name, typo, missing-edipi (joined
    # with "+" when several), or twins, spouse, junior.
    Column("kind", String(64), nullable=False),
    Column("seed", Integer, nullable=False),  # the generator run that planted it
    Index("ix_population_pair_b", "patient_b"),
)
