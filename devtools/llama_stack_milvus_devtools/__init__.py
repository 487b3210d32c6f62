"""The development harness of llama-stack-milvus: free ports, process groups, real Milvus servers and a real
`llama stack run` server for tests, benchmarks and scripts/milvus_server.py. Not part of the product wheel."""

from pathlib import Path

# Installed editable from <repo>/devtools (scripts/_env.sh): the repository holds the Milvus 2.3.5 venv and the
# distributions.
REPO_ROOT = Path(__file__).resolve().parents[2]
