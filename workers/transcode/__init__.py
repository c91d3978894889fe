"""Transcoding on retrieve: convert a stored data set to a transfer syntax the peer accepted.

Objects are stored exactly as received (any transfer syntax). When a C-GET / C-MOVE peer
accepted none of the syntaxes an object is stored in, the retrieve path asks
``choose_transfer_syntax`` for a target and ``transcode_dataset`` for the bytes.
"""

from workers.transcode.convert import transcode_dataset
from workers.transcode.errors import TranscodeError
from workers.transcode.syntaxes import can_decode, can_encode, choose_transfer_syntax

__all__ = [
    "TranscodeError",
    "can_decode",
    "can_encode",
    "choose_transfer_syntax",
    "transcode_dataset",
]
