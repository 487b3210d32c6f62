"""Shared by the bench scripts: BEIR loading, the cached all-MiniLM-L6-v2 embeddings, and a `llama stack run` server."""

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llama_stack_milvus_devtools.stack import StackServer, offline_env, without_local_llm

ROOT = Path(__file__).resolve().parents[2]
RUN_YAML = ROOT / "distributions" / "milvus-embedded" / "run.yaml"
MODULE = "llama_stack_milvus"
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# The stack's model id for each in-process embedder; a store must embed queries with the model of its chunks.
STACK_MODEL_IDS = {
    "torch": EMBEDDING_MODEL,
    "onnx": "onnx/all-MiniLM-L6-v2-int8",
    "smooth": "onnx/all-MiniLM-L6-v2-int8-smooth",
}
EMBEDDING_DIMENSION = 384
THREADS = 2  # the machines here have 2 cores shared with other jobs
# huggingface_hub reads these once, when first imported (by whichever module imports it first): set before any.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# ----------------------------------------------------------------------------------------------------- data


@dataclass
class BeirSet:
    folder: Path
    corpus: dict[str, dict]  # id -> {"title", "text"}, in file order
    queries: dict[str, str]  # id -> text, only queries that have judgments
    qrels: dict[str, set[str]] = field(default_factory=dict)  # query id -> relevant passage ids (score > 0)

    @property
    def doc_ids(self) -> list[str]:
        return list(self.corpus)


def load_beir(folder: Path, split: str = "test") -> BeirSet:
    corpus = {}
    with (folder / "corpus.jsonl").open() as f:
        for line in f:
            doc = json.loads(line)
            corpus[str(doc["_id"])] = {"title": doc.get("title", ""), "text": doc["text"]}
    qrels: dict[str, set[str]] = {}
    with (folder / "qrels" / f"{split}.tsv").open() as f:
        for n, line in enumerate(f):
            parts = line.rstrip("\n").split("\t")
            if n == 0 and not parts[-1].lstrip("-").isdigit():
                continue  # header
            if int(parts[2]) > 0:
                qrels.setdefault(parts[0], set()).add(parts[1])
    queries = {}
    with (folder / "queries.jsonl").open() as f:
        for line in f:
            query = json.loads(line)
            if str(query["_id"]) in qrels:
                queries[str(query["_id"])] = query["text"]
    return BeirSet(folder, corpus, queries, qrels)


def file_digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- embeddings


def cache_root() -> Path:
    from llama_stack_milvus.paths import cache_root as package_cache_root

    return package_cache_root() / "bench"


_torch_model = None
_onnx_encoders: dict = {}


def torch_model():
    """all-MiniLM-L6-v2 as the stack's sentence-transformers provider loads it (packaged weights, offline)."""
    global _torch_model
    if _torch_model is None:
        import torch
        from sentence_transformers import SentenceTransformer

        from llama_stack_milvus.offline import ensure_embedding_model

        torch.set_num_threads(min(THREADS, torch.get_num_threads()))
        ensure_embedding_model()
        _torch_model = SentenceTransformer(EMBEDDING_MODEL, device="cpu")
    return _torch_model


def onnx_encoder(embedder: str = "onnx"):
    """One of the int8 ONNX exports our inline::onnx-embeddings provider serves, loaded the same way: "onnx" is the
    plain export (the benches' cached "-onnx" vectors and most published figures), "smooth" the default since."""
    if embedder not in _onnx_encoders:
        from llama_stack_milvus.embeddings.encoder import OnnxEncoder
        from llama_stack_milvus.embeddings.export import ensure_onnx_model

        model_id = STACK_MODEL_IDS[embedder].removeprefix("onnx/")
        _onnx_encoders[embedder] = OnnxEncoder(ensure_onnx_model(model_id), intra_op_threads=THREADS)
    return _onnx_encoders[embedder]


def embed(texts: list[str], embedder: str = "torch", batch_size: int = 32, progress: bool = False) -> np.ndarray:
    if embedder != "torch":
        return onnx_encoder(embedder).encode(texts)
    vectors = torch_model().encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=progress
    )
    return vectors.astype(np.float32)


def cached_embeddings(
    key: str, texts: list[str], label: str, cache: Path | None = None, embedder: str = "torch"
) -> np.ndarray:
    """Embeds `texts` once; later runs load <cache>/<key>.npy (the key should hash the source file and recipe)."""
    path = (cache or cache_root()) / (f"{key}.npy" if embedder == "torch" else f"{key}-{embedder}.npy")
    if path.exists():
        vectors = np.load(path)
        if vectors.shape == (len(texts), EMBEDDING_DIMENSION):
            print(f"{label}: {len(texts)} embeddings from {path}", file=sys.stderr)
            return vectors
    print(
        f"{label}: embedding {len(texts)} texts with {STACK_MODEL_IDS[embedder]} ({THREADS} threads) ...",
        file=sys.stderr,
    )
    started = time.perf_counter()
    vectors = embed(texts, embedder, progress=sys.stderr.isatty())
    elapsed = time.perf_counter() - started
    print(
        f"{label}: {len(texts)} embeddings in {elapsed:.0f} s ({len(texts) / elapsed:.1f}/s) -> {path}", file=sys.stderr
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)
    return vectors


