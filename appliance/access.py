"""Per-peer access control: who may associate, which operations they may use, and where a
C-MOVE may send (the ``[access]`` section).

DICOM's Upper Layer carries no credential: the Calling AE Title is a claim. So a rule can pin
that claim to where the peer connects from (``hosts``: addresses or CIDR blocks) and, on the
TLS port with ``[tls] verify_client = true``, to the subject of its verified client
certificate (``tls_subject``). A rule is the only place rights come from; nothing here does
I/O, so the acceptor evaluates it per A-ASSOCIATE-RQ and a SIGHUP swaps the whole table.

Evaluation (``AccessRules.decide``), in this order:
  1. the first rule, in file order, whose AE title (or ``*``), hosts and TLS subject all match
     the peer grants its operations and move destinations;
  2. otherwise, an AE title that some rule names is a claim made from the wrong place or
     with the wrong certificate: refused whatever the default (a spoofed title never falls
     through to an open default);
  3. otherwise the ``default`` policy: ``open`` grants everything, ``closed`` refuses.

TLS subjects compare as whole distinguished names in RFC 4514 order (most specific RDN
first, e.g. ``CN=ct1,O=Hospital,C=DE``), attribute types case-insensitively and values exactly;
matching by CN alone is deliberately not offered (another certificate from the same CA could
carry the same CN under a different organisation).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from appliance.errors import ConfigError
from appliance.negotiation.policy import Operation

ANY_AE = "*"


class DefaultPolicy(StrEnum):
    OPEN = "open"  # a peer no rule names gets every operation (`make run`, development)
    CLOSED = "closed"  # a peer no rule names is rejected (production)


class Refusal(StrEnum):
    """Why a peer or an operation was refused: closed label set (metrics, audit)."""

    UNKNOWN_PEER = "unknown_peer"  # no rule names the AE title, default closed
    PEER_MISMATCH = "peer_mismatch"  # a rule names the AE title, but host or TLS subject differ
    OPERATION = "operation"  # presentation contexts of operations the rule does not allow
    MOVE_DESTINATION = "move_destination"  # C-MOVE to a destination the rule does not allow


@dataclass(frozen=True, slots=True)
class PeerRule:
    """``[access.peer.NAME]``: one peer and what it may do."""

    name: str
    ae_title: str  # "*" = any AE title (a rule by address or certificate alone)
    operations: tuple[Operation, ...]
    hosts: tuple[str, ...] = ()  # addresses or CIDR blocks, validated at load; empty = any
    tls_subject: str = ""  # "" = any (also plain TCP); else the exact RFC 4514 subject
    move_destinations: tuple[str, ...] = ()  # empty = its own AE title only; "*" = any

    def matches(self, peer: Peer) -> bool:
        if self.ae_title not in (ANY_AE, peer.ae_title):
            return False
        if self.hosts and not _in_networks(peer.address, self.hosts):
            return False
        if self.tls_subject:
            return peer.tls_subject is not None and (
                _rdns(self.tls_subject) == _rdns(peer.tls_subject))
        return True


@dataclass(frozen=True, slots=True)
class Peer:
    """What the acceptor knows of a requestor when its A-ASSOCIATE-RQ arrives."""

    ae_title: str  # Calling AE Title, padding stripped
    address: str  # IP address (no port)
    tls_subject: str | None = None  # RFC 4514 subject of a verified client certificate


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one peer: ``refusal`` set means reject the association."""

    rule: str | None  # the matching rule's name; None = the default policy
    operations: frozenset[Operation] = frozenset()
    move_destinations: frozenset[str] | None = None  # None = any destination in [ae_table]
    refusal: Refusal | None = None

    @property
    def allowed(self) -> bool:
        return self.refusal is None


ALL_OPERATIONS = frozenset(Operation)


