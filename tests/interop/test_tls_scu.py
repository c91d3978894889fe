"""DICOM over TLS, the SCU side (PS3.15 B.9): ``pacs`` clients and C-MOVE sub-operations.

One appliance serves TLS only (``[tls] plain = false``) and asks for client certificates.
Its AE table names two DCMTK ``storescp +tls`` destinations with ``tls = true``: STORESCP,
whose certificate chains to the appliance's ``ca_file`` and which requires our client
certificate (storescp's default ``--require-peer-cert``), and UNTRUSTED, whose certificate
comes from a CA the appliance does not trust; and LISTENER, a pynetdicom Storage Commitment
SCU with its own TLS port, which gets its report there. Certificates are made by the Pki helpers of
test_tls.py. The ``pacs`` verbs run as subprocesses: what is checked is what a user sees.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from appliance.commitment import STORAGE_COMMITMENT_INSTANCE
from tests.conftest import PYTHON, REPO, _finish, free_port, require_tool, run_tool
from tests.interop.test_qr_scu_dcmqrscp import stop, wait_listening
from tests.interop.test_tls import Pki, TlsAppliance
from tests.interop.test_tls import pki as pki  # noqa: PLC0414 - the module-scoped fixture

pytestmark = pytest.mark.interop

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


class Storescp:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, out: Path) -> None:
        self.proc, self.port, self.out = proc, port, out


def _storescp(tmp: Path, ae: str, cert: Path, key: Path, ca: Path) -> Iterator[Storescp]:
    out = tmp / ae
    out.mkdir()
    port = free_port()
    # +tls KEY CERT, +cf: the CA our client certificate must chain to (-rc is the default)
    proc = subprocess.Popen(
        [require_tool("storescp"), "-aet", ae, "+tls", str(key), str(cert), "+cf", str(ca),
         "-od", str(out), str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)  # its own group: stop() signals the group
    try:
        wait_listening(proc, port, f"storescp {ae}")
        yield Storescp(proc, port, out)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def storescp(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storescp]:
    cert, key = pki.issue("storescp-server")
    yield from _storescp(tmp_path_factory.mktemp("scp"), "STORESCP", cert, key, pki.ca)


@pytest.fixture(scope="module")
def untrusted(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storescp]:
    cert, key = pki.issue("untrusted-server", ca="stranger-ca")
    yield from _storescp(tmp_path_factory.mktemp("bad"), "UNTRUSTED", cert, key, pki.ca)


@pytest.fixture(scope="module")
def listen_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def app(pki: Pki, storescp: Storescp, untrusted: Storescp, listen_port: int,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsAppliance]:
    client_cert, client_key = pki.issue("appliance-client", "client_ext")
    peers = (("STORESCP", storescp.port), ("UNTRUSTED", untrusted.port),
             ("LISTENER", listen_port))
    tables = "".join(f'[ae_table.{ae}]\nhost = "127.0.0.1"\nport = {port}\ntls = true\n'
                     for ae, port in peers)
    tables += "[workflow]\ncommitment_grace_s = 0.5\ncommitment_retry_s = 0.5\n"
    a = TlsAppliance(tmp_path_factory.mktemp("tls-scu"), pki, verify_client=True, plain=False,
                     tls_extra=f'client_certificate = "{client_cert}"\n'
                               f'client_private_key = "{client_key}"\n',
                     extra_config=tables)
    try:
        a.start()
        yield a
    finally:
        _finish(a)


def pacs(*argv: str) -> tuple[int, str, str]:
    cp = run_tool([PYTHON, "-m", "appliance", *argv], timeout_s=60, cwd=REPO)
    return cp.returncode, cp.stdout, cp.stderr


def _tls(pki: Pki) -> list[str]:
    return ["--tls", str(pki.client_key), str(pki.client_cert), "--tls-ca", str(pki.ca)]


def _peer(app: TlsAppliance) -> list[str]:
    return ["-aec", app.ae_title, "127.0.0.1", str(app.tls_port)]


@pytest.fixture(scope="module")
def stored_uids(app: TlsAppliance) -> tuple[str, str]:
    """CT_small stored over TLS with ``pacs store``: (Study, SOP Instance UID)."""
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    ds = dcmread(path, stop_before_pixels=True)
    rc, out, err = pacs("store", *_tls(app.pki), *_peer(app), str(path))
    assert rc == 0, out + err
    assert app.get_instance(str(ds.SOPInstanceUID)) is not None
    return str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)


# ---- our clients against our own TLS port --------------------------------------------------


def test_tls_only_leaves_the_plain_port_unbound(app: TlsAppliance) -> None:
    with pytest.raises(ConnectionRefusedError), \
            socket.create_connection(("127.0.0.1", app.port), timeout=5):
        pass
    assert "plain = false" in (app.root / "appliance.toml").read_text()


def test_pacs_echo_over_tls(app: TlsAppliance) -> None:
    rc, out, err = pacs("echo", "-v", *_tls(app.pki), *_peer(app))
    assert rc == 0, out + err
    assert "TLS: TLSv1.3" in out, out
    assert "0x0000 (success)" in out.lower(), out


def test_pacs_store_and_find_over_tls(app: TlsAppliance, stored_uids: tuple[str, str]) -> None:
    study, _ = stored_uids
    rc, out, err = pacs("find", *_tls(app.pki), "-S", "-L", "STUDY", "-k",
                        f"StudyInstanceUID={study}", "-k", "PatientID", "--format", "csv",
                        *_peer(app))
    assert rc == 0, out + err
    assert study in out, out


def test_wrong_ca_fails_cleanly(app: TlsAppliance) -> None:
    pki = app.pki
    stranger_ca = pki.directory / "stranger-ca.pem"
    rc, out, err = pacs("echo", "--tls", str(pki.client_key), str(pki.client_cert),
                        "--tls-ca", str(stranger_ca), *_peer(app))
    assert rc == 8, out + err
    assert "Traceback" not in err, err
    assert err.strip().count("\n") == 0, err  # one line
    assert err.startswith("pacs echo: TLS with 127.0.0.1:"), err
    assert "certificate verify failed" in err, err


def test_client_without_certificate_is_refused_cleanly(app: TlsAppliance) -> None:
    # verify_client = true: the server refuses the anonymous client. With TLS 1.3 that
    # happens after the client's side of the handshake is done: an alert (exit 8) or, as
    # uvloop does, a close before the alert is flushed (exit 5, with a hint).
    rc, out, err = pacs("echo", "--tls-anonymous", "--tls-ca", str(app.pki.ca), *_peer(app))
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    assert (rc == 8 and "TLS with" in err) or (rc == 5 and "client certificate" in err), err


def test_tls_flags_checked_before_connecting(app: TlsAppliance) -> None:
    rc, _, err = pacs("echo", "--tls-ca", str(app.pki.ca), *_peer(app))
    assert rc == 2 and "--tls-anonymous" in err, err
    rc, _, err = pacs("echo", "--tls-anonymous", "--tls-ca", str(app.root / "nope.pem"),
                      *_peer(app))
    assert rc == 2 and "nope.pem" in err and "Traceback" not in err, err


# ---- C-MOVE sub-operations to [ae_table.X] tls = true ------------------------------------


def test_move_to_storescp_over_tls(app: TlsAppliance, storescp: Storescp,
                                   stored_uids: tuple[str, str]) -> None:
    study, sop = stored_uids
    rc, out, err = pacs("move", *_tls(app.pki), "-aem", "STORESCP", "-S", "-L", "STUDY",
                        "-k", f"StudyInstanceUID={study}", *_peer(app))
    assert rc == 0, out + err
    received = [p for p in storescp.out.iterdir() if p.name.endswith(sop)]
    assert len(received) == 1, (list(storescp.out.iterdir()), out, err)
    assert str(dcmread(received[0]).SOPInstanceUID) == sop


def test_move_to_untrusted_destination_fails_the_suboperation(
        app: TlsAppliance, untrusted: Storescp, stored_uids: tuple[str, str]) -> None:
    study, _ = stored_uids
    rc, out, err = pacs("move", *_tls(app.pki), "-aem", "UNTRUSTED", "-S", "-L", "STUDY",
                        "-k", f"StudyInstanceUID={study}", *_peer(app))
    assert rc == 1, out + err
    assert "final status 0xA702" in err and "completed 0, failed 1" in err, out + err
    assert not list(untrusted.out.iterdir())
    logs = app.logs()
    assert "qr.move_destination_unreachable" in logs, logs
    assert "certificate verify failed" in logs, logs


# ---- Storage Commitment report to a tls = true requester ---------------------------------


def test_commitment_report_over_tls_on_a_new_association(
        app: TlsAppliance, listen_port: int, stored_uids: tuple[str, str]) -> None:
    from pynetdicom import AE, build_role, evt
    from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

    pki = app.pki
    reports: list[Any] = []
    got = threading.Event()

    def on_report(event: Any) -> tuple[int, None]:
        reports.append(event.event_information)
        got.set()
        return 0x0000, None

    # the requester's own TLS port: it wants our client certificate, from its CA
    cert, key = pki.issue("listener-server")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(pki.ca)
    listener = AE(ae_title="LISTENER")
    listener.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = listener.start_server(("127.0.0.1", listen_port), block=False,
                                   ssl_context=server_ctx,
                                   evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    assert server is not None
    try:
        # N-ACTION over TLS, then abort before the report: it must come on a new association
        requester = AE(ae_title="LISTENER")
        requester.add_requested_context(StorageCommitmentPushModel)
        client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
        client_ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        assoc = requester.associate(
            "127.0.0.1", app.tls_port, ae_title=app.ae_title,
            tls_args=(client_ctx, "127.0.0.1"),
            ext_neg=[build_role(StorageCommitmentPushModel, scu_role=True)],
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, lambda _e: (0x0110, None))])
        assert assoc.is_established
        tx = generate_uid()
        action = Dataset()
        action.TransactionUID = tx
        item = Dataset()
        item.ReferencedSOPClassUID = CT_IMAGE_STORAGE
        item.ReferencedSOPInstanceUID = stored_uids[1]
        action.ReferencedSOPSequence = [item]
        status, _ = assoc.send_n_action(action, 1, StorageCommitmentPushModel,
                                        STORAGE_COMMITMENT_INSTANCE)
        assert status.Status == 0x0000
        assoc.abort()
        assert got.wait(30), app.logs()
    finally:
        server.shutdown()
    [info] = [r for r in reports if r.TransactionUID == tx]
    assert [str(i.ReferencedSOPInstanceUID) for i in info.ReferencedSOPSequence] == [
        stored_uids[1]]
    assert "commitment.reported" in app.stdout_path.read_text()


# ---- pacs commit --listen over TLS -----------------------------------------------------


def _archive(pki: Pki, listen_port: int, reporter_ctx: ssl.SSLContext,
             outcomes: list[str]) -> Any:
    """A pynetdicom Storage Commitment SCP on TLS that answers the N-ACTION and then reports
    on a new association, over TLS with ``reporter_ctx``, to ``listen_port``; what happened
    to each report goes to ``outcomes``."""
    from pynetdicom import AE, build_role, evt
    from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

    def report(info: Dataset) -> None:
        try:
            time.sleep(0.2)  # after the N-ACTION-RSP has gone out
            ds = Dataset()
            ds.TransactionUID = info.TransactionUID
            ds.ReferencedSOPSequence = info.ReferencedSOPSequence
            ae = AE(ae_title="ARCHIVE")
            ae.add_requested_context(StorageCommitmentPushModel)
            assoc = ae.associate("127.0.0.1", listen_port, ae_title="MODALITY",
                                 ext_neg=[build_role(StorageCommitmentPushModel, scp_role=True)],
                                 tls_args=(reporter_ctx, "127.0.0.1"))
            if not assoc.is_established:
                outcomes.append("not established")
                return
            status, _ = assoc.send_n_event_report(ds, 1, StorageCommitmentPushModel,
                                                  STORAGE_COMMITMENT_INSTANCE)
            outcomes.append(f"0x{int(status.Status):04X}")
            assoc.release()
        except Exception as exc:  # noqa: BLE001 - the test reads outcomes
            outcomes.append(f"{type(exc).__name__}: {exc}")

    def on_action(event: Any) -> tuple[int, None]:
        threading.Thread(target=report, args=(event.action_information,), daemon=True).start()
        return 0x0000, None

    cert, key = pki.issue("archive-server")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ae = AE(ae_title="ARCHIVE")
    ae.add_supported_context(StorageCommitmentPushModel)
    return ae.start_server(("127.0.0.1", 0), block=False, ssl_context=ctx,
                           evt_handlers=[(evt.EVT_N_ACTION, on_action)])


def test_commit_listen_accepts_the_report_over_tls(pki: Pki, tmp_path: Path) -> None:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    key_cert = [str(x) for x in reversed(pki.issue("commit-listener"))]  # --tls KEY CERT
    with_cert = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    with_cert.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    anonymous = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    for reporter_ctx, wait, expect_rc in ((with_cert, "30", 0), (anonymous, "3", 1)):
        listen, outcomes = free_port(), list[str]()
        server = _archive(pki, listen, reporter_ctx, outcomes)
        try:
            port = server.socket.getsockname()[1]
            rc, out, err = pacs("commit", "--listen", str(listen), "--tls", *key_cert,
                                "--tls-ca", str(pki.ca), "--wait", wait, "--format", "json",
                                "-aet", "MODALITY", "-aec", "ARCHIVE", "127.0.0.1", str(port),
                                str(path))
        finally:
            server.shutdown()
        assert rc == expect_rc, out + err + repr(outcomes)
        result = json.loads(out)
        if expect_rc == 0:  # the report came over TLS on the listener, from a CA-signed peer
            assert result["outcome"] == "reported" and result["same_association"] is False
            assert result["committed"] == [uid] and outcomes == ["0x0000"], outcomes
        else:  # --tls-ca: a reporting peer without a certificate fails the handshake
            assert result["outcome"] == "timed out" and result["committed"] == [], result
            assert outcomes and outcomes[0] != "0x0000", outcomes
    # --tls-anonymous has nothing to present as a TLS server: refused before connecting
    rc, _, err = pacs("commit", "--listen", str(free_port()), "--tls-anonymous",
                      "-aec", "ARCHIVE", "127.0.0.1", "9", str(path))
    assert rc == 2 and "--listen with TLS needs --tls KEY CERT" in err, err
