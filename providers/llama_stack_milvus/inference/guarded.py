"""`python -m llama_stack_milvus.inference.guarded ARGS`: llama_cpp.server ARGS, ending when its parent is gone.

A stack killed with SIGKILL cannot stop its model server. PR_SET_PDEATHSIG would, but it fires when the parent
*thread* that started the child ends, and the stack starts providers from worker threads; so the child watches
its parent process instead.
"""

import os
import runpy
import sys
import threading
import time

POLL_S = 1.0


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os._exit(0)


def main() -> None:
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    sys.argv = ["llama_cpp.server", *sys.argv[1:]]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
