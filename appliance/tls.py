"""DICOM over TLS (PS3.15 Annex B): the server's ``ssl.SSLContext``.

The acceptor wraps its second listening socket ([tls] port, 2762 by IANA's "dicom-tls") with
this context; uvloop does the handshake, and the association then runs the same
DicomProtocol, worker rings and workers as on the plain port.

Profile: PS3.15 B.9 "BCP195 Non-Downgrading TLS Secure Transport Connection Profile".

  - Protocol versions: TLS 1.2 and TLS 1.3 only (BCP 195 = RFC 8996 + RFC 9325: SSL, TLS 1.0
    and 1.1 are forbidden). Nothing older is ever negotiated, whatever the client offers.
  - TLS 1.2 cipher suites: only ECDHE key exchange (forward secrecy) with AEAD ciphers, in
    server order (``OP_CIPHER_SERVER_PREFERENCE``):
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256   TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384   TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305    TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305
    The four AES-GCM suites are RFC 9325 section 4.2's recommendation; ChaCha20-Poly1305
    (RFC 7905) is the AEAD it names for hosts without AES hardware. "Non-downgrading" is
    what leaving out everything else buys: no CBC, no static RSA key transport, no finite-
    field DHE, no SHA-1 MAC, so a client cannot be talked down to a weaker suite; TLS 1.3's
    suites are all AEAD and are left at OpenSSL's defaults. Compression and renegotiation
    are off (RFC 9325 sections 3.3, 3.5).
  - Authentication: the appliance's certificate and private key (PEM). With
    ``verify_client`` the client must present a certificate that chains to ``ca_file``
    (``CERT_REQUIRED``: mutual TLS, PS3.15 B.1 "peer authentication"); without it no
    client certificate is asked for.
"""

from __future__ import annotations

import ssl

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


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """The listening side's context for ``tls`` (files are read now; ConfigError if not)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(BCP195_ND_CIPHERS)
    ctx.options |= (ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
                    | ssl.OP_NO_RENEGOTIATION | ssl.OP_SINGLE_ECDH_USE)
    load_identity(ctx, tls)
    if tls.verify_client:
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_verify_locations(cafile=tls.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"[tls] ca_file {tls.ca_file!r}: {exc}") from exc
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

