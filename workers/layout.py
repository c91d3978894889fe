"""Where objects live under the data root (DESIGN "Storage layout").

    <data>/objects/ab/cd/<study:16>/<series:16>/<sop:40>.<copy:8>.dcm
    <data>/tmp/                       spool files, renamed into objects/ (same filesystem)
    <data>/index/                     the LMDB environment

Every path component is a SHA-1 hex digest of a UID, never patient data, so a path leaks
nothing and is safe whatever bytes a peer put in a UID. Trade-offs chosen here:

  - The two fan-out levels (256 x 256 directories) come from the *study* hash, and a study's
    series and instances sit below one directory: retrieving, moving or deleting a study walks
    one subtree (locality for C-MOVE/C-GET), at the cost of a directory per series holding as
    many files as the series has instances (thousands at most for real series; ext4 and XFS
    index large directories, so lookups stay O(1)).
  - Fan-out of the top two levels is bounded (256 each); a study directory is created only
    under its own leaf, so a million studies put about 15 study directories in each leaf.
  - Study and series directory names are 64-bit digest prefixes: a collision would merely
    share a directory. The file name is the full 160-bit digest of the SOP Instance UID, the
    unit of identity in the index, so two instances never map to one file.
  - The path depends on Study and Series too: an instance re-sent under another study or
    series gets a new path, and the index writer reports the old one for deletion.
  - ``workers.store`` inserts a random 8-hex-digit copy tag before ``.dcm``: two copies of one
    SOP Instance in flight at once (two associations, or `pacs ingest` beside `pacs serve`)
    never rename over each other; the index keeps one and the other copy is deleted.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

OBJECTS = "objects"
TMP = "tmp"
INDEX = "index"


def _digest(uid: str) -> str:
    # UIDs arrive NUL- or space-padded from some encoders (PS3.5 §9.1); the padding is not
    # part of the UID, so it must not change the path.
    return hashlib.sha1(uid.strip(" \x00").encode("utf-8", "surrogateescape")).hexdigest()


def object_relpath(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """Path of an object relative to the data root, e.g. ``objects/3f/a0/<..>/<..>/<..>.dcm``."""
    study = _digest(study_uid)
    return (f"{OBJECTS}/{study[0:2]}/{study[2:4]}/{study[:16]}/{_digest(series_uid)[:16]}/"
            f"{_digest(sop_uid)}.dcm")


def objects_dir(data_root: str | Path) -> Path:
    """Root of the stored Part 10 files."""
    return Path(data_root) / OBJECTS


def tmp_dir(data_root: str | Path) -> Path:
    """Spool directory; on the same filesystem as ``objects_dir`` so rename is atomic."""
    return Path(data_root) / TMP


def index_dir(data_root: str | Path) -> Path:
    """The LMDB environment directory."""
    return Path(data_root) / INDEX