@dataclass(frozen=True, slots=True)
class AccessConfig:
    """The ``[access]`` section: the default policy and the peer rules, in file order."""

    default: DefaultPolicy = DefaultPolicy.OPEN
    peers: tuple[PeerRule, ...] = ()

    def decide(self, peer: Peer) -> Decision:
        """Rights of ``peer`` (module docstring, "Evaluation")."""
        for rule in self.peers:
            if rule.matches(peer):
                return Decision(rule.name, frozenset(rule.operations),
                                _destinations(rule, peer))
        if any(rule.ae_title == peer.ae_title for rule in self.peers):
            return Decision(None, refusal=Refusal.PEER_MISMATCH)
        if self.default is DefaultPolicy.CLOSED:
            return Decision(None, refusal=Refusal.UNKNOWN_PEER)
        return Decision(None, ALL_OPERATIONS, None)


def _destinations(rule: PeerRule, peer: Peer) -> frozenset[str] | None:
    if ANY_AE in rule.move_destinations:
        return None
    return frozenset(rule.move_destinations or (peer.ae_title,))


def _in_networks(address: str, hosts: Iterable[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])  # drop an IPv6 zone id
    except ValueError:
        return False  # a Unix socket or anything else without an IP address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.1.2.3 on a dual-stack socket is 10.1.2.3
    return any(ip in net for net in map(ipaddress.ip_network, hosts) if ip.version == net.version)


# ---- TLS subject (RFC 4514) -----------------------------------------------------------------

# ssl.getpeercert() long names -> RFC 4514 / RFC 4519 short names
_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
          "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST",
          "domainComponent": "DC", "userId": "UID", "streetAddress": "STREET",
          "emailAddress": "emailAddress", "serialNumber": "serialNumber"}
_SPECIAL = frozenset(',+"\\<>;=')


