"""URL ingest against a real HTTP server on 127.0.0.1: private addresses refused unless allowed, every redirect hop
checked, the download size capped; and folder walks that do not follow symbolic links out of the folder."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llama_stack_milvus.cli.documents import Candidate, DocumentError, expand, load
from llama_stack_milvus.cli.fetch import FetchError, UrlPolicy, _check_target, fetch

PAGE = b"# Loopback page\n\nServed by the test.\n"
MIB = 1024 * 1024
ALLOW = UrlPolicy(allow_private=True)


class Site:
    """Routes: /page.md, /hop -> /page.md, /to-file -> file:///etc/passwd, /loop -> /loop, /big (2 MiB, with a
    Content-Length), /big-chunked (2 MiB, chunked, no length). Counts the requests it answers."""

    def __init__(self) -> None:
        self.requests = 0
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                site.requests += 1
                if self.path == "/page.md":
                    self._send(200, PAGE, {"Content-Type": "text/markdown"})
                elif self.path in ("/hop", "/to-file", "/loop"):
                    target = {"/hop": "/page.md", "/to-file": "file:///etc/passwd", "/loop": "/loop"}[self.path]
                    self._send(302, b"", {"Location": target})
                elif self.path == "/big":
                    self._send(200, b"x" * (2 * MIB), {"Content-Type": "text/plain"})
                elif self.path == "/big-chunked":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    try:
                        for _ in range(32):
                            chunk = b"y" * (64 * 1024)
                            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                        self.wfile.write(b"0\r\n\r\n")
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client stopped reading at its cap
                else:
                    self._send(404, b"", {})

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


@pytest.fixture
def site() -> Iterator[Site]:
    served = Site()
    yield served
    served.server.shutdown()
    served.server.server_close()


def test_loopback_is_refused_by_default_before_any_request(site):
    with pytest.raises(
        DocumentError, match=r"127\.0\.0\.1, a loopback, private or link-local address.*--allow-private"
    ):
        load(Candidate(site.url("/page.md")))
    assert site.requests == 0


def test_loopback_is_fetched_when_allowed_and_redirects_are_followed(site):
    document = load(Candidate(site.url("/hop")), ALLOW)
    assert (document.filename, document.data, document.title) == ("page.md", PAGE, "Loopback page")
    assert site.requests == 2


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "[::1]",
        "169.254.169.254",
        "[fe80::1]",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "[::ffff:127.0.0.1]",
        "[fc00::1]",
    ],
)
def test_private_addresses_are_refused(address):
    with pytest.raises(FetchError, match="--allow-private-urls"):
        _check_target(f"http://{address}/doc.md", UrlPolicy())


def test_a_public_address_passes_the_check():
    _check_target("https://93.184.215.14/doc.md", UrlPolicy())  # an address literal: no DNS, no request


def test_every_redirect_hop_is_checked(site):
    with pytest.raises(FetchError, match="only http and https URLs are fetched, not file"):
        fetch(site.url("/to-file"), ALLOW)
    with pytest.raises(FetchError, match="more than 5 redirects"):
        fetch(site.url("/loop"), ALLOW)


@pytest.mark.parametrize("scheme_url", ["ftp://example.org/doc.md", "file:///etc/passwd"])
def test_only_http_urls_are_ingested(scheme_url):
    (candidate,) = expand([scheme_url])
    with pytest.raises(DocumentError, match="only http and https URLs are fetched"):
        load(candidate)


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
def test_downloads_above_the_cap_are_refused(site, path):
    with pytest.raises(DocumentError, match=r"larger than the 1 MiB download cap \(--max-download-mib\)"):
        load(Candidate(site.url(path)), UrlPolicy(max_mib=1, allow_private=True))
    assert len(load(Candidate(site.url(path)), UrlPolicy(max_mib=3, allow_private=True)).data) == 2 * MIB


def test_folder_walk_does_not_follow_links_out_of_the_folder(tmp_path):
    outside = tmp_path / "outside"
    (outside / "secrets").mkdir(parents=True)
    (outside / "passwords.txt").write_text("hunter2")
    (outside / "secrets" / "key.md").write_text("# key")
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.md").write_text("# A")
    (docs / "sub" / "b.md").write_text("# B")
    (docs / "linked-file.txt").symlink_to(outside / "passwords.txt")
    (docs / "linked-folder").symlink_to(outside / "secrets")
    (docs / "alias-of-a.md").symlink_to(docs / "a.md")
    (docs / "alias-of-sub").symlink_to(docs / "sub")

    items = list(expand([str(docs)]))
    files = [item.path.relative_to(docs).as_posix() for item in items if isinstance(item, Candidate)]
    errors = sorted(str(item) for item in items if isinstance(item, DocumentError))
    assert files == ["a.md", "sub/b.md"]
    assert errors == [
        f"{docs / 'linked-file.txt'}: a symbolic link out of {docs}; not followed",
        f"{docs / 'linked-folder'}: a symbolic link out of {docs}; not followed",
    ]
