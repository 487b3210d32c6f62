"""Excerpts of server logs for error messages."""

from pathlib import Path

# Where a Go panic or a C++ abort starts in a stderr log (a goroutine dump follows it).
CRASH_MARKERS = ("panic:", "fatal error:", "SIGABRT", "SIGSEGV", "SIGBUS", "terminate called")


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return []


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` non-blank lines of ``path``; none when it cannot be read."""
    return _lines(path)[-lines:]


def crash_excerpt(path: Path, lines: int) -> list[str]:
    """From the first crash marker of a Go/C++ stderr log on; else the tail."""
    text = _lines(path)
    for index, line in enumerate(text):
        if line.startswith(CRASH_MARKERS):
            return text[max(0, index - 5) : index + lines - 5]
    return text[-lines:]
