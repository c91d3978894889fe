"""Resource limits and timeouts against a real appliance, each attack run while a well-behaved
client stores objects in a loop: that client must see every C-STORE succeed and every object
indexed (README "Resource limits and timeouts").

One appliance serves the whole module, with short timeouts so that ARTIM, the DIMSE timeout
and the connection limits can be watched within seconds. The raw-socket helpers come from
tests/interop/test_raw_peer.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import resource
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom import dcmwrite
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from appliance.dimse.fragment import fragment_message
from appliance.dimse.messages import CStoreRQ, encode_message
from appliance.scu import SCU, ProposedContext
from appliance.ul.pdu import (
    AssociateRQ,
    MaximumLength,
    PresentationContextRQ,
    UserInformation,
    encode_pdata_header,
    encode_pdu,
)
from tests.conftest import (
    PYTHON,
    REPO,
    Appliance,
    _finish,
    index_get_many,
    run_tool,
    temp_files,
    wait_until,
)
from tests.fixtures.make_datasets import Hierarchy, dataset_offset, make_ct, new_uid
from tests.interop.test_raw_peer import (
    Reply,
    abort_pdu,
    assert_abort_then_close,
    associate_rq_header,
    exchange,
)

pytestmark = pytest.mark.system

ARTIM_S = 2.0
DIMSE_S = 2.0
PER_AE = 3
PENDING = 200
MAX_COMMAND = 4096
MAX_DATASET = 200_000
CT = str(CTImageStorage)
EXPLICIT_LE = str(ExplicitVRLittleEndian)
CONFIG = f"""
[network]
artim_timeout_s = {ARTIM_S}
dimse_timeout_s = {DIMSE_S}
idle_timeout_s = 10.0
max_associations = 64
max_associations_per_ae = {PER_AE}
max_pending_connections = {PENDING}
max_command_bytes = {MAX_COMMAND}
max_dataset_bytes = {MAX_DATASET}
max_pending_operations = 2
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    appliance = Appliance(tmp_path_factory.mktemp("limits"), workers=1, config=CONFIG)
    try:
        yield appliance.start()
        # Whatever the attacks did, the store is consistent: every file indexed, no orphan.
        cp = run_tool([PYTHON, "-m", "appliance", "db", "verify", "--data", str(appliance.data)],
                      timeout_s=60, cwd=REPO)
        assert cp.returncode == 0, f"db verify: {cp.stdout}{cp.stderr}"
    finally:
        _finish(appliance)


# ---- the well-behaved client ------------------------------------------------------------


def encode_ct(rng: random.Random, h: Hierarchy, rows: int = 32) -> tuple[str, bytes]:
    """A CT object as (SOP Instance UID, Explicit VR LE data set bytes without File Meta)."""
    ds = make_ct(rng, h, rows=rows, cols=rows)
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    part10 = buf.getvalue()
    return str(ds.SOPInstanceUID), part10[dataset_offset(part10):]


