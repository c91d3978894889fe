"""C-FIND query engine over the LMDB index, and the key handling C-MOVE / C-GET share
(PS3.4 Annex C): ``keys`` (the information models), ``matching`` (C.2.2.2), ``identifier``
(request/response Identifiers, ``Query``), ``engine`` (``find`` / ``retrieve``, lazily).

Typical use by the Q/R service, per C-FIND request::

    model, op = model_of(sop_class_uid)                      # ("STUDY", "FIND")
    query = decode_identifier(data, ts_uid, model, relational=granted)   # QueryError -> status
    encoder = ResponseEncoder(query, ts_uid, retrieve_ae_title=ae_title)
    pending = 0xFF01 if query.unsupported else 0xFF00
    for result in find(reader, query):                       # lazy; stop on C-CANCEL
        send_pending(pending, encoder.encode(result))
"""

from workers.query.engine import find, retrieve
from workers.query.identifier import (
    Query,
    QueryError,
    QueryKey,
    ResponseEncoder,
    Result,
    decode_identifier,
    encode_identifier,
    make_query,
)
from workers.query.keys import model_of

__all__ = [
    "Query", "QueryError", "QueryKey", "ResponseEncoder", "Result", "decode_identifier",
    "encode_identifier", "find", "make_query", "model_of", "retrieve",
]
