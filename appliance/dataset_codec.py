"""A DIMSE message's data set to and from bytes with pydicom (PS3.5 §10, PS3.7 §6.3.1).

For the small data sets that go with a command: a C-FIND Identifier, an N-CREATE/N-SET
attribute list, N-ACTION and N-EVENT-REPORT information. They are encoded in the presentation
context's transfer syntax (an encapsulated one encodes them as Explicit VR Little Endian,
Deflated as PS3.5 A.5). One codec for both sides: the SCUs (``qr_scu``, ``workflow_scu``,
``commitment``) and the workers' workflow SCP. The Q/R SCP hand-encodes its own responses
(``workers.query.identifier``: it runs once per match).
"""

from __future__ import annotations

import warnings
import zlib
from io import BytesIO

from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from appliance.dimse.transfer_syntax import data_set_encoding


class DatasetError(ValueError):
    """A data set that cannot be inflated or parsed."""


def encode_dataset(ds: Dataset, transfer_syntax_uid: str) -> bytes:
    """``ds`` encoded in ``transfer_syntax_uid``."""
    encoding = data_set_encoding(transfer_syntax_uid)
    fp = DicomBytesIO()
    fp.is_implicit_VR = encoding.implicit
    fp.is_little_endian = encoding.little
    write_dataset(fp, ds)
    data = fp.getvalue()
    if encoding.deflated:
        packer = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = packer.compress(data) + packer.flush()
        if len(data) % 2:
            data += b"\x00"  # PS3.5 A.5: an odd-length deflated stream gets one trailing NUL
    return data


def decode_dataset(data: bytes | memoryview, transfer_syntax_uid: str) -> Dataset:
    """Parse a data set received in ``transfer_syntax_uid``; ``DatasetError`` when it cannot
    be inflated or parsed. As lenient as pydicom otherwise (a truncated last value is kept
    short), and quiet: pydicom's warnings about a peer's bytes are not ours to print."""
    encoding = data_set_encoding(transfer_syntax_uid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            raw = zlib.decompress(data, -zlib.MAX_WBITS) if encoding.deflated else bytes(data)
            return read_dataset(BytesIO(raw), encoding.implicit, encoding.little)
        except Exception as exc:  # pydicom raises many kinds on malformed input
            raise DatasetError(f"undecodable data set: {exc}") from exc


__all__ = ["DatasetError", "decode_dataset", "encode_dataset"]
