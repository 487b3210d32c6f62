"""Process groups on Linux, read from /proc: which processes a group has, their memory, and stopping a group."""

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, pgrp) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def children(pid: int) -> list[int]:
    """Live child processes of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def _threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def group_pids(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid``. A zombie counts while other threads of it still exit:
    its sockets (the listening port) are released only when the last thread is gone."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = proc_stat(int(entry))
        if stat and stat[1] == pgid and (stat[0] not in ("Z", "X") or _threads(int(entry)) > 1):
            pids.append(int(entry))
    return pids


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of every live process of the group."""
    return sum(rss_bytes(pid) for pid in group_pids(pgid))


def stop_group(pgid: int, name: str, timeout: float, reap: Callable[[], object] = lambda: None) -> None:
    """SIGTERM the process group, wait up to ``timeout`` s until it is gone, then SIGKILL it.

    ``reap`` is called while waiting: a group leader that is our own child lingers as a zombie until polled.
    Raises RuntimeError naming ``name`` when processes survive SIGKILL.
    """

    def wait_gone(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            reap()
            if not group_pids(pgid):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)

    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    if wait_gone(timeout):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    if not wait_gone(10):
        raise RuntimeError(f"processes {group_pids(pgid)} of {name} survived SIGKILL")
