"""Real documents for retrieval tests: answers from the Python FAQ (Python 3.11 docs, PSF licence).

Each document answers one FAQ question on its own topic and carries attributes for filter tests.
The PDF is generated at test time (fpdf2) from `docs/global_interpreter_lock.pdf.txt`.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOCS_DIR = Path(__file__).resolve().parent / "docs"


@dataclass(frozen=True)
class Doc:
    key: str
    filename: str  # the name it is uploaded under; its extension picks the parser
    source: str  # file under docs/
    question: str  # a user question this document (and no other) answers
    phrase: str  # a distinctive phrase from its text
    attributes: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        return (DOCS_DIR / self.source).read_text()

    def data(self) -> bytes:
        if self.filename.endswith(".pdf"):
            return text_to_pdf(self.text())
        return (DOCS_DIR / self.source).read_bytes()


def text_to_pdf(text: str) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    for paragraph in text.split("\n\n"):
        pdf.multi_cell(0, 5, paragraph.strip())
        pdf.ln(3)
    return bytes(pdf.output())


def normalise(text: str) -> str:
    """Collapses whitespace so text extracted from a PDF or HTML compares with the source."""
    return re.sub(r"\s+", " ", text).strip()


# Attached one by one, each with its own attributes.
SINGLE = [
    Doc(
        "floating_point",
        "floating_point.txt",
        "floating_point.txt",
        "Why does 1.2 - 1.0 not give exactly 0.2 with floating-point numbers?",
        "binary floating-point with a fixed precision",
        {"topic": "numbers", "year": 2019, "draft": False},
    ),
    Doc(
        "memory",
        "memory_management.md",
        "memory_management.md",
        "How does CPython free memory with reference counting and the garbage collector?",
        "uses reference counting to detect inaccessible objects",
        {"topic": "memory", "year": 2021, "draft": False},
    ),
    Doc(
        "dictionaries",
        "dictionaries.html",
        "dictionaries.html",
        "How are dictionaries implemented with hash tables, and why must keys be immutable?",
        "implemented as resizable hash tables",
        {"topic": "data-structures", "year": 2022, "draft": True},
    ),
    Doc(
        "gil",
        "global_interpreter_lock.pdf",
        "global_interpreter_lock.pdf.txt",
        "Why does a multi-threaded program only use one CPU because of the global interpreter lock?",
        "only one thread runs in the Python VM at a time",
        {"topic": "concurrency", "year": 2023, "draft": False},
    ),
    Doc(
        "windows",
        "windows_scripts.txt",
        "windows_scripts.txt",
        "How do I run a Python script from the Windows command prompt with py?",
        "Command prompt window",
        {"topic": "windows", "year": 2020, "draft": True},
    ),
]

# Attached together through file_batches, sharing BATCH_ATTRIBUTES.
BATCH = [
    Doc(
        "mail",
        "sending_mail.md",
        "sending_mail.md",
        "How do I send mail from a script with smtplib?",
        "Use the standard library module smtplib",
    ),
    Doc(
        "random",
        "random_numbers.txt",
        "random_numbers.txt",
        "How do I generate random numbers, for example with randrange or shuffle?",
        "implements a random number generator",
    ),
]
BATCH_ATTRIBUTES = {"topic": "stdlib", "year": 2018, "draft": False}

ALL = SINGLE + BATCH
BY_KEY = {doc.key: doc for doc in ALL}


def attributes_of(doc: Doc) -> dict[str, Any]:
    return doc.attributes if doc in SINGLE else BATCH_ATTRIBUTES
