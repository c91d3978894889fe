"""Index writer micro-benchmark: prints one JSON object (STYLE 2.10: never gated on wall time).

    python -m bench.micro.index_writer [--quick]

Drives the index writer process's own cycle in-process (workers/indexer.py): records packed
as the workers pack them are put on 4 workers' index rings, ``_cycle()`` collects them,
applies them in one LMDB transaction (``os`` durability: no fsync, so the numbers are CPU,
not the disk), writes the audit events to a file and acknowledges each record on its worker's
ack ring, which this process drains as the worker would.

- ``cycle_b{1,4,64}_cpu_us_per_record``: CPU µs (user+sys, getrusage) per record with every
  commit taking 1, 4 or 64 records, spread over the 4 rings as the benchmark's 4 parallel
  associations would (each association sends its own series; the corpus is 10 patients x 2
  studies x 5 series, as bench/corpora.py).
- ``apply_b{1,4,64}_cpu_us_per_record``: ``IndexWriter.apply_batch`` alone (decode done).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
from collections.abc import Iterator
from pathlib import Path

from appliance import audit
from appliance.config import DuplicatePolicy, load
from appliance.ipc.channels import WorkerChannels
from appliance.ipc.kinds import Kind
from appliance.ipc.ring import Ring
from bench.micro.ring import cpu_model, git_sha
from workers.header import IndexAttributes
from workers.index.schema import InstanceRecord, pack_record
from workers.index.writer import IndexWriter
from workers.indexer import IndexWriterProcess

WORKERS = 4
_PATIENTS, _STUDIES, _SERIES = 10, 2, 5


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def records(n: int, tag: str) -> Iterator[InstanceRecord]:
    """``n`` realistic CT records, the corpus hierarchy, series after series."""
    per_series = max(1, n // (_PATIENTS * _STUDIES * _SERIES))
    root = f"1.2.826.0.1.3680043.8.498.{tag}"
    for i in range(n):
        s = i // per_series
        p, st, se = s // (_STUDIES * _SERIES), s // _SERIES, s
        attrs = IndexAttributes(
            specific_character_set="ISO_IR 100",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            sop_instance_uid=f"{root}.{p}.{st}.{se}.{i}",
            instance_number=str(i % per_series + 1), content_date="20240102",
            content_time="101112.123456", rows="64", columns="64",
            study_instance_uid=f"{root}.{p}.{st}", study_date="20240102", study_time="101010",
            accession_number=f"ACC{st:06d}", referring_physician_name="Ref^Doctor",
            study_id=str(st), study_description="CT CHEST", institution_name="Hospital",
            series_instance_uid=f"{root}.{p}.{st}.{se}", modality="CT",
            series_number=str(se % _SERIES + 1), series_description="AXIAL 1.0",
            series_date="20240102", series_time="101011", body_part_examined="CHEST",
            protocol_name="CHEST ROUTINE", station_name="CT01",
            performed_procedure_step_start_date="20240102",
            performed_procedure_step_start_time="101000",
            patient_id=f"PAT{p:05d}", patient_name=f"Doe^Patient{p}",
            issuer_of_patient_id="HOSP", patient_birth_date="19700101", patient_sex="O",
        )
        yield InstanceRecord.from_attributes(
            attrs, relpath=f"objects/{p}/{st}/{se}/{i}.dcm", size_bytes=8420,
            transfer_syntax_uid="1.2.840.10008.1.2.1", received_at=1700000000.0 + i,
            calling_ae=f"SCU{i % WORKERS}")


def cycle(tmp: Path, batch: int, n: int) -> float:
    """CPU µs per record through ``IndexWriterProcess._cycle`` with ``batch`` records a commit."""
    data = tmp / f"cycle-{batch}"
    cfg = load(None, {"storage": {"data_dir": str(data), "durability": "os",
                                  "batch_max": batch, "batch_window_ms": 0},
                      "audit": {"path": "audit.jsonl"}})
    audit.configure(cfg, "index_writer")
    made = [WorkerChannels.create(i, 1, 8 << 20, 1 << 20) for i in range(WORKERS)]
    proc = IndexWriterProcess(cfg, [(i, 1, ch.index, ch.acks) for i, (ch, _) in
                                    enumerate(made)], None, lambda _n: None)
    index = [Ring.attach(ch.index) for ch, _ in made]
    acks = [Ring.attach(ch.acks) for ch, _ in made]
    # Each worker (association) sends its own quarter of the corpus, in order.
    packed = [pack_record(r) for r in records(n, str(batch))]
    quarter = n // WORKERS
    spent, done, token = 0.0, 0, 0
    while done < n:
        take = min(batch, n - done)
        for j in range(take):  # round robin over the workers, as concurrent associations
            w = (done + j) % WORKERS
            i = w * quarter + (done + j) // WORKERS
            token += 1
            index[w].try_put(Kind.INDEX, 0, token, 0, 0, packed[i], notify=False)
        rang = set()
        for w, ring in enumerate(index):
            if ring.unnotified_bytes():
                ring.notify()
                rang.add(proc.rings[w].index.data_fd)
        t0 = cpu_s()
        proc._cycle(rang)  # as run(): only the doorbells poll() reported are read
        spent += cpu_s() - t0
        for ring in acks:
            ring.drain_doorbell()
            while ring.get_copy() is not None:
                pass
        done += take
    proc.writer.close()
    audit.close()
    for ring in (*index, *acks):
        ring.close()
    for _, rings in made:
        for r in rings:
            r.close()
    return spent / n * 1e6


def apply_only(tmp: Path, batch: int, n: int) -> float:
    writer = IndexWriter(tmp / f"apply-{batch}", sync=False)
    recs = list(records(n, f"a{batch}"))
    t0 = cpu_s()
    for i in range(0, n, batch):
        writer.apply_batch(recs[i:i + batch], DuplicatePolicy.KEEP)
    spent = cpu_s() - t0
    writer.close()
    return spent / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is kept")
    args = ap.parse_args()
    n = 2000 if args.quick else 8000
    out: dict[str, object] = {"bench": "index_writer", "git_sha": git_sha(),
                              "cpu": cpu_model(), "python": platform.python_version(),
                              "records": n}
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        for batch in (1, 4, 64):
            runs = sorted(cycle(Path(tmp) / str(k), batch, n) for k in range(args.repeat))
            out[f"cycle_b{batch}_cpu_us_per_record"] = round(runs[len(runs) // 2], 1)
            runs = sorted(apply_only(Path(tmp) / str(k), batch, n) for k in range(args.repeat))
            out[f"apply_b{batch}_cpu_us_per_record"] = round(runs[len(runs) // 2], 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