@dataclass
class GoodClient:
    """Stores small CTs in a loop, a few per association, so new associations are asked for
    all through an attack; ``results`` is every (SOP Instance UID, status) answered."""

    port: int
    seed: int
    results: list[tuple[str, int]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        rng = random.Random(self.seed)
        h = Hierarchy(f"GOOD{self.seed}", new_uid(rng), new_uid(rng))
        try:
            while not self.stop.is_set():
                with SCU("127.0.0.1", self.port, calling_ae="GOOD", called_ae="PACS",
                         contexts=[ProposedContext(CT, (EXPLICIT_LE,))], timeout_s=20) as scu:
                    for _ in range(3):
                        uid, data = encode_ct(rng, h)
                        self.results.append((uid, scu.store(data, CT, uid, EXPLICIT_LE).status))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            self.errors.append(exc)


@contextlib.contextmanager
def good_client(app: Appliance, seed: int, min_stores: int = 6) -> Iterator[GoodClient]:
    client = GoodClient(app.port, seed)
    thread = threading.Thread(target=client.run, daemon=True)
    thread.start()
    try:
        yield client
        wait_until(lambda: len(client.results) >= min_stores or bool(client.errors), 30,
                   f"{min_stores} stores of the good client")
    finally:
        client.stop.set()
        thread.join(60)
    assert not thread.is_alive(), "the good client hung"
    assert not client.errors, f"the good client failed: {client.errors[0]!r}"
    assert len(client.results) >= min_stores
    bad = [(uid, hex(st)) for uid, st in client.results if st != 0]
    assert not bad, f"C-STOREs of the good client failed: {bad[:5]}"
    found = index_get_many(app.data, [uid for uid, _ in client.results])
    missing = [u for u, rec in found.items() if rec is None]
    assert not missing, f"{len(missing)} acknowledged objects not indexed"


# ---- raw peers ----------------------------------------------------------------------------


def associate_rq(calling_ae: str, contexts: int = 1, max_pdu: int = 16384) -> bytes:
    return encode_pdu(AssociateRQ(
        called_ae="PACS", calling_ae=calling_ae,
        presentation_contexts=tuple(
            PresentationContextRQ(2 * (i % 128) + 1, CT, (EXPLICIT_LE,)) for i in range(contexts)
        ),
        user_information=UserInformation((MaximumLength(max_pdu),)),
    ))


def read_reply(sock: socket.socket, timeout_s: float) -> Reply:
    """Read until the appliance closes the connection or ``timeout_s`` passes."""
    start = time.monotonic()
    data = b""
    while (remaining := start + timeout_s - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return Reply(data, True, time.monotonic() - start)
        if not chunk:
            return Reply(data, True, time.monotonic() - start)
        data += chunk
    return Reply(data, False, time.monotonic() - start)


def read_pdu(sock: socket.socket, timeout_s: float = 5.0) -> tuple[int, bytes]:
    sock.settimeout(timeout_s)
    head = b""
    while len(head) < 6:
        chunk = sock.recv(6 - len(head))
        assert chunk, "connection closed before a PDU arrived"
        head += chunk
    length = struct.unpack(">I", head[2:6])[0]
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        assert chunk, "connection closed inside a PDU"
        body += chunk
    return head[0], body


@contextlib.contextmanager
def raw_association(app: Appliance, calling_ae: str) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", app.port), timeout=5) as sock:
        sock.sendall(associate_rq(calling_ae))
        ptype, body = read_pdu(sock)
        assert ptype == 0x02, f"expected A-ASSOCIATE-AC, got type {ptype:#x} {body[:4].hex()}"
        yield sock


def store_pdus(uid: str, data: bytes, max_pdu: int = 16384) -> list[bytes]:
    cmd = encode_message(CStoreRQ(message_id=1, affected_sop_class_uid=CT,
                                  affected_sop_instance_uid=uid))
    return [encode_pdata_header(sum(len(p) for p in parts)) + b"".join(parts)
            for parts in fragment_message(1, cmd, data, max_pdu)]


def log_events(app: Appliance, event: str) -> list[dict[str, object]]:
    found = []
    for line in app.stdout_path.read_text(errors="replace").splitlines():
        if event in line and line.startswith("{"):
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
    return [e for e in found if e.get("event") == event]


# ---- the attacks --------------------------------------------------------------------------


def test_slow_loris_is_closed_by_artim(app: Appliance) -> None:
    rq = associate_rq("LORIS")
    with good_client(app, seed=1), socket.create_connection(("127.0.0.1", app.port)) as sock:
        peer = f"127.0.0.1:{sock.getsockname()[1]}"
        start = time.monotonic()
        closed = False
        for i in range(len(rq)):  # one byte a second
            try:
                sock.sendall(rq[i : i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            reply = read_reply(sock, 1.0)
            if reply.closed:
                closed = True
                assert reply.data == b"", "ARTIM in Sta2 closes without a PDU (AA-2)"
                break
            if time.monotonic() - start > ARTIM_S + 4:
                break
        elapsed = time.monotonic() - start
    assert closed, f"still connected after {elapsed:.1f} s"
    assert ARTIM_S - 0.5 <= elapsed <= ARTIM_S + 2.5, f"closed after {elapsed:.1f} s"
    wait_until(lambda: any(e.get("peer") == peer for e in log_events(app, "ul.artim_expired")),
               5, "the ul.artim_expired log line")


def drop_closed(open_socks: dict[int, socket.socket], duration_s: float,
                on_tick: Callable[[], None]) -> None:
    """Poll for ``duration_s``, removing the sockets the appliance closed (FIN or RST)."""
    deadline = time.monotonic() + duration_s
    while open_socks and time.monotonic() < deadline:
        on_tick()
        poller = select.poll()
        for fd in open_socks:
            poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        for fd, _ in poller.poll(200):
            try:
                if open_socks[fd].recv(1024) != b"":
                    continue
            except BlockingIOError:
                continue
            except OSError:  # ECONNRESET: evicted or closed after ARTIM (RST)
                pass
            del open_socks[fd]


def test_ten_thousand_connections(app: Appliance) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 10_500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20_000), hard))
    [acceptor] = app.processes("acceptor")
    fd_dir = Path(f"/proc/{acceptor['pid']}/fd")
    baseline = len(os.listdir(fd_dir))
    peak = baseline

    def sample() -> None:
        nonlocal peak
        peak = max(peak, len(os.listdir(fd_dir)))

    socks: list[socket.socket] = []
    try:
        with good_client(app, seed=2, min_stores=9):
            for i in range(10_000):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", app.port))
                socks.append(s)
                if i % 500 == 0:
                    sample()
            # The oldest silent ones are evicted at once beyond max_pending_connections, the
            # rest closed by ARTIM. (Connections the kernel's full accept queue dropped look
            # open to us but were never handed to the appliance: they cost it nothing.)
            flood_s = time.monotonic()
            open_socks = {s.fileno(): s for s in socks}
            drop_closed(open_socks, ARTIM_S + 2.5, sample)
            # Accepting (and evicting) 10000 connections takes the acceptor seconds on a
            # busy 2-core machine; ARTIM runs from each one's accept.
            wait_until(lambda: len(os.listdir(fd_dir)) < baseline + 20, 15,
                       "the acceptor to let go of the flood's descriptors")
            settled_s = time.monotonic() - flood_s
            drop_closed(open_socks, 0.5, sample)
            closed = len(socks) - len(open_socks)
    finally:
        for s in socks:
            s.close()
    assert closed >= 1_000, f"only {closed} of 10000 connections closed by the appliance"
    assert peak < baseline + PENDING + 40, f"acceptor held {peak} descriptors ({baseline} idle)"
    print(f"flood: {closed} closed by the appliance, peak {peak} descriptors "
          f"({baseline} idle), settled after {settled_s:.1f} s")
    assert log_events(app, "acceptor.connections_evicted")
    code, _ = app.get("/readyz")
    assert code == 200


def test_pdata_announcing_4gb_is_aborted(app: Appliance) -> None:
    with good_client(app, seed=3), raw_association(app, "HUGEPDU") as sock:
        sock.sendall(struct.pack(">BBI", 0x04, 0, 0xFFFF_FFFF) + bytes(64))
        reply = read_reply(sock, ARTIM_S + 3)
    assert_abort_then_close(reply, reason=6)  # source 2, invalid-PDU-parameter-value
    assert reply.elapsed_s < ARTIM_S, "the header alone must be refused"


def test_associate_rq_announcing_4gb_is_aborted(app: Appliance) -> None:
    with good_client(app, seed=4):
        reply = exchange(app, associate_rq_header(0xFFFF_FFFF), ARTIM_S + 3)
    assert reply.closed
    assert_abort_then_close(reply, reason=6)


def test_1000_presentation_contexts_are_rejected(app: Appliance) -> None:
    with good_client(app, seed=5), socket.create_connection(("127.0.0.1", app.port)) as sock:
        sock.sendall(associate_rq("MANYPC", contexts=1000))
        ptype, body = read_pdu(sock)
    assert ptype == 0x03, f"expected A-ASSOCIATE-RJ, got {ptype:#x}"
    # rejected-permanent, service-provider (presentation related), local-limit-exceeded
    assert tuple(body[1:4]) == (1, 3, 2)
    assert any(e.get("calling_ae") == "MANYPC" for e in log_events(app, "assoc.rejected"))


@pytest.mark.parametrize("ending", ["silence", "close"])
def test_peer_stopping_mid_data_set_leaves_nothing(app: Appliance, ending: str) -> None:
    rng = random.Random(6)
    uid, data = encode_ct(rng, Hierarchy("HALF", new_uid(rng), new_uid(rng)), rows=160)
    pdus = store_pdus(uid, data)
    assert len(pdus) > 4
    with good_client(app, seed=7 if ending == "silence" else 8):
        with raw_association(app, "HALFWAY") as sock:
            sock.sendall(b"".join(pdus[: len(pdus) // 2]))
            if ending == "silence":
                reply = read_reply(sock, DIMSE_S + 4)
                assert reply.data[:10] == abort_pdu(2, 0), reply.data[:16].hex(" ")
                assert reply.closed
                assert DIMSE_S - 0.5 <= reply.elapsed_s <= DIMSE_S + 2.5, reply.elapsed_s
        if ending == "silence":
            assert any(e.get("timeout") == "dimse" for e in log_events(app, "assoc.idle_timeout"))
    wait_until(lambda: not temp_files(app.data), 10, "the spool to be deleted")
    assert app.get_instance(uid) is None


def test_per_ae_association_limit(app: Appliance) -> None:
    with good_client(app, seed=9), contextlib.ExitStack() as stack:
        for _ in range(PER_AE):
            stack.enter_context(raw_association(app, "GREEDY"))
        with socket.create_connection(("127.0.0.1", app.port), timeout=5) as sock:
            sock.sendall(associate_rq("GREEDY"))
            ptype, body = read_pdu(sock)
    assert ptype == 0x03
    # rejected-transient, service-provider (presentation related), local-limit-exceeded
    assert tuple(body[1:4]) == (2, 3, 2)


def test_command_set_over_the_limit_is_aborted(app: Appliance) -> None:
    pdv = struct.pack(">IBB", 2 + 3000, 1, 0x01) + bytes(3000)  # command fragment, not last
    with good_client(app, seed=10), raw_association(app, "BIGCMD") as sock:
        sock.sendall((encode_pdata_header(len(pdv)) + pdv) * 2)
        reply = read_reply(sock, ARTIM_S + 3)
    assert_abort_then_close(reply, reason=0)


def test_data_set_over_the_limit_gets_a700(app: Appliance) -> None:
    rng = random.Random(11)
    h = Hierarchy("TOOBIG", new_uid(rng), new_uid(rng))
    big_uid, big = encode_ct(rng, h, rows=400)  # 320 kB of pixels
    small_uid, small = encode_ct(rng, h)
    assert len(big) > MAX_DATASET
    with good_client(app, seed=12), SCU(
        "127.0.0.1", app.port, calling_ae="TOOBIG", called_ae="PACS",
        contexts=[ProposedContext(CT, (EXPLICIT_LE,))],
    ) as scu:
        assert scu.store(big, CT, big_uid, EXPLICIT_LE).status == 0xA700
        assert scu.store(small, CT, small_uid, EXPLICIT_LE).status == 0  # association goes on
    assert app.get_instance(big_uid) is None
    assert app.get_instance(small_uid) is not None
    wait_until(lambda: not temp_files(app.data), 10, "the spool to be deleted")


def test_pipelining_past_max_pending_operations_is_aborted(app: Appliance) -> None:
    rng = random.Random(13)
    h = Hierarchy("PIPE", new_uid(rng), new_uid(rng))
    stream = b""
    for msg_id in (1, 2, 3):
        uid, data = encode_ct(rng, h)
        cmd = encode_message(CStoreRQ(message_id=msg_id, affected_sop_class_uid=CT,
                                      affected_sop_instance_uid=uid))
        stream += b"".join(encode_pdata_header(sum(len(p) for p in parts)) + b"".join(parts)
                           for parts in fragment_message(1, cmd, data, 16384))
    with good_client(app, seed=14), raw_association(app, "PIPELINE") as sock:
        sock.sendall(stream)
        reply = read_reply(sock, ARTIM_S + 3)
    assert_abort_then_close(reply, reason=0)
