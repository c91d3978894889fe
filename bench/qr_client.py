"""The Query/Retrieve benchmark's clients, the same for every receiver: DCMTK ``getscu`` and
``movescu``, a DCMTK ``storescp`` as the C-MOVE destination, and our own SCU for C-FIND.

- **C-GET** (PS3.4 C.4.3): ``getscu -S -k QueryRetrieveLevel=STUDY -k StudyInstanceUID=...
  -od DIR``; the objects arrive on the same association. Wall time = the getscu process;
  its CPU from ``wait4``.
- **C-MOVE** (PS3.4 C.4.2): ``movescu -S -aem STORESCP ...``; the receiver opens its own
  association to ``storescp`` (started here, one for the session, output folder emptied
  before each run). The final C-MOVE-RSP comes after the last sub-operation's C-STORE-RSP,
  and storescp answers each only once its file is written, so when movescu exits every
  object is on disk.
- **C-FIND** (PS3.4 C.4.1): ``QRSCU.find`` (``appliance/qr_scu.py``) on one association per
  receiver, each query timed from the request to its final response, every match read.

Every retrieved folder is checked: the SOP Instance UIDs read from the files must be the
study's, no more, no fewer (``received_uids``). All DCMTK tools run with ``TCP_NODELAY=1``
(README, "the Nagle trap").
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset, dcmread

from appliance.negotiation.qr_classes import STUDY_ROOT_FIND
from appliance.qr_scu import QRSCU, qr_contexts
from bench.client import dcmtk_env
from bench.packages import dcmtk
from bench.receivers.base import CALLING_AE, ReceiverError, echo_ok, free_port

DESTINATION_AE = "STORESCP"
_SUCCESS = 0x0000


@dataclass(slots=True)
class ToolRun:
    """One DCMTK client process: wall time, its own CPU, exit code, error lines."""

    wall_s: float
    client_cpu_s: float
    exit_code: int
    errors: list[str] = field(default_factory=list)


def run_tool(argv: Sequence[str], log: Path) -> ToolRun:
    """Run ``argv`` to completion with its output in ``log``; CPU from ``wait4``."""
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=dcmtk_env())  # fmt: skip
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - t0
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    lines = log.read_text(errors="replace").splitlines()
    bad = [ln for ln in lines if ln.startswith(("E:", "F:"))]
    errors = [f"{Path(argv[0]).name}: exit {code}; " + " | ".join((bad or lines[-2:])[:3])] \
        if code != 0 or bad else []  # fmt: skip
    return ToolRun(wall, usage.ru_utime + usage.ru_stime, code, errors)


# Connect, ACSE and DIMSE timeouts: a stalled peer fails the run instead of hanging it.
_TIMEOUTS = ["-to", "30", "-ta", "30", "-td", "120"]


def _study_keys(study_uid: str) -> list[str]:
    return ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"]


def getscu(port: int, called_ae: str, study_uid: str, out_dir: Path, log: Path) -> ToolRun:
    """C-GET of one study with DCMTK getscu (Study Root), objects written to ``out_dir``."""
    argv = [dcmtk("getscu"), "-S", *_TIMEOUTS, "-aet", CALLING_AE, "-aec", called_ae,
            *_study_keys(study_uid), "-od", str(out_dir), "127.0.0.1", str(port)]  # fmt: skip
    return run_tool(argv, log)


def movescu(port: int, called_ae: str, study_uid: str, log: Path) -> ToolRun:
    """C-MOVE of one study with DCMTK movescu (Study Root) to ``DESTINATION_AE``."""
    argv = [dcmtk("movescu"), "-S", *_TIMEOUTS, "-aet", CALLING_AE, "-aec", called_ae,
            "-aem", DESTINATION_AE, *_study_keys(study_uid), "127.0.0.1", str(port)]  # fmt: skip
    return run_tool(argv, log)


def received_uids(folder: Path) -> list[str]:
    """SOP Instance UID of every file in ``folder`` (read from the file, not its name)."""
    return [str(dcmread(p, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
                .SOPInstanceUID) for p in sorted(folder.iterdir()) if p.is_file()]  # fmt: skip


def check_uids(got: list[str], want: frozenset[str]) -> list[str]:
    """What is wrong with a retrieved set of SOP Instance UIDs (empty = exactly ``want``)."""
    errors = []
    if len(got) != len(set(got)):
        errors.append(f"{len(got) - len(set(got))} duplicate objects")
    if missing := want - set(got):
        errors.append(f"{len(missing)} of {len(want)} instances missing")
    if extra := set(got) - want:
        errors.append(f"{len(extra)} unexpected instances")
    return errors


class Destination:
    """DCMTK ``storescp`` as the C-MOVE destination (AE ``STORESCP``), for the session."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder.parent / "storescp.log", "ab") as log:
            self.proc = subprocess.Popen(
                [dcmtk("storescp"), "-aet", DESTINATION_AE, "-od", str(self.folder),
                 str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dcmtk_env(),
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while not echo_ok(self.port, DESTINATION_AE):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ReceiverError(f"storescp (C-MOVE destination) did not start on {self.port}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def clear(self) -> None:
        """Empty the output folder (between runs; storescp is idle then)."""
        for p in self.folder.iterdir():
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---- C-FIND --------------------------------------------------------------------------------

_STUDY_RETURN_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                      "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
                      "StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                      "NumberOfStudyRelatedInstances")  # fmt: skip
_SERIES_RETURN_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber",
                       "SeriesDescription", "NumberOfSeriesRelatedInstances")  # fmt: skip


@dataclass(frozen=True, slots=True)
class FindQuery:
    """A benchmark query: its name, its Identifier, the UIDs that must come back, and which
    attribute of each match holds them."""

    name: str
    identifier: Dataset
    expected: frozenset[str]
    uid_keyword: str


def identifier(level: str, return_keys: Sequence[str], **match: str) -> Dataset:
    """A C-FIND Identifier (PS3.4 C.4.1.1.3): the return keys empty, the matching keys set."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword in return_keys:
        setattr(ds, keyword, "")
    for keyword, value in match.items():
        setattr(ds, keyword, value)
    return ds


def study_identifier(**match: str) -> Dataset:
    return identifier("STUDY", _STUDY_RETURN_KEYS, **match)


def series_identifier(**match: str) -> Dataset:
    return identifier("SERIES", _SERIES_RETURN_KEYS, **match)


@dataclass(slots=True)
class FindRun:
    """``count`` timed queries of one kind: latencies in seconds and what went wrong."""

    latencies_s: list[float] = field(default_factory=list)
    matches: int = -1
    errors: list[str] = field(default_factory=list)


def find_session(
    port: int, called_ae: str, queries: Sequence[FindQuery], count: int,
    around: Callable[[str, Callable[[], FindRun]], FindRun] | None = None,
) -> dict[str, FindRun]:  # fmt: skip
    """Every query ``count`` times (after one untimed warm-up), kind after kind, on one
    association. ``around(name, body)`` wraps each kind's timed loop (CPU sampling)."""
    out: dict[str, FindRun] = {}
    with QRSCU("127.0.0.1", port, calling_ae=CALLING_AE, called_ae=called_ae,
               contexts=qr_contexts([STUDY_ROOT_FIND]), timeout_s=60) as scu:  # fmt: skip
        for q in queries:
            run = FindRun()
            first = _one_find(scu, q, run)  # warm-up; its matches are checked
            if first is not None:
                run.matches = len(first)
                if set(first) != q.expected or len(first) != len(q.expected):
                    run.errors.append(f"{q.name}: {len(first)} matches, expected "
                                      f"{len(q.expected)} (UIDs differ: "
                                      f"{len(set(first) ^ q.expected)})")
            out[q.name] = (around or _plain)(q.name, functools.partial(_timed, scu, q, run,
                                                                          count))
    return out


def _plain(_name: str, body: Callable[[], FindRun]) -> FindRun:
    return body()


def _timed(scu: QRSCU, q: FindQuery, run: FindRun, count: int) -> FindRun:
    for _ in range(count):
        t0 = time.perf_counter()
        got = _one_find(scu, q, run)
        run.latencies_s.append(time.perf_counter() - t0)
        if got is not None and len(got) != run.matches:
            run.errors.append(f"{q.name}: {len(got)} matches, then {run.matches}")
        if run.errors:
            break
    return run


def _one_find(scu: QRSCU, q: FindQuery, run: FindRun) -> list[str] | None:
    """One C-FIND, every response read; the matches' UIDs, or None (error recorded)."""
    uids = []
    final = None
    for rsp in scu.find(STUDY_ROOT_FIND, q.identifier):
        if rsp.identifier is not None:
            uids.append(str(rsp.identifier.get(q.uid_keyword, "")))
        else:
            final = rsp.status
    if final != _SUCCESS:
        run.errors.append(f"{q.name}: final status 0x{final or 0:04X}")
        return None
    return uids
