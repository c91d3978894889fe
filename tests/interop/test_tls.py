"""DICOM over TLS (PS3.15 B.9): DCMTK's TLS tools and pynetdicom against the [tls] port.

Certificates are made here with the openssl command line: a test CA, a server certificate for
127.0.0.1, a client certificate from the same CA and one from a stranger CA. Two appliances:
one with TLS only (no client certificate asked for) and one with ``verify_client = true``.
Each also serves its plain port, which must keep working.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from appliance import reload
from appliance.config import TlsConfig, from_mapping
from appliance.errors import ConfigError
from appliance.tls import (
    BCP195_ND_CIPHERS,
    client_identity,
    fingerprint,
    reload_server,
    scu_context,
    server_context,
)
from tests.conftest import Appliance, _finish, dcmtk_env, free_port, require_tool, run_tool

pytestmark = pytest.mark.interop

_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
[client_ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
"""
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc"]


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # signed by a CA the appliance does not trust
    stranger_key: Path

    @property
    def directory(self) -> Path:
        return self.ca.parent

    def issue(self, name: str, ext: str = "server_ext", ca: str = "test-ca",
              serial: int | None = None) -> tuple[Path, Path]:
        """A new (certificate, key) ``name`` signed by ``ca`` (test-ca or stranger-ca), with
        ``ext`` from the config (server_ext: for 127.0.0.1 and localhost; client_ext)."""
        d = self.directory
        serial = serial if serial is not None else 100 + len(list(d.glob("*.csr")))
        return _make_leaf(d, name, (d / f"{ca}.pem", d / f"{ca}.key"), ext, serial)


def _openssl(*args: str, cwd: Path) -> None:
    cp = subprocess.run([require_tool("openssl"), *args], cwd=cwd, capture_output=True,
                        text=True, timeout=60, check=False)
    assert cp.returncode == 0, f"openssl {' '.join(args)}\n{cp.stderr}"


def _make_ca(d: Path, name: str) -> tuple[Path, Path]:
    _openssl("req", "-x509", "-config", "openssl.cnf", "-extensions", "ca_ext", *_EC,
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}",
             "-days", "2", cwd=d)
    return d / f"{name}.pem", d / f"{name}.key"


def _make_leaf(d: Path, name: str, ca: tuple[Path, Path], ext: str, serial: int,
               ) -> tuple[Path, Path]:
    _openssl("req", "-new", "-config", "openssl.cnf", *_EC, "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-set_serial", str(serial), "-days", "2", "-extfile", "openssl.cnf",
             "-extensions", ext, "-out", f"{name}.pem", cwd=d)
    return d / f"{name}.pem", d / f"{name}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    (d / "openssl.cnf").write_text(_OPENSSL_CNF)
    ca = _make_ca(d, "test-ca")
    stranger_ca = _make_ca(d, "stranger-ca")
    server = _make_leaf(d, "pacs-server", ca, "server_ext", 1)
    client = _make_leaf(d, "modality", ca, "client_ext", 2)
    stranger = _make_leaf(d, "stranger", stranger_ca, "client_ext", 3)
    return Pki(ca[0], *server, *client, *stranger)


def _tls_toml(pki: Pki, port: int, verify_client: bool, *, plain: bool = True,
              cert: Path | None = None, key: Path | None = None) -> str:
    return (f'[tls]\nenabled = true\nport = {port}\n'
            f'certificate = "{cert or pki.server_cert}"\n'
            f'private_key = "{key or pki.server_key}"\nca_file = "{pki.ca}"\n'
            f"verify_client = {'true' if verify_client else 'false'}\n"
            f"plain = {'true' if plain else 'false'}\n")


class TlsAppliance(Appliance):
    """An Appliance whose [tls] port is picked (free) at each start. ``tls_extra`` is added
    to the [tls] table, ``extra_config`` after it (e.g. [ae_table.X] tables); ``cert`` and
    ``key`` replace the PKI's server pair (files the test may swap)."""

    def __init__(self, root: Path, pki: Pki, verify_client: bool, *, plain: bool = True,
                 tls_extra: str = "", extra_config: str = "", cert: Path | None = None,
                 key: Path | None = None) -> None:
        super().__init__(root)
        self.pki, self.verify_client, self.tls_port = pki, verify_client, 0
        self.plain, self.tls_extra, self.extra_config = plain, tls_extra, extra_config
        self.cert, self.key = cert, key

    def command(self) -> list[str]:
        self.tls_port = free_port()
        self.config = (_tls_toml(self.pki, self.tls_port, self.verify_client,
                                 plain=self.plain, cert=self.cert, key=self.key)
                       + self.tls_extra + self.extra_config)
        return super().command()


def _running(root: Path, pki: Pki, verify_client: bool) -> Iterator[TlsAppliance]:
    app = TlsAppliance(root, pki, verify_client)
    try:
        app.start()
        yield app
    finally:
        _finish(app)


@pytest.fixture(scope="module")
def tls_app(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsAppliance]:
    yield from _running(tmp_path_factory.mktemp("tls"), pki, verify_client=False)


