"""A fake Storage/Verification SCP on a loopback socket, in a thread, built on our own
acceptor-role ``Association`` (so its A-ASSOCIATE-AC is encoded by our UL encoder), with a
chosen Maximum Length Received (PS3.8 D.1). It records every byte received after its AC so a
test can judge the raw PDU stream the SCU sent, not what a UL core made of it.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field

from appliance.dimse.assembler import CommandComplete, DataFragment, MessageAssembler
from appliance.dimse.messages import (
    CEchoRQ,
    CEchoRSP,
    CStoreRQ,
    CStoreRSP,
    Message,
    encode_message,
    message_from_elements,
)
from appliance.ul.association import (
    NEED_DATA,
    AbortReceived,
    AcceptAssociation,
    AssociateRequested,
    Association,
    ConnectionClosed,
    PDataReceived,
    ReleaseRequested,
    ReplyRelease,
    Role,
    ULLimits,
)
from appliance.ul.pdu import (
    AssociateAC,
    MaximumLength,
    PresentationContextAC,
    UserInformation,
    encode_pdv_header,
)

P_DATA_TF, A_ABORT = 0x04, 0x07
_PDU_HEADER = struct.Struct(">BxI")  # PS3.8 §9.3.1: type, reserved, length


def split_pdus(raw: bytes) -> list[tuple[int, bytes]]:
    """``raw`` as (PDU type, body) pairs; a truncated tail is an AssertionError."""
    out, offset = [], 0
    while offset < len(raw):
        pdu_type, length = _PDU_HEADER.unpack_from(raw, offset)
        body = raw[offset + 6 : offset + 6 + length]
        assert len(body) == length, f"truncated PDU at {offset}"
        out.append((pdu_type, body))
        offset += 6 + length
    return out


@dataclass
class FakeSCP:
    """Serves ONE association: accepts every proposed context (first transfer syntax) with
    ``max_length`` as Maximum Length, answers C-ECHO and C-STORE with Success and
    A-RELEASE-RQ with A-RELEASE-RP, and stops on A-ABORT or close. Call ``close`` to join
    it; an exception in the thread is re-raised there."""

    max_length: int
    listener: socket.socket = field(init=False)
    received: bytearray = field(default_factory=bytearray)
    errors: list[BaseException] = field(default_factory=list)
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(30)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def pdus(self) -> list[tuple[int, bytes]]:
        return split_pdus(bytes(self.received))

    def close(self) -> None:
        self.thread.join(30)
        self.listener.close()
        assert not self.thread.is_alive(), "fake SCP still running"
        if self.errors:
            raise self.errors[0]

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            conn.settimeout(30)
            with conn:
                self._run(conn)
        except BaseException as exc:  # noqa: BLE001 - re-raised by close() in the test
            self.errors.append(exc)

    def _run(self, conn: socket.socket) -> None:
        # Our receive limit is what we advertise: a P-DATA-TF over it makes the core raise
        # RemoteULError here (after the raw bytes were recorded).
        assoc = Association(Role.ACCEPTOR, ULLimits(max_pdu_bytes=self.max_length))
        while (ev := assoc.next_event()) is NEED_DATA:
            assoc.receive_data(conn.recv(65536))
        assert isinstance(ev, AssociateRequested)
        pcs = tuple(PresentationContextAC(pc.context_id, 0, pc.transfer_syntaxes[0])
                    for pc in ev.rq.presentation_contexts)  # fmt: skip
        ui = UserInformation((MaximumLength(self.max_length),))
        ac = AssociateAC(ev.rq.called_ae, ev.rq.calling_ae, pcs, ui)
        conn.sendall(assoc.send(AcceptAssociation(ac)))
        assembler = MessageAssembler()
        pending: tuple[int, Message] | None = None
        while chunk := conn.recv(65536):
            self.received += chunk
            assoc.receive_data(chunk)
            while (ev := assoc.next_event()) is not NEED_DATA:
                if isinstance(ev, AbortReceived | ConnectionClosed):
                    return
                if isinstance(ev, ReleaseRequested):
                    conn.sendall(assoc.send(ReplyRelease()))
                if not isinstance(ev, PDataReceived):
                    continue
                for pdv in ev.pdvs:
                    for out in assembler.feed(pdv):
                        if isinstance(out, CommandComplete):
                            pending = (out.context_id, message_from_elements(out.elements))
                        whole = (isinstance(out, DataFragment) and out.is_last
                                 or isinstance(out, CommandComplete) and not out.has_data_set)
                        if pending is not None and whole:
                            _answer(conn, assoc, *pending)
                            pending = None


def _answer(conn: socket.socket, assoc: Association, context_id: int, rq: Message) -> None:
    rsp: Message
    if isinstance(rq, CEchoRQ):
        rsp = CEchoRSP(rq.message_id)
    else:
        assert isinstance(rq, CStoreRQ), rq
        rsp = CStoreRSP(rq.message_id, 0, rq.affected_sop_class_uid, rq.affected_sop_instance_uid)
    command = encode_message(rsp)
    header = encode_pdv_header(context_id, True, True, len(command))
    conn.sendall(b"".join(assoc.send_pdata_items([header, command])))
