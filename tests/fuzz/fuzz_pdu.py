"""Fuzz the PS3.8 receive path: ``PduBuffer`` framing, then ``decode_pdu`` of each PDU.

Contract under test (appliance/ul/buffer.py, pdu.py, items.py, user_items.py): any byte
stream yields PDUs or ``RemoteULError`` (an A-ABORT reason), never another exception; and
``encode_pdu`` is the inverse of ``decode_pdu`` on what it decoded (decode -> encode ->
decode is the identity).
Anything else escaping ``check`` is a crash.

    python tests/fuzz/fuzz_pdu.py -max_total_time=60 tests/fuzz/corpus/pdu
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: make ``tests.fuzz`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz._harness import fuzz, instrumented

with instrumented(__name__ == "__main__", ["appliance"]):
    from appliance.errors import RemoteULError
    from appliance.ul.buffer import PduBuffer
    from appliance.ul.pdu import decode_pdu, encode_pdu

# Small limits so the fuzzer reaches the over-limit branches too (PS3.8 D.1).
MAX_PDATA_BYTES = 16 * 1024
MAX_OTHER_PDU_BYTES = 64 * 1024


def check(data: bytes) -> None:
    """Frame ``data`` as a PDU stream and decode every complete PDU in it; each must survive
    encode -> decode unchanged (crashes/pdu/crash-4ddcacae... pinned the A-ASSOCIATE
    encoder reordering a peer's unknown items)."""
    buffer = PduBuffer(MAX_PDATA_BYTES, MAX_OTHER_PDU_BYTES)
    # Two feeds split by the first byte's value, so partial-header paths are exercised too.
    cut = data[0] if data else 0
    buffer.feed(data[:cut])
    buffer.feed(data[cut:])
    try:
        while (framed := buffer.next_pdu()) is not None:
            pdu_type, body = framed
            pdu = decode_pdu(pdu_type, body)
            encoded = encode_pdu(pdu)
            again = decode_pdu(encoded[0], memoryview(encoded)[6:])
            if again != pdu:
                raise AssertionError(f"decode(encode(pdu)) != pdu: {pdu!r} -> {again!r}")
    except RemoteULError:
        pass


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer/atheris expects
    check(data)


if __name__ == "__main__":
    fuzz(TestOneInput)
