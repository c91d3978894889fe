"""Shared-memory IPC between the appliance's processes: stdlib only (STYLE 2.3).

``ring``: SPSC byte-record rings with eventfd doorbells; ``control``: heartbeat/state slots;
``fdpass``: handing ring fds to another process over SCM_RIGHTS.
"""

from appliance.ipc.control import (
    ApplianceState,
    ControlBlock,
    GlobalState,
    ProcState,
    Role,
    SlotState,
    SlotView,
)
from appliance.ipc.fdpass import channel_pair, recv_with_fds, send_with_fds
from appliance.ipc.ring import (
    ALIGN,
    HEADER_SIZE,
    KIND_PAD,
    Record,
    RecordHeader,
    Ring,
    RingCorruptError,
)

__all__ = [
    "ALIGN",
    "HEADER_SIZE",
    "KIND_PAD",
    "ApplianceState",
    "ControlBlock",
    "GlobalState",
    "ProcState",
    "Record",
    "RecordHeader",
    "Ring",
    "RingCorruptError",
    "Role",
    "SlotState",
    "SlotView",
    "channel_pair",
    "recv_with_fds",
    "send_with_fds",
]