def insert_chunks(
    client, store_id: str, rows: list[dict], vectors: np.ndarray, embedder: str = "torch", batch: int = 1000
) -> None:
    """Inserts rows {id, text, document_id, attributes} with their precomputed vectors through `vector_io.insert`."""
    for start in range(0, len(rows), batch):
        client.vector_io.insert(
            vector_store_id=store_id,
            chunks=[
                {
                    "content": row["text"],
                    "chunk_id": row["id"],
                    "metadata": row["attributes"],
                    "chunk_metadata": {"chunk_id": row["id"], "document_id": row["document_id"]},
                    "embedding": vectors[i].tolist(),
                    "embedding_model": STACK_MODEL_IDS[embedder],
                    "embedding_dimension": EMBEDDING_DIMENSION,
                }
                for i, row in enumerate(rows[start : start + batch], start=start)
            ],
        )


# ----------------------------------------------------------------------------------------------- the server


def server_env() -> dict[str, str]:
    """The environment the integration tests give a server (offline model and tokenizer, no remote providers), with
    THREADS threads for torch and ONNX Runtime unless the shell says otherwise."""
    env = offline_env()
    env.setdefault("OMP_NUM_THREADS", str(THREADS))
    return env


def stat_fields(stat: Path) -> list[str]:
    """A /proc/.../stat file's fields after the command name (which may hold spaces): [0] is the state."""
    return stat.read_text().rsplit(")", 1)[1].split()


def stat_cpu_seconds(fields: list[str]) -> float:
    """User + system CPU time from stat_fields()."""
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (Linux /proc)."""
    return stat_cpu_seconds(stat_fields(Path(f"/proc/{pid}/stat")))


def wait_until_idle(pid: int, limit_s: float = 600, quiet_s: float = 10.0, busy_share: float = 0.05) -> float:
    """Seconds until process `pid` has used under `busy_share` of a core for `quiet_s` on end, at most `limit_s`.

    Milvus (Lite included) builds indexes and compacts in background threads for a minute or more after a large
    insert, starting a few seconds after it; searches timed meanwhile measure that work, not the search."""
    started = time.perf_counter()
    quiet_since, used = started, cpu_seconds(pid)
    while (now := time.perf_counter()) - started < limit_s and now - quiet_since < quiet_s:
        time.sleep(1.0)
        cpu = cpu_seconds(pid)
        if cpu - used >= busy_share:
            quiet_since = time.perf_counter()
        used = cpu
    return round(time.perf_counter() - started, 1)


def stack_server(run_yaml: Path, data_dir: Path, env: dict[str, str] | None = None) -> StackServer:
    """`llama stack run run_yaml` on data_dir (`env`: more environment variables); `with` starts and stops it."""
    return StackServer(run_yaml, data_dir, server_env() | (env or {}), start_timeout=180)


def run_yaml_without_module(target: Path, source: Path = RUN_YAML, vector_io: dict | None = None) -> Path:
    """The same distribution served by stock Llama Stack: the BUILT-IN milvus provider (our `module:` removed) and,
    since our ONNX embedding provider has no built-in counterpart, sentence-transformers as the default model.
    `vector_io` ({provider_id, provider_type, config}): another built-in vector_io provider instead of milvus."""
    import yaml

    config = yaml.safe_load(source.read_text())
    ours = [p for providers in config["providers"].values() for p in providers if p.get("module") == MODULE]
    if not ours:
        raise RuntimeError(f"{source} uses no provider of module {MODULE}")
    for provider in config["providers"]["vector_io"]:
        provider.pop("module", None)
    if vector_io:
        config["providers"]["vector_io"] = [vector_io]
        config["vector_stores"]["default_provider_id"] = vector_io["provider_id"]
    dropped = {p["provider_id"] for p in config["providers"]["inference"] if p.get("module") == MODULE}
    config["providers"]["inference"] = [p for p in config["providers"]["inference"] if p.get("module") != MODULE]
    models = config["registered_resources"]["models"]
    config["registered_resources"]["models"] = [m for m in models if m["provider_id"] not in dropped]
    provider_id, model_id = EMBEDDING_MODEL.split("/", 1)
    config["vector_stores"]["default_embedding_model"].update(provider_id=provider_id, model_id=model_id)
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def run_yaml_with_settings(
    target: Path,
    settings: dict[str, str] | None = None,
    embedder: str = "onnx",
    source: Path = RUN_YAML,
    llm: bool = True,
) -> Path:
    """The distribution with extra keys in OUR vector_io provider's config (e.g. hnsw_ef_search: 512) and the given
    default embedding model, for experiments; with llm=False without the local LLM (llama.cpp), which a retrieval
    benchmark never asks and .venv-lite25 does not have."""
    import yaml

    config = yaml.safe_load(source.read_text())
    for vector_io in config["providers"]["vector_io"]:
        vector_io["config"].update(settings or {})
    provider_id, model_id = STACK_MODEL_IDS[embedder].split("/", 1)
    config["vector_stores"]["default_embedding_model"].update(provider_id=provider_id, model_id=model_id)
    if not llm:
        without_local_llm(config)
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def save_results(results: dict, out: Path, stem: str, plot, table) -> None:
    """Writes OUT/STEM.json and its plot OUT/STEM.png, and prints the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    plot(results, out / f"{stem}.png")
    print(f"wrote {out / stem}.json and .png in {results['total_s']:.0f} s")
