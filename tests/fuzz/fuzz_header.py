"""Fuzz the data set header parser, ``workers.header.read_index_attributes``.

Input layout: byte 0 picks the transfer syntax (bits 0-2, ``SYNTAXES``) and ``complete``
(bit 3); the rest is the data set as received in C-STORE (PS3.5 §7, no File Meta group).

Contract under test (workers/header.py): any input yields ``IndexAttributes`` or an
``IngestError`` (``NeedMoreData`` included), never another exception; and the compiled walker
and the pure-Python reference give the same outcome (same attributes, or the same error
class). Anything else escaping ``check`` is a crash. Only the Python code is instrumented: the
numba kernel is machine code, so coverage comes from the reference walk and the fallbacks.

    python tests/fuzz/fuzz_header.py -max_total_time=60 tests/fuzz/corpus/header
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: make ``tests.fuzz`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz._harness import fuzz, instrumented

with instrumented(__name__ == "__main__", ["workers.header", "appliance", "pydicom"]):
    import pydicom  # noqa: F401 - imported here so that the fallback's code is instrumented

    from appliance.errors import IngestError
    from workers.header import IndexAttributes, Walker, read_index_attributes

SYNTAXES = (
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired): pydicom
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian (PS3.5 §A.5)
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline: the data set is Explicit VR LE
    "1.2.840.10008.1.2.4.95",  # JPIP Referenced Deflate (PS3.5 §A.6)
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.3.4.5.6.7",  # a private syntax: walked as Explicit VR LE
)
COMPLETE_BIT = 0x08


def selector(transfer_syntax_uid: str, complete: bool) -> int:
    """The first input byte that selects this syntax and flag (for building seeds)."""
    return SYNTAXES.index(transfer_syntax_uid) | (COMPLETE_BIT if complete else 0)


def _outcome(data: bytes, syntax: str, complete: bool, walker: Walker) -> IndexAttributes | type:
    try:
        return read_index_attributes(data, syntax, complete=complete, walker=walker)
    except IngestError as exc:
        return type(exc)


def check(data: bytes) -> None:
    """Read the index attributes with both walkers; they must agree."""
    if not data:
        return
    syntax, complete, body = SYNTAXES[data[0] & 0x07], bool(data[0] & COMPLETE_BIT), data[1:]
    reference = _outcome(body, syntax, complete, "python")
    compiled = _outcome(body, syntax, complete, "numba")
    if reference != compiled:
        raise AssertionError(f"walkers disagree on {syntax}: python {reference!r}, "
                             f"numba {compiled!r}")


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer/atheris expects
    check(data)


if __name__ == "__main__":
    check(bytes([selector(SYNTAXES[1], True)]))  # compile (or load) the numba kernel first
    fuzz(TestOneInput)
