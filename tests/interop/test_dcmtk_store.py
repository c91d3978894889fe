"""DCMTK storescu -> appliance: every pydicom test file in its own transfer syntax, a 200 MB
multiframe object, and four parallel senders.

storescu re-encodes each dataset before sending it (element values and encapsulated fragments
are kept), so the stored copy is compared element by element with the original file rather than
byte for byte; the rules for what storescu itself changes are in ``conftest.dataset_differences``.
The generated multiframe object has nothing storescu would change, so it is compared by hash.
"""

from __future__ import annotations

import functools
import subprocess
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data.data_manager import DataTypes, external_data_sources
from pydicom.dataset import FileDataset
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian

from tests.conftest import (
    Appliance,
    dcmtk_env,
    index_get,
    index_get_many,
    require_tool,
    run_tool,
    stored_problems,
    storescu_config,
)
from tests.fixtures.make_datasets import (
    BigObject,
    sha256_of_dataset,
    write_big_multiframe,
    write_ct_corpus,
)

pytestmark = pytest.mark.interop

CALLING_AE = "STORESCU"
TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"

# Files that pass our "valid Part 10" filter but that storescu 3.6.7 itself refuses to send
# (checked against DCMTK's own `storescp +xa +B`, which receives none of them either):
STORESCU_CANNOT_SEND = {
    # DCMTK's parser trips over a non-standard VR "  " in (0008,0008) and gives up on the file.
    "SC_rgb_jpeg.dcm": "DCMTK cannot parse it (non-standard VR in ImageType)",
    # Deliberately truncated files: storescu reports a premature end of stream and skips them.
    "MR_truncated.dcm": "truncated Pixel Data",
    "rtplan_truncated.dcm": "truncated IsocenterPosition",
    # Every data element is written with VR UN (gdcmconv output); storescu finds no SOP Class /
    # Instance UID in them and skips the files.
    "rtdose_rle.dcm": "all elements UN: storescu sees no SOP Class/Instance UID",
    "rtdose_rle_1frame.dcm": "all elements UN: storescu sees no SOP Class/Instance UID",
}

_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


@dataclass(frozen=True)
class Candidate:
    path: Path
    ds: FileDataset

    @property
    def ts(self) -> str:
        return str(self.ds.file_meta.TransferSyntaxUID)

    @property
    def uid(self) -> str:
        return str(self.ds.SOPInstanceUID)


def _test_file_paths() -> list[Path]:
    """pydicom's bundled test files plus already-downloaded/installed extra test data.

    ``pydicom.data.get_testdata_files()`` would *download* the pydicom-data repository for the
    files it does not have locally; a test must not depend on the network, so only what is on
    disk is used: the bundled directory, installed data packages, and pydicom's download cache.
    """
    paths = {p for p in TEST_FILES.rglob("*") if p.is_file()}
    for source in external_data_sources().values():
        paths |= {Path(p) for p in source.get_paths("**/*", DataTypes.DATASET)}
    cache = Path.home() / ".pydicom" / "data"
    if cache.is_dir():
        paths |= {p for p in cache.rglob("*") if p.is_file()}
    return sorted(paths)


