"""Builds the debfaq retrieval set (BEIR layout) from Debian's FAQ, Reference manual and Administrator's Handbook.

    .venv/bin/python scripts/bench/build_debfaq.py [--out DIR] [--cache DIR] [--deb FILE ...]

A second set built by pyfaq's rules (scripts/bench/build_pyfaq.py) from documentation nothing in the project was
tuned on: the Debian FAQ's questions, answered from the FAQ, the Debian Reference and the Debian Administrator's
Handbook (the rest of the documentation a question could wrongly land in; the two books cover the same ground:
apt, dpkg, releases, the kernel). The three packages are pinned: each is fetched with `apt-get download
PACKAGE=VERSION` into --cache and kept there (or given with --deb), and refused unless its sha256 is the pinned one.
Writes into --out (default <cache root>/bench/data/debfaq, the cache root being $LLAMA_STACK_MILVUS_CACHE or
~/.cache/llama-stack-milvus; quality.py looks there when ../shared/data/debfaq does not exist):
- corpus.jsonl: every section (h1-h4) of every page but the contents page, with at least 40 characters of text;
  its HTML turned into paragraphs (a <p>, list item, <pre> block or table row each; navigation, tables of
  contents and footnotes left out) packed into passages of at most 1,000 characters as pyfaq's are; ids
  `<faq|reference|handbook>/<page>#<section index>-<passage index>`, title = the page's first heading; section
  numbers ("7.1.") dropped from headings;
- queries.jsonl: the FAQ's section headings that end in "?" and have an answer;
- qrels/test.tsv: a question's relevant passages are the passages of its own answer section (the heading itself
  is not part of them, so the task is not an exact-match lookup).
From debian-faq 11.1, debian-reference-en 2.100 and debian-handbook 11.20220922 (bookworm): 2,580 passages
(median 755 characters; pyfaq's is 854), 120 queries, 175 judgments. The output depends on nothing but the three
packages: the builder checks its output against the reference build's sha256 (REFERENCE_SHA256) and exits non-zero
if any file differs; tests/unit/test_build_debfaq.py builds twice and compares.
"""

import argparse
import hashlib
import html.parser
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from build_pyfaq import MIN_BODY, pack, write

from llama_stack_milvus.paths import cache_root

# name -> (pinned version, sha256 of the .deb, folder of the HTML pages inside it, prefix of the passage ids)
PACKAGES = {
    "debian-faq": (
        "11.1",
        "427426e0cfa6888622fc1d72631071cb4b5a1f86ccde722e7820bcef284de5d0",
        "usr/share/doc/debian/FAQ",
        "faq",
    ),
    "debian-reference-en": (
        "2.100",
        "9f31d3a17df505de09689ca255512ea58c1fc47c59bb1b0c7bf1c23362e9743f",
        "usr/share/debian-reference",
        "reference",
    ),
    "debian-handbook": (
        "11.20220922",
        "3d5dbeac1f1afc9c094eab9d0f701f6ecff99c4927d5a4794cf6c85678134faa",
        "usr/share/doc/debian-handbook/html/en-US",
        "handbook",
    ),
}
# sha256 of each file of the set built from the pinned packages: the builder says whether its output is this set.
REFERENCE_SHA256 = {
    "corpus.jsonl": "28cf5b4a1b876771199127367cc5d011e9f5bc903b3a7cd9cd84f701ea206ad6",
    "queries.jsonl": "79ae9f9a536594c02128023f0eac99d445e6e7d8112f2f7439f941a13c74ce1a",
    "qrels/test.tsv": "9d3cbfb6e957983db6cb849be732ec1c253955c0f1d53603a31e4fd9a923e16f",
}
DEFAULT_OUT = cache_root() / "bench" / "data" / "debfaq"
DEFAULT_CACHE = cache_root() / "bench" / "debs"
# Navigation, tables of contents and the handbook's banner, not text a reader came for.
SKIPPED_CLASSES = {"toc", "navheader", "navfooter", "docnav", "list-of-tables", "list-of-figures", "footnotes"}
SKIPPED_IDS = {"banner", "title"}
BLOCKS = {"p", "pre", "li", "dt", "dd", "tr", "blockquote", "table", "div", "ul", "ol", "dl"}
NUMBER = re.compile(r"^(?:Chapter|Appendix)?\s*[0-9A-Z]+(?:\.[0-9]+)*\.\s+")
VOID = {"br", "img", "hr", "meta", "link", "input", "col", "area", "base", "wbr"}


