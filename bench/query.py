"""C-FIND engine latency over a synthetic index: prints one JSON object (never gated).

    python -m bench.query [--instances 1000000] [--studies 10000] [--repeat 50]

Builds an index directly with ``IndexWriter`` (batches of ``--batch`` records, no fsync) in a
temporary directory: ``--studies`` studies of two per patient, 4 series each, the instances
spread evenly; patient names drawn from a few family names (about 1 in 8 starts with SMI),
study dates spread over ten years. Then, over ``--repeat`` random queries each, the median
and p99 wall time (ms) of running ``find`` to exhaustion for:

- ``study_by_patient_id``: STUDY level, exact PatientID (by_patient_id);
- ``study_by_name_wildcard``: STUDY level, PatientName ``SMI*`` (prefix scan of
  by_patient_name; the same query every time, ~1/8 of all studies match);
- ``study_by_date_month``: STUDY level, StudyDate over one month (range scan of
  by_study_date);
- ``series_by_study_uid``: SERIES level, StudyInstanceUID (study_series);
- ``image_by_series_uid``: IMAGE level, SeriesInstanceUID (series_instances).

Each query asks for about ten return keys (derived counts included). Also reported: µs per
response Identifier (``ResponseEncoder`` vs pydicom ``write_dataset`` for the same values),
µs to decode a request Identifier (pydicom), and the matches/s of a relational IMAGE query
streaming every instance (first ``--stream`` matches).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.micro.ring import cpu_model, git_sha
from workers.header import IndexAttributes
from workers.index.reader import IndexReader
from workers.index.schema import DuplicatePolicy, InstanceRecord
from workers.index.writer import IndexWriter
from workers.query.engine import find
from workers.query.identifier import (
    EXPLICIT_VR_LE,
    Query,
    QueryKey,
    ResponseEncoder,
    decode_identifier,
    make_query,
)
from workers.query.keys import BY_KEYWORD

FAMILIES = ["SMITH", "JONES", "BROWN", "TAYLOR", "WILSON", "DAVIES", "EVANS", "THOMAS"]
GIVEN = ["JOHN", "ANNA", "PAUL", "MARY", "JAMES", "LINDA"]
SERIES_PER_STUDY = 4
MODALITIES = ["CT", "MR", "US", "CR", "PT"]


def study_date(s: int) -> str:
    """Study ``s``'s date: spread over 2014-2023 (days 1-28 of every month)."""
    n = (s * 7919) % (10 * 12 * 28)
    year, rest = divmod(n, 12 * 28)
    month, day = divmod(rest, 28)
    return f"{2014 + year:04d}{month + 1:02d}{day + 1:02d}"


def patient_of(s: int) -> tuple[str, str]:
    p = s // 2
    return f"PID{p:07d}", f"{FAMILIES[p % len(FAMILIES)]}{p % 97}^{GIVEN[p % len(GIVEN)]}"


def records_of(studies: range, per_study: int) -> list[InstanceRecord]:
    out: list[InstanceRecord] = []
    for s in studies:
        pid, name = patient_of(s)
        for i in range(per_study):
            se = i % SERIES_PER_STUDY
            attrs = IndexAttributes(
                study_instance_uid=f"1.2.826.0.1.{s}", patient_id=pid, patient_name=name,
                patient_birth_date="19700101", patient_sex="O", study_date=study_date(s),
                study_time="101010", accession_number=f"ACC{s:08d}",
                study_description="BENCH", specific_character_set="ISO_IR 192",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                sop_instance_uid=f"1.2.826.0.1.{s}.{se}.{i}",
                series_instance_uid=f"1.2.826.0.1.{s}.{se}", series_number=str(se),
                modality=MODALITIES[(s + se) % len(MODALITIES)], instance_number=str(i),
                rows="512", columns="512",
            )
            out.append(InstanceRecord.from_attributes(
                attrs, relpath=f"objects/{s}/{i}", size_bytes=500_000,
                transfer_syntax_uid=EXPLICIT_VR_LE, received_at=1.7e9, calling_ae="BENCH"))
    return out


