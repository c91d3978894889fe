"""workers.layout: hashed, bounded, patient-free object paths."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from workers.layout import index_dir, object_relpath, objects_dir, tmp_dir

PATTERN = re.compile(
    r"^objects/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{16}/[0-9a-f]{16}/[0-9a-f]{40}\.dcm$"
)


def test_shape_and_determinism() -> None:
    p = object_relpath("1.2.3", "1.2.3.4", "1.2.3.4.5")
    assert PATTERN.match(p), p
    assert p == object_relpath("1.2.3\x00", "1.2.3.4 ", "1.2.3.4.5")  # padding ignored
    study = hashlib.sha1(b"1.2.3").hexdigest()
    assert p.startswith(f"objects/{study[:2]}/{study[2:4]}/{study[:16]}/")
    assert p.endswith(hashlib.sha1(b"1.2.3.4.5").hexdigest() + ".dcm")


def test_study_locality_and_distinct_files() -> None:
    paths = [
        object_relpath("1.2.3", f"1.2.3.{s}", f"1.2.3.{s}.{i}") for s in range(3) for i in range(50)
    ]
    assert len(set(paths)) == len(paths)
    assert len({p.rsplit("/", 2)[0] for p in paths}) == 1  # one study subtree
    assert len({p.rsplit("/", 1)[0] for p in paths}) == 3  # one directory per series


def test_fan_out_is_bounded_and_spread() -> None:
    tops = {object_relpath(f"2.25.{i}", "1", "1").split("/")[1] for i in range(5000)}
    assert all(len(t) == 2 for t in tops) and len(tops) > 200  # ~all of the 256 used


def test_no_uid_text_in_path() -> None:
    p = object_relpath("1.2.840.99", "../../etc", "Doe^John")
    assert "Doe" not in p and ".." not in p and PATTERN.match(p)


def test_dirs() -> None:
    root = Path("/data")
    assert objects_dir(root) == root / "objects" and tmp_dir("/data") == root / "tmp"
    assert index_dir(root) == root / "index"
