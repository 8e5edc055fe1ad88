"""Webhooks (docs/webhooks.md): which destinations may be called, and how a delivery is signed.

Signing follows the Standard Webhooks specification with its reference library: the headers
`webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of
"id.timestamp.body">`, under a `whsec_` secret.

The address rules keep a callback from reaching inside the deployment (SSRF): loopback,
private, link-local, shared, multicast and reserved addresses are refused unless
`WEBHOOK_ALLOWED_HOSTS` names them. They are checked twice: on the literal host when the
conversation is submitted, and on every address the host resolves to right before a delivery
(which then connects to the address it checked, never resolving the name again).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from standardwebhooks import Webhook

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SECRET_PREFIX = "whsec_"  # noqa: S105  # the format's prefix, not a secret
# The specification's bounds for a secret's key, in bytes.
SECRET_MIN_BYTES, SECRET_MAX_BYTES = 24, 64
MAX_URL_CHARS = 2048


class DestinationRefusedError(ValueError):
    """A callback destination the rules do not allow; the message says why."""


# --- the secret and the signature ------------------------------------------------------------


def secret_problem(secret: str) -> str | None:
    """What is wrong with a `WEBHOOK_SECRET`, or None."""
    if not secret.startswith(SECRET_PREFIX):
        return f"WEBHOOK_SECRET must start with '{SECRET_PREFIX}' (the Standard Webhooks format)"
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return "WEBHOOK_SECRET must be 'whsec_' followed by base64"
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        return (
            f"WEBHOOK_SECRET's key must be {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes "
            f"(it is {len(key)})"
        )
    return None


def webhook_id(conversation_id: uuid.UUID) -> str:
    """The delivery's `webhook-id`: one per conversation, the same on every attempt."""
    return f"msg_{conversation_id.hex}"


@dataclass(frozen=True, slots=True)
class SignedDelivery:
    body: bytes
    headers: dict[str, str]


def sign(secret: str, *, message_id: str, body: str, at: datetime | None = None) -> SignedDelivery:
    """The body and the Standard Webhooks headers of one attempt (`at`: its time, now)."""
    when = (at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    signature = Webhook(secret).sign(msg_id=message_id, timestamp=when, data=body)
    return SignedDelivery(
        body=body.encode(),
        headers={
            "webhook-id": message_id,
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": signature,
            "content-type": "application/json",
        },
    )


# --- where a callback may go -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AllowedHosts:
    """`WEBHOOK_ALLOWED_HOSTS` parsed: host names (`hooks.example.com`, `*.example.com`) restrict
    which hosts may be called, when any is given; addresses and networks (`10.0.0.5`,
    `10.1.0.0/16`) open those otherwise refused addresses."""

    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()  # from `*.example.com`: ".example.com"
    networks: tuple[IPNetwork, ...] = ()

    @property
    def restricts_names(self) -> bool:
        return bool(self.names or self.suffixes)

    def name_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self.names or any(host.endswith(suffix) for suffix in self.suffixes)

    def address_allowed(self, address: IPAddress) -> bool:
        """A public unicast address, or one the setting names."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.networks):
            return True
        return address.is_global and not address.is_multicast


def parse_allowed_hosts(value: str) -> AllowedHosts:
    """Comma-separated host names, `*.` domains, addresses and networks; ValueError if one is
    none of them."""
    names: set[str] = set()
    suffixes: list[str] = []
    networks: list[IPNetwork] = []
    for raw in value.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry.startswith("[") and entry.endswith("]"):
            entry = entry[1:-1]
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        name = entry[2:] if entry.startswith("*.") else entry
        if not name or any(not label or len(label) > 63 for label in name.split(".")):
            raise ValueError(f"WEBHOOK_ALLOWED_HOSTS: '{raw.strip()}' is not a host or network")
        if entry.startswith("*."):
            suffixes.append("." + name)
        else:
            names.add(name.rstrip("."))
    return AllowedHosts(frozenset(names), tuple(suffixes), tuple(networks))


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Destination:
    """A callback URL taken apart: scheme, host (no brackets), port."""

    url: str
    scheme: str
    host: str
    port: int


def check_url(url: str, allowed: AllowedHosts) -> Destination:
    """The URL's destination if the rules allow its literal host; DestinationRefusedError if not.

    A host name passes here when the names allow it; its addresses are checked at delivery."""
    if len(url) > MAX_URL_CHARS:
        raise DestinationRefusedError(f"callback_url is longer than {MAX_URL_CHARS} characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise DestinationRefusedError("callback_url must be an http or https URL")
    if parts.username is not None or parts.password is not None:
        raise DestinationRefusedError("callback_url may not carry credentials")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # a port out of range, or not a number
        raise DestinationRefusedError(f"callback_url has an invalid port: {exc}") from None
    if not host:
        raise DestinationRefusedError("callback_url has no host")
    address = _literal_address(host)
    if address is not None:
        if not allowed.address_allowed(address):
            raise DestinationRefusedError(
                f"callback_url's address {address} is {_kind(address)}; not allowed "
                "(WEBHOOK_ALLOWED_HOSTS)"
            )
        if allowed.restricts_names and not any(address in net for net in allowed.networks):
            raise DestinationRefusedError(
                f"callback_url's host {host} is not in WEBHOOK_ALLOWED_HOSTS"
            )
    elif allowed.restricts_names and not allowed.name_allowed(host):
        raise DestinationRefusedError(f"callback_url's host {host} is not in WEBHOOK_ALLOWED_HOSTS")
    return Destination(url, scheme, host, port or (443 if scheme == "https" else 80))


def check_addresses(host: str, addresses: Iterable[IPAddress], allowed: AllowedHosts) -> None:
    """Every address a host resolved to must be allowed (one bad answer refuses them all:
    a client picks any of them); DestinationRefusedError if not."""
    found = list(addresses)
    if not found:
        raise DestinationRefusedError(f"{host} resolves to no address")
    for address in found:
        if not allowed.address_allowed(address):
            raise DestinationRefusedError(
                f"{host} resolves to {address}, {_kind(address)}; not allowed "
                "(WEBHOOK_ALLOWED_HOSTS)"
            )


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (the literal itself for an address)."""
    literal = _literal_address(host)
    if literal is not None:
        return [literal]
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    unique: dict[IPAddress, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        unique[ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])] = None
    return list(unique)


def _kind(address: IPAddress) -> str:
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    if address.is_multicast:
        return "a multicast address"
    return "not a public address"
