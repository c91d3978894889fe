"""Locust load over DICOM: users that speak PS3.8/PS3.7 through our own SCU core.

    locust -f bench/locustfile.py --headless -u 50 -r 10 -t 60s --host dicom://127.0.0.1:11112

Each simulated user holds one association (``appliance/scu.py``; locust's gevent makes its
blocking socket cooperative) and loops over weighted tasks: C-STORE (10), C-ECHO (1) and
a Study Root C-FIND by Patient ID (2; ``PACS_LOCUST_FIND=0`` leaves it out). Every operation is
reported to locust's statistics as request type ``DICOM``, name ``C-STORE`` / ``C-ECHO`` /
``C-FIND`` / ``A-ASSOCIATE`` / ``A-RELEASE``, with its response time; ``length`` is the data
set bytes sent (C-STORE) or the number of matches (C-FIND). A non-Success status, an abort or
a timeout is a failure; the user then re-associates on its next task.

Settings (environment):

- ``--host dicom://HOST:PORT[/CALLED_AE]`` (Called AE default ``PACS``);
- ``PACS_LOCUST_CORPUS``: a folder of Part 10 files to send (default: a small generated CT
  corpus, 64x64, deterministic);
- ``PACS_LOCUST_UNIQUE`` (default 1): every C-STORE is a new instance (the corpus file with
  a fresh SOP Instance UID), so a soak keeps storing instead of hitting duplicates; ``0``
  sends the files as they are;
- ``PACS_LOCUST_FIND=0``: no C-FIND task (for an SCP without Query/Retrieve; default 1);
- ``PACS_LOCUST_WAIT_S``: think time between tasks (default 0);
- ``PACS_LOCUST_TIMEOUT_S``: the SCU's socket timeout (default 30): an operation whose
  response never comes fails after it;
- ``PACS_LOCUST_ACKED``: a file to which each process appends, when it quits, the SOP
  Instance UIDs that got a Success C-STORE-RSP (the tests check each one is indexed).

Soak (README): ``locust -f bench/locustfile.py --headless -u 50 -r 5 -t 30m --host
dicom://127.0.0.1:11112 --csv soak --only-summary`` while watching ``/metrics``; pass when
locust reports no failures, RSS stays flat and every acknowledged instance is indexed.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from locust import User, constant, events, task

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # locust puts only bench/ on the path
    sys.path.insert(0, str(_REPO))

from pydicom import dcmread  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.filebase import DicomBytesIO  # noqa: E402
from pydicom.filewriter import write_dataset  # noqa: E402

from appliance.scu import SCU, ProposedContext  # noqa: E402
from appliance.scu_files import read_file_meta  # noqa: E402

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # PS3.4 C.6.2
FIND = os.environ.get("PACS_LOCUST_FIND", "1") != "0"
UNIQUE = os.environ.get("PACS_LOCUST_UNIQUE", "1") != "0"
TIMEOUT_S = float(os.environ.get("PACS_LOCUST_TIMEOUT_S", "30"))
# A 64-character UID (the UI maximum, PS3.5 §9.1) stands in for the SOP Instance UID in each
# template; a fresh UID of the same length replaces it, so no element length changes.
_UID_ROOT = "1.2.826.0.1.3680043.8.498."
_PLACEHOLDER = (_UID_ROOT + "9" * (64 - len(_UID_ROOT))).encode()
_ENCODABLE = {IMPLICIT_LE, EXPLICIT_LE}


@dataclass(frozen=True, slots=True)
class Item:
    """One corpus object: the file, and (UNIQUE) its data set encoded with a placeholder UID."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    patient_id: str
    template: bytes | None


def new_uid(rng: random.Random) -> str:
    digits = 64 - len(_UID_ROOT)
    return _UID_ROOT + str(rng.randrange(10 ** (digits - 1), 10**digits))


