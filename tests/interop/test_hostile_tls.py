"""Hostile peers on the [tls] port (mutual TLS): bad client certificates, a connection flood,
and a client that sends its A-ASSOCIATE-RQ in the same flight as its handshake Finished.

The handshake runs inside the acceptor's own connection (appliance/acceptor/protocol.py
``_handshake``), so a failure is one log line plus an audit event, and a connection still in
its handshake counts against ``max_pending_connections`` like a silent plain one.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import _finish, dcmtk_env, require_tool, run_tool, wait_until
from tests.interop.test_tls import Pki, TlsAppliance, _openssl, pki  # noqa: F401 - fixture
from tests.system.test_hostile_peers import _rq

pytestmark = pytest.mark.interop

PENDING = 20


@pytest.fixture(scope="module")
def app(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsAppliance]:  # noqa: F811
    appliance = TlsAppliance(
        tmp_path_factory.mktemp("hostile-tls"), pki, verify_client=True,
        extra_config=f"[network]\nartim_timeout_s = 3.0\nmax_pending_connections = {PENDING}\n"
                     "[storage]\nmin_free_bytes = 0\n")
    try:
        yield appliance.start()
    finally:
        _finish(appliance)


def _echo(app: TlsAppliance, cert: Path, key: Path) -> int:
    cp = run_tool([require_tool("echoscu"), "-aet", "MODALITY", "-aec", "PACS", "+tls",
                   str(key), str(cert), "+cf", str(app.pki.ca), "127.0.0.1", str(app.tls_port)],
                  timeout_s=30, env=dcmtk_env())
    return cp.returncode


def _audit(app: TlsAppliance, event: str) -> list[dict[str, object]]:
    path = app.data / "audit.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e["event"] == event]


def test_refused_client_certificates_are_logged_and_audited(app: TlsAppliance) -> None:
    """Before, a failed handshake left no trace at all (uvloop logs SSL errors only in debug
    mode): an expired or self-signed certificate was refused silently."""
    d = app.pki.directory
    _openssl("req", "-new", "-config", "openssl.cnf", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-noenc", "-keyout", "expired.key", "-out",
             "expired.csr", "-subj", "/CN=expired", cwd=d)
    _openssl("x509", "-req", "-in", "expired.csr", "-CA", "test-ca.pem", "-CAkey", "test-ca.key",
             "-set_serial", "77", "-days", "-1", "-extfile", "openssl.cnf", "-extensions",
             "client_ext", "-out", "expired.pem", cwd=d)
    assert _echo(app, d / "expired.pem", d / "expired.key") != 0
    assert _echo(app, app.pki.stranger_cert, app.pki.stranger_key) != 0
    wait_until(lambda: len(_audit(app, "tls.handshake_failed")) >= 2, 10, "audit events")
    errors = {str(e["error"]) for e in _audit(app, "tls.handshake_failed")}
    assert "certificate has expired" in errors, errors
    assert any("unable to get local issuer certificate" in e for e in errors), errors
    event = _audit(app, "tls.handshake_failed")[0]
    assert event["outcome"] == 4 and event["event_id"] == {
        "code": "110113", "scheme": "DCM", "meaning": "Security Alert"}
    logs = app.logs(300)
    assert logs.count('"event": "tls.handshake_failed"') >= 2, logs
    assert _echo(app, app.pki.client_cert, app.pki.client_key) == 0


def test_tls_port_flood_is_bounded_by_max_pending_connections(app: TlsAppliance) -> None:
    """Connections on the TLS port that never start their handshake were not counted at all
    (the TLS layer held them until ARTIM): a flood could take every file descriptor. Now
    the oldest is evicted beyond max_pending_connections, as on the plain port."""
    flood = [socket.create_connection(("127.0.0.1", app.tls_port), timeout=5)
             for _ in range(2 * PENDING)]
    try:
        time.sleep(0.5)
        closed = 0
        for sock in flood:
            sock.setblocking(False)
            try:
                closed += sock.recv(1) == b""
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed += 1
        assert closed >= PENDING - 1, f"only {closed} of {2 * PENDING} evicted"
        assert _echo(app, app.pki.client_cert, app.pki.client_key) == 0
    finally:
        for sock in flood:
            sock.close()
    assert "acceptor.connections_evicted" in app.logs(300)


def test_associate_rq_right_behind_the_handshake_goes_over_tls(app: TlsAppliance) -> None:
    """The RQ that arrives with the client's Finished is decrypted before the acceptor's
    handshake coroutine resumes: it must wait for the TLS transport, never be answered on the
    raw socket (the client would see plain bytes: WRONG_VERSION_NUMBER)."""
    ctx = ssl.create_default_context(cafile=str(app.pki.ca))
    ctx.check_hostname = False
    ctx.load_cert_chain(app.pki.client_cert, app.pki.client_key)
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", app.tls_port), timeout=10) as raw, \
                ctx.wrap_socket(raw) as tls:
            tls.sendall(_rq(calling="MODALITY"))
            assert tls.recv(1) == b"\x02"  # A-ASSOCIATE-AC, over TLS
