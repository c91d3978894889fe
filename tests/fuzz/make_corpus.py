"""Regenerate the committed seed corpora under ``tests/fuzz/corpus/{pdu,command,header}``.

Seeds are small valid inputs: the hand-counted PDUs of ``tests/fixtures/pdus.py`` (whole, with
their 6-byte header, as the PDU harness reads a stream), command sets of every DIMSE message
type the appliance handles (PS3.7 §9.3, §10.3), and the first bytes of the data sets in
pydicom's bundled test files (File Meta group dropped, one selector byte in front, see
``fuzz_header``). File names are content hashes, as libFuzzer names its own finds.

    .venv/bin/python tests/fuzz/make_corpus.py
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

if __name__ == "__main__":  # run as a script: make ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from appliance.dimse.command import CommandField, CommandValue, Tag, encode_command_set
from appliance.ul.pdu import (
    PDV,
    AssociateAC,
    AssociateRQ,
    AsynchronousOperationsWindow,
    ImplementationClassUID,
    ImplementationVersionName,
    MaximumLength,
    PDataTF,
    PresentationContextAC,
    PresentationContextRQ,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformation,
    UserSubItem,
    encode_pdu,
)
from tests.fixtures import pdus
from tests.fuzz._harness import CORPUS_DIR
from tests.fuzz.fuzz_header import SYNTAXES, selector

Elements = dict[int, CommandValue]
HEADER_SEED_BYTES = 2048  # the walk stops before Pixel Data; a short head keeps seeds small
_CT = "1.2.840.10008.5.1.4.1.1.2"
_UID = "1.2.826.0.1.3680043.8.498.1"


def pdu_seeds() -> Iterator[bytes]:
    whole = [value for name, value in vars(pdus).items()
             if name.isupper() and isinstance(value, bytes) and 1 <= value[0] <= 7]
    yield from whole
    yield b"".join(whole)  # one stream of every PDU type
    yield from (a + b for a, b in zip(whole, whole[1:], strict=False))  # PDU pairs
    for command in command_seeds():  # P-DATA-TF carrying a command fragment (PS3.8 E.2)
        yield encode_pdu(PDataTF((PDV(1, True, True, memoryview(command)),)))
    yield from negotiation_seeds()


def negotiation_seeds() -> Iterator[bytes]:
    """A-ASSOCIATE-RQ/AC with every user information sub-item (PS3.7 D.3.3), so the fuzzer
    starts from the decoders of user identity and common extended negotiation too."""
    contexts = (PresentationContextRQ(1, _CT, ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")),)
    rq_items: tuple[UserSubItem, ...] = (
        MaximumLength(16384), ImplementationClassUID(_UID), AsynchronousOperationsWindow(2, 1),
        RoleSelection(_CT, True, True), ImplementationVersionName("PACS_1"),
        SOPClassExtendedNegotiation(_CT, b"\x01\x00\x01"),
        SOPClassCommonExtendedNegotiation(_CT, "1.2.840.10008.4.2", ("1.2.3", "1.2.4.5")),
        UserIdentityRQ(2, True, b"user", b"secret"),
    )
    yield encode_pdu(AssociateRQ("PACS", "MODALITY", contexts, UserInformation(rq_items)))
    ac_items: tuple[UserSubItem, ...] = (MaximumLength(0), ImplementationClassUID(_UID),
                                         UserIdentityAC(b"ok-token"))
    accepted = (PresentationContextAC(1, 0, "1.2.840.10008.1.2.1"),)
    yield encode_pdu(AssociateAC("PACS", "MODALITY", accepted, UserInformation(ac_items)))


def command_seeds() -> Iterator[bytes]:
    c = Tag
    echo: Elements = {c.AFFECTED_SOP_CLASS_UID: "1.2.840.10008.1.1", c.MESSAGE_ID: 1,
            c.COMMAND_FIELD: CommandField.C_ECHO_RQ, c.COMMAND_DATA_SET_TYPE: 0x0101}
    store: Elements = {c.AFFECTED_SOP_CLASS_UID: _CT, c.COMMAND_FIELD: CommandField.C_STORE_RQ,
             c.MESSAGE_ID: 7, c.PRIORITY: 0, c.COMMAND_DATA_SET_TYPE: 0x0000,
             c.AFFECTED_SOP_INSTANCE_UID: _UID, c.MOVE_ORIGINATOR_AE_TITLE: "MOVER",
             c.MOVE_ORIGINATOR_MESSAGE_ID: 3}
    store_rsp: Elements = {c.AFFECTED_SOP_CLASS_UID: _CT, c.COMMAND_FIELD: CommandField.C_STORE_RSP,
                 c.MESSAGE_ID_BEING_RESPONDED_TO: 7, c.COMMAND_DATA_SET_TYPE: 0x0101,
                 c.STATUS: 0xC000, c.AFFECTED_SOP_INSTANCE_UID: _UID,
                 c.ERROR_COMMENT: "cannot understand", c.OFFENDING_ELEMENT: (0x0008, 0x0018)}
    find: Elements = {c.AFFECTED_SOP_CLASS_UID: "1.2.840.10008.5.1.4.1.2.2.1", c.MESSAGE_ID: 2,
            c.COMMAND_FIELD: CommandField.C_FIND_RQ, c.PRIORITY: 2,
            c.COMMAND_DATA_SET_TYPE: 0x0000}
    move: Elements = {**find, c.COMMAND_FIELD: CommandField.C_MOVE_RQ,
                      c.MOVE_DESTINATION: "STORESCP"}
    move_rsp: Elements = {c.AFFECTED_SOP_CLASS_UID: "1.2.840.10008.5.1.4.1.2.2.2",
                c.COMMAND_FIELD: CommandField.C_MOVE_RSP, c.MESSAGE_ID_BEING_RESPONDED_TO: 2,
                c.COMMAND_DATA_SET_TYPE: 0x0101, c.STATUS: 0xFF00,
                c.NUMBER_OF_REMAINING_SUBOPERATIONS: 4, c.NUMBER_OF_COMPLETED_SUBOPERATIONS: 1,
                c.NUMBER_OF_FAILED_SUBOPERATIONS: 0, c.NUMBER_OF_WARNING_SUBOPERATIONS: 0}
    cancel: Elements = {c.COMMAND_FIELD: CommandField.C_CANCEL_RQ,
                        c.MESSAGE_ID_BEING_RESPONDED_TO: 2,
              c.COMMAND_DATA_SET_TYPE: 0x0101}
    # N-GET-RQ with a multi-valued AT, and the retired US-with-VM-1-n Overlays (Table E.2-1).
    n_get: Elements = {c.COMMAND_FIELD: CommandField.N_GET_RQ, c.MESSAGE_ID: 4,
                       c.REQUESTED_SOP_CLASS_UID: _CT, c.REQUESTED_SOP_INSTANCE_UID: _UID,
                       c.COMMAND_DATA_SET_TYPE: 0x0101, c.OVERLAYS: (0x6000, 0x6002),
                       c.ATTRIBUTE_IDENTIFIER_LIST: (0x00100010, 0x00100020)}
    for elements in (echo, store, store_rsp, find, move, move_rsp, cancel, n_get):
        encoded = encode_command_set(elements)
        yield encoded
        yield encoded[12:]  # without (0000,0000) Command Group Length
        yield encoded[:-3]  # cut inside the last element: the error path


def _data_set_offset(path: Path) -> tuple[int, str] | None:
    """Where the data set starts in a Part 10 (or meta-less) file, and its transfer syntax."""
    from pydicom import dcmread

    with path.open("rb") as f:
        try:
            ds = dcmread(f, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - a test file pydicom itself cannot read: no seed
            return None
        meta = getattr(ds, "file_meta", None)
        syntax = str(getattr(meta, "TransferSyntaxUID", "") or "")
        if not syntax:
            syntax = "1.2.840.10008.1.2" if ds.is_implicit_VR else (
                "1.2.840.10008.1.2.1" if ds.is_little_endian else "1.2.840.10008.1.2.2")
    raw = path.read_bytes()
    start = 0
    if raw[128:132] == b"DICM":  # preamble, then the File Meta group (PS3.10 §7.1)
        start = 132
        while raw[start:start + 2] == b"\x02\x00":
            length = int.from_bytes(raw[start + 6:start + 8], "little")
            if raw[start + 4:start + 6] in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR"):
                length = int.from_bytes(raw[start + 8:start + 12], "little") + 4
            start += 8 + length
    return start, syntax


def header_seeds() -> Iterator[bytes]:
    import pydicom.data

    data_dir = Path(pydicom.data.__file__).parent / "test_files"
    for path in sorted(data_dir.glob("*.dcm")):
        found = _data_set_offset(path)
        if found is None or found[1] not in SYNTAXES and not found[1].startswith("1.2.840"):
            continue
        start, syntax = found
        if syntax not in SYNTAXES:
            syntax = "1.2.840.10008.1.2.4.50"  # any other compressed one: Explicit VR LE
        head = path.read_bytes()[start:start + HEADER_SEED_BYTES]
        yield bytes([selector(syntax, False)]) + head
        if path.stat().st_size - start <= HEADER_SEED_BYTES:
            yield bytes([selector(syntax, True)]) + head


def write(kind: str, seeds: Iterator[bytes]) -> int:
    out = CORPUS_DIR / kind
    out.mkdir(parents=True, exist_ok=True)
    names = set()
    for seed in seeds:
        name = hashlib.sha1(seed).hexdigest()  # noqa: S324 - a file name, not security
        (out / name).write_bytes(seed)
        names.add(name)
    return len(names)


def main() -> None:
    for kind, seeds in (("pdu", pdu_seeds()), ("command", command_seeds()),
                        ("header", header_seeds())):
        print(f"{kind}: {write(kind, seeds)} seeds")


if __name__ == "__main__":
    main()