def _as_candidate(path: Path) -> Candidate | None:
    """A valid Part 10 dataset with File Meta TS and the four index UIDs, else None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)  # no force: must be Part 10
            if "TransferSyntaxUID" not in ds.file_meta:
                return None
            if not all(keyword in ds for keyword in _REQUIRED):
                return None
            ds.get("PixelData")  # force the lazy parse of everything up to the end
    except Exception:
        return None
    return Candidate(path, ds)


@functools.cache
def candidates() -> tuple[Candidate, ...]:
    found = (_as_candidate(p) for p in _test_file_paths())
    return tuple(c for c in found if c is not None and c.path.name not in STORESCU_CANNOT_SEND)


@functools.cache
def rounds() -> tuple[tuple[Candidate, ...], ...]:
    """Split the candidates so that no round holds two files with one SOP Instance UID.

    Several test files are the same instance in different encodings (MR_small.dcm in nine
    transfer syntaxes); under the default duplicate policy ``keep`` only the first would be
    stored, so each round goes to a fresh appliance.
    """
    out: list[dict[str, Candidate]] = []
    for cand in candidates():
        for rnd in out:
            if cand.uid not in rnd:
                rnd[cand.uid] = cand
                break
        else:
            out.append({cand.uid: cand})
    return tuple(tuple(r.values()) for r in out)


def send_with_storescu(
    app: Appliance, files: list[Candidate], workdir: Path, *, timeout_s: float = 120
) -> str:
    """One storescu run per transfer syntax, proposing only that syntax; returns the logs."""
    storescu = require_tool("storescu")
    by_ts: dict[str, list[Candidate]] = defaultdict(list)
    for cand in files:
        by_ts[cand.ts].append(cand)
    logs: list[str] = []
    for n, (ts, group) in enumerate(sorted(by_ts.items())):
        cfg = storescu_config(
            workdir / f"storescu-{n}.cfg", ts, [str(c.ds.SOPClassUID) for c in group]
        )
        cp = run_tool(
            [
                storescu, "-xf", str(cfg), "P", "-nh",
                "-aet", CALLING_AE, "-aec", app.ae_title,
                "127.0.0.1", str(app.port),
                *(str(c.path) for c in group),
            ],
            timeout_s=timeout_s,
            env=dcmtk_env(nodelay=True),
        )  # fmt: skip
        logs.append(f"== storescu TS {ts} ({len(group)} files) rc={cp.returncode}\n{cp.stderr}")
    return "\n".join(logs)


def test_candidate_scan_finds_every_transfer_syntax() -> None:
    """Guard the scan itself: a broken filter must not silently shrink the test below."""
    found = {c.ts for c in candidates()}
    assert len(candidates()) >= 100, len(candidates())
    assert {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.5",
    } <= found


@pytest.mark.parametrize("round_no", range(len(rounds())))
def test_storescu_pydicom_test_files(
    round_no: int, appliance_factory: Callable[..., Appliance], tmp_path: Path
) -> None:
    """Each file arrives in its own TS; stored copy, File Meta and index match the original."""
    require_tool("storescu")
    files = list(rounds()[round_no])
    app = appliance_factory().start()
    log = send_with_storescu(app, files, tmp_path)
    records = index_get_many(app.data, [c.uid for c in files])
    problems: list[str] = []
    for cand in files:
        found = stored_problems(app.data, cand.ds, calling_ae=CALLING_AE, record=records[cand.uid])
        problems += [f"{cand.path.name} [{cand.ts}]: {p}" for p in found]
    assert not problems, (
        f"{len(problems)} problem(s) over {len(files)} files:\n" + "\n".join(problems) + f"\n{log}"
    )


# --------------------------------------------------------------------------- big multiframe


@pytest.fixture(scope="session")
def big_object(tmp_path_factory: pytest.TempPathFactory) -> BigObject:
    """400 x 512 x 512 x 16-bit random frames: 200 MiB of Pixel Data, generated once."""
    return write_big_multiframe(
        tmp_path_factory.mktemp("big") / "big.dcm", seed=2024, frames=400, rows=512, cols=512
    )


@pytest.mark.slow
def test_storescu_large_multiframe(appliance: Appliance, big_object: BigObject) -> None:
    storescu = require_tool("storescu")
    assert big_object.dataset_bytes >= 200 * 1024 * 1024
    cfg = storescu_config(
        appliance.root / "big.cfg", ExplicitVRLittleEndian, [EnhancedCTImageStorage]
    )
    cp = run_tool(
        [
            storescu, "-xf", str(cfg), "P", "-aet", CALLING_AE, "-aec", appliance.ae_title,
            "127.0.0.1", str(appliance.port), str(big_object.path),
        ],
        timeout_s=180,
        env=dcmtk_env(nodelay=True),
    )  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    rec = index_get(appliance.data, big_object.sop_instance_uid)
    assert rec is not None, f"not indexed; storescu said:\n{cp.stderr}"
    path = appliance.data / rec.relpath
    assert path.is_file()
    assert rec.size_bytes == path.stat().st_size
    assert str(rec.transfer_syntax_uid) == ExplicitVRLittleEndian
    digest, count = sha256_of_dataset(path)
    assert count == big_object.dataset_bytes
    assert digest == big_object.dataset_sha256, "stored dataset bytes differ from what was sent"


# --------------------------------------------------------------------------- parallel senders


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """4 patients x 2 studies x 5 series x 5 instances = 200 small CT objects."""
    return write_ct_corpus(tmp_path_factory.mktemp("corpus"), seed=7)


def test_four_parallel_storescu(appliance: Appliance, small_corpus: list[Path]) -> None:
    storescu = require_tool("storescu")
    cfg = storescu_config(appliance.root / "ct.cfg", ExplicitVRLittleEndian, [CTImageStorage])
    quarters = [small_corpus[i::4] for i in range(4)]

    def command(i: int, files: list[Path]) -> list[str]:
        return [
            storescu, "-xf", str(cfg), "P", "-nh", "-aet", f"{CALLING_AE}{i}",
            "-aec", appliance.ae_title, "127.0.0.1", str(appliance.port), *map(str, files),
        ]  # fmt: skip

    procs = [
        subprocess.Popen(
            command(i, quarter),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dcmtk_env(nodelay=True),
        )
        for i, quarter in enumerate(quarters)
    ]
    outputs = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("a storescu did not finish within 120 s")
        outputs.append((proc.returncode, err))
    assert all(rc == 0 for rc, _ in outputs), outputs

    originals = {path: pydicom.dcmread(path) for path in small_corpus}
    records = index_get_many(appliance.data, [str(ds.SOPInstanceUID) for ds in originals.values()])
    problems: list[str] = []
    for i, quarter in enumerate(quarters):
        for path in quarter:
            ds = originals[path]
            rec = records[str(ds.SOPInstanceUID)]
            found = stored_problems(
                appliance.data, ds, calling_ae=f"{CALLING_AE}{i}", record=rec, compare=False
            )
            if rec is not None and not found:
                if sha256_of_dataset(appliance.data / rec.relpath) != sha256_of_dataset(path):
                    found.append(f"{path.name}: stored dataset bytes differ from the file's")
            problems += found
    assert not problems, "\n".join(problems[:50])

    stats = appliance.stats()
    expected = {
        "patients": len({str(ds.PatientID) for ds in originals.values()}),
        "studies": len({str(ds.StudyInstanceUID) for ds in originals.values()}),
        "series": len({str(ds.SeriesInstanceUID) for ds in originals.values()}),
        "instances": len(originals),
    }
    assert expected == {"patients": 4, "studies": 8, "series": 40, "instances": 200}
    assert {k: stats[k] for k in expected} == expected
    on_disk = sum(rec.size_bytes for rec in records.values() if rec is not None)
    assert stats["stored_bytes"] == on_disk