def build(path: Path, instances: int, studies: int, batch: int) -> dict[str, float]:
    """The index, ``batch`` records per write transaction; records generated per chunk."""
    per_study = max(1, instances // studies)
    studies_per_chunk = max(1, batch // per_study)
    writer = IndexWriter(path, sync=False)
    t0 = time.perf_counter()
    try:
        for first in range(0, studies, studies_per_chunk):
            chunk = records_of(range(first, min(studies, first + studies_per_chunk)), per_study)
            for i in range(0, len(chunk), batch):
                writer.apply_batch(chunk[i:i + batch], DuplicatePolicy.KEEP)
    finally:
        writer.close()
    seconds = time.perf_counter() - t0
    return {"build_s": round(seconds, 1), "records_per_s": round(per_study * studies / seconds)}


# ---- queries ---------------------------------------------------------------------------------

STUDY_RETURN = ["StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate", "StudyDate",
                "StudyTime", "AccessionNumber", "StudyDescription", "ModalitiesInStudy",
                "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"]
SERIES_RETURN = ["SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
                 "NumberOfSeriesRelatedInstances", "PatientName", "StudyDate"]
IMAGE_RETURN = ["SOPInstanceUID", "SOPClassUID", "InstanceNumber", "Rows", "Columns"]


def query(level: str, match: dict[str, str], returned: list[str],
          relational: bool = False) -> Query:
    keys = {kw: "" for kw in returned} | match
    return make_query("STUDY", level, [QueryKey(BY_KEYWORD[k].tag, BY_KEYWORD[k].vr, v)
                                       for k, v in keys.items()], relational=relational)


def timed(reader: IndexReader, make: Callable[[random.Random], Query], repeat: int,
          rng: random.Random) -> dict[str, float]:
    times, counts = [], []
    for _ in range(repeat):
        q = make(rng)
        t0 = time.perf_counter()
        n = sum(1 for _ in find(reader, q))
        times.append((time.perf_counter() - t0) * 1000)
        counts.append(n)
    times.sort()
    return {"median_ms": round(statistics.median(times), 3),
            "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 3),
            "median_matches": statistics.median(counts)}


def per_call_us(fn: Callable[[], Any], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return round((time.perf_counter() - t0) / n * 1e6, 2)


def encode_costs(reader: IndexReader) -> dict[str, float]:
    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    q = query("STUDY", {"StudyInstanceUID": "1.2.826.0.1.0"}, STUDY_RETURN)
    [result] = list(find(reader, q))
    encoder = ResponseEncoder(q, EXPLICIT_VR_LE, "PACS")

    def with_pydicom() -> bytes:
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.QueryRetrieveLevel = "STUDY"
        ds.RetrieveAETitle = "PACS"
        for tag, value in result.items():
            ds.add_new(tag, q.keys[tag].vr, value)
        fp = DicomBytesIO()
        fp.is_implicit_VR, fp.is_little_endian = False, True
        write_dataset(fp, ds)
        return fp.getvalue()

    request = with_pydicom()
    return {
        "encode_response_us": per_call_us(lambda: encoder.encode(result), 20000),
        "encode_response_pydicom_us": per_call_us(with_pydicom, 2000),
        "decode_request_us": per_call_us(
            lambda: decode_identifier(request, EXPLICIT_VR_LE, "STUDY"), 2000),
    }


def stream_rate(reader: IndexReader, limit: int) -> dict[str, float]:
    q = query("IMAGE", {}, IMAGE_RETURN, relational=True)
    encoder = ResponseEncoder(q, EXPLICIT_VR_LE, "PACS")
    t0 = time.perf_counter()
    n = sum(len(encoder.encode(r)) > 0 for r in itertools.islice(find(reader, q), limit))
    seconds = time.perf_counter() - t0
    return {"streamed": n, "matches_encoded_per_s": round(n / seconds)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.query", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=1_000_000)
    ap.add_argument("--studies", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--stream", type=int, default=200_000)
    args = ap.parse_args(argv)
    rng = random.Random(7)
    studies = args.studies
    out: dict[str, Any] = {"bench": "query", "git": git_sha(), "cpu": cpu_model(),
                           "instances": max(1, args.instances // studies) * studies,
                           "studies": studies}
    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        out["build"] = build(Path(tmp) / "index", args.instances, studies, args.batch)
        reader = IndexReader(Path(tmp) / "index")
        try:
            def month(r: random.Random) -> Query:
                d = study_date(r.randrange(studies))[:6]
                return query("STUDY", {"StudyDate": f"{d}01-{d}31"}, STUDY_RETURN)

            def some_study(r: random.Random) -> str:
                return f"1.2.826.0.1.{r.randrange(studies)}"

            cases: dict[str, Callable[[random.Random], Query]] = {
                "study_by_patient_id": lambda r: query(
                    "STUDY", {"PatientID": patient_of(r.randrange(studies))[0]}, STUDY_RETURN),
                "study_by_name_wildcard": lambda r: query(
                    "STUDY", {"PatientName": "SMI*"}, STUDY_RETURN),
                "study_by_date_month": month,
                "series_by_study_uid": lambda r: query(
                    "SERIES", {"StudyInstanceUID": some_study(r)}, SERIES_RETURN),
                "image_by_series_uid": lambda r: query(
                    "IMAGE", {"StudyInstanceUID": (s := some_study(r)),
                              "SeriesInstanceUID": f"{s}.{r.randrange(SERIES_PER_STUDY)}"},
                    IMAGE_RETURN),
            }
            out["queries"] = {name: timed(reader, make, args.repeat, rng)
                              for name, make in cases.items()}
            out["identifiers"] = encode_costs(reader)
            out["stream"] = stream_rate(reader, args.stream)
        finally:
            reader.close()
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