def _escape(value: str) -> str:
    out = "".join("\\" + c if c in _SPECIAL else c for c in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def subject_from_peercert(cert: Mapping[str, Any] | None) -> str | None:
    """RFC 4514 string of ``ssl.SSLSocket.getpeercert()``'s subject: RDNs most specific first
    (the reverse of the certificate's order), multi-valued RDNs joined with ``+``. None when
    there is no verified certificate (``getpeercert()`` returns ``{}`` then)."""
    if not cert or "subject" not in cert:
        return None
    rdns = []
    for rdn in reversed(cert["subject"]):
        rdns.append("+".join(f"{_SHORT.get(k, k)}={_escape(str(v))}" for k, v in rdn))
    return ",".join(rdns)


def _split(text: str, sep: str) -> list[str]:
    """Split at ``sep`` characters not escaped with a backslash."""
    parts, cur, escaped = [], [], False
    for c in text:
        if escaped:
            cur.append(c)
            escaped = False
        elif c == "\\":
            cur.append(c)
            escaped = True
        elif c == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return parts


def _rdns(dn: str) -> tuple[frozenset[tuple[str, str]], ...]:
    """A DN in a comparable form: per RDN the set of (TYPE, value); whitespace around the
    separators is ignored, types compare case-insensitively."""
    out = []
    for rdn in _split(dn, ","):
        pairs = set()
        for ava in _split(rdn, "+"):
            typ, _, value = ava.partition("=")
            pairs.add((typ.strip().upper(), value.strip()))
        out.append(frozenset(pairs))
    return tuple(out)


def _valid_dn(dn: str) -> bool:
    return all(typ and "=" in ava and value
               for rdn in _split(dn, ",") for ava in _split(rdn, "+")
               for typ, _, value in [tuple(s.strip() for s in ava.partition("="))])


# ---- loading ---------------------------------------------------------------------------------

_RULE_KEYS = {"ae_title", "hosts", "tls_subject", "operations", "move_destinations"}


def from_toml(value: Any) -> AccessConfig:
    """Parse and validate ``[access]``: ``default`` and ``[access.peer.NAME]`` tables."""
    if not isinstance(value, dict):
        raise ConfigError("[access] must be a table")
    unknown = set(value) - {"default", "peer"}
    if unknown:
        raise ConfigError(f"[access] unknown setting {sorted(unknown)[0]!r}")
    default = value.get("default", DefaultPolicy.OPEN.value)
    if default not in tuple(DefaultPolicy):
        raise ConfigError(f"[access] default: expected 'open' or 'closed', got {default!r}")
    peers = value.get("peer", {})
    if not isinstance(peers, dict):
        raise ConfigError("[access.peer] must be a table of peers: [access.peer.NAME]")
    rules = tuple(_rule(str(name), spec) for name, spec in peers.items())
    return AccessConfig(DefaultPolicy(default), rules)


def _strings(where: str, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} {key}: expected a list of strings")
    return [v.strip() for v in value]


def _ae(where: str, key: str, title: str) -> str:
    if title != ANY_AE and not 1 <= len(title) <= 16:
        raise ConfigError(f"{where} {key}: AE titles are 1-16 characters, got {title!r}")
    if "\\" in title:
        raise ConfigError(f"{where} {key}: backslash is not allowed in an AE title")
    return title


def _rule(name: str, spec: Any) -> PeerRule:
    where = f"[access.peer.{name}]"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(spec) - _RULE_KEYS
    if unknown:
        raise ConfigError(f"{where} unknown setting {sorted(unknown)[0]!r}")
    title = spec.get("ae_title", name)
    if not isinstance(title, str):
        raise ConfigError(f"{where} ae_title: expected a string")
    if "operations" not in spec:
        raise ConfigError(f"{where} operations: required (e.g. [\"echo\", \"store\"])")
    ops = set()
    for op in _strings(where, "operations", spec["operations"]):
        if op not in tuple(Operation):
            raise ConfigError(f"{where} operations: unknown operation {op!r}, expected "
                              + ", ".join(Operation))
        ops.add(Operation(op))
    hosts = []
    for host in _strings(where, "hosts", spec.get("hosts", [])):
        try:
            hosts.append(str(ipaddress.ip_network(host, strict=True)))
        except ValueError as exc:
            raise ConfigError(f"{where} hosts: {host!r} is not an address or CIDR block "
                              f"({exc})") from None
    subject = spec.get("tls_subject", "")
    if not isinstance(subject, str) or (subject and not _valid_dn(subject)):
        raise ConfigError(f"{where} tls_subject: expected an RFC 4514 name like "
                          f"\"CN=ct1,O=Hospital\", got {subject!r}")
    dests = tuple(_ae(where, "move_destinations", d)
                  for d in _strings(where, "move_destinations",
                                    spec.get("move_destinations", [])))
    return PeerRule(name=name, ae_title=_ae(where, "ae_title", title.strip()),
                    operations=tuple(sorted(ops)), hosts=tuple(hosts), tls_subject=subject.strip(),
                    move_destinations=dests)


def to_toml(access: AccessConfig) -> list[str]:
    """The ``[access]`` section as TOML lines that ``from_toml`` reads back."""

    def q(s: str) -> str:
        return json.dumps(s, ensure_ascii=False)

    lines = ["[access]", f"default = {q(access.default.value)}"]
    for rule in access.peers:
        lines += ["", f"[access.peer.{q(rule.name)}]", f"ae_title = {q(rule.ae_title)}",
                  "operations = [" + ", ".join(q(o) for o in rule.operations) + "]"]
        if rule.hosts:
            lines.append("hosts = [" + ", ".join(q(str(h)) for h in rule.hosts) + "]")
        if rule.tls_subject:
            lines.append(f"tls_subject = {q(rule.tls_subject)}")
        if rule.move_destinations:
            lines.append("move_destinations = ["
                         + ", ".join(q(d) for d in rule.move_destinations) + "]")
    return lines


__all__ = [
    "ALL_OPERATIONS", "AccessConfig", "Decision", "DefaultPolicy", "Operation", "Peer",
    "PeerRule", "Refusal", "from_toml", "subject_from_peercert", "to_toml",
]
