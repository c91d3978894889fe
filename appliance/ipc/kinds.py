"""Record kinds and flags carried in ring headers between the appliance's processes.

Acceptor -> worker (per-worker job ring):
  OPEN     assoc_id; payload msgpack {calling_ae, called_ae, peer, peer_max_pdu, contexts,
           relational, scp_roles}
  COMMAND  assoc_id, msg_id, aux=context id; payload = the whole command set (group 0000);
           for a C-CANCEL-RQ or a peer's response, msg_id = Message ID Being Responded To
  DATA     assoc_id, msg_id, aux=context id, flags LAST on the final fragment; payload = PDV data
  CLOSE    assoc_id; flags ABORTED when the association did not end by release
  INGEST   msg_id = job id; payload = file path (utf-8)  [headless ingest driver -> worker]
  FLOW     assoc_id, aux = 1 when the socket's send buffer is full (stop producing responses
           for this association), 0 when it has drained
Worker -> acceptor (per-worker reply ring):
  SEND     assoc_id, msg_id; payload = PDV items of one P-DATA-TF, or with flag FRAMED whole
           P-DATA-TF PDUs (several per record: one ring record per ~256 KiB, not per PDU);
           flags FINAL when the record ends the response to msg_id (the acceptor then
           forgets the operation); with flag HELD, aux = the Message ID of our own request
           (a C-GET sub-operation's C-STORE-RQ) whose response must arrive before the
           acceptor writes the record: the next sub-operation waits in the acceptor, not
           two process hops away
  ABORT    assoc_id, aux = A-ABORT reason: the worker asks for the association to be aborted
  INGESTED msg_id = job id; payload msgpack outcome  [worker -> ingest driver]
Worker -> index writer:   INDEX  msg_id = token; aux = duplicate policy; payload = packed record
Index writer -> worker:   INDEXED msg_id = token; aux = outcome code; payload = old relpath
"""

from __future__ import annotations

from enum import IntEnum, IntFlag


class Kind(IntEnum):
    OPEN = 1
    COMMAND = 2
    DATA = 3
    CLOSE = 4
    INGEST = 5
    FLOW = 6
    SEND = 16
    ABORT = 17
    INGESTED = 18
    INDEX = 32
    INDEXED = 33


class Flag(IntFlag):
    NONE = 0
    LAST = 1
    FINAL = 2
    ABORTED = 4
    FRAMED = 8  # SEND: whole P-DATA-TF PDUs, headers included, possibly several per record
    HELD = 16  # SEND: write only once the peer has answered our request with Message ID aux
