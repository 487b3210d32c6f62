"""Waiting for a server we started as a child process to answer over HTTP."""

import subprocess
import time

import httpx


def wait_until_answering(process: subprocess.Popen, url: str, timeout_s: float, interval_s: float) -> bool:
    """Polls `url` until it answers 200 (True), or until the process exits or `timeout_s` passes (False:
    `process.poll()` tells which)."""
    deadline = time.monotonic() + timeout_s
    while process.poll() is None:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
    return False
