"""Workers' own index commits: the index-writer round trip, taken out where it buys nothing.

THEORY OF OPERATION
-------------------
Through the index writer process each record travels worker -> index ring -> index writer ->
acks ring -> worker: two doorbells and two process wake-ups per batch, on the path of every
C-STORE-RSP. What that buys is one flush for the records of all workers (one syncfs in
``batch`` mode, one synced commit in ``fsync`` mode). With one worker (the default on two
cores) there is nobody to share it with, and in ``os`` mode there is no flush to share, so
there (``Config.inline_index_for``, ``[processes] inline_index``) each worker keeps the records
of a loop turn in ``pending`` and commits them itself, as one group (workers/group_commit.py:
the same durability steps, audit events and failure answers as the index writer process),
before the turn's responses are rung out. Several workers doing so take LMDB's write lock in
turn (a commit of a turn's few records holds it for tens of microseconds); the writer's
carried parent records are dropped whenever another worker committed in between
(workers/index/writer.py).

The worker's reader shares this environment (LMDB forbids opening one twice in a process), so
queries see every commit at once. A worker that dies mid-commit leaves LMDB as the last
commit left it (the write lock is robust, the transaction never reached its meta page); its
replacement clears the dead process's reader slot when it opens the writer.
"""

from __future__ import annotations

from appliance.config import Config, DuplicatePolicy
from workers.group_commit import POLICY_CODES, GroupCommit, Item, open_writer
from workers.index.reader import IndexReader
from workers.index.schema import InstanceRecord, pack_record


class InlineIndex:
    def __init__(self, cfg: Config) -> None:
        self.batch_max = cfg.storage.batch_max
        self.writer = open_writer(cfg)
        # A predecessor killed inside a read transaction pins old pages until someone clears
        # its reader slot (the index writer does it when it is told of a new worker).
        self.writer.env.reader_check()
        self.group = GroupCommit(cfg, self.writer)
        self.pending: list[tuple[int, Item]] = []

    def reader(self) -> IndexReader:
        return IndexReader.sharing(self.writer.index)

    def add(self, token: int, record: InstanceRecord, policy: DuplicatePolicy) -> None:
        self.pending.append((token, (POLICY_CODES[policy], pack_record(record), record)))

    def commit(self) -> list[tuple[int, int, str]]:
        """Commit what is pending, at most ``batch_max`` records per transaction; one
        ``(token, code, old relpath or reason)`` per record, in order."""
        done: list[tuple[int, int, str]] = []
        while self.pending:
            batch = self.pending[: self.batch_max]
            del self.pending[: self.batch_max]
            results = self.group.commit([item for _, item in batch])
            done += ((token, code, old) for (token, _), (code, old)
                     in zip(batch, results, strict=True))
        return done

    def close(self) -> None:
        self.writer.close()
