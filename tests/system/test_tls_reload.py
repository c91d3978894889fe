"""SIGHUP reloads the [tls] certificate and key into the acceptor's live context.

The appliance serves TLS from two files the test owns. After they are swapped for a renewed
certificate and the arbiter gets SIGHUP, a new handshake presents the new certificate
(fingerprints compared through ``ssl``), while an association opened before the reload goes
on working. Then a certificate whose key is not the one in the key file: the reload is
refused (``tls.reload_failed``) and handshakes keep presenting the previous certificate.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import ssl
from pathlib import Path

import pytest

from appliance.negotiation.sop_classes import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION
from appliance.scu import SCU, ProposedContext
from appliance.tls import client_context
from tests.conftest import _finish, wait_until
from tests.interop.test_tls import Pki, TlsAppliance
from tests.interop.test_tls import pki as pki  # noqa: PLC0414 - the module-scoped fixture

pytestmark = pytest.mark.system


def _file_fingerprint(cert: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()


def _served_fingerprint(app: TlsAppliance, ca: Path) -> str:
    """SHA-256 of the certificate a fresh handshake with the appliance presents."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", app.tls_port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def _swap(src: Path, dst: Path) -> None:
    tmp = dst.with_suffix(".new")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)  # as a certificate renewal tool would: never a half-written file


def test_sighup_reloads_the_certificate(pki: Pki, tmp_path: Path) -> None:
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copyfile(pki.server_cert, cert)
    shutil.copyfile(pki.server_key, key)
    renewed_cert, renewed_key = pki.issue("pacs-server-renewed")
    other_cert, _ = pki.issue("pacs-server-other")
    old_fp, new_fp = _file_fingerprint(pki.server_cert), _file_fingerprint(renewed_cert)
    assert old_fp != new_fp

    app = TlsAppliance(tmp_path / "app", pki, verify_client=False, cert=cert, key=key)
    scu = SCU("127.0.0.1", 0, called_ae=app.ae_title,
              contexts=[ProposedContext(VERIFICATION, (IMPLICIT_VR_LITTLE_ENDIAN,))],
              timeout_s=20)
    try:
        app.start()
        assert _served_fingerprint(app, pki.ca) == old_fp
        scu.port, scu.ssl_context = app.tls_port, client_context(ca_file=str(pki.ca))
        scu.associate()  # opened before the reload
        assert scu.echo() == 0x0000

        _swap(renewed_key, key)
        _swap(renewed_cert, cert)
        app.signal(signal.SIGHUP)
        wait_until(lambda: _served_fingerprint(app, pki.ca) == new_fp, 20,
                   "the renewed certificate in a new handshake", interval_s=0.2)
        assert scu.echo() == 0x0000, "the association opened before the reload broke"
        assert "tls.reloaded" in app.stdout_path.read_text()

        # A certificate whose key is not in the key file: refused, the renewed pair stays.
        _swap(other_cert, cert)
        app.signal(signal.SIGHUP)
        wait_until(lambda: "tls.reload_failed" in app.stdout_path.read_text(), 20,
                   "tls.reload_failed in the log")
        assert _served_fingerprint(app, pki.ca) == new_fp
        assert scu.echo() == 0x0000
        scu.release()
        assert app.running()
    finally:
        scu.abort()
        _finish(app)
