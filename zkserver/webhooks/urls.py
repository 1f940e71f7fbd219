"""Which webhook URLs the server may POST to.

A token holder must not be able to make the server probe the internal network (SSRF): a
URL whose host is, or resolves to, a loopback, private (RFC 1918 / RFC 4193), link-local,
shared (RFC 6598), multicast, reserved or cloud-metadata address is refused unless the
operator allows private targets (``--webhook-allow-private``). The check runs when a
subscription is created or changed and again before every delivery (DNS may change).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from attrs import frozen

__all__ = [
    "BadWebhookURL",
    "WebhookURL",
    "parse_webhook_url",
    "forbidden_address",
    "check_webhook_url",
    "Resolver",
    "MAX_URL_LENGTH",
    "getaddrinfo_resolver",
    "host_address",
]

MAX_URL_LENGTH = 2000

#: Instance-metadata services of the big clouds (AWS/GCP/Azure/OpenStack, AWS IPv6,
#: Alibaba, Oracle). 169.254.169.254 is link-local anyway; the others are named here.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> [address, ...]``: how a host name is resolved (getaddrinfo)."""


class BadWebhookURL(ValueError):
    """The URL cannot be used; the message says why (the API answers 400 naming ``url``)."""


@frozen
class WebhookURL:
    url: str
    scheme: str
    host: str
    port: int


def parse_webhook_url(url: object) -> WebhookURL:
    """Syntax only: an absolute http(s) URL with a host. Raises BadWebhookURL."""
    if not isinstance(url, str) or not url.strip():
        raise BadWebhookURL("must be an http or https URL")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise BadWebhookURL(f"is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise BadWebhookURL("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise BadWebhookURL(f"is not a valid URL ({e})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise BadWebhookURL("must be an http or https URL")
    if "@" in parts.netloc:
        # The HTTP client cannot send to it (each delivery failed) and the listing would
        # show the password: the signature is the receiver's proof of the sender.
        raise BadWebhookURL(
            "must not carry user:password@ (the X-Zkserver-Signature header authenticates"
            " each delivery)"
        )
    if port == 0:
        raise BadWebhookURL("port must be from 1 to 65535")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise BadWebhookURL("has no host")
    if parts.fragment:
        raise BadWebhookURL("must not have a #fragment")
    return WebhookURL(url, scheme, host, port or (443 if scheme == "https" else 80))


def forbidden_address(address: str) -> str | None:
    """Why the server must not connect to ``address`` (an IP literal), or None."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            ip = mapped
    if ip in METADATA_ADDRESSES:
        return "is a cloud metadata address"
    if ip.is_loopback:
        return "is a loopback address"
    if ip.is_link_local:
        return "is a link-local address"
    if ip.is_unspecified:
        return "is an unspecified address"
    if ip.is_multicast:
        return "is a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        return "is a shared (carrier-grade NAT) address"
    if ip.is_private:
        return "is a private address"
    if ip.is_reserved or not ip.is_global:
        return "is a reserved address"
    return None


_AT_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address of the classic numeric forms the system resolver also reads as
    one (inet_aton: ``127.1``, ``2130706433``, ``0x7f.1``, ``0177.0.0.1``), else None."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_AT_PART.fullmatch(p) for p in parts):
        return None
    values = [
        int(p[2:], 16) if p[:2].lower() == "0x" else int(p, 8 if p[0] == "0" else 10) for p in parts
    ]
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = last
    for index, value in enumerate(head):
        number |= value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def host_address(host: str) -> str | None:
    """The IP address ``host`` is written as (``[::1]``, ``10.0.0.1``, ``127.1``,
    ``2130706433``, ...), or None for a name that must be resolved."""
    text = host.strip("[]")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    address = _inet_aton(text)
    return None if address is None else str(address)


async def check_webhook_url(
    url: object, resolve: Resolver, allow_private: bool = False
) -> WebhookURL:
    """Parse ``url`` and, unless ``allow_private``, refuse it when its host is or resolves
    to a forbidden address. Raises BadWebhookURL with the reason."""
    parsed = parse_webhook_url(url)
    if allow_private:
        return parsed
    if parsed.host in METADATA_HOSTS:
        raise BadWebhookURL(f"host {parsed.host} is a cloud metadata service")
    literal = host_address(parsed.host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = await resolve(parsed.host, parsed.port)
        except Exception as e:
            raise BadWebhookURL(f"host {parsed.host} does not resolve ({e})") from None
        if not addresses:
            raise BadWebhookURL(f"host {parsed.host} does not resolve")
    for address in addresses:
        reason = forbidden_address(address)
        if reason is not None:
            shown = parsed.host if literal is not None else f"{parsed.host} ({address})"
            raise BadWebhookURL(
                f"host {shown} {reason}; the server refuses it unless started with"
                " --webhook-allow-private"
            )
    return parsed


def getaddrinfo_resolver(reactor: object) -> Resolver:
    """A resolver running ``socket.getaddrinfo`` in the reactor's thread pool."""
    from twisted.internet.threads import deferToThread

    async def resolve(host: str, port: int) -> list[str]:
        infos = await deferToThread(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
        return sorted({str(info[4][0]) for info in infos})

    return resolve
