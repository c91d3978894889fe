"""``transcode_dataset``: one data set from the transfer syntax it was stored in to one a
retrieve peer accepted (PS3.5 §10; PS3.4 C.4.2.1.4 / C.4.3.1.4 leave the conversion to us).

inflate (Deflated, PS3.5 A.5) -> parse (workers.transcode.parse) -> per data set, decode
encapsulated Pixel Data (workers.transcode.pixels) -> write Explicit or Implicit VR LE
(workers.transcode.encode) -> deflate again (Deflated target) or RLE-encode (RLE target,
workers.transcode.rle_target).
"""

from __future__ import annotations

import zlib

from workers.transcode.encode import Part, Target, encode_elements
from workers.transcode.errors import TranscodeError
from workers.transcode.parse import Element, parse_dataset
from workers.transcode.pixels import decompress_elements
from workers.transcode.syntaxes import (
    DEFLATED_EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    RLE_LOSSLESS,
    can_encode,
    encoding_of,
)
from workers.transcode.vr import PixelContext

DEFLATE_LEVEL = 6


def inflate(data: bytes | memoryview) -> bytes:
    """A Deflated data set's bytes inflated (PS3.5 A.5: raw deflate, no zlib header)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data) + inflater.flush()
    except zlib.error as exc:
        raise TranscodeError(f"Deflated data set does not inflate: {exc}") from exc
    if not inflater.eof:
        raise TranscodeError("Deflated data set is truncated")
    return out


def deflate(data: bytes) -> bytes:
    """Raw deflate, padded to an even length (PS3.5 A.5)."""
    deflater = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = deflater.compress(data) + deflater.flush()
    return out + b"\x00" if len(out) % 2 else out


def transcode_dataset(dataset: bytes | memoryview, from_ts: str, to_ts: str) -> bytes:
    """The data set (the bytes after the Part 10 File Meta group, no preamble) re-encoded in
    ``to_ts``. Raises TranscodeError when impossible."""
    if from_ts == to_ts:
        return bytes(dataset)
    source = encoding_of(from_ts)
    if source is None:
        raise TranscodeError(f"cannot read transfer syntax {from_ts}: unknown to us")
    if not can_encode(to_ts):
        raise TranscodeError(f"cannot write transfer syntax {to_ts}")
    view = memoryview(inflate(dataset) if source.deflated else dataset)
    elements = parse_dataset(view, source.implicit, source.little)

    rle = to_ts == RLE_LOSSLESS
    if rle:
        from workers.transcode.rle_target import compress_elements

    def hook(found: list[Element], top: bool) -> list[Element]:
        if source.encapsulated:
            found = decompress_elements(found, from_ts)
        if rle and top:
            found = compress_elements(found, source.little)
        return found

    target = Target(implicit=to_ts == IMPLICIT_VR_LE, source_little=source.little,
                    hook=hook if source.encapsulated or rle else None)
    parts: list[Part] = []
    encode_elements(elements, PixelContext(), target, parts)
    out = b"".join(parts)
    return deflate(out) if to_ts == DEFLATED_EXPLICIT_VR_LE else out