@pytest.fixture(scope="module")
def mtls_app(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsAppliance]:
    yield from _running(tmp_path_factory.mktemp("mtls"), pki, verify_client=True)


# ---- DCMTK ---------------------------------------------------------------------------------


def _dcmtk(tool: str, app: TlsAppliance, port: int, tls: list[str], *files: str,
           ) -> tuple[int, str]:
    cp = run_tool([require_tool(tool), "-v", "-aet", "TLSSCU", "-aec", app.ae_title, *tls,
                   "127.0.0.1", str(port), *files], timeout_s=60, env=dcmtk_env())
    return cp.returncode, cp.stdout + cp.stderr


def _with_cert(pki: Pki, cert: Path | None = None, key: Path | None = None) -> list[str]:
    """echoscu/storescu TLS options: our client certificate (or none: +tla), trusting the CA."""
    ident = ["+tla"] if cert is None else ["+tls", str(key), str(cert)]
    return [*ident, "+cf", str(pki.ca)]


def test_echo_over_tls(tls_app: TlsAppliance) -> None:
    rc, out = _dcmtk("echoscu", tls_app, tls_app.tls_port, _with_cert(tls_app.pki))
    assert rc == 0, out
    assert "Received Echo Response (Success)" in out, out


def test_store_over_tls(tls_app: TlsAppliance) -> None:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    pki = tls_app.pki
    rc, out = _dcmtk("storescu", tls_app, tls_app.tls_port,
                     _with_cert(pki, pki.client_cert, pki.client_key), str(path))
    assert rc == 0, out
    assert "Received Store Response (Success)" in out, out
    rec = tls_app.get_instance(uid)
    assert rec is not None, f"{uid} not indexed after a successful C-STORE over TLS"


def test_plain_client_on_tls_port_fails(tls_app: TlsAppliance) -> None:
    rc, out = _dcmtk("echoscu", tls_app, tls_app.tls_port, [])
    assert rc != 0, out
    assert "Association Accepted" not in out, out
    # ... while the plain port serves exactly as before
    rc, out = _dcmtk("echoscu", tls_app, tls_app.port, [])
    assert rc == 0 and "Received Echo Response (Success)" in out, out


def test_tls_client_on_plain_port_fails(tls_app: TlsAppliance) -> None:
    rc, out = _dcmtk("echoscu", tls_app, tls_app.port, _with_cert(tls_app.pki))
    assert rc != 0 and "Association Accepted" not in out, out


def test_verify_client_refuses_no_certificate(mtls_app: TlsAppliance) -> None:
    rc, out = _dcmtk("echoscu", mtls_app, mtls_app.tls_port, _with_cert(mtls_app.pki))
    assert rc != 0, out
    assert "Association Accepted" not in out, out


def test_verify_client_refuses_a_stranger_certificate(mtls_app: TlsAppliance) -> None:
    pki = mtls_app.pki
    rc, out = _dcmtk("echoscu", mtls_app, mtls_app.tls_port,
                     _with_cert(pki, pki.stranger_cert, pki.stranger_key))
    assert rc != 0, out
    assert "Association Accepted" not in out, out


def test_verify_client_accepts_ca_signed_certificate(mtls_app: TlsAppliance) -> None:
    pki = mtls_app.pki
    rc, out = _dcmtk("echoscu", mtls_app, mtls_app.tls_port,
                     _with_cert(pki, pki.client_cert, pki.client_key))
    assert rc == 0, out
    assert "Received Echo Response (Success)" in out, out
    rc, out = _dcmtk("echoscu", mtls_app, mtls_app.port, [])  # plain port: no TLS, no cert
    assert rc == 0, out


# ---- pynetdicom and the protocol floor ----------------------------------------------------


