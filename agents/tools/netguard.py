"""SSRF guard: refuse URLs whose host resolves to private, loopback, link-local or otherwise internal
addresses, unless the platform allows them (WEB_FETCH_ALLOW_PRIVATE)."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlparse


class BlockedURL(Exception):
    pass


def _is_internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"))
    )


def check_url(url: str, *, allow_private: bool) -> str:
    """Return the URL if it may be fetched; raise BlockedURL with the reason otherwise."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise BlockedURL("only http and https URLs can be fetched")
    if not parsed.hostname:
        raise BlockedURL("the URL has no host")
    if parsed.username or parsed.password:
        raise BlockedURL("URLs with credentials are not fetched")
    if allow_private:
        return url
    try:
        infos = socket.getaddrinfo(parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80))
    except socket.gaierror as exc:
        raise BlockedURL(f"cannot resolve {parsed.hostname}: {exc.strerror}") from None
    for info in infos:
        if _is_internal(info[4][0]):
            raise BlockedURL(f"{parsed.hostname} resolves to an internal address; fetching it is not allowed")
    return url
