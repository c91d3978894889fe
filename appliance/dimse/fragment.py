"""Split one DIMSE message into P-DATA-TF PDUs (PS3.8 Annex E, §9.3.5; PS3.7 §6.3).

Output shape: a list with one entry per P-DATA-TF PDU to send, in order. Each entry is the
list of buffers forming that PDU's *variable field* (the PDV items), i.e. what follows the
6-byte P-DATA-TF header: ``[pdv_item_header, payload]``. A sender writes
``encode_pdata_header(pdu_body_length(parts))`` then ``parts`` (``transport.writelines``),
so the data set is never concatenated or copied here: payloads are memoryview slices of the
caller's buffer, and the only bytes allocated are the 6-byte PDV item headers.

Rules applied:
- PS3.8 D.1: the peer's Maximum Length bounds the P-DATA-TF variable field, PDV item headers
  included (4-byte item length, context id, message control header = 6 bytes), so a PDV
  carries at most ``peer_max_pdu - 6`` payload bytes. 0 means the peer set no limit; we
  still cut at ``unlimited_pdu_bytes`` to bound memory and latency on both ends.
- PS3.8 E.2: one PDV per PDU; command and data set fragments are never mixed in one PDV
  (nor, here, in one PDU), every fragment of the message uses the same context id, the last
  command fragment and the last data set fragment have the last bit set.
- A present but empty data set is still sent as one empty last data PDV, so the receiver
  sees the data set that (0000,0800) announced.
"""

from __future__ import annotations

from appliance.ul.pdu import PDV_HEADER_BYTES, encode_pdata_header, encode_pdv_header

UNLIMITED_PDU_BYTES = 4 * 1024 * 1024
# The PDU length field is a 32-bit unsigned integer (PS3.8 Table 9-22).
_MAX_PDU_FIELD = 0xFFFFFFFF

Buffer = bytes | memoryview
PduParts = list[Buffer]


def pdu_body_length(parts: PduParts) -> int:
    """Length of one PDU's variable field (the value for the P-DATA-TF PDU length)."""
    return sum(len(p) for p in parts)


def _fragments(
    context_id: int, payload: memoryview, is_command: bool, max_data: int
) -> list[PduParts]:
    total = len(payload)
    out: list[PduParts] = []
    start = 0
    while True:
        stop = min(start + max_data, total)
        is_last = stop == total
        chunk = payload[start:stop]
        out.append([encode_pdv_header(context_id, is_command, is_last, len(chunk)), chunk])
        if is_last:
            return out
        start = stop


def fragment_message(
    context_id: int,
    command: bytes,
    dataset: bytes | memoryview | None,
    peer_max_pdu: int,
    unlimited_pdu_bytes: int = UNLIMITED_PDU_BYTES,
) -> list[PduParts]:
    """The P-DATA-TF variable fields carrying ``command`` then ``dataset`` (PS3.8 Annex E).

    ``peer_max_pdu`` is the peer's Maximum Length Received (PS3.8 D.1), 0 = no limit.
    Raises ``ValueError`` if it is 1-6: no PDV with a payload fits, and a sender must not
    exceed it (the acceptor should refuse such a peer at association time).
    """
    if not 1 <= context_id <= 255 or context_id % 2 == 0:
        raise ValueError(f"presentation context id {context_id} is not odd in 1-255")
    limit = peer_max_pdu if peer_max_pdu else min(unlimited_pdu_bytes, _MAX_PDU_FIELD)
    max_data = limit - PDV_HEADER_BYTES
    if max_data < 1:
        raise ValueError(f"maximum PDU length {limit} cannot hold a PDV with data")
    if not command:
        raise ValueError("a DIMSE message always has a command set")
    pdus = _fragments(context_id, memoryview(command), True, max_data)
    if dataset is not None:
        # cast("B"): len() and slicing in bytes even if the caller passed e.g. a 'H' view.
        pdus += _fragments(context_id, memoryview(dataset).cast("B"), False, max_data)
    return pdus


def framed(pdus: list[PduParts]) -> list[Buffer]:
    """The buffers of whole P-DATA-TF PDUs (header + PDV items) for ``pdus``, in order: what
    goes on the wire, for a sender that writes several PDUs at once."""
    out: list[Buffer] = []
    for parts in pdus:
        out.append(encode_pdata_header(pdu_body_length(parts)))
        out.extend(parts)
    return out


__all__ = [
    "UNLIMITED_PDU_BYTES", "PduParts", "fragment_data", "fragment_message", "framed",
    "pdu_body_length",
]


def fragment_data(
    context_id: int,
    chunk: bytes | memoryview,
    ends_data_set: bool,
    peer_max_pdu: int,
    unlimited_pdu_bytes: int = UNLIMITED_PDU_BYTES,
) -> list[PduParts]:
    """PDUs for one slice of a data set sent in several slices (a file streamed from disk):
    only the last fragment of the slice that ``ends_data_set`` has the last bit (PS3.8 E.2).
    The command set must have been sent before the first slice."""
    limit = peer_max_pdu if peer_max_pdu else min(unlimited_pdu_bytes, _MAX_PDU_FIELD)
    max_data = limit - PDV_HEADER_BYTES
    if max_data < 1:
        raise ValueError(f"maximum PDU length {limit} cannot hold a PDV with data")
    view = memoryview(chunk).cast("B")
    pdus = _fragments(context_id, view, False, max_data)
    if not ends_data_set:
        header, payload = pdus[-1]
        pdus[-1] = [encode_pdv_header(context_id, False, False, len(payload)), payload]
    return pdus
