"""Synthetic populations of any size from the 60 Synthea transaction Bundles in ../shared.

Patient n is a re-identified copy of source bundle n % 60: every UUID in the bundle (fullUrls,
ids, urn:uuid references, identifier values) is replaced by a new one, consistently within the
bundle, so references still resolve; names get a per-patient suffix and the SSN a per-patient
number. The work is string-level on the raw JSON: each source is cut once into a template
(text segments between UUID/name slots), and a patient is one `bytes.join` with fresh values,
so generation runs far faster than the server can load (thousands of patients per second).

The same patient can also be rendered as NDJSON (one resource per line, ids kept, references
rewritten from `urn:uuid:X` to `Type/X`) for `garrison import`.

    python benchmarks/population.py --patients 1000 --out /tmp/pop --format ndjson
"""

from __future__ import annotations

import argparse
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

SYNTHEA_DIR = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "synthea"

_SLOTS = re.compile(
    rb"(?P<uuid>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    rb'|"family":\s*"(?P<family>[^"\\]*)"'
    rb'|"given":\s*\[\s*"(?P<given>[^"\\]*)"'
    rb"|(?P<ssn>999-\d\d-\d{4})"
)
_TRAILING_DIGITS = re.compile(rb"\d+$")


class _Template:
    """Text cut at its slots. Slot k (k >= 0) is the k-th distinct UUID of the source bundle;
    name slots and SSN slots get negative codes resolved per patient."""

    def __init__(self, text: bytes, uuid_keys: dict[bytes, int], names: list[bytes]) -> None:
        self.segments: list[bytes] = []
        self.slots: list[int] = []
        position = 0
        for match in _SLOTS.finditer(text):
            group = match.lastgroup
            assert group is not None
            start, end = match.span(group)
            self.segments.append(text[position:start])
            position = end
            value = match.group(group)
            if group == "uuid":
                self.slots.append(uuid_keys.setdefault(value, len(uuid_keys)))
            elif group == "ssn":
                self.slots.append(-1)
            else:
                # Names: keep the Synthea stem ("Koepp521" -> "Koepp") and add the patient number.
                names.append(_TRAILING_DIGITS.sub(b"", value))
                self.slots.append(-2 - (len(names) - 1))
        self.tail = text[position:]

    def render(self, uuids: list[bytes], names: list[bytes], ssn: bytes) -> bytes:
        values = [uuids[s] if s >= 0 else ssn if s == -1 else names[-2 - s] for s in self.slots]
        parts: list[bytes] = []
        for segment, value in zip(self.segments, values, strict=True):
            parts.append(segment)
            parts.append(value)
        parts.append(self.tail)
        return b"".join(parts)


@dataclass(frozen=True)
class SourceBundle:
    name: str
    resources: int
    patient_entry: int  # index of the Patient entry in the Bundle
    patient_key: int  # slot number of the Patient's UUID
    observation_codes: tuple[str, ...]  # "system|code", most frequent first
    bundle: _Template
    ndjson: _Template
    uuid_count: int
    names: tuple[bytes, ...]


@dataclass(frozen=True)
class GeneratedBundle:
    number: int
    source: str
    body: bytes
    resources: int
    patient_entry: int
    patient_uuid: str  # the fullUrl UUID (the server assigns its own id to POSTed entries)
    observation_codes: tuple[str, ...]


def _rewrite_references(value: Any, types: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str) and item.startswith("urn:uuid:"):
                target = item[len("urn:uuid:") :]
                out[key] = f"{types[target]}/{target}" if target in types else item
            else:
                out[key] = _rewrite_references(item, types)
        return out
    if isinstance(value, list):
        return [_rewrite_references(item, types) for item in value]
    return value


def _load_source(path: Path) -> SourceBundle:
    raw = path.read_bytes()
    data = orjson.loads(raw)
    entries = data["entry"]
    types = {
        e["fullUrl"][len("urn:uuid:") :]: e["resource"]["resourceType"]
        for e in entries
        if e.get("fullUrl", "").startswith("urn:uuid:")
    }
    patient_entry = next(i for i, e in enumerate(entries) if e["resource"]["resourceType"] == "Patient")
    codes: Counter[str] = Counter()
    for e in entries:
        res = e["resource"]
        if res["resourceType"] == "Observation":
            for coding in res.get("code", {}).get("coding", []):
                if coding.get("system") and coding.get("code"):
                    codes[f"{coding['system']}|{coding['code']}"] += 1
    uuid_keys: dict[bytes, int] = {}
    names: list[bytes] = []
    bundle = _Template(raw, uuid_keys, names)
    lines = b"\n".join(orjson.dumps(_rewrite_references(e["resource"], types)) for e in entries) + b"\n"
    ndjson = _Template(lines, uuid_keys, names)
    patient_uuid = entries[patient_entry]["fullUrl"][len("urn:uuid:") :].encode()
    return SourceBundle(
        name=path.stem,
        resources=len(entries),
        patient_entry=patient_entry,
        patient_key=uuid_keys[patient_uuid],
        observation_codes=tuple(c for c, _ in codes.most_common()),
        bundle=bundle,
        ndjson=ndjson,
        uuid_count=len(uuid_keys),
        names=tuple(names),
    )


def _uuid4(rng: random.Random) -> bytes:
    value = rng.getrandbits(128)
    # Set the RFC 4122 version (4) and variant bits.
    value = (value & ~(0xF << 76)) | (4 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".encode()


class Population:
    """Patients 0, 1, 2, ... generated deterministically (the same n gives the same patient)."""

    def __init__(self, source_dir: Path = SYNTHEA_DIR, seed: int = 1) -> None:
        files = sorted(source_dir.glob("*.json"))
        if not files:
            raise SystemExit(f"no Synthea bundles in {source_dir}")
        self.sources = [_load_source(p) for p in files]
        self.seed = seed

    def _values(self, n: int) -> tuple[SourceBundle, list[bytes], list[bytes], bytes]:
        source = self.sources[n % len(self.sources)]
        rng = random.Random(self.seed * 1_000_003 + n)
        uuids = [_uuid4(rng) for _ in range(source.uuid_count)]
        suffix = str(n).encode()
        names = [stem + suffix for stem in source.names]
        ssn = f"999-{n // 10_000 % 100:02d}-{n % 10_000:04d}".encode()
        return source, uuids, names, ssn

    def bundle(self, n: int) -> GeneratedBundle:
        source, uuids, names, ssn = self._values(n)
        return GeneratedBundle(
            number=n,
            source=source.name,
            body=source.bundle.render(uuids, names, ssn),
            resources=source.resources,
            patient_entry=source.patient_entry,
            patient_uuid=uuids[source.patient_key].decode(),
            observation_codes=source.observation_codes,
        )

    def ndjson(self, n: int) -> tuple[bytes, int, str]:
        """Patient n's resources as NDJSON lines, their count and the Patient id."""
        source, uuids, names, ssn = self._values(n)
        return source.ndjson.render(uuids, names, ssn), source.resources, uuids[source.patient_key].decode()

    def resources_for(self, patients: int) -> int:
        return sum(self.sources[n % len(self.sources)].resources for n in range(patients))

    def write_ndjson(self, out_dir: Path, patients: int, per_file: int = 100) -> tuple[list[Path], int]:
        """Write patients 0..patients-1 as NDJSON files of `per_file` patients each (resources in
        bundle order, so a referenced resource is written before the resources that refer to it)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        files: list[Path] = []
        total = 0
        for first in range(0, patients, per_file):
            path = out_dir / f"population-{first // per_file:05d}.ndjson"
            with path.open("wb") as handle:
                for n in range(first, min(first + per_file, patients)):
                    text, count, _ = self.ndjson(n)
                    handle.write(text)
                    total += count
            files.append(path)
        return files, total

    def write_bundles(self, out_dir: Path, patients: int) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        files = []
        for n in range(patients):
            generated = self.bundle(n)
            path = out_dir / f"patient-{n:06d}.json"
            path.write_bytes(generated.body)
            files.append(path)
        return files


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--out", type=Path, help="write the population here (default: only time it)")
    parser.add_argument("--format", choices=["bundles", "ndjson"], default="bundles")
    args = parser.parse_args()
    started = time.perf_counter()
    population = Population()
    print(f"loaded {len(population.sources)} source bundles in {time.perf_counter() - started:.2f} s")
    started = time.perf_counter()
    if args.out and args.format == "ndjson":
        files, total = population.write_ndjson(args.out, args.patients)
        print(f"wrote {total:,} resources in {len(files)} NDJSON files to {args.out}")
    elif args.out:
        files = population.write_bundles(args.out, args.patients)
        print(f"wrote {len(files)} transaction bundles to {args.out}")
    else:
        size = sum(len(population.bundle(n).body) for n in range(args.patients))
        print(f"generated {args.patients} bundles ({size / 1e6:,.0f} MB)")
    elapsed = time.perf_counter() - started
    print(
        f"{args.patients / elapsed:,.0f} patients/s, "
        f"{population.resources_for(args.patients) / elapsed:,.0f} resources/s"
    )


if __name__ == "__main__":
    main()
