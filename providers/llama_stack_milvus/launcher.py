"""Runs `llama stack run` for scripts/run: the whole server output goes to a log file and, once the server has
started, to the terminal too. A server that fails to start shows the reason alone, one line, and the log's path.

Without it a failed start (a Lite file held by another server, a wrong Milvus token) printed some 330 lines: the
resolved config, a rich traceback through uvicorn's app factory, and the one line that says what to do at the end.

    python -m llama_stack_milvus.launcher --log FILE -- <llama stack run arguments>
"""

import argparse
import re
import signal
import subprocess
import sys
from pathlib import Path

# uvicorn's line once the app is built and serving; before it, output is held back.
STARTED = "Application startup complete"
# The last line of a Python traceback: "package.module.SomeError: message".
EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?(?P<type>[A-Za-z_]\w*(?:Error|Exception)): (?P<message>.+)$")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def failure_reason(output: list[str]) -> str | None:
    """The message of the last exception in a failed start's output, or None if there is none."""
    for line in reversed(output):
        match = EXCEPTION_LINE.match(ANSI_ESCAPE.sub("", line).strip())
        if match:
            return match["message"]
    return None


def run(stack_args: list[str], log_path: Path) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    held: list[str] = []
    started = False
    with log_path.open("a") as log:
        process = subprocess.Popen(
            # The `llama` command of this interpreter's environment, on PATH or not.
            [str(Path(sys.executable).parent / "llama"), "stack", "run", *stack_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        # scripts/run execs this launcher: a SIGTERM meant for the server reaches it here.
        signal.signal(signal.SIGTERM, lambda *_: process.terminate())
        try:
            for line in process.stdout:
                log.write(line)
                log.flush()
                if started:
                    sys.stdout.write(line)
                    continue
                held.append(line)
                if STARTED in line:
                    started = True
                    sys.stdout.writelines(held)
                    held.clear()
            code = process.wait()
        except KeyboardInterrupt:
            code = process.wait()
    if not started and code != 0:
        reason = failure_reason(held) or f"llama stack run exited with code {code}"
        print(f"error: the server did not start: {reason}\n(full output in {log_path})", file=sys.stderr)
        return code or 1
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", required=True, type=Path, help="file that receives the server's whole output")
    parser.add_argument("stack_args", nargs=argparse.REMAINDER, help="arguments of `llama stack run` (after --)")
    args = parser.parse_args(argv)
    stack_args = args.stack_args[1:] if args.stack_args[:1] == ["--"] else args.stack_args
    return run(stack_args, args.log.expanduser())


if __name__ == "__main__":
    sys.exit(main())