def _template(path: Path, ts: str) -> tuple[str, bytes]:
    """(Patient ID, the data set in ``ts`` with the placeholder SOP Instance UID)."""
    ds = dcmread(path)
    patient_id = str(ds.get("PatientID", ""))
    ds.SOPInstanceUID = _PLACEHOLDER.decode()
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = ts == IMPLICIT_LE
    write_dataset(fp, ds)
    return patient_id, fp.getvalue()


def _default_corpus() -> Path:
    # The generator lives in the test fixtures; locust may run from any folder, so the
    # checkout this file belongs to goes on the path first.
    repo = str(Path(__file__).resolve().parents[1])
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from tests.fixtures.make_datasets import write_ct_corpus

    root = Path(tempfile.gettempdir()) / "pacs-locust-corpus-seed23"
    if not (root / ".complete").exists():
        write_ct_corpus(root, seed=23, patients=4, studies_per_patient=1, series_per_study=2,
                        instances_per_series=4)  # fmt: skip
        (root / ".complete").write_text("")
    return root


def load_corpus(folder: Path) -> list[Item]:
    """Every Part 10 file under ``folder``; files that are not are skipped."""
    items = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            with open(path, "rb") as fp:
                meta = read_file_meta(fp)
        except (OSError, ValueError):
            continue
        ts = meta.transfer_syntax_uid
        template: bytes | None = None
        if UNIQUE and ts in _ENCODABLE:  # other syntaxes are sent as they are
            patient_id, template = _template(path, ts)
        else:
            patient_id = str(dcmread(path, stop_before_pixels=True).get("PatientID", ""))
        items.append(Item(path, meta.sop_class_uid, meta.sop_instance_uid, ts, patient_id,
                          template))
    if not items:
        raise RuntimeError(f"no DICOM Part 10 files under {folder}")
    return items


_CORPUS: dict[str, list[Item]] = {}  # loaded once per process
_CORPUS_LOCK = threading.Lock()
ACKED: list[str] = []  # SOP Instance UIDs acknowledged with Success, this process


def corpus() -> list[Item]:
    folder = os.environ.get("PACS_LOCUST_CORPUS", "")
    with _CORPUS_LOCK:
        if folder not in _CORPUS:
            _CORPUS[folder] = load_corpus(Path(folder) if folder else _default_corpus())
        return _CORPUS[folder]


def contexts(items: list[Item]) -> list[ProposedContext]:
    """One context per (SOP Class, transfer syntax) of the corpus, Verification, and the
    Study Root FIND model when the C-FIND task is on."""
    pairs = dict.fromkeys((i.sop_class_uid, i.transfer_syntax_uid) for i in items)
    out = [ProposedContext(sop, (ts,)) for sop, ts in pairs]
    out.append(ProposedContext(VERIFICATION, (IMPLICIT_LE,)))
    if FIND:
        out.append(ProposedContext(STUDY_ROOT_FIND, (EXPLICIT_LE, IMPLICIT_LE)))
    return out


def parse_host(host: str | None) -> tuple[str, int, str]:
    """``dicom://HOST:PORT[/CALLED_AE]`` -> (host, port, called AE)."""
    parts = urlsplit(host or "dicom://127.0.0.1:11112")
    if parts.scheme != "dicom" or not parts.hostname:
        raise ValueError(f"--host must look like dicom://HOST:PORT[/AE], got {host!r}")
    return parts.hostname, parts.port or 11112, parts.path.strip("/") or "PACS"


class DimseStatusError(Exception):
    """A response with a status other than Success (PS3.7 Annex C)."""


@events.quitting.add_listener  # type: ignore[untyped-decorator]
def _write_acked(**_kwargs: Any) -> None:
    path = os.environ.get("PACS_LOCUST_ACKED")
    if path:
        with open(path, "a") as fh:
            fh.writelines(f"{uid}\n" for uid in ACKED)


