"""An association-requestor and an association-acceptor ``Association`` wired back to back in
memory (h11's ConnectionPair idea): whatever one side sends is fed to the other side."""

from __future__ import annotations

from dataclasses import dataclass, field

from appliance.ul.association import (
    NEED_DATA,
    AcceptAssociation,
    Association,
    Command,
    ConnectionClosed,
    Event,
    RequestAssociation,
    Role,
    ULLimits,
)
from appliance.ul.pdu import (
    AssociateAC,
    AssociateRQ,
    ImplementationClassUID,
    MaximumLength,
    PresentationContextAC,
    PresentationContextRQ,
    UserInformation,
)

VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPL_UID = "1.2.826.0.1.3680043.10.1"


def user_info(max_pdu: int) -> UserInformation:
    return UserInformation((MaximumLength(max_pdu), ImplementationClassUID(IMPL_UID)))


def make_rq(max_pdu: int = 1_048_576, n_contexts: int = 2) -> AssociateRQ:
    contexts = tuple(
        PresentationContextRQ(
            2 * i + 1, (VERIFICATION, CT_IMAGE_STORAGE)[i % 2], (EXPLICIT_LE, IMPLICIT_LE)
        )
        for i in range(n_contexts)
    )
    return AssociateRQ("STORE_SCP", "STORE_SCU", contexts, user_info(max_pdu))


def make_ac(rq: AssociateRQ, max_pdu: int = 1_048_576) -> AssociateAC:
    contexts = tuple(
        PresentationContextAC(pc.context_id, 0, pc.transfer_syntaxes[0])
        for pc in rq.presentation_contexts
    )
    return AssociateAC(rq.called_ae, rq.calling_ae, contexts, user_info(max_pdu))


def drain(assoc: Association) -> list[Event]:
    """Every event ``assoc`` can report now (stops after ConnectionClosed)."""
    events: list[Event] = []
    while (ev := assoc.next_event()) is not NEED_DATA:
        events.append(ev)
        if isinstance(ev, ConnectionClosed):
            break
    return events


@dataclass
class UlPair:
    rq_limits: ULLimits = field(default_factory=ULLimits)
    ac_limits: ULLimits = field(default_factory=ULLimits)
    now: float = 0.0

    def __post_init__(self) -> None:
        self.requestor = Association(Role.REQUESTOR, self.rq_limits, now=self.now)
        self.acceptor = Association(Role.ACCEPTOR, self.ac_limits, now=self.now)
        self.wire: list[bytes] = []  # everything sent, both directions, in order

    def peer_of(self, side: Association) -> Association:
        return self.acceptor if side is self.requestor else self.requestor

    def deliver(self, to: Association, data: bytes, byte_by_byte: bool = False) -> list[Event]:
        """Feed ``data`` to ``to`` and return the events it reports."""
        if byte_by_byte:
            events: list[Event] = []
            for i in range(len(data)):
                to.receive_data(data[i : i + 1], now=self.now)
                events += drain(to)
            return events
        if data:
            to.receive_data(data, now=self.now)
        return drain(to)

    def send(self, side: Association, command: Command, byte_by_byte: bool = False) -> list[Event]:
        """``side`` sends ``command``; the peer receives the bytes; its events are returned."""
        data = side.send(command, now=self.now)
        self.wire.append(data)
        return self.deliver(self.peer_of(side), data, byte_by_byte)

    def associate(self, rq: AssociateRQ | None = None) -> tuple[list[Event], list[Event]]:
        """Run A-ASSOCIATE to Sta6 on both sides; (acceptor events, requestor events)."""
        rq = rq if rq is not None else make_rq(self.rq_limits.max_pdu_bytes)
        assert self.requestor.send(RequestAssociation(rq), now=self.now) == b""
        data = self.requestor.connection_established(now=self.now)
        self.wire.append(data)
        ac_events = self.deliver(self.acceptor, data)
        ac = make_ac(rq, self.ac_limits.max_pdu_bytes)
        rq_events = self.send(self.acceptor, AcceptAssociation(ac))
        return ac_events, rq_events

    def close_transport(self) -> tuple[list[Event], list[Event]]:
        """Both ends see the TCP connection go away (Evt17); (requestor, acceptor) events."""
        out = []
        for side in (self.requestor, self.acceptor):
            side.receive_data(b"", now=self.now)
            out.append(drain(side))
        return out[0], out[1]
