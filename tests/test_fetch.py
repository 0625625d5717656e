"""The SSRF-safe media fetcher against real local HTTP servers: every refusal, redirects, limits, pinning."""

from __future__ import annotations

import io
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from feed.config import Settings
from feed.redis_server import free_port
from ingest_workers.fetch import Fetched, FetchPolicy, MediaFetcher, MediaRefused, MediaUnavailable

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
ALLOW_LOOPBACK = FetchPolicy(allowed_networks=LOOPBACK)
IMAGES = frozenset({"image/png", "image/jpeg"})


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    return buf.getvalue()


PNG = _png()
BIG = b"\0" * 100_000


class MediaServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # concurrent test clients must not wait on a full backlog
    seen: list[tuple[str, str]]  # (path, Host header) of every request, in order


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: MediaServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", content_type: str | None = None, **headers: str) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _chunked(self, chunks: Iterator[bytes], delay_s: float = 0.0) -> None:
        """A body in chunked encoding, without Content-Length."""
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for chunk in chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
                time.sleep(delay_s)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client hung up, as it should
            pass

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Host", "")))
        path = self.path
        if path == "/img.png":
            self._send(200, PNG, "image/png")
        elif path == "/img-params.png":
            self._send(200, PNG, "Image/PNG; charset=binary")
        elif path == "/big":
            self._send(200, BIG, "image/png")
        elif path == "/chunked-big":
            self._chunked(iter([BIG[:10_000]] * 10))
        elif path == "/slow":
            self._chunked(iter([b"x"] * 40), delay_s=0.05)
        elif path == "/html":
            self._send(200, b"<html></html>", "text/html; charset=utf-8")
        elif path == "/untyped":
            self._send(200, PNG)
        elif path == "/octet":
            self._send(200, PNG, "application/octet-stream")
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[1]), b"nope", "text/plain")
        elif path.startswith("/chain/"):  # /chain/N redirects (relatively) N times, then serves the PNG
            n = int(path.rsplit("/", 1)[1])
            if n:
                self._send(302, location=f"{n - 1}")
            else:
                self._send(200, PNG, "image/png")
        elif path == "/loop":
            self._send(302, location="/loop")
        elif path == "/to-metadata":
            self._send(302, location="http://169.254.169.254/latest/meta-data/")
        elif path == "/to-ftp":
            self._send(301, location="ftp://example.com/img.png")
        else:
            self._send(404, b"not found", "text/plain")


@pytest.fixture(scope="module")
def server() -> Iterator[MediaServer]:
    srv = MediaServer(("127.0.0.1", 0), Handler)
    srv.seen = []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


@pytest.fixture
def base(server: MediaServer) -> str:
    server.seen.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def make() -> Iterator[type[MediaFetcher]]:
    """Builds fetchers (same arguments as MediaFetcher) and closes them after the test."""
    made: list[MediaFetcher] = []

    class Closing(MediaFetcher):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    yield Closing
    for fetcher in made:
        fetcher.close()


