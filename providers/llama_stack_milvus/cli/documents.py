"""Finds documents (files, folders, URLs) and turns each into the bytes the server ingests, with attributes."""

import hashlib
import mimetypes
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import httpx

from .fetch import FetchError, UrlPolicy, fetch

# Extensions ingested from folders; the server parses PDF itself, the client turns HTML into text.
SUPPORTED = {".txt": "text", ".md": "text", ".markdown": "text", ".rst": "text", ".html": "html", ".htm": "html"}
SUPPORTED[".pdf"] = "pdf"
DEFAULT_URL_POLICY = UrlPolicy()
CONTENT_TYPES = {"text/html": ".html", "application/pdf": ".pdf", "text/markdown": ".md", "text/plain": ".txt"}


class DocumentError(Exception):
    """A document that cannot be ingested; the message says which and why."""


@dataclass
class Document:
    source: str  # the path or URL as the user gave it (resolved for files): identifies the document across runs
    filename: str  # the name it is uploaded under; its extension tells the server how to parse it
    data: bytes
    title: str
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.data).hexdigest()

    @property
    def attributes(self) -> dict[str, str]:
        return {"source": self.source, "title": self.title, "sha256": self.sha256}


@dataclass
class Candidate:
    """Something named on the command line or found in a folder, not yet read."""

    source: str
    path: Path | None = None  # None for a URL


def is_url(text: str) -> bool:
    """Anything with a scheme counts, so that ftp:// or file:// get a clear refusal rather than "no such file"."""
    return "://" in text


def expand(targets: list[str]) -> Iterator[Candidate | DocumentError]:
    """Files as given, folders recursively (supported types only, sorted), URLs as they are."""
    for target in targets:
        if is_url(target):
            yield Candidate(target)
            continue
        path = Path(target).expanduser()
        if path.is_dir():
            yield from _walk(path)
        elif path.exists():
            yield Candidate(str(path.resolve()), path)
        else:
            yield DocumentError(f"{target}: no such file or folder")


def _walk(folder: Path) -> Iterator[Candidate | DocumentError]:
    """The folder's supported files. Symbolic links are not followed out of it: a link to a file or folder elsewhere
    is reported and skipped (links within it are skipped silently, their targets are walked anyway)."""
    root = folder.resolve()
    found: list[Candidate | DocumentError] = []
    for directory, subdirectories, files in os.walk(folder):
        for name in subdirectories + files:
            child = Path(directory) / name
            if not child.is_symlink():
                if name in files and child.suffix.lower() in SUPPORTED:
                    found.append(Candidate(str(child.resolve()), child))
            elif not child.resolve().is_relative_to(root):
                found.append(DocumentError(f"{child}: a symbolic link out of {folder}; not followed"))
    yield from sorted(found, key=lambda item: str(item.path) if isinstance(item, Candidate) else str(item))


def load(candidate: Candidate, url_policy: UrlPolicy = DEFAULT_URL_POLICY) -> Document:
    if candidate.path is None:
        return _fetch(candidate.source, url_policy)
    path = candidate.path
    kind = SUPPORTED.get(path.suffix.lower())
    if kind is None:
        raise DocumentError(
            f"{candidate.source}: unsupported type {path.suffix or '(no extension)'} "
            f"(supported: {', '.join(sorted(SUPPORTED))})"
        )
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DocumentError(f"{candidate.source}: cannot read it ({e.strerror or e})") from e
    return _document(candidate.source, path.name, kind, data)


def _fetch(url: str, policy: UrlPolicy) -> Document:
    try:
        download = fetch(url, policy)
    except (FetchError, httpx.HTTPError) as e:
        raise DocumentError(f"{url}: cannot fetch it ({e})") from e
    name = PurePosixPath(urlparse(download.url).path).name or "index.html"
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in SUPPORTED:
        content_type = download.content_type.split(";")[0].strip()
        suffix = CONTENT_TYPES.get(content_type) or mimetypes.guess_extension(content_type) or ""
        name += suffix
    kind = SUPPORTED.get(suffix)
    if kind is None:
        raise DocumentError(f"{url}: unsupported type {suffix or '(unknown)'}")
    return _document(url, name, kind, download.data)


def _document(source: str, name: str, kind: str, data: bytes) -> Document:
    stem = PurePosixPath(name).stem
    if kind == "pdf":
        return Document(source, name, data, stem)
    text = _decode(source, data)
    if kind == "html":
        title, text = html_to_text(text)
        # Uploaded as text: the server would otherwise index the markup.
        return Document(source, stem + ".txt", text.encode(), title or stem)
    return Document(source, name, data, text_title(text) or stem)


def _decode(source: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DocumentError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from e


MARKDOWN_HEADING = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.M)
RST_UNDERLINE = re.compile(r"^([=\-~^\"*#'+])\1{2,}\s*$")


def text_title(text: str) -> str | None:
    """The first Markdown `# heading`, or the first reST heading (a line underlined by punctuation)."""
    if match := MARKDOWN_HEADING.search(text):
        return match.group(1)
    lines = text.splitlines()
    for line, underline in zip(lines, lines[1:], strict=False):
        if line.strip() and not RST_UNDERLINE.match(line) and RST_UNDERLINE.match(underline):
            return line.strip()
    return None


class _TextExtractor(HTMLParser):
    SKIPPED = {"script", "style", "nav", "head", "footer", "noscript"}
    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "dt", "dd", "section"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self.in_title = False
        # The skipped element's tag and how many of that tag are open: other tags, even unclosed, do not count.
        self.skip_tag: str | None = None
        self.skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        if self.skip_tag is not None:
            self.skip_depth += tag == self.skip_tag
        elif tag in self.SKIPPED or dict(attrs).get("role") == "navigation":
            self.skip_tag, self.skip_depth = tag, 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        if self.skip_tag is not None:
            if tag == self.skip_tag:
                self.skip_depth -= 1
                if self.skip_depth == 0:
                    self.skip_tag = None
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        elif self.skip_tag is None:
            self.parts.append(data)


def html_to_text(html: str) -> tuple[str | None, str]:
    """(title, visible text) of an HTML page, without scripts, styles and navigation."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    # "¶" is the permalink anchor Sphinx puts after every heading.
    text = re.sub(r"[ \t]+", " ", "".join(parser.parts).replace("¶", ""))
    text = re.sub(r"\n\s*\n+", "\n\n", text).strip()
    title = " ".join("".join(parser.title).split()) or None
    return title, text