def _client_context(pki: Pki, with_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    if with_cert:
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return ctx


def test_pynetdicom_echo_with_client_certificate(mtls_app: TlsAppliance) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 20
    assoc = ae.associate("127.0.0.1", mtls_app.tls_port, ae_title=mtls_app.ae_title,
                         tls_args=(_client_context(mtls_app.pki), "127.0.0.1"))
    assert assoc.is_established
    try:
        status = assoc.send_c_echo()
        assert status is not None and status.Status == 0x0000
    finally:
        assoc.release()


def _handshake(app: TlsAppliance, ctx: ssl.SSLContext) -> tuple[str | None, str]:
    """(negotiated TLS version, cipher name) or an SSLError from the server's side."""
    with socket.create_connection(("127.0.0.1", app.tls_port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        cipher = tls.cipher()
        assert cipher is not None
        return tls.version(), cipher[0]


def test_tls13_and_bcp195_tls12_suites_only(tls_app: TlsAppliance) -> None:
    pki = tls_app.pki
    assert _handshake(tls_app, _client_context(pki, False))[0] == "TLSv1.3"

    tls12 = _client_context(pki, False)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    version, cipher = _handshake(tls_app, tls12)
    assert (version, cipher) == ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")

    # A CBC suite (allowed by the client, not by BCP 195 non-downgrading): the server ends
    # the handshake (an alert, or uvloop closes before flushing it: EOF); a client-side
    # refusal would be "no ciphers/protocols available" and fail these matches.
    cbc = _client_context(pki, False)
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError, match="alert|EOF"):
        _handshake(tls_app, cbc)

    old = _client_context(pki, False)
    old.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():  # deprecated on purpose: the versions BCP 195 forbids
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError, match="alert|EOF"):  # the server refuses TLS 1.0/1.1
        _handshake(tls_app, old)


# ---- configuration ------------------------------------------------------------------------


def test_enabled_tls_needs_existing_files(pki: Pki, tmp_path: Path) -> None:
    assert from_mapping({"tls": {"port": 2762}}).tls == TlsConfig()
    with pytest.raises(ConfigError, match=r"\[tls\] certificate: required"):
        from_mapping({"tls": {"enabled": True}})
    with pytest.raises(ConfigError, match=r"\[tls\] private_key: no such file"):
        from_mapping({"tls": {"enabled": True, "certificate": str(pki.server_cert),
                              "private_key": str(tmp_path / "missing.key")}})
    with pytest.raises(ConfigError, match=r"\[tls\] ca_file: required"):
        from_mapping({"tls": {"enabled": True, "certificate": str(pki.server_cert),
                              "private_key": str(pki.server_key), "verify_client": True}})
    cfg = from_mapping({"tls": {"enabled": True, "certificate": str(pki.server_cert),
                                "private_key": str(pki.server_key), "ca_file": str(pki.ca),
                                "verify_client": True}})
    ctx = server_context(cfg.tls)
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    assert {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"} <= {
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"}
    # a key that is not the certificate's: refused when the context is built
    mismatched = TlsConfig(enabled=True, certificate=str(pki.server_cert),
                           private_key=str(pki.client_key))
    with pytest.raises(ConfigError, match="private_key"):
        server_context(mismatched)


def test_tls_only_and_client_settings(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[tls\] plain = false needs enabled = true"):
        from_mapping({"tls": {"plain": False}})
    with pytest.raises(ConfigError, match="client_certificate and client_private_key go"):
        from_mapping({"tls": {"client_certificate": str(pki.client_cert)}})
    viewer = {"VIEWER": {"host": "127.0.0.1", "port": 104, "tls": True}}
    with pytest.raises(ConfigError, match=r"\[tls\] ca_file: no such file"):
        from_mapping({"tls": {"ca_file": str(tmp_path / "missing.pem")}, "ae_table": viewer})
    with pytest.raises(ConfigError, match=r"\[tls\] client_private_key: no such file"):
        from_mapping({"tls": {"client_certificate": str(pki.client_cert),
                              "client_private_key": str(tmp_path / "missing.key")}})
    cfg = from_mapping({"tls": {"ca_file": str(pki.ca), "client_certificate":
                                str(pki.client_cert), "client_private_key":
                                str(pki.client_key)}, "ae_table": viewer})
    peer = cfg.remote_ae("VIEWER")
    assert peer is not None and peer.tls
    ctx = scu_context(cfg.tls)
    assert ctx.verify_mode is ssl.CERT_REQUIRED and not ctx.check_hostname
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    assert {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"} <= set(
        BCP195_ND_CIPHERS.split(":"))
    # no client pair of its own: the appliance presents its server certificate
    both = TlsConfig(certificate="s.pem", private_key="s.key")
    assert client_identity(both) == ("s.pem", "s.key")
    assert client_identity(replace(both, client_certificate="c.pem",
                                   client_private_key="c.key")) == ("c.pem", "c.key")
    with pytest.raises(ConfigError, match=r"^\[tls\] client certificate"):
        scu_context(replace(cfg.tls, client_private_key=str(pki.server_key)))  # not its key
    assert scu_context(replace(cfg.tls, check_hostname=True)).check_hostname


def test_sighup_takes_the_tls_files_not_the_port(pki: Pki) -> None:
    old = from_mapping({"tls": {"enabled": True, "certificate": str(pki.server_cert),
                                "private_key": str(pki.server_key)}})
    new = from_mapping({"tls": {"enabled": True, "port": 2763,
                                "certificate": str(pki.client_cert),
                                "private_key": str(pki.client_key), "ca_file": str(pki.ca),
                                "check_hostname": True}})
    merged, restart = reload.merge(old, new)
    assert (merged.tls.certificate, merged.tls.private_key, merged.tls.ca_file) == (
        str(pki.client_cert), str(pki.client_key), str(pki.ca))
    assert merged.tls.check_hostname and merged.tls.port == 2762
    assert restart == ["tls.port"]
    # the live context: a pair that loads is taken; one that does not raises, untouched
    ctx = server_context(old.tls)
    reload_server(ctx, merged.tls)
    with pytest.raises(ConfigError, match="private_key"):
        reload_server(ctx, replace(merged.tls, private_key=str(pki.server_key)))
    assert fingerprint(str(pki.server_cert)) != fingerprint(str(pki.client_cert)) != ""