class Resolver:
    """A fake DNS: answers from a list of answers in turn (the last one repeats) and counts calls."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def test_fetches_png_when_loopback_allowed(make, base):
    got = make(ALLOW_LOOPBACK).fetch(f"{base}/img.png", accept=IMAGES, max_bytes=10_000)
    assert got == Fetched(data=PNG, content_type="image/png", url=f"{base}/img.png")


def test_content_type_is_lower_case_without_parameters(make, base):
    got = make(ALLOW_LOOPBACK).fetch(f"{base}/img-params.png", accept=IMAGES, max_bytes=10_000)
    assert got.content_type == "image/png"


def test_loopback_refused_by_default_policy(make, server, base):
    with pytest.raises(MediaRefused, match=r"host '127\.0\.0\.1' is non-public address 127\.0\.0\.1"):
        make(FetchPolicy()).fetch(f"{base}/img.png", accept=IMAGES, max_bytes=10_000)
    assert server.seen == []


def test_name_resolving_to_private_address_refused(make):
    resolver = Resolver(["10.0.0.5"])
    with pytest.raises(MediaRefused, match=r"host 'media\.test' resolves to non-public address 10\.0\.0\.5"):
        make(FetchPolicy(), resolver).fetch("http://media.test/a.png", accept=IMAGES, max_bytes=10)
    assert resolver.calls == [("media.test", 80)]


def test_any_non_public_address_refuses_the_host(make):
    resolver = Resolver(["93.184.215.14", "192.168.1.7"])
    with pytest.raises(MediaRefused, match=r"non-public address 192\.168\.1\.7"):
        make(FetchPolicy(), resolver).fetch("https://media.test/a.png", accept=IMAGES, max_bytes=10)
    assert resolver.calls == [("media.test", 443)]


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",  # cloud metadata
        "[::1]",
        "[::ffff:127.0.0.1]",  # IPv4-mapped loopback
        "[::ffff:169.254.169.254]",
        "[2002:a9fe:a9fe::1]",  # 6to4 of the metadata address
        "[64:ff9b::a00:1]",  # NAT64 of 10.0.0.1
        "[fd00::1]",
        "[fe80::1]",
        "100.64.0.1",  # shared address space
        "0.0.0.0",
        "224.0.0.1",
        "[ff02::1]",
        "240.0.0.1",
    ],
)
def test_literal_non_public_addresses_refused(make, server, host):
    url = f"http://{host}:{server.server_address[1]}/img.png"
    with pytest.raises(MediaRefused, match="is non-public address"):
        make(FetchPolicy()).fetch(url, accept=IMAGES, max_bytes=10_000)


def test_allowed_networks_do_not_cover_ipv6_loopback(make, server):
    with pytest.raises(MediaRefused, match=r"host '::1' is non-public address ::1"):
        make(ALLOW_LOOPBACK).fetch(f"http://[::1]:{server.server_address[1]}/", accept=IMAGES, max_bytes=10)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("ftp://127.0.0.1/img.png", "scheme 'ftp' is not allowed"),
        ("gopher://127.0.0.1:70/", "scheme 'gopher' is not allowed"),
        ("//127.0.0.1/img.png", "scheme '' is not allowed"),
        ("http://user:pass@127.0.0.1/img.png", "must not contain user credentials"),
        ("http://user@127.0.0.1/img.png", "must not contain user credentials"),
        ("http:///img.png", "has no host"),
        ("http://[zz]/", "is not a valid URL"),
    ],
)
def test_bad_urls_refused(make, url, reason):
    resolver = Resolver(["127.0.0.1"])
    with pytest.raises(MediaRefused, match=reason):
        make(ALLOW_LOOPBACK, resolver).fetch(url, accept=IMAGES, max_bytes=10_000)
    assert resolver.calls == []


def test_relative_redirects_followed_to_final_url(make, base):
    got = make(ALLOW_LOOPBACK).fetch(f"{base}/chain/3", accept=IMAGES, max_bytes=10_000)
    assert (got.data, got.url) == (PNG, f"{base}/chain/0")


def test_redirect_to_metadata_refused_though_first_hop_allowed(make, server, base):
    with pytest.raises(
        MediaRefused, match=r"host '169\.254\.169\.254' is non-public address 169\.254\.169\.254"
    ):
        make(ALLOW_LOOPBACK).fetch(f"{base}/to-metadata", accept=IMAGES, max_bytes=10_000)
    assert [path for path, _ in server.seen] == ["/to-metadata"]


def test_redirect_to_ftp_refused(make, base):
    with pytest.raises(MediaRefused, match="media_url redirect scheme 'ftp' is not allowed"):
        make(ALLOW_LOOPBACK).fetch(f"{base}/to-ftp", accept=IMAGES, max_bytes=10_000)


@pytest.mark.parametrize("path", ["/loop", "/chain/4"])
def test_too_many_redirects_refused(make, server, base, path):
    with pytest.raises(MediaRefused, match="redirected more than 3 times"):
        make(ALLOW_LOOPBACK).fetch(f"{base}{path}", accept=IMAGES, max_bytes=10_000)
    assert len(server.seen) == 4  # the first request and three redirects, no more


def test_declared_length_over_limit_refused(make, base):
    with pytest.raises(MediaRefused, match="content of 100000 bytes exceeds the limit of 50000 bytes"):
        make(ALLOW_LOOPBACK).fetch(f"{base}/big", accept=IMAGES, max_bytes=50_000)


def test_streamed_body_over_limit_refused(make, base):
    with pytest.raises(MediaRefused, match="content exceeds the limit of 50000 bytes"):
        make(ALLOW_LOOPBACK).fetch(f"{base}/chunked-big", accept=IMAGES, max_bytes=50_000)


def test_streamed_body_within_limit_read_whole(make, base):
    got = make(ALLOW_LOOPBACK).fetch(f"{base}/chunked-big", accept=IMAGES, max_bytes=100_000)
    assert len(got.data) == 100_000


def test_slow_drip_cut_by_total_timeout(make, base):
    policy = FetchPolicy(allowed_networks=LOOPBACK, total_timeout_s=0.5)
    start = time.monotonic()
    with pytest.raises(MediaUnavailable, match=r"longer than the total timeout of 0\.5 s"):
        make(policy).fetch(f"{base}/slow", accept=IMAGES, max_bytes=10_000)
    assert time.monotonic() - start < 1.0  # the drip would take 2 s


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (403, MediaRefused),
        (404, MediaRefused),
        (410, MediaRefused),
        (429, MediaUnavailable),
        (500, MediaUnavailable),
        (503, MediaUnavailable),
    ],
)
def test_http_errors(make, base, status, error):
    with pytest.raises(error, match=f"^HTTP {status} from {re.escape(base)}/status/{status}$"):
        make(ALLOW_LOOPBACK).fetch(f"{base}/status/{status}", accept=IMAGES, max_bytes=10_000)


@pytest.mark.parametrize(
    ("path", "accept", "reason"),
    [
        ("/html", IMAGES, r"content type 'text/html' is not accepted \(accepted: image/jpeg, image/png\)"),
        ("/untyped", IMAGES, "content type 'missing' is not accepted"),
        ("/octet", {"video/"}, "content type 'application/octet-stream' is not accepted"),
    ],
)
def test_unaccepted_content_type_refused(make, base, path, accept, reason):
    with pytest.raises(MediaRefused, match=reason):
        make(ALLOW_LOOPBACK).fetch(f"{base}{path}", accept=accept, max_bytes=10_000)


@pytest.mark.parametrize(
    ("path", "accept"), [("/img.png", {"image/"}), ("/octet", {"video/", "application/octet-stream"})]
)
def test_prefix_and_listed_octet_stream_accepted(make, base, path, accept):
    assert make(ALLOW_LOOPBACK).fetch(f"{base}{path}", accept=accept, max_bytes=10_000).data == PNG


def test_connection_refused_is_unavailable(make):
    with pytest.raises(MediaUnavailable, match="could not fetch"):
        make(ALLOW_LOOPBACK).fetch(f"http://127.0.0.1:{free_port()}/", accept=IMAGES, max_bytes=10)


@pytest.mark.parametrize(
    ("errno", "error", "reason"),
    [
        (socket.EAI_NONAME, MediaRefused, "host 'media.test' does not exist"),
        (socket.EAI_AGAIN, MediaUnavailable, "could not resolve media_url host 'media.test'"),
    ],
)
def test_resolution_errors(make, errno, error, reason):
    def resolver(host: str, port: int) -> list[str]:
        raise socket.gaierror(errno, "lookup failed")

    with pytest.raises(error, match=reason):
        make(FetchPolicy(), resolver).fetch("http://media.test/", accept=IMAGES, max_bytes=10)


def test_connects_to_validated_address_with_original_host_header(make, server):
    """A rebinding DNS (127.0.0.1 first, 10.0.0.1 afterwards) is asked once per hop; the request
    goes to the address that was checked, carrying the real name, and httpx never resolves it."""
    port = server.server_address[1]
    server.seen.clear()
    resolver = Resolver(["127.0.0.1"], ["10.0.0.1"])
    got = make(ALLOW_LOOPBACK, resolver).fetch(
        f"http://media.test:{port}/img.png", accept=IMAGES, max_bytes=10_000
    )
    assert got == Fetched(data=PNG, content_type="image/png", url=f"http://media.test:{port}/img.png")
    assert resolver.calls == [("media.test", port)]
    assert server.seen == [("/img.png", f"media.test:{port}")]


def test_every_redirect_hop_resolved_and_checked_again(make, server):
    port = server.server_address[1]
    server.seen.clear()
    resolver = Resolver(["127.0.0.1"], ["10.0.0.1"])
    with pytest.raises(MediaRefused, match=r"host 'media\.test' resolves to non-public address 10\.0\.0\.1"):
        make(ALLOW_LOOPBACK, resolver).fetch(f"http://media.test:{port}/chain/1", accept=IMAGES, max_bytes=10)
    assert resolver.calls == [("media.test", port)] * 2
    assert server.seen == [("/chain/1", f"media.test:{port}")]


def test_https_connects_to_validated_address_with_real_name_in_sni():
    """The TLS ClientHello reaches the validated address and names the real host (SNI); our listener
    is no TLS server, so the handshake fails, which is a connection error."""
    listener = socket.create_server(("127.0.0.1", 0))
    hello = bytearray()

    def accept_one() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(2)
            hello.extend(conn.recv(65536))

    thread = threading.Thread(target=accept_one, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    fetcher = MediaFetcher(ALLOW_LOOPBACK, Resolver(["127.0.0.1"]))
    try:
        with pytest.raises(MediaUnavailable):
            fetcher.fetch(f"https://media.test:{port}/img.png", accept=IMAGES, max_bytes=10)
    finally:
        fetcher.close()
        thread.join(timeout=5)
        listener.close()
    assert hello[:1] == b"\x16"  # a TLS handshake record
    assert b"media.test" in hello


def test_concurrent_fetches_share_one_fetcher(make, base):
    fetcher = make(ALLOW_LOOPBACK)
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda _: fetcher.fetch(f"{base}/img.png", accept=IMAGES, max_bytes=10_000), range(16))
        )
    assert all(r.data == PNG for r in results)


def test_policy_from_settings():
    settings = Settings(
        media_allowed_networks=["10.0.0.0/8", "fd00::/8"],
        media_connect_timeout_s=1.0,
        media_read_timeout_s=2.0,
        media_total_timeout_s=5.0,
        media_max_redirects=1,
    )
    assert FetchPolicy.from_settings(settings) == FetchPolicy(
        allowed_networks=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")),
        connect_timeout_s=1.0,
        read_timeout_s=2.0,
        total_timeout_s=5.0,
        max_redirects=1,
    )
