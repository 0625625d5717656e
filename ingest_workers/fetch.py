"""Fetching a post's media over HTTP(S) without letting a URL reach the worker's own network (SSRF).

Contract of `MediaFetcher.fetch(url, accept=..., max_bytes=...)`:

- Only `http`/`https` URLs with a host and without user credentials are fetched.
- The fetcher resolves the host itself and refuses it unless EVERY address is public (not loopback,
  private, link-local such as the cloud metadata address 169.254.169.254, multicast, unspecified,
  reserved or shared; IPv6 forms of IPv4 addresses are judged by the IPv4 address), or lies inside
  `FetchPolicy.allowed_networks`. The connection then goes to the validated address (the `Host`
  header and, for https, TLS SNI and certificate checks keep the real name), so a DNS answer that
  changes between the check and the connection cannot redirect it.
- Redirects are followed by hand, at most `max_redirects`, each hop checked like the first.
- Connect, read and write timeouts apply to every step, and `total_timeout_s` bounds the whole
  fetch, all hops and the body included; it is checked before each hop and after each body chunk,
  so a single stalled read may overrun it by at most the read timeout.
- The body is limited to `max_bytes` (from `Content-Length` before reading, and while streaming),
  and its media type must be one of `accept`.

`MediaRefused` means retrying cannot help (the message says why, for the user); `MediaUnavailable`
means a timeout, a connection error, HTTP 429 or 5xx, or a DNS failure other than "no such name".
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from feed.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NO_SUCH_NAME = frozenset(
    code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if code is not None
)
# IPv6 prefixes that carry an IPv4 address in their last 32 bits: NAT64 and the old IPv4-compatible form.
_IPV4_EMBEDDING = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::/96"))


class MediaRefused(Exception):
    """Permanent: the URL or its content is refused; retrying cannot help.

    str(exc) is a clear reason for the user.
    """


class MediaUnavailable(Exception):
    """Transient: timeout, connection error, HTTP 5xx/429; the caller may retry later."""


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Which non-public networks may be fetched from, and the time and redirect limits."""

    allowed_networks: tuple[IPNetwork, ...] = ()  # let through even if not public
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    total_timeout_s: float = 30.0
    max_redirects: int = 3
    user_agent: str = "feed-engine-media-fetcher"

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchPolicy:
        """The policy from the `media_*` settings; a malformed CIDR raises ValueError."""
        return cls(
            allowed_networks=tuple(ipaddress.ip_network(cidr) for cidr in settings.media_allowed_networks),
            connect_timeout_s=settings.media_connect_timeout_s,
            read_timeout_s=settings.media_read_timeout_s,
            total_timeout_s=settings.media_total_timeout_s,
            max_redirects=settings.media_max_redirects,
        )


@dataclass(frozen=True, slots=True)
class Fetched:
    """A fetched body, its media type (lower case, no parameters) and the URL it came from after redirects."""

    data: bytes
    content_type: str
    url: str


