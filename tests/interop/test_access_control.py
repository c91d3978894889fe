"""Per-peer access control ([access], appliance/access.py) attacked the way a hostile peer
would: unknown and spoofed AE titles, the right title from the wrong address, operations the
peer was not given, C-MOVE to a destination it may not use, and TLS client certificates with
the wrong subject. DCMTK tools as the peers, pynetdicom where a negotiation detail is checked.

One appliance with ``default = "closed"`` on the plain port serves most tests; one with
mutual TLS serves the certificate rules. The audit trail and the log are checked for every
refusal.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.conftest import (
    Appliance,
    _finish,
    dcmtk_env,
    free_port,
    require_tool,
    run_tool,
    wait_until,
)
from tests.interop.test_tls import Pki, TlsAppliance, _with_cert, pki  # noqa: F401 (fixture)

pytestmark = pytest.mark.interop

CT_FILE = str(get_testdata_file("CT_small.dcm"))
CT = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"

RULES = """
[access]
default = "closed"
[access.peer.ECHOONLY]
operations = ["echo"]
[access.peer.STORER]
operations = ["echo", "store"]
[access.peer.FINDER]
operations = ["find"]
[access.peer.MOVER]
operations = ["move"]
move_destinations = ["DEST_OK"]
[access.peer.GETTER]
operations = ["get"]
[access.peer.FARAWAY]
hosts = ["10.99.0.0/16"]               # excludes 127.0.0.1
operations = ["echo", "store"]
"""


def _config(dest_port: int, rules: str = RULES) -> str:
    return (rules + f'[ae_table.DEST_OK]\nhost = "127.0.0.1"\nport = {dest_port}\n'
            f'[ae_table.DEST_NO]\nhost = "127.0.0.1"\nport = {dest_port}\n'
            "[query]\nmove_pending_interval_s = 0.0\n")


@pytest.fixture(scope="module")
def dest_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, dest_port: int) -> Iterator[Appliance]:
    a = Appliance(tmp_path_factory.mktemp("access"), workers=1, config=_config(dest_port))
    try:
        a.start()
        yield a
    finally:
        _finish(a)


def _tool(name: str, app: Appliance, aet: str, *args: str,
          port: int | None = None) -> tuple[int, str]:
    cp = run_tool([require_tool(name), "-v", "-aet", aet, "-aec", app.ae_title, *args,
                   "127.0.0.1", str(port or app.port)], timeout_s=60, env=dcmtk_env())
    return cp.returncode, cp.stdout + cp.stderr


def _echo(app: Appliance, aet: str) -> tuple[int, str]:
    return _tool("echoscu", app, aet)


def _store(app: Appliance, aet: str) -> tuple[int, str]:
    cp = run_tool([require_tool("storescu"), "-v", "-aet", aet, "-aec", app.ae_title,
                   "127.0.0.1", str(app.port), CT_FILE], timeout_s=60, env=dcmtk_env())
    return cp.returncode, cp.stdout + cp.stderr


def _audit(app: Appliance, event: str = "access.denied") -> list[dict[str, object]]:
    path = app.data / "audit.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in lines if e.get("event") == event]


def _denied(app: Appliance, calling_ae: str, reason: str) -> list[dict[str, object]]:
    return [e for e in _audit(app) if e.get("calling_ae") == calling_ae
            and e.get("reason") == reason]


REJECTED_CALLING_AE = "Calling AE Title Not Recognized"


def test_unknown_ae_is_rejected_calling_ae_not_recognized(app: Appliance) -> None:
    rc, out = _echo(app, "INTRUDER")
    assert rc != 0 and "Association Rejected" in out and REJECTED_CALLING_AE in out, out
    assert "Rejected Permanent" in out and "Service User" in out, out
    wait_until(lambda: bool(_denied(app, "INTRUDER", "unknown_peer")), 5, "the audit event")
    rejected = [e for e in _audit(app, "association.rejected")
                if e.get("calling_ae") == "INTRUDER"]
    assert rejected and rejected[0]["reason"] == 3
    assert "access.denied" in app.logs(400)


def test_echo_only_peer_echoes_but_cannot_store(app: Appliance) -> None:
    rc, out = _echo(app, "ECHOONLY")
    assert rc == 0, out
    rc, out = _store(app, "ECHOONLY")
    assert rc != 0, out  # every context user-rejected: the association is rejected
    sop_uid = str(dcmread(CT_FILE, stop_before_pixels=True).SOPInstanceUID)
    assert app.get_instance(sop_uid) is None
    wait_until(lambda: bool(_denied(app, "ECHOONLY", "operation")), 5, "the audit event")
    event = _denied(app, "ECHOONLY", "operation")[0]
    assert isinstance(event["refused_contexts"], int) and event["refused_contexts"] > 16
    listed = event["refused_sop_classes"]  # the first 16, sorted
    assert isinstance(listed, list) and len(listed) == 16
    assert all(uid.startswith("1.2.840.10008.5.1.4.1.1.") for uid in listed)  # storage


def test_refused_contexts_are_user_rejection_in_the_ac(app: Appliance) -> None:
    from pynetdicom import AE

    ae = AE(ae_title="ECHOONLY")
    ae.add_requested_context(VERIFICATION)
    ae.add_requested_context(CT)
    assoc = ae.associate("127.0.0.1", app.port, ae_title=app.ae_title)
    try:
        assert assoc.is_established
        results = {cx.abstract_syntax: cx.result for cx in assoc.rejected_contexts}
        assert results == {CT: 0x01}  # PS3.8 9.3.3.2: user-rejection
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()


def test_store_then_find_allowed_for_their_peers(app: Appliance, tmp_path: Path) -> None:
    rc, out = _store(app, "STORER")
    assert rc == 0, out
    ds = dcmread(CT_FILE, stop_before_pixels=True)
    wait_until(lambda: app.get_instance(str(ds.SOPInstanceUID)) is not None, 10, "the index")
    rc, out = _tool("findscu", app, "FINDER", "-S", "-k", "QueryRetrieveLevel=STUDY",
                    "-k", f"StudyInstanceUID={ds.StudyInstanceUID}")
    assert rc == 0 and "Find Response: 1 (Pending)" in out, out
    # FINDER may not echo: Verification is user-rejected, so echoscu's association fails
    rc, out = _echo(app, "FINDER")
    assert rc != 0, out


@pytest.fixture
def storescp(tmp_path: Path, dest_port: int) -> Iterator[Path]:
    out = tmp_path / "received"
    out.mkdir()
    proc = subprocess.Popen([require_tool("storescp"), "-aet", "DEST_OK", "-od", str(out),
                             str(dest_port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        yield out
    finally:
        proc.terminate()
        proc.wait(10)


def _move(app: Appliance, aet: str, dest: str) -> tuple[int, str]:
    study = dcmread(CT_FILE, stop_before_pixels=True).StudyInstanceUID
    return _tool("movescu", app, aet, "-S", "-aem", dest, "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={study}")


def test_move_to_forbidden_destination_refused_allowed_one_works(
        app: Appliance, storescp: Path) -> None:
    if _store(app, "STORER")[0] != 0:  # the study to move (kept if already there)
        pytest.fail("storescu as STORER failed")
    rc, out = _move(app, "MOVER", "DEST_NO")  # in [ae_table], not in MOVER's rule
    assert "Refused: MoveDestinationUnknown" in out, out  # 0xA801
    assert not list(storescp.iterdir())
    wait_until(lambda: bool(_denied(app, "MOVER", "move_destination")), 5, "the audit event")
    assert _denied(app, "MOVER", "move_destination")[0]["destination_ae"] == "DEST_NO"
    rc, out = _move(app, "MOVER", "DEST_OK")
    assert rc == 0 and "MoveDestinationUnknown" not in out, out
    wait_until(lambda: len(list(storescp.iterdir())) == 1, 10, "the object at DEST_OK")


def test_get_only_peer_retrieves_but_cannot_store(app: Appliance, tmp_path: Path) -> None:
    from pynetdicom import AE, build_role

    if _store(app, "STORER")[0] != 0:
        pytest.fail("storescu as STORER failed")
    ds = dcmread(CT_FILE)
    out = tmp_path / "got"
    out.mkdir()
    rc, text = _tool("getscu", app, "GETTER", "-S", "-od", str(out),
                     "-k", "QueryRetrieveLevel=STUDY",
                     "-k", f"StudyInstanceUID={ds.StudyInstanceUID}")
    assert rc == 0 and len(list(out.iterdir())) == 1, text
    # The storage context it got is for C-GET sub-operations (its SCP role only); a hostile
    # GETTER that sends a C-STORE-RQ on it anyway is refused 0x0124 (Not Authorized).
    ae = AE(ae_title="GETTER")
    ae.add_requested_context(CT)
    assoc = ae.associate("127.0.0.1", app.port, ae_title=app.ae_title,
                         ext_neg=[build_role(CT, scu_role=True, scp_role=True)])
    try:
        assert assoc.is_established
        cx = assoc.accepted_contexts[0]
        assert (cx.as_scu, cx.as_scp) == (False, True)  # our SCU role: not granted
        cx._as_scu = True  # ignore the negotiated roles, as a hostile peer would
        ds.SOPInstanceUID = ds.SOPInstanceUID + ".99"
        assert assoc.send_c_store(ds).Status == 0x0124
    finally:
        assoc.release()
    assert app.get_instance(str(ds.SOPInstanceUID)) is None
    wait_until(lambda: bool(_denied(app, "GETTER", "operation")), 5, "the audit event")


def test_known_ae_from_an_address_outside_its_hosts_is_rejected(app: Appliance) -> None:
    rc, out = _echo(app, "FARAWAY")
    assert rc != 0 and REJECTED_CALLING_AE in out, out
    wait_until(lambda: bool(_denied(app, "FARAWAY", "peer_mismatch")), 5, "the audit event")


def test_metrics_count_refusals_by_reason(app: Appliance) -> None:
    _echo(app, "INTRUDER2")
    status, body = app.get("/metrics")
    assert status == 200
    text = body.decode()
    assert 'pacs_access_denied_total{reason="unknown_peer"}' in text, text[-2000:]


def test_sighup_new_rules_apply_to_the_next_association(tmp_path: Path, dest_port: int) -> None:
    a = Appliance(tmp_path / "hup", workers=1, config=_config(dest_port))
    try:
        a.start()
        assert _echo(a, "NEWCOMER")[0] != 0
        assert _echo(a, "ECHOONLY")[0] == 0
        cfg = a.root / "appliance.toml"
        text = cfg.read_text()
        assert "[access.peer.ECHOONLY]" in text
        cfg.write_text(text.replace("[access.peer.ECHOONLY]", "[access.peer.NEWCOMER]"))
        a.signal(signal.SIGHUP)
        wait_until(lambda: _echo(a, "NEWCOMER")[0] == 0, 10, "NEWCOMER admitted after SIGHUP")
        rc, out = _echo(a, "ECHOONLY")  # its rule is gone: default closed
        assert rc != 0 and REJECTED_CALLING_AE in out, out
        assert "access.reloaded" in a.logs(400)
    finally:
        _finish(a)


# ---- TLS client-certificate subject -----------------------------------------------------


def test_tls_subject_rule_with_mutual_tls(pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    rules = ('[access]\ndefault = "closed"\n[access.peer.TLSSCU]\n'
             'tls_subject = "CN=modality"\noperations = ["echo"]\n')
    a = TlsAppliance(tmp_path / "mtls", pki, verify_client=True, extra_config=rules)
    try:
        a.start()
        tls_args = _with_cert(pki, pki.client_cert, pki.client_key)  # CN=modality
        rc, out = _tool("echoscu", a, "TLSSCU", *tls_args, port=a.tls_port)
        assert rc == 0, out
        # the same AE title on the plain port: no certificate, so the rule cannot match
        rc, out = _tool("echoscu", a, "TLSSCU")
        assert rc != 0 and REJECTED_CALLING_AE in out, out
        # a valid certificate from the same CA with another subject
        other_cert, other_key = pki.issue("another-modality", "client_ext")
        rc, out = _tool("echoscu", a, "TLSSCU", *_with_cert(pki, other_cert, other_key),
                        port=a.tls_port)
        assert rc != 0 and REJECTED_CALLING_AE in out, out
        wait_until(lambda: len(_denied(a, "TLSSCU", "peer_mismatch")) == 2, 5, "audit events")
        subjects = {e.get("tls_subject") for e in _denied(a, "TLSSCU", "peer_mismatch")}
        assert subjects == {None, "CN=another-modality"}
    finally:
        _finish(a)
