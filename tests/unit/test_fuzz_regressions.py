"""Replay the fuzz corpora and every saved crash through the harnesses, without atheris.

Each file under ``tests/fuzz/corpus/<target>/`` and ``tests/fuzz/crashes/<target>/`` goes
through that harness's ``check`` (the body of its ``TestOneInput``): an exception other than
the target's documented ones fails the test. A crash whose fix is pending is listed in
``KNOWN_CRASHES`` with the reason, and runs as ``xfail(strict=True)``, so the test starts
failing (XPASS) the day it is fixed and the entry must go. Each fixed finding also has a
focused test below, naming the crash file it came from.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.dimse.command import CommandValue, Tag, decode_command_set, encode_command_set
from appliance.dimse.messages import CStoreRSP, decode_message, encode_message
from appliance.dimse.responses import RequestIdentity, status_response
from appliance.dimse.status import Status
from appliance.ul.pdu import (
    AssociateAC,
    PresentationContextAC,
    UnknownItem,
    decode_pdu,
    encode_pdu,
)
from tests.fuzz import fuzz_command, fuzz_header, fuzz_pdu, line_coverage
from tests.fuzz._harness import CORPUS_DIR, CRASHES_DIR, REPO_ROOT

CHECKS: dict[str, Callable[[bytes], None]] = {
    "pdu": fuzz_pdu.check,
    "command": fuzz_command.check,
    "header": fuzz_header.check,
}

# "<target>/<file name>" -> why it still crashes (report it; remove the entry once fixed).
# Empty: the three round-trip findings of the first runs are fixed and pinned below.
KNOWN_CRASHES: dict[str, str] = {}


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


def _item_types(encoded_associate: bytes) -> list[int]:
    """The item types of an encoded A-ASSOCIATE PDU's variable field, in wire order."""
    types, offset = [], 6 + 68  # PDU header, then the fixed fields (PS3.8 Table 9-17)
    while offset < len(encoded_associate):
        types.append(encoded_associate[offset])
        offset += 4 + int.from_bytes(encoded_associate[offset + 2 : offset + 4], "big")
    return types


def _ac(*unknown: UnknownItem) -> AssociateAC:
    contexts = (PresentationContextAC(1, 0, "1.2.840.10008.1.2"),)
    return AssociateAC("PACS", "SCU", contexts, unknown_items=unknown)


def test_unknown_associate_items_keep_their_order() -> None:
    # crash-4ddcacae...: unknown items of types 0x25 then 0x00 came back as 0x00, 0x25
    # because the encoder sorted every item by type.
    ac = _ac(UnknownItem(0x25, b"\x03\x00"), UnknownItem(0x00, b"Q\x00"))
    encoded = encode_pdu(ac)
    assert decode_pdu(encoded[0], memoryview(encoded)[6:]) == ac
    assert _item_types(encoded) == [0x10, 0x21, 0x25, 0x00, 0x50]


def test_items_we_send_stay_in_increasing_type_order() -> None:
    # PS3.8 §9.3.1: in-order unknown items are merged into place, not appended.
    ac = _ac(UnknownItem(0x15, b""), UnknownItem(0x60, b"x"))
    assert _item_types(encode_pdu(ac)) == [0x10, 0x15, 0x21, 0x50, 0x60]


def test_non_ascii_ui_is_echoed_byte_for_byte() -> None:
    # crash-5626df0c...: a UI with bytes outside ASCII decoded (latin-1) but re-encoded as
    # '?', so a C-STORE-RSP would not echo the RQ's UID (PS3.7 §9.3.1.2).
    raw = b"\xcf\xd1\xcd\xd1\xc7\xc70.10008.5.1.4.1.1.2"
    command = encode_command_set({Tag.AFFECTED_SOP_CLASS_UID: raw.decode("latin-1")})
    assert raw in command and b"?" not in command
    elements = decode_command_set(command)
    assert elements[Tag.AFFECTED_SOP_CLASS_UID] == raw.decode("latin-1")
    assert encode_command_set(elements) == command


def test_long_error_comment_round_trips_but_ours_is_clamped() -> None:
    # crash-2bf68f4c...: a peer's 70-character (0000,0902) came back cut to 64. The codec
    # now keeps it whole; what we send ourselves is made a valid LO where it is written.
    peer: dict[int, CommandValue] = {Tag.ERROR_COMMENT: "c" * 70}
    assert decode_command_set(encode_command_set(peer))[Tag.ERROR_COMMENT] == "c" * 70
    ours = decode_message(encode_message(CStoreRSP(1, Status.CANNOT_UNDERSTAND,
                                                   error_comment="\u00e9" + "e" * 99)))
    assert isinstance(ours, CStoreRSP) and ours.error_comment == "?" + "e" * 63
    rq = RequestIdentity(0x0001, 5, "1.2", "1.2.3", True)
    rsp = decode_command_set(status_response(rq, Status.CANNOT_UNDERSTAND, "\u2192" * 80))
    assert rsp[Tag.ERROR_COMMENT] == "?" * 64


def test_line_coverage_counts_only_function_lines_run() -> None:
    """tests/fuzz/line_coverage.py, which the README's fuzzing figures come from."""
    target = "appliance/dimse/command.py"
    inputs = sorted((CORPUS_DIR / "command").glob("*"))
    hit = line_coverage.replay(fuzz_command.check, inputs, (target,))[target]
    lines = line_coverage.executable_lines(REPO_ROOT / target)
    first_line = decode_command_set.__code__.co_firstlineno
    assert first_line in lines and first_line in hit
    source = (REPO_ROOT / target).read_text().splitlines()
    table_row = source.index("    C_STORE_RQ = 0x0001") + 1  # a class body runs at import
    assert table_row not in lines
    assert 0 < len(hit & lines) < len(lines)
