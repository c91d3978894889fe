"""Receive buffer that cuts a TCP byte stream into PDUs (PS3.8 §9.3.1 framing).

THEORY OF OPERATION
-------------------
Every PDU starts with a 6-byte header: PDU-type (1), reserved (1), PDU-length (u32, big
endian), followed by PDU-length bytes of body. ``feed`` appends received bytes; ``next_pdu``
returns ``(pdu_type, body)`` for the next complete PDU, or ``None`` when more bytes are needed.

State is one buffer plus ``_start``, the offset of the first unconsumed byte. Invariants:

* ``_buf[_start:]`` is the unconsumed stream; everything before ``_start`` was returned.
* Bodies are memoryview slices of ``_buf`` (no copy). A ``bytearray`` with exported views
  cannot be resized, so ``_buf`` is only grown in place while ``_start == 0`` (nothing was
  returned from it since it was created). Otherwise ``feed`` starts a new buffer holding the
  unconsumed remainder plus the new data, and the old one lives on for as long as the views
  the caller holds. Returned views therefore stay valid after later ``feed`` calls, too.
* Each received byte is copied at most twice (into the buffer, and once more if it is part of
  an incomplete PDU left over when a new buffer is started), so the cost is O(n). When the
  buffer is empty and ``bytes`` arrive, they are kept as they are: no copy at all.
* Limits are checked as soon as the header is there, before the body is waited for: an
  unknown PDU-type byte raises reason 1 once that one byte has arrived, and an announced body
  over the limit raises reason 6 (PS3.8 §9.3.8, and PS3.8 D.1 for the P-DATA-TF maximum).
  The checks are repeated on every call, so after an error the buffer keeps raising.
"""

from __future__ import annotations

import struct

from appliance.errors import RemoteULError

_PDU_LENGTH = struct.Struct(">I")
_HEADER_BYTES = 6
_P_DATA_TF = 0x04
_FIRST_PDU_TYPE, _LAST_PDU_TYPE = 0x01, 0x07  # A-ASSOCIATE-RQ .. A-ABORT (PS3.8 §9.3.1)
_UNRECOGNIZED_PDU = 1
_INVALID_PDU_PARAMETER_VALUE = 6


class PduBuffer:
    """Length-prefixed PDU extraction with size limits; see the module docstring."""

    __slots__ = ("_buf", "_start", "_max_pdata_bytes", "_max_other_pdu_bytes")

    def __init__(self, max_pdata_bytes: int, max_other_pdu_bytes: int = 4 * 1024 * 1024) -> None:
        """``max_pdata_bytes`` is the Maximum Length we advertised (PS3.8 D.1; 0 = no limit);
        ``max_other_pdu_bytes`` bounds every other PDU body (0 = no limit)."""
        self._buf: bytes | bytearray = b""
        self._start = 0
        self._max_pdata_bytes = max_pdata_bytes
        self._max_other_pdu_bytes = max_other_pdu_bytes

    @property
    def buffered_bytes(self) -> int:
        """Received bytes not yet returned by ``next_pdu``."""
        return len(self._buf) - self._start

    def feed(self, data: bytes | memoryview) -> None:
        """Append received bytes. ``data`` may be reused by the caller afterwards."""
        if not data:
            return
        buf, start = self._buf, self._start
        if start == len(buf):
            # Nothing pending: keep immutable bytes as they are, copy anything else.
            self._buf = data if type(data) is bytes else bytearray(data)
            self._start = 0
        elif start == 0 and isinstance(buf, bytearray):
            buf += data  # no view has been exported from this bytearray yet
        else:
            # The caller may hold views into ``buf`` (or it is immutable): start a new buffer.
            grown = bytearray(memoryview(buf)[start:])
            grown += data
            self._buf = grown
            self._start = 0

    def next_pdu(self) -> tuple[int, memoryview] | None:
        """The next complete PDU as ``(pdu_type, body)``, body without the 6-byte header.

        Raises ``RemoteULError`` (reason 1) for an unknown PDU type and (reason 6) for a PDU
        longer than the limit."""
        buf, start = self._buf, self._start
        available = len(buf) - start
        if not available:
            return None
        pdu_type = buf[start]
        if not _FIRST_PDU_TYPE <= pdu_type <= _LAST_PDU_TYPE:
            raise RemoteULError(
                f"unrecognized PDU type 0x{pdu_type:02X}", abort_reason=_UNRECOGNIZED_PDU
            )
        if available < _HEADER_BYTES:
            return None
        (length,) = _PDU_LENGTH.unpack_from(buf, start + 2)
        limit = self._max_pdata_bytes if pdu_type == _P_DATA_TF else self._max_other_pdu_bytes
        if limit and length > limit:
            raise RemoteULError(
                f"PDU type 0x{pdu_type:02X} announces {length} bytes, limit is {limit}",
                abort_reason=_INVALID_PDU_PARAMETER_VALUE,
            )
        end = start + _HEADER_BYTES + length
        if end > len(buf):
            return None
        self._start = end
        return pdu_type, memoryview(buf)[start + _HEADER_BYTES : end]
