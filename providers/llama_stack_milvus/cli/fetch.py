"""Downloads a document URL for ingest: http(s) only, public addresses only unless allowed, at most a capped size.

Every hop of a redirect chain is checked before it is requested: a public page must not be able to send the CLI to
a service that only this machine or its network can reach (a metadata endpoint, an admin page) and have the answer
stored in a vector store. Not covered: a name that resolves to a public address when checked and to a private one
when connected (DNS rebinding).
"""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlparse

import httpx

DEFAULT_MAX_MIB = 50.0
MAX_REDIRECTS = 5
TIMEOUT_S = 30.0


class FetchError(Exception):
    """The URL was not downloaded; the message says why (without the URL, which the caller prefixes)."""


@dataclass(frozen=True)
class UrlPolicy:
    max_mib: float = DEFAULT_MAX_MIB
    # Loopback, private (RFC 1918, fc00::/7), link-local, shared and reserved addresses: off unless asked for.
    allow_private: bool = False

    @property
    def max_bytes(self) -> int:
        return int(self.max_mib * 1024 * 1024)


@dataclass
class Download:
    url: str  # where the bytes came from, after redirects
    content_type: str
    data: bytes


def fetch(url: str, policy: UrlPolicy) -> Download:
    with httpx.Client(follow_redirects=False, timeout=TIMEOUT_S) as client:
        for _ in range(MAX_REDIRECTS + 1):
            _check_target(url, policy)
            with client.stream("GET", url) as response:
                if response.is_redirect:
                    url = urljoin(url, response.headers["location"])
                    continue
                response.raise_for_status()
                return Download(url, response.headers.get("content-type", ""), _read_capped(response, policy))
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")


def _check_target(url: str, policy: UrlPolicy) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise FetchError(f"only http and https URLs are fetched, not {parsed.scheme or 'a bare path'} ({url})")
    if policy.allow_private:
        return
    host = parsed.hostname or ""
    try:
        infos = socket.getaddrinfo(host, parsed.port or 80, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise FetchError(f"cannot resolve {host} ({e.strerror})") from e
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not _is_public(address):
            raise FetchError(
                f"{host} resolves to {address}, a loopback, private or link-local address; "
                "pass --allow-private-urls to fetch from such addresses"
            )


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _read_capped(response: httpx.Response, policy: UrlPolicy) -> bytes:
    too_big = f"larger than the {policy.max_mib:g} MiB download cap (--max-download-mib)"
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > policy.max_bytes:
        raise FetchError(f"{too_big}: it declares {int(declared):,} bytes")
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > policy.max_bytes:
            raise FetchError(too_big)
    return bytes(data)
