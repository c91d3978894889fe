"""The index writer process's cycle, in-process: group commit, acks, and bad records answered
instead of crashing the only LMDB writer."""

from __future__ import annotations

import select
from dataclasses import replace
from pathlib import Path

from appliance.config import load
from appliance.ipc.channels import WorkerChannels
from appliance.ipc.kinds import Kind
from appliance.ipc.ring import Ring
from workers.group_commit import INDEX_FAILED
from workers.header import IndexAttributes
from workers.index.reader import IndexReader
from workers.index.schema import InstanceRecord, Outcome, pack_record
from workers.indexer import IndexWriterProcess


def record(sop: str, study: str = "1.2", series: str = "1.2.3") -> InstanceRecord:
    attrs = IndexAttributes(*([""] * len(IndexAttributes.__dataclass_fields__)))
    attrs = replace(attrs, sop_class_uid="1.2.840.10008.5.1.4.1.1.2", sop_instance_uid=sop,
                    study_instance_uid=study, series_instance_uid=series, patient_id="P")
    return InstanceRecord.from_attributes(attrs, relpath=f"objects/{sop}.dcm", size_bytes=10,
                                          transfer_syntax_uid="1.2.840.10008.1.2.1",
                                          received_at=0.0, calling_ae="X")


def test_cycle_commits_and_acks_including_bad_records(tmp_path: Path) -> None:
    cfg = load(None, {"storage": {"data_dir": str(tmp_path), "durability": "os"}})
    ch, rings = WorkerChannels.create(0, 1, 1 << 20, 1 << 20)
    proc = IndexWriterProcess(cfg, [(0, 1, ch.index, ch.acks)], None, lambda _n: None)
    index = Ring.attach(ch.index)  # the worker's producer end
    acks = Ring.attach(ch.acks)  # the worker's consumer end
    index.try_put(Kind.INDEX, 0, 1, 0, 0, pack_record(record("1.1")))
    index.try_put(Kind.INDEX, 0, 2, 0, 0, b"\x93garbage")  # not a packed record
    index.try_put(Kind.INDEX, 0, 3, 0, 0, pack_record(record("1.1")))  # duplicate, keep
    index.try_put(Kind.INDEX, 0, 4, 0, 0, pack_record(record("", study="")))  # no UIDs
    proc._cycle()
    acks.drain_doorbell()
    got = {}
    while (rec := acks.get_copy()) is not None:
        got[rec[0].msg_id] = rec[0].aux
    assert got == {1: Outcome.STORED, 2: INDEX_FAILED, 3: Outcome.DUPLICATE_KEPT,
                   4: INDEX_FAILED}
    assert proc.commits == 1  # one transaction for the whole batch
    proc.writer.close()
    assert IndexReader(tmp_path / "index").stats().instances == 1
    for r in rings:
        r.close()


def test_cycle_reads_only_the_doorbells_that_rang_and_loses_nothing(tmp_path: Path) -> None:
    """run() passes the fds poll() reported: a silent ring's doorbell is not read, records
    already visible are still taken (batch_max cut), and each worker gets one ack doorbell
    for its whole batch."""
    cfg = load(None, {"storage": {"data_dir": str(tmp_path), "durability": "os",
                                  "batch_max": 2}})
    made = [WorkerChannels.create(i, 1, 1 << 20, 1 << 20) for i in range(2)]
    proc = IndexWriterProcess(cfg, [(i, 1, ch.index, ch.acks) for i, (ch, _) in
                                    enumerate(made)], None, lambda _n: None)
    index = [Ring.attach(ch.index) for ch, _ in made]
    acks = [Ring.attach(ch.acks) for ch, _ in made]
    for token in (1, 2, 3):
        index[0].try_put(Kind.INDEX, 0, token, 0, 0, pack_record(record(f"1.{token}")))
    index[1].try_put(Kind.INDEX, 0, 4, 0, 0, pack_record(record("1.4")))
    fds = [proc.rings[i].index.data_fd for i in range(2)]  # the writer's own (dup'd) fds
    proc._cycle({fds[0]})  # slot 1 did not ring in this poll: not read
    poller = select.poll()
    poller.register(fds[1], select.POLLIN)
    assert poller.poll(0)  # its doorbell was left alone, still readable
    proc._cycle(set())  # nothing rang, but token 3 was already visible: taken now
    proc._cycle({fds[1]})
    got: dict[int, list[int]] = {0: [], 1: []}
    for slot, ring in enumerate(acks):
        assert ring.drain_doorbell() > 0, slot
        while (rec := ring.get_copy()) is not None:
            assert rec[0].aux == Outcome.STORED
            got[slot].append(rec[0].msg_id)
    assert got == {0: [1, 2, 3], 1: [4]}
    assert proc.commits == 3
    proc.writer.close()
    for _, rings in made:
        for r in rings:
            r.close()
