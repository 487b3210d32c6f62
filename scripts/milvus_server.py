#!/usr/bin/env python3
"""Start and stop real Milvus servers on loopback (no Docker needed): the command line of the development harness,
llama_stack_milvus_devtools (devtools/), which scripts/run and scripts/test install into .venv.

    python scripts/milvus_server.py start --kind standalone|lite --data DIR [--port P]
    python scripts/milvus_server.py status --data DIR
    python scripts/milvus_server.py stop --data DIR
"""

import os
import sys
from pathlib import Path

VENV = Path(__file__).resolve().parents[1] / ".venv"

try:
    from llama_stack_milvus_devtools.cli import main
except ImportError:
    if (VENV / "bin" / "python").exists() and Path(sys.prefix).resolve() != VENV.resolve():
        python = str(VENV / "bin" / "python")
        os.execv(python, [python, str(Path(__file__).resolve()), *sys.argv[1:]])
    sys.exit(f"error: llama_stack_milvus_devtools is not installed here: scripts/run or scripts/test sets up {VENV}")

sys.exit(main(prog="scripts/milvus_server.py"))