class DicomUser(User):
    """One association per user; see the module docstring."""

    wait_time = constant(float(os.environ.get("PACS_LOCUST_WAIT_S", "0")))
    host = "dicom://127.0.0.1:11112"

    def on_start(self) -> None:
        self.peer = parse_host(self.host)
        self.items = corpus()
        self.rng = random.Random()
        self.next_item = self.rng.randrange(len(self.items))
        self.scu: SCU | None = None

    def on_stop(self) -> None:
        scu, self.scu = self.scu, None
        if scu is not None:
            self._timed("A-RELEASE", scu.release)

    # -- reporting

    def _fire(self, name: str, t0: float, length: int, exc: BaseException | None) -> None:
        events.request.fire(  # type: ignore[no-untyped-call]
            request_type="DICOM", name=name, response_time=(time.perf_counter() - t0) * 1000,
            response_length=length, exception=exc, context={},
        )  # fmt: skip

    def _timed(self, name: str, fn: Any) -> bool:
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - every failure goes to the statistics
            self._fire(name, t0, 0, exc)
            return False
        self._fire(name, t0, 0, None)
        return True

    def _associate(self, scu: SCU) -> None:
        scu.associate()
        if not scu.accepted:
            scu.abort()
            raise DimseStatusError("no presentation context accepted")

    def _association(self) -> SCU | None:
        if self.scu is None:
            host, port, called = self.peer
            scu = self._make_scu(host, port, called)
            if self._timed("A-ASSOCIATE", lambda: self._associate(scu)):
                self.scu = scu
        return self.scu

    def _make_scu(self, host: str, port: int, called: str) -> SCU:
        kwargs: dict[str, Any] = {"calling_ae": "LOCUST", "called_ae": called,
                                  "contexts": contexts(self.items), "timeout_s": TIMEOUT_S}
        if FIND:
            from appliance.qr_scu import QRSCU

            return QRSCU(host, port, **kwargs)
        return SCU(host, port, **kwargs)

    def _run(self, name: str, op: Any) -> None:
        """Run ``op(scu) -> (length, status)``; non-Success status or an exception fails."""
        scu = self._association()
        if scu is None:
            return
        t0 = time.perf_counter()
        try:
            length, status = op(scu)
        except Exception as exc:  # noqa: BLE001
            self._fire(name, t0, 0, exc)
            scu.abort()
            self.scu = None
            return
        error = None if status == 0 else DimseStatusError(f"{name} status 0x{status:04X}")
        self._fire(name, t0, length, error)

    # -- tasks

    @task(10)
    def c_store(self) -> None:
        item = self.items[self.next_item]
        self.next_item = (self.next_item + 1) % len(self.items)

        def op(scu: SCU) -> tuple[int, int]:
            if item.template is not None:
                uid = new_uid(self.rng)
                data = item.template.replace(_PLACEHOLDER, uid.encode(), 1)
                status = scu.store(data, item.sop_class_uid, uid, item.transfer_syntax_uid).status
                length = len(data)
            else:
                uid = item.sop_instance_uid
                status = scu.store_file(item.path).status
                length = item.path.stat().st_size
            if status == 0:
                ACKED.append(uid)
            return length, status

        self._run("C-STORE", op)

    @task(1)
    def c_echo(self) -> None:
        self._run("C-ECHO", lambda scu: (0, scu.echo()))

    if FIND:

        @task(2)
        def c_find(self) -> None:
            patient_id = self.rng.choice(self.items).patient_id

            def op(scu: Any) -> tuple[int, int]:
                query = Dataset()
                query.QueryRetrieveLevel = "STUDY"
                query.PatientID = patient_id
                query.StudyInstanceUID = ""
                query.StudyDate = ""
                matches, status = 0, -1
                for rsp in scu.find(STUDY_ROOT_FIND, query):
                    status = rsp.status
                    matches += rsp.identifier is not None
                return matches, status

            self._run("C-FIND", op)