class Sections(html.parser.HTMLParser):
    """Splits a DocBook HTML page into (heading, paragraphs) at every h1-h4; text before the first belongs to none.

    Paragraph breaks come from block elements; whitespace is collapsed except inside <pre>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[tuple[str, list[str]]] = []
        self.stack: list[tuple[str, bool]] = []  # open elements: (tag, opened a skipped subtree)
        self.skipping = 0
        self.heading: list[str] | None = None
        self.pre = 0
        self.buffer: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            return
        attributes = dict(attrs)
        classes = set((attributes.get("class") or "").split())
        skip = (
            tag in ("script", "style", "head") or bool(classes & SKIPPED_CLASSES) or attributes.get("id") in SKIPPED_IDS
        )
        self.stack.append((tag, skip))
        self.skipping += skip
        if self.skipping:
            return
        if tag in ("h1", "h2", "h3", "h4"):
            self.flush()
            self.heading = []
        elif tag in BLOCKS:
            self.flush()
        if tag == "pre":
            self.pre += 1
        elif tag in ("td", "th") and self.buffer:
            self.buffer.append(" ")

    def handle_endtag(self, tag):
        if tag in VOID or not any(open_tag == tag for open_tag, _ in self.stack):
            return
        while self.stack:  # closes elements the page left open inside this one
            open_tag, skip = self.stack.pop()
            was_skipping = self.skipping
            self.skipping -= skip
            if not was_skipping:
                self.closed(open_tag)
            if open_tag == tag:
                break

    def closed(self, tag: str) -> None:
        if tag in ("h1", "h2", "h3", "h4") and self.heading is not None:
            heading = NUMBER.sub("", " ".join("".join(self.heading).split()))
            self.sections.append((heading, []))
            self.heading = None
        elif tag in BLOCKS:
            self.flush()
        if tag == "pre":
            self.pre -= 1

    def handle_data(self, data):
        if self.skipping:
            return
        if self.heading is not None:
            self.heading.append(data)
        else:
            self.buffer.append(data if self.pre else re.sub(r"\s+", " ", data))

    def flush(self) -> None:
        text = "".join(self.buffer)
        self.buffer = []
        text = "\n".join(line.rstrip() for line in text.strip("\n").split("\n")) if "\n" in text else text.strip()
        if text.strip() and self.sections:
            self.sections[-1][1].append(text)

    def close(self) -> None:
        super().close()
        self.flush()


def pages(folder: Path) -> list[tuple[str, Path]]:
    """(name, page) for each page of an HTML manual in file-name order; the index (the contents) and the FAQ's
    language-less links to its pages are left out."""
    pages = (path for path in sorted(folder.glob("*.html")) if not path.is_symlink())
    named = ((path.name.removesuffix(".html").removesuffix(".en"), path) for path in pages)
    return [(name, path) for name, path in named if name != "index"]


def build(roots: dict[str, Path]) -> tuple[list[dict], list[dict], list[tuple[str, str]]]:
    """roots: id prefix ("faq", "reference") -> the folder of that manual's HTML pages."""
    corpus, queries, qrels = [], [], []
    for prefix, folder in roots.items():
        for page_name, page in pages(folder):
            parser = Sections()
            parser.feed(page.read_text(encoding="utf-8"))
            parser.close()
            if not parser.sections:
                continue
            name = f"{prefix}/{page_name}"
            title = parser.sections[0][0]
            for number, (heading, paras) in enumerate(parser.sections):
                if sum(map(len, paras)) < MIN_BODY:
                    continue
                question = prefix == "faq" and heading.endswith("?")
                ids = []
                for index, text in enumerate(pack(paras if question else [heading, *paras])):
                    ids.append(f"{name}#{number}-{index}")
                    corpus.append({"_id": ids[-1], "title": title, "text": text})
                if question:
                    query_id = f"q{len(queries):04d}"
                    queries.append({"_id": query_id, "text": heading, "source": f"{name}#{number}"})
                    qrels += [(query_id, passage_id) for passage_id in ids]
    return corpus, queries, qrels


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(package: str, cache: Path) -> Path:
    """The pinned .deb of `package` from the cache, downloaded with apt-get into it when missing."""
    version, _, _, _ = PACKAGES[package]
    deb = cache / f"{package}_{version}_all.deb"
    if not deb.exists():
        cache.mkdir(parents=True, exist_ok=True)
        download = ["apt-get", "download", f"{package}={version}"]
        if subprocess.run(download, cwd=cache).returncode != 0:
            # A fresh machine (a CI runner) may have no package lists yet: as root, fetch them once and retry.
            if os.geteuid() != 0 or subprocess.run(["apt-get", "update", "-q"]).returncode != 0:
                raise SystemExit(f"apt-get download {package}={version} failed (run `apt-get update` first?)")
            if subprocess.run(download, cwd=cache).returncode != 0:
                raise SystemExit(f"apt-get download {package}={version} failed after apt-get update")
    return deb


def unpack(debs: dict[str, Path], work: Path) -> dict[str, Path]:
    roots = {}
    for package, deb in debs.items():
        version, digest, inside, prefix = PACKAGES[package]
        if sha256(deb) != digest:
            raise SystemExit(f"{deb}: sha256 {sha256(deb)} is not the pinned {package} {version} ({digest})")
        subprocess.run(["dpkg", "-x", str(deb), str(work / package)], check=True)
        roots[prefix] = work / package / inside
    return roots


def package_of(deb: Path) -> str:
    name = deb.name.split("_", 1)[0]
    if name not in PACKAGES:
        raise SystemExit(f"{deb}: not one of {', '.join(PACKAGES)}")
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where the set goes (default {DEFAULT_OUT})")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"where .debs are kept ({DEFAULT_CACHE})")
    parser.add_argument("--deb", type=Path, action="append", default=[], help="an already downloaded .deb")
    args = parser.parse_args()
    given = {package_of(deb): deb.resolve() for deb in args.deb}
    # In PACKAGES' order whatever was given: the order of the manuals is the order of the corpus.
    debs = {package: given.get(package) or fetch(package, args.cache) for package in PACKAGES}
    with tempfile.TemporaryDirectory() as tmp:
        corpus, queries, qrels = build(unpack(debs, Path(tmp)))
    write(args.out, corpus, queries, qrels)
    lengths = sorted(len(doc["text"]) for doc in corpus)
    print(
        f"wrote {args.out}: {len(corpus)} passages (median {lengths[len(lengths) // 2]} characters), "
        f"{len(queries)} queries, {len(qrels)} judgments",
        file=sys.stderr,
    )
    differing = [part for part, digest in REFERENCE_SHA256.items() if sha256(args.out / part) != digest]
    if differing:
        raise SystemExit(f"{', '.join(differing)} differ from the reference build (REFERENCE_SHA256)")
    print("byte-identical to the reference build", file=sys.stderr)


if __name__ == "__main__":
    main()
