"""Deterministic benchmark corpora, each split into 4 folders (one per parallel association).

- ``ct``: CT Image Storage, 512x512x16-bit (~0.5 MB), 10 patients x 2 studies x 5 series;
- ``small``: the same hierarchy at 64x64 (~8 KB), where per-object costs dominate;
- ``large``: Enhanced CT multiframe objects of 200 512x512 frames (~105 MB), where per-byte
  costs and the disk dominate;
- ``huge`` (only when asked for): one Enhanced CT of 4096 frames (~2.1 GB), to watch the
  receivers' memory while an object far bigger than any buffer arrives.

The generators are the test fixtures' (``tests/fixtures/make_datasets.py``): same seed, same
bytes, so two machines benchmark the same corpus. A corpus is written once under the work
directory, in a folder named after its parameters, and reused by later runs; a ``.complete``
marker written last means an interrupted generation is redone rather than half-used.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tests.fixtures.make_datasets import write_big_multiframe, write_ct_corpus

PARTS = 4  # folders per corpus: the 4-association runs send one folder each
_SEED = 7
_PATIENTS, _STUDIES, _SERIES = 10, 2, 5  # 100 series per corpus


@dataclass(frozen=True, slots=True)
class CorpusSpec:
    """What to generate: ``count`` objects (``frames`` > 0: multiframe of that many frames)."""

    name: str
    count: int
    rows: int
    frames: int = 0

    @property
    def folder(self) -> str:
        kind = f"mf{self.frames}" if self.frames else "sf"
        return f"{self.name}-{self.count}x{self.rows}-{kind}-seed{_SEED}"


@dataclass(frozen=True, slots=True)
class Corpus:
    """A generated corpus: its root folder, the ``PARTS`` sub-folders, file count and bytes."""

    spec: CorpusSpec
    root: Path
    parts: tuple[Path, ...]
    files: int
    bytes: int
    sizes: tuple[int, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def mean_bytes(self) -> float:
        return self.bytes / self.files if self.files else 0.0


def default_specs(*, quick: bool = False) -> dict[str, CorpusSpec]:
    """The issue's corpora, or small ones for ``--quick`` (seconds, not minutes)."""
    if quick:
        return {
            "ct": CorpusSpec("ct", 40, 512),
            "small": CorpusSpec("small", 200, 64),
            "large": CorpusSpec("large", 4, 512, frames=20),
            "huge": CorpusSpec("huge", 1, 512, frames=400),
        }
    return {
        "ct": CorpusSpec("ct", 1000, 512),
        "small": CorpusSpec("small", 5000, 64),
        "large": CorpusSpec("large", 4, 512, frames=200),
        "huge": CorpusSpec("huge", 1, 512, frames=4096),
    }


def _split(files: list[Path], root: Path) -> None:
    """Move ``files`` round-robin into ``root/part<i>`` (same hierarchy mix in every part)."""
    for i in range(PARTS):
        (root / f"part{i}").mkdir()
    for i, path in enumerate(sorted(files)):
        path.rename(root / f"part{i % PARTS}" / path.name)


def _generate(spec: CorpusSpec, root: Path) -> None:
    staging = root / "staging"
    if spec.frames:
        staging.mkdir(parents=True)
        files = [
            write_big_multiframe(staging / f"big{i}.dcm", seed=_SEED * 1000 + i,
                                 frames=spec.frames, rows=spec.rows, cols=spec.rows).path
            for i in range(spec.count)
        ]  # fmt: skip
    else:
        series = _PATIENTS * _STUDIES * _SERIES
        made = write_ct_corpus(
            staging, seed=_SEED, patients=_PATIENTS, studies_per_patient=_STUDIES,
            series_per_study=_SERIES, instances_per_series=-(-spec.count // series),
            rows=spec.rows, cols=spec.rows,
        )  # fmt: skip
        files = sorted(made)[: spec.count]  # names are UIDs: a deterministic, mixed subset
        for path in set(made) - set(files):
            path.unlink()
    _split(files, root)
    staging.rmdir()


def ensure(spec: CorpusSpec, workdir: Path) -> Corpus:
    """The corpus for ``spec`` under ``workdir``, generated if not there yet."""
    root = workdir / "corpora" / spec.folder
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        _generate(spec, root)
        (root / ".complete").write_text("")
    parts = tuple(sorted(p for p in root.iterdir() if p.is_dir()))
    sizes = tuple(f.stat().st_size for p in parts for f in sorted(p.iterdir()))
    return Corpus(spec, root, parts, len(sizes), sum(sizes), sizes)
