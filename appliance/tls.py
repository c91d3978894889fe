"""DICOM over TLS (PS3.15 Annex B): the ``ssl.SSLContext`` of both sides.

Server: the acceptor wraps its TLS listening socket ([tls] port, 2762 by IANA's "dicom-tls")
with ``server_context``; uvloop does the handshake, and the association then runs the same
DicomProtocol, worker rings and workers as on the plain port. Client: ``client_context`` for
our SCUs (``appliance.scu``): the ``pacs`` network verbs, C-MOVE sub-operations and Storage
Commitment reports to an ``[ae_table.X] tls = true`` peer (``scu_context``).

Profile: PS3.15 B.9 "BCP195 Non-Downgrading TLS Secure Transport Connection Profile", the
same on both sides.

  - Protocol versions: TLS 1.2 and TLS 1.3 only (BCP 195 = RFC 8996 + RFC 9325: SSL, TLS 1.0
    and 1.1 are forbidden). Nothing older is ever negotiated, whatever the peer offers.
  - TLS 1.2 cipher suites: only ECDHE key exchange (forward secrecy) with AEAD ciphers, in
    server order (``OP_CIPHER_SERVER_PREFERENCE``):
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256   TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384   TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305    TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305
    The four AES-GCM suites are RFC 9325 section 4.2's recommendation; ChaCha20-Poly1305
    (RFC 7905) is the AEAD it names for hosts without AES hardware. "Non-downgrading" is
    what leaving out everything else buys: no CBC, no static RSA key transport, no finite-
    field DHE, no SHA-1 MAC, so a peer cannot talk us down to a weaker suite; TLS 1.3's
    suites are all AEAD and are left at OpenSSL's defaults. Compression and renegotiation
    are off (RFC 9325 sections 3.3, 3.5).
  - Server authentication: the appliance's certificate and private key (PEM). With
    ``verify_client`` the client must present a certificate that chains to ``ca_file``
    (``CERT_REQUIRED``: mutual TLS, PS3.15 B.1 "peer authentication"); without it no
    client certificate is asked for.
  - Client authentication: the server's chain is always verified (``CERT_REQUIRED``)
    against a CA file, or the system's trust store when none is given. The host name is
    checked only on request (``check_hostname``): DICOM peers are configured by address and
    AE title, and their certificates often name neither, which is also why DCMTK does not
    check it. The client presents a certificate when given one (mutual TLS towards a peer
    that asks, e.g. ``storescp +tls`` with its default ``--require-peer-cert``).

Reload (SIGHUP): ``reload_server`` loads new files into the live server context, so new
handshakes present the new certificate while open connections keep theirs. The files are
first loaded into a scratch context: a pair that does not load (or a key that is not the
certificate's) leaves the live context untouched (OpenSSL drops the old key as soon as a
certificate that does not match it is loaded, so loading straight into the live context
could leave it half-changed). CA certificates can only be added to a live context, not
removed: a CA taken out of ``ca_file`` stays trusted until a restart.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from pathlib import Path

from appliance.config import TlsConfig
from appliance.errors import ConfigError

# OpenSSL names of the TLS 1.2 suites above (TLS 1.3 suites are set separately by OpenSSL).
BCP195_ND_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
))
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def _bcp195(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(BCP195_ND_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx


# ---- server ----------------------------------------------------------------------------------


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """The listening side's context for ``tls`` (files are read now; ConfigError if not)."""
    ctx = _bcp195(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE
    load_identity(ctx, tls)
    if tls.verify_client:
        ctx.verify_mode = ssl.CERT_REQUIRED
        _load_ca(ctx, tls.ca_file, "[tls] ca_file")
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def load_identity(ctx: ssl.SSLContext, tls: TlsConfig) -> None:
    """Load the certificate chain and its private key into ``ctx``."""
    try:
        ctx.load_cert_chain(certfile=tls.certificate, keyfile=tls.private_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[tls] certificate {tls.certificate!r} / private_key "
                          f"{tls.private_key!r}: {exc}") from exc


def reload_server(ctx: ssl.SSLContext, tls: TlsConfig) -> None:
    """SIGHUP: the certificate, key (and, with ``verify_client``, CA file) of ``tls`` into
    the live ``ctx``. ConfigError, with ``ctx`` unchanged, if the new files do not load."""
    server_context(tls)  # the trial: raises before the live context is touched
    load_identity(ctx, tls)
    if tls.verify_client:
        _load_ca(ctx, tls.ca_file, "[tls] ca_file")


def fingerprint(cert_file: str) -> str:
    """SHA-256 of the first certificate in a PEM file, hex (what logs show); "" if none."""
    try:
        match = _PEM_CERT.search(Path(cert_file).read_bytes())
    except OSError:
        return ""
    if match is None:
        return ""
    der = ssl.PEM_cert_to_DER_cert(match.group().decode("ascii"))
    return hashlib.sha256(der).hexdigest()


# ---- client ----------------------------------------------------------------------------------


def client_context(*, ca_file: str = "", certificate: str = "", private_key: str = "",
                   check_hostname: bool = False) -> ssl.SSLContext:
    """An SCU's context: the server's chain verified against ``ca_file`` (PEM; "" = the
    system trust store), our ``certificate``/``private_key`` presented when given ("" = an
    anonymous client, DCMTK's ``+tla``), the name checked only with ``check_hostname``
    (``SCU`` passes its host as ``server_hostname``). ConfigError if a file does not load."""
    ctx = _bcp195(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if ca_file:
        _load_ca(ctx, ca_file, "CA file")
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if certificate or private_key:
        try:
            ctx.load_cert_chain(certfile=certificate, keyfile=private_key or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"client certificate {certificate!r} / key {private_key!r}: "
                              f"{exc}") from exc
    return ctx


def client_identity(tls: TlsConfig) -> tuple[str, str]:
    """The (certificate, key) the appliance presents as a TLS client: ``client_certificate``
    and ``client_private_key`` when set, else the server's own pair (possibly none)."""
    if tls.client_certificate:
        return tls.client_certificate, tls.client_private_key
    return tls.certificate, tls.private_key


def scu_context(tls: TlsConfig) -> ssl.SSLContext:
    """The context for an association the appliance opens to an ``[ae_table.X] tls = true``
    peer (C-MOVE sub-operations, Storage Commitment reports). Built per association, so
    renewed client files are used without a reload; ConfigError names the [tls] setting."""
    certificate, key = client_identity(tls)
    try:
        return client_context(ca_file=tls.ca_file, certificate=certificate, private_key=key,
                              check_hostname=tls.check_hostname)
    except ConfigError as exc:
        raise ConfigError(f"[tls] {exc}") from exc


def _load_ca(ctx: ssl.SSLContext, ca_file: str, what: str) -> None:
    try:
        ctx.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{what} {ca_file!r}: {exc}") from exc


def describe(exc: ssl.SSLError) -> str:
    """One line for an SSLError: the verification failure or OpenSSL's reason, readable."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason.lower().replace("_", " ")
    return str(exc)


__all__ = [
    "BCP195_ND_CIPHERS", "client_context", "client_identity", "describe", "fingerprint",
    "load_identity", "reload_server", "scu_context", "server_context",
]
