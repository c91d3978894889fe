"""C-ECHO answered in the acceptor (Verification, PS3.4 A; PS3.7 9.1.5).

A C-ECHO needs nothing from a worker, so the acceptor answers it, saving two process hops per
echo (monitoring probes echo often). Most SCUs send every echo of an association as the same
bytes but for the Message ID: ``EchoTemplate`` keeps the first such request PDU and our
response, and answers a byte-for-byte repeat by patching the Message ID, without the Upper
Layer core (DicomProtocol._echo_fast decides when that is allowed).
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.dimse.fragment import fragment_message
from appliance.dimse.messages import CEchoRSP, encode_message
from appliance.dimse.status import Status
from appliance.negotiation.sop_classes import VERIFICATION
from appliance.ul.association import Association

# The Message ID element of a C-ECHO-RQ and of our C-ECHO-RSP (Message ID Being Responded To):
# tag + 4-byte length, Implicit VR Little Endian as every command set (PS3.7 6.3.1).
_MSG_ID_ELEMENT = b"\x00\x00\x10\x01\x02\x00\x00\x00"
_MSG_ID_RSP_ELEMENT = b"\x00\x00\x20\x01\x02\x00\x00\x00"
_PDV_COMMAND_LAST = 0x03  # message control header: command fragment, last (PS3.8 E.2)


def echo_response_pdus(conn: Association, context_id: int, message_id: int) -> list[bytes]:
    """The P-DATA-TF PDUs of a Success C-ECHO-RSP to ``message_id``."""
    rsp = encode_message(CEchoRSP(message_id, Status.SUCCESS, VERIFICATION))
    return [b"".join(conn.send_pdata_items(b"".join(parts)))
            for parts in fragment_message(context_id, rsp, None, conn.peer_max_pdu)]


@dataclass(frozen=True, slots=True)
class EchoTemplate:
    request: bytes  # one whole P-DATA-TF PDU holding one C-ECHO-RQ
    msg_id_at: int  # offset of the request's Message ID value
    response: bytes  # our one-PDU answer to it
    rsp_id_at: int  # offset of the response's Message ID Being Responded To value

    @classmethod
    def learn(cls, request: bytes, command: bytes, context_id: int,
              responses: list[bytes]) -> EchoTemplate | None:
        """A template if ``request`` is exactly one P-DATA-TF PDU holding exactly ``command``
        (one PDV: command, last, on ``context_id``) and the answer is one PDU; else None."""
        if (len(responses) != 1 or len(request) != 12 + len(command)
                or request[10] != context_id or request[11] != _PDV_COMMAND_LAST
                or not request.endswith(command)):
            return None
        response = responses[0]
        at, rsp_at = request.find(_MSG_ID_ELEMENT) + 8, response.find(_MSG_ID_RSP_ELEMENT) + 8
        if (at <= 8 or request.count(_MSG_ID_ELEMENT) != 1 or rsp_at <= 8
                or response.count(_MSG_ID_RSP_ELEMENT) != 1):
            return None
        return cls(request, at, response, rsp_at)

    def answer(self, data: bytes) -> bytes | None:
        """Our response if ``data`` is the template's request but for the Message ID."""
        at, rq = self.msg_id_at, self.request
        if len(data) != len(rq) or data[:at] != rq[:at] or data[at + 2:] != rq[at + 2:]:
            return None
        rsp, rsp_at = self.response, self.rsp_id_at
        return rsp[:rsp_at] + data[at:at + 2] + rsp[rsp_at + 2:]