class MediaFetcher:
    """SSRF-safe fetcher; one HTTP client, safe to share between threads."""

    def __init__(self, policy: FetchPolicy, resolver: Resolver | None = None) -> None:
        """`resolver(host, port)` returns the host's IP addresses; default: `socket.getaddrinfo`."""
        self._policy = policy
        self._resolver = resolver or _system_resolver
        self._client = httpx.Client(
            follow_redirects=False,
            trust_env=False,  # no proxy or certificate settings from the environment
            headers={"User-Agent": policy.user_agent, "Accept-Encoding": "identity"},
            # No connection reuse: a pooled connection is keyed by IP, and its TLS session was checked
            # for the name of the fetch that opened it, not for the next one.
            limits=httpx.Limits(max_keepalive_connections=0),
            cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),  # no cookies kept between fetches
        )

    def fetch(self, url: str, *, accept: Collection[str], max_bytes: int) -> Fetched:
        """The body at `url`, following redirects; raises MediaRefused or MediaUnavailable.

        `accept` lists allowed media types; an entry ending in "/" is a prefix (e.g. "video/").
        """
        deadline = time.monotonic() + self._policy.total_timeout_s
        target = _checked_url(url, None, "media_url")
        for _ in range(self._policy.max_redirects + 1):
            outcome = self._hop(target, accept, max_bytes, deadline)
            if isinstance(outcome, Fetched):
                return outcome
            target = outcome
        raise MediaRefused(f"media_url redirected more than {self._policy.max_redirects} times")

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def _hop(
        self, url: httpx.URL, accept: Collection[str], max_bytes: int, deadline: float
    ) -> Fetched | httpx.URL:
        """One request to `url`, pinned to its validated address: the result, or the URL it redirects to."""
        host = url.raw_host.decode("ascii")
        address = self._checked_address(host, url.port or _DEFAULT_PORTS[url.scheme])
        request = self._client.build_request(
            "GET",
            url.copy_with(host=address),
            headers={"Host": url.netloc.decode("ascii")},
            extensions={"sni_hostname": host} if url.scheme == "https" else None,
            timeout=self._timeout(deadline),
        )
        try:
            response = self._client.send(request, stream=True)
            try:
                return self._outcome(url, response, accept, max_bytes, deadline)
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            raise MediaUnavailable(f"timed out fetching {url}") from exc
        except httpx.TransportError as exc:
            raise MediaUnavailable(f"could not fetch {url}: {exc}") from exc
        except httpx.DecodingError as exc:
            raise MediaRefused(f"undecodable response body from {url}") from exc

    def _checked_address(self, host: str, port: int) -> str:
        """The address to connect to; refuses the host unless all of its addresses are permitted."""
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        addresses = [literal] if literal is not None else self._resolve(host, port)
        if not addresses:
            raise MediaRefused(f"media_url host {host!r} resolves to no address")
        for address in addresses:
            if not self._permitted(address):
                verb = "is" if literal is not None else "resolves to"
                raise MediaRefused(f"media_url host {host!r} {verb} non-public address {address}")
        return str(addresses[0])

    def _resolve(self, host: str, port: int) -> list[IPAddress]:
        """The host's addresses from the resolver, with its failures sorted into refused and unavailable."""
        try:
            return [ipaddress.ip_address(a) for a in self._resolver(host, port)]
        except socket.gaierror as exc:
            if exc.errno in _NO_SUCH_NAME:
                raise MediaRefused(f"media_url host {host!r} does not exist") from exc
            raise MediaUnavailable(f"could not resolve media_url host {host!r}: {exc}") from exc
        except UnicodeError as exc:  # the IDNA codec refuses e.g. labels over 63 characters
            raise MediaRefused(f"media_url host {host!r} is not a valid host name") from exc

    def _permitted(self, address: IPAddress) -> bool:
        """Public, or inside an allowed network; an IPv6 form of an IPv4 address is judged by the latter."""
        embedded = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
        judged = address if embedded is None else embedded
        if any(a in net for a in (address, judged) for net in self._policy.allowed_networks):
            return True
        return judged.is_global and not judged.is_multicast

    def _timeout(self, deadline: float) -> httpx.Timeout:
        """The per-step timeouts, none longer than the time left before the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._too_slow()
        connect = min(self._policy.connect_timeout_s, left)
        read = min(self._policy.read_timeout_s, left)
        return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)

    def _outcome(
        self,
        url: httpx.URL,
        response: httpx.Response,
        accept: Collection[str],
        max_bytes: int,
        deadline: float,
    ) -> Fetched | httpx.URL:
        """The checked body of a streamed response, or the checked URL it redirects to."""
        if response.has_redirect_location:
            return _checked_url(response.headers["Location"], url, "media_url redirect")
        status = response.status_code
        if status == 429 or status >= 500:
            raise MediaUnavailable(f"HTTP {status} from {url}")
        if not response.is_success:
            raise MediaRefused(f"HTTP {status} from {url}")
        content_type = response.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if not any(content_type == a or (a.endswith("/") and content_type.startswith(a)) for a in accept):
            raise MediaRefused(
                f"media_url content type {content_type or 'missing'!r} is not accepted"
                f" (accepted: {', '.join(sorted(accept))})"
            )
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > max_bytes:
            raise MediaRefused(f"media_url content of {length} bytes exceeds the limit of {max_bytes} bytes")
        data = bytearray()
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) > max_bytes:
                raise MediaRefused(f"media_url content exceeds the limit of {max_bytes} bytes")
            if time.monotonic() > deadline:
                raise self._too_slow()
        return Fetched(data=bytes(data), content_type=content_type, url=str(url))

    def _too_slow(self) -> MediaUnavailable:
        """The error for a fetch that ran past its overall deadline."""
        return MediaUnavailable(
            f"media_url took longer than the total timeout of {self._policy.total_timeout_s} s"
        )


def _system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from `socket.getaddrinfo`, in its order, without repeats."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, 6to4, NAT64, IPv4-compatible), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in net for net in _IPV4_EMBEDDING):
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


def _checked_url(ref: str, base: httpx.URL | None, label: str) -> httpx.URL:
    """`ref`, resolved against `base`, as a URL; refused unless http(s) with a host and no credentials."""
    try:
        url = base.join(ref) if base is not None else httpx.URL(ref)
    except httpx.InvalidURL as exc:
        raise MediaRefused(f"{label} is not a valid URL: {exc}") from exc
    if url.scheme not in _DEFAULT_PORTS:
        raise MediaRefused(f"{label} scheme {url.scheme!r} is not allowed; use http or https")
    if url.userinfo:
        raise MediaRefused(f"{label} must not contain user credentials")
    if not url.host:
        raise MediaRefused(f"{label} has no host")
    return url
