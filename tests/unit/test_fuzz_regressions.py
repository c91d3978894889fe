"""Replay the fuzz corpora and every saved crash through the harnesses, without atheris.

Each file under ``tests/fuzz/corpus/<target>/`` and ``tests/fuzz/crashes/<target>/`` goes
through that harness's ``check`` (the body of its ``TestOneInput``): an exception other than
the target's documented ones fails the test. A crash whose fix is pending is listed in
``KNOWN_CRASHES`` with the reason, and runs as ``xfail(strict=True)``, so the test starts
failing (XPASS) the day it is fixed and the entry must go.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fuzz import fuzz_command, fuzz_header, fuzz_pdu
from tests.fuzz._harness import CORPUS_DIR, CRASHES_DIR

CHECKS: dict[str, Callable[[bytes], None]] = {
    "pdu": fuzz_pdu.check,
    "command": fuzz_command.check,
    "header": fuzz_header.check,
}

# "<target>/<file name>" -> why it still crashes (report it; remove the entry once fixed).
KNOWN_CRASHES: dict[str, str] = {
    "pdu/crash-4ddcacaeb4a436e741c4dfc9f3bab3de11ec743a": (
        "appliance/ul/pdu.py: encode_pdu sorts A-ASSOCIATE items by type, so unknown items "
        "received out of type order come back reordered: decode(encode(decode(x))) != "
        "decode(x), against the module's 'exact inverse' contract"
    ),
    "command/crash-5626df0ca90849e325bc9ff3923b5fcf9b46575c": (
        "appliance/dimse/command.py: a UI value with non-ASCII bytes decodes, but "
        "encode_command_set writes it back with '?' in their place (lossy round trip)"
    ),
    "command/crash-2bf68f4c5dcca7b497a6f29d3866fb9b55b2d179": (
        "appliance/dimse/command.py: an (0000,0902) Error Comment longer than 64 characters "
        "decodes, but encode_command_set cuts it to 64 (LO): lossy round trip"
    ),
}


def _cases() -> list[object]:
    cases: list[object] = []
    for target in CHECKS:
        for root in (CORPUS_DIR, CRASHES_DIR):
            folder = root / target
            files = sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []
            for path in files:
                key = f"{target}/{path.name}"
                marks = []
                if root is CRASHES_DIR and key in KNOWN_CRASHES:
                    marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_CRASHES[key]))
                cases.append(pytest.param(target, path, id=f"{root.name}/{key}", marks=marks))
    return cases


def test_every_target_has_a_seed_corpus() -> None:
    for target in CHECKS:
        assert len(list((CORPUS_DIR / target).glob("*"))) >= 20, target


def test_known_crashes_exist() -> None:
    for key in KNOWN_CRASHES:
        assert (CRASHES_DIR / key).is_file(), key


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("target", "path"), _cases())
def test_replay(target: str, path: Path) -> None:
    CHECKS[target](path.read_bytes())


def test_checks_can_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness oracle is live: a contract violation raises out of ``check``."""
    answers = iter(({0x0110: 1}, {0x0110: 2}))  # a decoder that is not the encoder's inverse
    monkeypatch.setattr(fuzz_command, "decode_command_set", lambda data: next(answers))
    with pytest.raises(AssertionError):
        fuzz_command.check(b"")
