"""The worker's per-instance C-STORE path in one process: prints one JSON object (STYLE 2.10:
never gated on wall time).

    python -m bench.micro.worker_path [--n 300] [--size ct|small] [--profile]

What one worker does per object, without the process hops: COMMAND (decode, StoreJob), the
data set in 128 KiB DATA fragments (what DCMTK storescu sends: PDUs of at most 128 KiB), the
header walk, the file write and rename, the index record over the real ``RingOutbox`` and
rings, the index writer's transaction (in-process, one per ``--batch`` objects) and the
acknowledgement that emits the C-STORE-RSP. Reports CPU µs per object for the worker part and
the index part separately; ``--profile`` prints the top of a cProfile of the worker part.

Page-cache note (why CPU figures of file writes swing 10x on this kind of VM): a freshly
allocated page-cache page that the guest had reported free to the host (virtio-balloon free
page reporting) costs a host fault on first touch. ``--hot`` first writes and deletes a
scratch file as large as the run so the pages the run gets are warm; use it for A/B.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import random
import shutil
import tempfile
import time
from pathlib import Path

from pydicom.filewriter import dcmwrite

from appliance.config import DuplicatePolicy
from appliance.dimse.messages import CStoreRQ, encode_message
from appliance.ipc.kinds import Kind
from appliance.ipc.ring import Ring
from tests.fixtures.make_datasets import Hierarchy, dataset_offset, make_ct, new_uid
from workers.index.reader import IndexReader
from workers.index.schema import unpack_record
from workers.index.writer import IndexWriter
from workers.process import RingOutbox
from workers.service import AssociationState, Services
from workers.store import StoreSettings

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
_FRAGMENT = 131060  # storescu's PDV data per 128 KiB PDU


def _objects(n: int, size: int) -> list[tuple[str, bytes]]:
    """``n`` synthetic CT objects of one series: (SOP Instance UID, data set bytes)."""
    rng = random.Random(7)
    hier = Hierarchy("MICRO1", new_uid(rng), new_uid(rng))
    out = []
    for i in range(n):
        ds = make_ct(rng, hier, rows=size, cols=size, instance_number=i + 1)
        buf = io.BytesIO()
        dcmwrite(buf, ds, enforce_file_format=True)
        blob = buf.getvalue()
        out.append((str(ds.SOPInstanceUID), blob[dataset_offset(blob):]))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.micro.worker_path")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--size", choices=("ct", "small"), default="ct")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--hot", action="store_true")
    p.add_argument("--dir", type=Path, default=None)
    args = p.parse_args(argv)
    objs = _objects(args.n, 512 if args.size == "ct" else 64)
    from workers.kernels import WORKER_KERNELS, warm_up
    warm_up(WORKER_KERNELS)  # as the worker does before it reports ready
    root = Path(tempfile.mkdtemp(prefix="pacs-micro-", dir=args.dir))
    try:
        for sub in ("objects", "tmp", "index"):
            (root / sub).mkdir()
        writer = IndexWriter(root / "index", map_size=1 << 30, sync=False)
        replies, index = Ring.create(8 << 20), Ring.create(8 << 20)
        outbox = RingOutbox(replies, index)
        settings = StoreSettings(root, fsync_each=False, max_dataset_bytes=0,
                                 implementation_class_uid="1.2.3",
                                 implementation_version_name="MICRO")
        svc = Services(settings, DuplicatePolicy.KEEP, IndexReader.sharing(writer.index), outbox)
        svc.open(AssociationState(1, "BENCH", "PACS", 131072, {1: (CT_IMAGE, EXPLICIT_VR_LE)}))
        commands = [encode_message(CStoreRQ(message_id=i + 1, affected_sop_class_uid=CT_IMAGE,
                                            affected_sop_instance_uid=uid))
                    for i, (uid, _) in enumerate(objs)]
        if args.hot:
            scratch = root / "hot.bin"
            with open(scratch, "wb") as fh:
                for _, ds in objs:
                    fh.write(ds)
            scratch.unlink()
        worker_cpu = index_cpu = 0.0
        prof = cProfile.Profile() if args.profile else None
        for start in range(0, len(objs), args.batch):
            t0 = time.process_time()
            if prof:
                prof.enable()
            for i in range(start, min(start + args.batch, len(objs))):
                svc.command(1, 1, memoryview(commands[i]))
                data = memoryview(objs[i][1])
                for off in range(0, len(data), _FRAGMENT):
                    svc.data(1, 1, data[off:off + _FRAGMENT], off + _FRAGMENT >= len(data))
            outbox.flush()
            if prof:
                prof.disable()
            t1 = time.process_time()
            index.drain_doorbell()
            records, tokens = [], []
            while (got := index.get_copy()) is not None:
                hdr, payload = got
                records.append(unpack_record(payload))
                tokens.append(hdr.msg_id)
            results = writer.apply_batch(records, DuplicatePolicy.KEEP)
            t2 = time.process_time()
            if prof:
                prof.enable()
            for tok, res in zip(tokens, results, strict=True):
                svc.indexed(tok, res.outcome, res.old_relpath or "")
            outbox.flush()
            if prof:
                prof.disable()
            t3 = time.process_time()
            replies.drain_doorbell()
            while (got := replies.get_copy()) is not None:
                assert got[0].kind == Kind.SEND
            worker_cpu += (t1 - t0) + (t3 - t2)
            index_cpu += t2 - t1
        stored = sum(1 for _ in (root / "objects").rglob("*.dcm"))
        print(json.dumps({
            "objects": len(objs), "stored": stored, "bytes_per_object": len(objs[0][1]),
            "worker_cpu_us_per_object": round(worker_cpu / len(objs) * 1e6, 1),
            "index_apply_cpu_us_per_object": round(index_cpu / len(objs) * 1e6, 1),
        }))
        if prof:
            stats = pstats.Stats(prof)
            stats.sort_stats("tottime").print_stats(30)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
