"""The Query/Retrieve benchmark's archive: one big study to retrieve, and a catalogue of small
studies around it so that each C-FIND has something to tell apart.

- the **study**: CT Image Storage, 512x512x16-bit (~0.5 MB each), ``count`` instances in 5
  series, patient ``SMITH^JOHN`` (``QRBENCH0000``), Study Date 2024-01-15: retrieved whole
  with C-GET and C-MOVE;
- the **catalogue**: ``studies`` more studies of one 64x64 instance each, 2 per patient,
  surnames from a fixed list (some start with ``SMI``), Study Dates spread over 2023-2024;
  the study's patient has one of them too.

The generators are the test fixtures' (``tests/fixtures/make_datasets.py``), seeded: the same
bytes on every machine. Written once under ``<workdir>/corpora/<folder>`` with a manifest
(``manifest.json``: every study's patient, date and UIDs) and a ``.complete`` marker written
last. ``Archive.expected(query)`` answers each benchmark query from the manifest, so the
matches a receiver returns can be checked (PS3.4 C.2.2.2 matching, for the key kinds used).
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from pydicom import Dataset
from pydicom.filewriter import dcmwrite

from tests.fixtures.make_datasets import Hierarchy, make_ct, new_uid

_SEED = 11
_SERIES = 5  # series of the big study
STUDY_PATIENT_ID = "QRBENCH0000"
STUDY_PATIENT_NAME = "SMITH^JOHN"
STUDY_DATE = "20240115"
_SURNAMES = ("SMITH", "SMITHERS", "SMIRNOV", "JONES", "BROWN", "TAYLOR", "WILSON", "DAVIES",
             "EVANS", "SCHMIDT", "MILLER", "MARTIN")  # fmt: skip


@dataclass(frozen=True, slots=True)
class QRCorpusSpec:
    """``count`` instances in the retrieved study, ``studies`` small studies around it."""

    count: int
    studies: int
    rows: int = 512

    @property
    def folder(self) -> str:
        return f"qr-{self.count}x{self.rows}-cat{self.studies}-seed{_SEED}"


@dataclass(frozen=True, slots=True)
class StudyEntry:
    """One study of the manifest (what a STUDY-level C-FIND can match on)."""

    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    series_uids: tuple[str, ...]
    instances: int


@dataclass(frozen=True, slots=True)
class Archive:
    """A generated archive: its folders, the big study's UIDs and every study's entry."""

    spec: QRCorpusSpec
    root: Path
    study_dir: Path  # the big study's files
    catalogue_dir: Path  # the small studies' files
    study: StudyEntry
    sop_uids: frozenset[str]  # of the big study
    study_bytes: int  # sum of the big study's file sizes
    entries: tuple[StudyEntry, ...]  # every study, the big one first

    @property
    def files(self) -> int:
        return sum(e.instances for e in self.entries)

    def matching_studies(
        self, *, patient_id: str | None = None, name_prefix: str | None = None,
        date_range: tuple[str, str] | None = None,
    ) -> set[str]:  # fmt: skip
        """Study Instance UIDs matching every given key: exact Patient ID, a ``PREFIX*``
        Patient's Name wildcard, an inclusive ``a-b`` Study Date range (PS3.4 C.2.2.2)."""
        out = set()
        for e in self.entries:
            if patient_id is not None and e.patient_id != patient_id:
                continue
            if name_prefix is not None and not e.patient_name.upper().startswith(name_prefix):
                continue
            if date_range is not None and not date_range[0] <= e.study_date <= date_range[1]:
                continue
            out.add(e.study_uid)
        return out


def default_spec(*, quick: bool = False) -> QRCorpusSpec:
    """The issue's 500-instance study (quick: 20) with 200 (quick: 20) studies around it."""
    return QRCorpusSpec(20, 20) if quick else QRCorpusSpec(500, 200)


def _write(ds: Dataset, folder: Path) -> None:
    dcmwrite(folder / f"{ds.SOPInstanceUID}.dcm", ds, enforce_file_format=True)


def _big_study(spec: QRCorpusSpec, rng: random.Random, folder: Path) -> StudyEntry:
    folder.mkdir(parents=True)
    study_uid = new_uid(rng)
    series = [new_uid(rng) for _ in range(_SERIES)]
    for i in range(spec.count):
        h = Hierarchy(STUDY_PATIENT_ID, study_uid, series[i % _SERIES])
        ds = make_ct(rng, h, rows=spec.rows, cols=spec.rows, instance_number=i // _SERIES + 1)
        ds.PatientName, ds.StudyDate = STUDY_PATIENT_NAME, STUDY_DATE
        ds.SeriesNumber = i % _SERIES + 1
        ds.StudyDescription = "QR BENCH STUDY"
        _write(ds, folder)
    return StudyEntry(str(study_uid), STUDY_PATIENT_ID, STUDY_PATIENT_NAME, STUDY_DATE,
                      tuple(map(str, series)), spec.count)  # fmt: skip


def _catalogue(spec: QRCorpusSpec, rng: random.Random, folder: Path) -> list[StudyEntry]:
    """Small studies, two per patient; the first goes to the big study's patient."""
    folder.mkdir(parents=True)
    out = []
    for n in range(spec.studies):
        if n == 0:
            pid, name = STUDY_PATIENT_ID, STUDY_PATIENT_NAME
        else:
            p = (n + 1) // 2
            pid, name = f"QRCAT{p:05d}", f"{_SURNAMES[p % len(_SURNAMES)]}^P{p}"
        date = f"{2023 + rng.randrange(2)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
        study_uid, series_uid = new_uid(rng), new_uid(rng)
        ds = make_ct(rng, Hierarchy(pid, study_uid, series_uid), rows=64, cols=64)
        ds.PatientName, ds.StudyDate, ds.StudyDescription = name, date, "QR BENCH CATALOGUE"
        _write(ds, folder)
        out.append(StudyEntry(str(study_uid), pid, name, date, (str(series_uid),), 1))
    return out


def _generate(spec: QRCorpusSpec, root: Path) -> None:
    rng = random.Random(_SEED)
    study = _big_study(spec, rng, root / "study")
    entries = [study, *_catalogue(spec, rng, root / "catalogue")]
    (root / "manifest.json").write_text(json.dumps([asdict(e) for e in entries], indent=1))


def ensure(spec: QRCorpusSpec, workdir: Path) -> Archive:
    """The archive for ``spec`` under ``workdir``, generated if not there yet."""
    root = workdir / "corpora" / spec.folder
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        _generate(spec, root)
        (root / ".complete").write_text("")
    entries = tuple(
        StudyEntry(**{**e, "series_uids": tuple(e["series_uids"])})
        for e in json.loads((root / "manifest.json").read_text())
    )
    files = sorted((root / "study").iterdir())
    return Archive(
        spec=spec, root=root, study_dir=root / "study", catalogue_dir=root / "catalogue",
        study=entries[0], sop_uids=frozenset(p.stem for p in files),
        study_bytes=sum(p.stat().st_size for p in files), entries=entries,
    )  # fmt: skip
