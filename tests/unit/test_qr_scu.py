"""``appliance.qr_scu``: identifier codec, the negotiation items it proposes, and the receive
logic against a scripted peer built on our own acceptor-role ``Association``.

The scripted peer runs in a thread on a loopback socket and sends exactly the bytes a test
wants, including what a well-behaved SCP would rarely send: several messages' PDVs packed
into one P-DATA-TF, a data set cut into 1-byte PDVs, a request of its own in the middle of a
query, a response to the wrong Message ID. Every wait is bounded by socket timeouts.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)

from appliance.dimse.assembler import CommandComplete, DataFragment, MessageAssembler
from appliance.dimse.command import Tag
from appliance.dimse.messages import (
    CCancelRQ,
    CEchoRQ,
    CFindRSP,
    CGetRSP,
    CStoreRQ,
    CStoreRSP,
    Message,
    encode_message,
    message_from_elements,
)
from appliance.negotiation.qr_classes import STUDY_ROOT_FIND, STUDY_ROOT_GET, STUDY_ROOT_MOVE
from appliance.qr_scu import (
    DEFAULT_GET_STORAGE_CLASSES,
    QRSCU,
    decode_identifier,
    encode_identifier,
    get_contexts,
    qr_contexts,
    scp_roles,
)
from appliance.scu import AssociationAborted
from appliance.ul.association import (
    NEED_DATA,
    AcceptAssociation,
    AssociateRequested,
    Association,
    PDataReceived,
    ReleaseRequested,
    ReplyRelease,
    Role,
)
from appliance.ul.pdu import (
    AssociateAC,
    MaximumLength,
    PresentationContextAC,
    RoleSelection,
    SOPClassExtendedNegotiation,
    UserInformation,
    encode_pdv_header,
)

# ---------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    "ts", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
           DeflatedExplicitVRLittleEndian],  # fmt: skip
)
def test_identifier_round_trip_in_each_native_syntax(ts: str) -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = "Müller^Jürgen*"
    ds.StudyDate = "20240101-20240131"
    ds.StudyInstanceUID = ""
    ds.NumberOfStudyRelatedInstances = None
    raw = encode_identifier(ds, ts)
    back = decode_identifier(raw, ts)
    assert back == ds and str(back.PatientName) == "Müller^Jürgen*"
    if ts == ImplicitVRLittleEndian:
        assert raw[:4] == b"\x08\x00\x05\x00" and raw[4:8] == b"\x0a\x00\x00\x00"  # no VR
    if ts == ExplicitVRBigEndian:
        assert raw[:6] == b"\x00\x08\x00\x05CS"


def test_decode_identifier_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="undecodable"):
        decode_identifier(b"\x08\x00\x05\x00\xff\xff\xff\x7f", DeflatedExplicitVRLittleEndian)


def test_get_contexts_and_roles_fit_one_association() -> None:
    contexts = get_contexts()
    assert len(contexts) <= 128
    assert [c.abstract_syntax for c in contexts[:2]] == ["1.2.840.10008.5.1.4.1.2.1.3",
                                                         STUDY_ROOT_GET]  # fmt: skip
    assert {c.abstract_syntax for c in contexts[2:]} == set(DEFAULT_GET_STORAGE_CLASSES)
    assert CTImageStorage in DEFAULT_GET_STORAGE_CLASSES
    roles = scp_roles([CTImageStorage, CTImageStorage, MRImageStorage])
    # PS3.7 D.3.3.4: we propose the SCP role only, once per SOP class.
    assert roles == (RoleSelection(CTImageStorage, False, True),
                     RoleSelection(MRImageStorage, False, True))  # fmt: skip


def test_associate_rq_carries_roles_and_relational_extended_negotiation() -> None:
    contexts = qr_contexts([STUDY_ROOT_FIND, STUDY_ROOT_MOVE]) + get_contexts(
        [STUDY_ROOT_GET], [CTImageStorage])  # fmt: skip
    scu = QRSCU("127.0.0.1", 104, contexts=contexts, scp_role_for=[CTImageStorage],
                relational=True)  # fmt: skip
    items = scu._associate_rq().user_information.items
    assert RoleSelection(CTImageStorage, False, True) in items
    ext = [i for i in items if isinstance(i, SOPClassExtendedNegotiation)]
    # PS3.4 C.5.1.1.1: byte 1 = 1 asks for relational queries / retrieval; only Q/R classes.
    assert {(i.sop_class_uid, i.info) for i in ext} == {
        (STUDY_ROOT_FIND, b"\x01"), (STUDY_ROOT_MOVE, b"\x01"), (STUDY_ROOT_GET, b"\x01")}
    plain = QRSCU("127.0.0.1", 104, contexts=contexts)._associate_rq().user_information.items
    assert not [i for i in plain if isinstance(i, SOPClassExtendedNegotiation | RoleSelection)]


# ---------------------------------------------------------------------------- scripted peer


@dataclass
class Peer:
    """The SCP side: our acceptor-role Association over one accepted socket."""

    sock: socket.socket
    assoc: Association = field(default_factory=lambda: Association(Role.ACCEPTOR))
    assembler: MessageAssembler = field(default_factory=MessageAssembler)
    contexts: dict[int, str] = field(default_factory=dict)

    def events(self) -> Iterator[object]:
        while True:
            ev = self.assoc.next_event()
            if ev is NEED_DATA:
                self.assoc.receive_data(self.sock.recv(65536))
                continue
            yield ev

    def accept(self, ext_reply: bytes | None = None) -> None:
        ev = next(self.events())
        assert isinstance(ev, AssociateRequested)
        rq = ev.rq
        pcs = tuple(PresentationContextAC(pc.context_id, 0, pc.transfer_syntaxes[0])
                    for pc in rq.presentation_contexts)  # fmt: skip
        self.contexts = {pc.context_id: pc.transfer_syntaxes[0] for pc in rq.presentation_contexts}
        items: list[object] = [MaximumLength(16384)]
        items += [i for i in rq.user_information.items if isinstance(i, RoleSelection)]
        if ext_reply is not None:
            items += [SOPClassExtendedNegotiation(i.sop_class_uid, ext_reply)
                      for i in rq.user_information.items
                      if isinstance(i, SOPClassExtendedNegotiation)]  # fmt: skip
        ac = AssociateAC(rq.called_ae, rq.calling_ae, pcs, UserInformation(tuple(items)))  # type: ignore[arg-type]
        self.sock.sendall(self.assoc.send(AcceptAssociation(ac)))

    def receive(self) -> tuple[int, Message, bytes | None]:
        """The next whole message: (context id, message, data set or None)."""
        pending: Message | None = None
        data = bytearray()
        for ev in self.events():
            if isinstance(ev, ReleaseRequested):
                self.sock.sendall(self.assoc.send(ReplyRelease()))
                raise EOFError("released")
            assert isinstance(ev, PDataReceived), ev
            for pdv in ev.pdvs:
                for out in self.assembler.feed(pdv):
                    if isinstance(out, CommandComplete):
                        msg = message_from_elements(out.elements)
                        if not out.has_data_set:
                            return out.context_id, msg, None
                        pending = msg
                    elif isinstance(out, DataFragment):
                        data += out.data
                        if out.is_last:
                            assert pending is not None
                            return pdv.context_id, pending, bytes(data)
        raise AssertionError("unreachable")

    def send(self, messages: list[tuple[int, Message, bytes | None]], chunk: int = 0) -> None:
        """All ``messages`` in ONE P-DATA-TF; data sets cut into ``chunk``-byte PDVs."""
        items: list[bytes] = []
        for cid, msg, data in messages:
            command = encode_message(msg)
            items += [encode_pdv_header(cid, True, True, len(command)), command]
            if data is not None:
                size = chunk or max(len(data), 1)
                parts = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
                for n, part in enumerate(parts):
                    items += [encode_pdv_header(cid, False, n == len(parts) - 1, len(part)), part]
        self.sock.sendall(b"".join(self.assoc.send_pdata_items(items)))


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[Peer], None]], int]]:
    """Run ``script(peer)`` in a thread for the next connection; returns the port."""
    threads: list[threading.Thread] = []
    errors: list[BaseException] = []
    listeners: list[socket.socket] = []

    def start(script: Callable[[Peer], None]) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(10)
        listeners.append(listener)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(10)
                with conn:
                    script(Peer(conn))
            except BaseException as exc:  # noqa: BLE001 - reported by the fixture
                errors.append(exc)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        threads.append(t)
        return int(listener.getsockname()[1])

    yield start
    for t in threads:
        t.join(10)
    for listener in listeners:
        listener.close()
    if errors:
        raise errors[0]


def _find_rsp(msg_id: int, status: int, data: bool) -> CFindRSP:
    return CFindRSP(msg_id, status, STUDY_ROOT_FIND, data_set=data)


def _ident(**keys: object) -> Dataset:
    ds = Dataset()
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def test_find_packed_pdus_tiny_pdvs_and_a_peer_request_midway(scripted: Callable[..., int]) -> None:
    seen: dict[str, object] = {}

    def script(peer: Peer) -> None:
        peer.accept(ext_reply=b"\x01")
        cid, rq, data = peer.receive()
        ts = peer.contexts[cid]
        seen["rq"], seen["ident"] = rq, decode_identifier(data or b"", ts)
        match = encode_identifier(_ident(QueryRetrieveLevel="STUDY", StudyID="1"), ts)
        # The SCP's own C-ECHO-RQ in the middle: we must answer 0x0211, then go on.
        peer.send([(cid, _find_rsp(1, 0xFF00, True), match),
                   (cid, CEchoRQ(77), None)], chunk=1)  # fmt: skip
        _, echo_rsp, _ = peer.receive()
        seen["echo_rsp"] = echo_rsp
        match2 = encode_identifier(_ident(QueryRetrieveLevel="STUDY", StudyID="2"), ts)
        peer.send([(cid, _find_rsp(1, 0xFF01, True), match2), (cid, _find_rsp(1, 0, False), None)])
        with pytest.raises(EOFError):
            peer.receive()

    port = scripted(script)
    contexts = qr_contexts([STUDY_ROOT_FIND], [ImplicitVRLittleEndian])
    with QRSCU("127.0.0.1", port, contexts=contexts, relational=True, timeout_s=10) as scu:
        assert scu.relational_accepted(STUDY_ROOT_FIND)
        got = [(s, d.StudyID if d is not None else None)
               for s, d in scu.find(STUDY_ROOT_FIND, _ident(QueryRetrieveLevel="STUDY",
                                                             StudyID=""))]  # fmt: skip
    assert got == [(0xFF00, "1"), (0xFF01, "2"), (0x0000, None)]
    assert seen["ident"] == _ident(QueryRetrieveLevel="STUDY", StudyID="")
    echo_rsp = seen["echo_rsp"]
    assert echo_rsp.status == 0x0211 and echo_rsp.message_id_being_responded_to == 77  # type: ignore[attr-defined]


def test_get_answers_substores_with_on_store_status(
    scripted: Callable[..., int], tmp_path: Path
) -> None:
    store_rsps: list[CStoreRSP] = []
    big = bytes(range(256)) * 20  # 5120 bytes: spooled past a 1000-byte threshold

    def script(peer: Peer) -> None:
        peer.accept()
        cid, rq, _ = peer.receive()
        ct_cid = next(c for c, _ in peer.contexts.items() if c != cid)
        for n, (uid, payload) in enumerate([("1.2.3.1", b"\x08\x00\x16\x00" + b"x" * 8),
                                            ("1.2.3.2", big)]):  # fmt: skip
            peer.send([(ct_cid, CStoreRQ(100 + n, CTImageStorage, uid), payload)], chunk=700)
            _, rsp, _ = peer.receive()
            assert isinstance(rsp, CStoreRSP)
            store_rsps.append(rsp)
            peer.send([(cid, CGetRSP(1, 0xFF00, STUDY_ROOT_GET, 1 - n, n + 1, 0, 0), None)])
        failed = encode_identifier(_ident(FailedSOPInstanceUIDList=["1.2.3.2"]),
                                   peer.contexts[cid])  # fmt: skip
        peer.send([(cid, CGetRSP(1, 0xB000, STUDY_ROOT_GET, 0, 1, 1, 0, data_set=True), failed)])
        with pytest.raises(EOFError):
            peer.receive()

    calls: list[tuple[str, object, str]] = []

    def on_store(rq: CStoreRQ, data: bytes | Path, ts: str) -> int:
        calls.append((rq.affected_sop_instance_uid,
                      data if isinstance(data, bytes) else data.read_bytes(), ts))  # fmt: skip
        if isinstance(data, Path):
            assert data.parent == tmp_path and data.name.startswith(".qr-spool-")
        return 0x0000 if len(calls) == 1 else 0xA700

    port = scripted(script)
    contexts = get_contexts([STUDY_ROOT_GET], [CTImageStorage])
    with QRSCU("127.0.0.1", port, contexts=contexts, scp_role_for=[CTImageStorage],
               spool_dir=tmp_path, spool_threshold_bytes=1000, timeout_s=10) as scu:  # fmt: skip
        assert scu.scp_role_accepted(CTImageStorage)
        out = list(scu.get(STUDY_ROOT_GET, _ident(QueryRetrieveLevel="STUDY"), on_store))
    assert [c[0] for c in calls] == ["1.2.3.1", "1.2.3.2"] and calls[1][1] == big
    assert {c[2] for c in calls} == {ExplicitVRLittleEndian}
    assert [(r.message_id_being_responded_to, r.status, r.affected_sop_instance_uid)
            for r in store_rsps] == [(100, 0, "1.2.3.1"), (101, 0xA700, "1.2.3.2")]  # fmt: skip
    assert [(r.status, r.remaining, r.completed) for r in out] == [
        (0xFF00, 1, 1), (0xFF00, 0, 2), (0xB000, 0, 1)]  # fmt: skip
    assert out[-1].failed_sop_instance_uids == ("1.2.3.2",) and out[-1].failed == 1
    assert list(tmp_path.iterdir()) == []  # spool files removed


def test_cancel_is_sent_once_and_abandoned_operations_are_drained(
    scripted: Callable[..., int],
) -> None:
    cancels: list[int] = []

    def script(peer: Peer) -> None:
        peer.accept()
        for msg_id in (1, 2):
            cid, rq, _ = peer.receive()
            assert rq.message_id == msg_id  # type: ignore[union-attr]
            ident = encode_identifier(_ident(StudyID="1"), peer.contexts[cid])
            peer.send([(cid, _find_rsp(msg_id, 0xFF00, True), ident)])
            _, cancel, _ = peer.receive()
            assert isinstance(cancel, CCancelRQ)
            cancels.append(cancel.message_id_being_responded_to)
            peer.send([(cid, _find_rsp(msg_id, 0xFE00, False), None)])
        cid, _, _ = peer.receive()
        peer.send([(cid, _find_rsp(3, 0x0000, False), None)])
        with pytest.raises(EOFError):
            peer.receive()

    port = scripted(script)
    with QRSCU("127.0.0.1", port, contexts=qr_contexts([STUDY_ROOT_FIND]), timeout_s=10) as scu:
        first = scu.find(STUDY_ROOT_FIND, _ident(StudyID=""))
        assert next(first).status == 0xFF00
        assert scu.cancel(first.message_id) and not first.cancel()  # once only
        assert [r.status for r in first] == [0xFE00] and not scu.cancel(first.message_id)
        abandoned = scu.find(STUDY_ROOT_FIND, _ident(StudyID=""))
        assert next(abandoned).status == 0xFF00
        # The next operation first cancels and drains the abandoned one.
        assert [r.status for r in scu.find(STUDY_ROOT_FIND, _ident(StudyID=""))] == [0]
        assert abandoned.done and isinstance(abandoned.last, CFindRSP)
    assert cancels == [1, 2]


def test_wrong_message_id_aborts(scripted: Callable[..., int]) -> None:
    def script(peer: Peer) -> None:
        peer.accept()
        cid, _, _ = peer.receive()
        peer.send([(cid, _find_rsp(9, 0x0000, False), None)])
        with pytest.raises((EOFError, ConnectionError, AssertionError, OSError)):
            peer.receive()

    port = scripted(script)
    scu = QRSCU("127.0.0.1", port, contexts=qr_contexts([STUDY_ROOT_FIND]), timeout_s=10)
    scu.associate()
    with pytest.raises(AssociationAborted, match="message 9"):
        list(scu.find(STUDY_ROOT_FIND, _ident(StudyID="")))
    assert scu.accepted == {}  # aborted and closed


def test_on_store_exception_aborts_and_propagates(scripted: Callable[..., int]) -> None:
    def script(peer: Peer) -> None:
        peer.accept()
        cid, _, _ = peer.receive()
        ct_cid = next(c for c in peer.contexts if c != cid)
        peer.send([(ct_cid, CStoreRQ(5, CTImageStorage, "1.2.3"), b"\x08\x00\x16\x00\x00\x00")])
        with pytest.raises((EOFError, ConnectionError, AssertionError, OSError)):
            peer.receive()  # an A-ABORT, never a C-STORE-RSP

    def on_store(rq: CStoreRQ, data: bytes | Path, ts: str) -> int:
        raise RuntimeError("disk on fire")

    port = scripted(script)
    scu = QRSCU("127.0.0.1", port, contexts=get_contexts([STUDY_ROOT_GET], [CTImageStorage]),
                scp_role_for=[CTImageStorage], timeout_s=10)  # fmt: skip
    scu.associate()
    with pytest.raises(RuntimeError, match="disk on fire"):
        list(scu.get(STUDY_ROOT_GET, _ident(StudyID=""), on_store))
    assert scu.accepted == {}
    assert Tag.STATUS  # the codec module is importable alongside (sanity for the import list)


def test_store_file_carries_move_originator(scripted: Callable[..., int], tmp_path: Path) -> None:
    # PS3.7 9.1.1.1.9-10: a C-MOVE sub-operation names the originator AE and its Message ID.
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID

    ds = _ident(SOPClassUID=CTImageStorage, SOPInstanceUID="1.2.3.4", PatientID="X")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.4")
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    got: list[tuple[Message, bytes | None]] = []

    def script(peer: Peer) -> None:
        peer.accept()
        cid, rq, data = peer.receive()
        got.append((rq, data))
        assert isinstance(rq, CStoreRQ)
        peer.send([(cid, CStoreRSP(rq.message_id, 0), None)])
        with pytest.raises(EOFError):
            peer.receive()

    port = scripted(script)
    contexts = qr_contexts([CTImageStorage], [ImplicitVRLittleEndian])
    with QRSCU("127.0.0.1", port, contexts=contexts, timeout_s=10) as scu:
        result = scu.store_file(path, move_originator_ae="MOVER", move_originator_msg_id=7)
    assert result.status == 0
    ((rq, data),) = got
    assert isinstance(rq, CStoreRQ) and rq.affected_sop_instance_uid == "1.2.3.4"
    assert (rq.move_originator_ae_title, rq.move_originator_message_id) == ("MOVER", 7)
    assert data is not None and decode_identifier(data, ImplicitVRLittleEndian).PatientID == "X"
