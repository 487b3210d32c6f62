"""Rebuilds the pyfaq retrieval set (BEIR layout) from Debian's python3.11-doc package.

    .venv/bin/python scripts/bench/build_pyfaq.py --out /tmp/pyfaq [--compare ../shared/data/pyfaq]

Downloads the package with `apt-get download python3.11-doc=3.11.2-6+deb12u9` (run `apt-get update` first if apt
does not know that version; or pass --deb FILE / --sources DIR), unpacks it with `dpkg -x`, and writes into --out:
- corpus.jsonl: every section of faq/, tutorial/, howto/, reference/, using/, extending/ and library/ with at
  least 40 characters of text, cleaned of reST roles, links and some directives, split on blank lines into
  passages of at most 1,000 characters; ids `<file>#<section index>-<passage index>`, title = the file's first
  heading;
- queries.jsonl: the question headings of the Python FAQ (faq/*.rst) that end in "?" and have an answer;
- qrels/test.tsv: a question's relevant passages are the passages of its own answer section (the heading
  itself is not part of them).
--compare DIR reports how the output differs from an existing build (counts and passage texts).

Package 3.11.2-6+deb12u9 (bookworm-security; needs `apt-get update`) reproduces ../shared/data/pyfaq byte for
byte: 9,280 passages, 171 queries, 248 judgments. 3.11.2-6+deb12u8 (bookworm main) gives 9,278 passages and the
same queries and judgments.
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

PACKAGE = "python3.11-doc"
REFERENCE_VERSION = "3.11.2-6+deb12u9"
SOURCES_IN_PACKAGE = "usr/share/doc/python3.11/html/_sources"
SECTIONS = ("faq", "tutorial", "howto", "reference", "using", "extending", "library")
MAX_PASSAGE = 1000
MIN_BODY = 40  # sections whose cleaned text (heading aside) is shorter are left out: a cross-reference, a bare heading

# A section heading: a text line (not indented) with an underline of one repeated punctuation character at
# least as long, optionally with an overline of the same character.
ADORNMENT = re.compile(r"^([=\-~^\"*#'+])\1{2,}\s*$")
# Directives whose line carries nothing a reader needs (their indented content, if any, stays).
DROPPED_DIRECTIVE = re.compile(
    r"^\.\. (index|only|toctree|highlight|sectionauthor|moduleauthor|versionadded|versionchanged|tabularcolumns|"
    r"testsetup|testcleanup|contents)::.*$",
    re.M,
)
LABEL = re.compile(r"^\.\. _[^:]*:.*$", re.M)  # hyperlink targets: `.. _name:` and `.. _name: url`
ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`<]+?)(?:\s*<[^`>]+>)?`")
LITERAL = re.compile(r"``(.+?)``", re.S)
LINK = re.compile(r"`([^`<]+?)\s*<[^>]+>`__?")
SPACES = re.compile(r"[ \t]+")


def clean(lines: list[str]) -> str:
    # A dropped line leaves an empty line behind, so it may split a paragraph.
    text = LABEL.sub("", DROPPED_DIRECTIVE.sub("", "\n".join(lines)))
    text = ROLE.sub(r"\1", text)
    text = LINK.sub(r"\1", text)
    text = LITERAL.sub(r"\1", text)
    return "\n".join(SPACES.sub(" ", line).rstrip() for line in text.split("\n"))


def split_sections(lines: list[str]) -> list[tuple[str, list[str]]]:
    """(heading, body lines) per section; text before the first heading belongs to no section."""
    sections: list[tuple[str, list[str]]] = []
    body: list[str] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        following = lines[i + 1] if i + 1 < len(lines) else ""
        after = lines[i + 2] if i + 2 < len(lines) else ""
        if (
            ADORNMENT.match(line)
            and following.strip()
            and not following[0].isspace()
            and ADORNMENT.match(after)
            and after[0] == line[0]
        ):
            heading, skip = following.strip(), 3
        elif (
            line.strip()
            and not line[0].isspace()
            and not ADORNMENT.match(line)
            and ADORNMENT.match(following)
            and len(following.rstrip()) >= len(line.rstrip())
        ):
            heading, skip = line.strip(), 2
        else:
            if body is not None:
                body.append(line)
            i += 1
            continue
        body = []
        sections.append((heading, body))
        i += skip
    return sections


def paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in re.split(r"\n[ \t]*\n", text) if p.strip()]


def pack(paras: list[str]) -> list[str]:
    """Greedy: paragraphs joined by a blank line while the passage stays within MAX_PASSAGE; longer ones are cut."""
    passages: list[str] = []
    current = ""
    for para in paras:
        if current and len(current) + 2 + len(para) <= MAX_PASSAGE:
            current += "\n\n" + para
            continue
        if current:
            passages.append(current)
        while len(para) > MAX_PASSAGE:
            passages.append(para[:MAX_PASSAGE])
            para = para[MAX_PASSAGE:]
        current = para
    if current:
        passages.append(current)
    return passages


def is_question(name: str, heading: str) -> bool:
    return name.startswith("faq/") and heading.endswith("?")


def build(sources: Path) -> tuple[list[dict], list[dict], list[tuple[str, str]]]:
    corpus, queries, qrels = [], [], []
    names = [
        name
        for top in SECTIONS
        for name in (
            str(Path(path).relative_to(sources))[: -len(".rst.txt")]
            for path in sorted(glob.glob(str(sources / top / "**" / "*.rst.txt"), recursive=True))
        )
    ]
    for name in names:
        sections = split_sections((sources / f"{name}.rst.txt").read_text(encoding="utf-8").split("\n"))
        if not sections:
            continue
        title = sections[0][0]
        for number, (heading, body) in enumerate(sections):
            question = is_question(name, heading)
            text = clean(body).strip()
            if len(text) < MIN_BODY:
                continue
            paras = paragraphs(text) if question else [heading, *paragraphs(text)]
            ids = []
            for index, text in enumerate(pack(paras)):
                ids.append(f"{name}#{number}-{index}")
                corpus.append({"_id": ids[-1], "title": title, "text": text})
            if question:
                query_id = f"q{len(queries):04d}"
                queries.append({"_id": query_id, "text": clean([heading]), "source": f"{name}#{number}"})
                qrels += [(query_id, passage_id) for passage_id in ids]
    return corpus, queries, qrels


def fetch_sources(work: Path, deb: str | None, version: str) -> Path:
    if deb is None:
        pinned = f"{PACKAGE}={version}" if version else PACKAGE
        if subprocess.run(["apt-get", "download", pinned], cwd=work).returncode != 0:
            if not version:
                raise SystemExit(f"apt-get download {PACKAGE} failed")
            print(
                f"apt does not offer {pinned} (try `apt-get update`); taking its candidate version instead: "
                "the output may differ from the reference build",
                file=sys.stderr,
            )
            subprocess.run(["apt-get", "download", PACKAGE], cwd=work, check=True)
        deb = str(next(work.glob(f"{PACKAGE}_*.deb")))
    print(f"unpacking {deb} (the reference build used {REFERENCE_VERSION})", file=sys.stderr)
    subprocess.run(["dpkg", "-x", deb, str(work / "pkg")], check=True)
    return work / "pkg" / SOURCES_IN_PACKAGE


def write(out: Path, corpus, queries, qrels) -> None:
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w") as f:
        f.writelines(json.dumps(doc) + "\n" for doc in corpus)
    with (out / "queries.jsonl").open("w") as f:
        f.writelines(json.dumps(query) + "\n" for query in queries)
    with (out / "qrels" / "test.tsv").open("w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{q}\t{c}\t1\n" for q, c in qrels)


def load(folder: Path):
    corpus = {d["_id"]: d for d in map(json.loads, (folder / "corpus.jsonl").open())}
    queries = {q["_id"]: q for q in map(json.loads, (folder / "queries.jsonl").open())}
    rows = [line.rstrip("\n").split("\t") for line in (folder / "qrels" / "test.tsv").open()][1:]
    return corpus, queries, {(q, c) for q, c, *_ in rows}


def compare(ours: Path, theirs: Path, show: int) -> None:
    for part in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        same = (ours / part).read_bytes() == (theirs / part).read_bytes()
        print(f"{part:15}: {'byte-identical to' if same else 'DIFFERS from'} {theirs / part}")
    a_corpus, a_queries, a_qrels = load(ours)
    b_corpus, b_queries, b_qrels = load(theirs)
    print(f"passages  : ours {len(a_corpus)}, reference {len(b_corpus)}")
    print(f"queries   : ours {len(a_queries)}, reference {len(b_queries)}")
    print(f"judgments : ours {len(a_qrels)}, reference {len(b_qrels)}")
    only_ours, only_theirs = a_corpus.keys() - b_corpus.keys(), b_corpus.keys() - a_corpus.keys()
    common = a_corpus.keys() & b_corpus.keys()
    differ = sorted(k for k in common if a_corpus[k]["text"] != b_corpus[k]["text"])
    titles = sum(a_corpus[k]["title"] != b_corpus[k]["title"] for k in common)
    print(
        f"passage ids only ours {len(only_ours)}, only reference {len(only_theirs)}; same id, other text "
        f"{len(differ)}, other title {titles}"
    )
    by_text = lambda qs: {(q["text"], q["source"]) for q in qs.values()}  # noqa: E731
    print(
        f"queries (text, source) only ours {len(by_text(a_queries) - by_text(b_queries))}, "
        f"only reference {len(by_text(b_queries) - by_text(a_queries))}; judgments differing "
        f"{len(a_qrels ^ b_qrels)}"
    )
    for label, keys in (("only ours", sorted(only_ours)), ("only reference", sorted(only_theirs))):
        for key in keys[:show]:
            text = (a_corpus if label == "only ours" else b_corpus)[key]["text"]
            print(f"  {label}: {key} {text[:100]!r}")
    for key in differ[:show]:
        x, y = a_corpus[key]["text"], b_corpus[key]["text"]
        at = next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))
        print(f"  differs {key} at {at}: ours {x[max(0, at - 40) : at + 60]!r}")
        print(f"  {'':>{len(key) + 12}}ref  {y[max(0, at - 40) : at + 60]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--deb", help="a downloaded python3.11-doc .deb (default: apt-get download it)")
    parser.add_argument(
        "--version", default=REFERENCE_VERSION, help="package version to download ('' = apt's candidate)"
    )
    parser.add_argument("--sources", type=Path, help="an unpacked _sources directory (skips the package)")
    parser.add_argument("--compare", type=Path, help="a reference build to compare the output with")
    parser.add_argument("--show", type=int, default=5, help="differences to print per kind with --compare")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sources = args.sources or fetch_sources(
            Path(tmp), os.path.abspath(args.deb) if args.deb else None, args.version
        )
        corpus, queries, qrels = build(sources)
    write(args.out, corpus, queries, qrels)
    chars = sum(len(d["text"]) for d in corpus)
    print(
        f"wrote {args.out}: {len(corpus)} passages ({chars / 1e6:.1f} MB of text, "
        f"{len(Counter(d['_id'].split('#')[0] for d in corpus))} files), {len(queries)} queries, "
        f"{len(qrels)} judgments"
    )
    if args.compare:
        compare(args.out, args.compare, args.show)


if __name__ == "__main__":
    main()
