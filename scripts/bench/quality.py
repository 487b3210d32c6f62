"""Retrieval quality through the stack's search API: nDCG@10, Recall@10, MRR@10 on a BEIR-format set.

    .venv/bin/python scripts/bench/quality.py [--dataset pyfaq|debfaq|both | --data DIR] [--builtin]

Runs on both of our sets by default, one after the other: pyfaq (../shared/data/pyfaq, rebuilt by
scripts/bench/build_pyfaq.py) and debfaq (../shared/data/debfaq, or else where scripts/bench/build_debfaq.py writes
by default). --data is any other BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv). Each corpus is
embedded once per model (all-MiniLM-L6-v2 in torch fp32 and as our two int8 ONNX exports, plain and smoothed (the
distribution's default, and --embedder's); cached as .npy under
~/.cache/llama-stack-milvus/bench, keyed by a hash of the corpus file), then:
- baselines in-process: brute-force numpy cosine with each model (the reference for every difference printed is
  the fp32 torch one), and on the --embedder's vectors BM25 (bm25s, Snowball stemming and English stop words)
  and plain reciprocal-rank fusion of the two (k=60);
- the milvus-embedded distribution, less its local LLM, is started (`llama stack run`, a fresh data dir), one store is
  created, the passages are inserted as chunks WITH their embeddings through `vector_io.insert`, and every
  query goes through `vector_stores.search` (max_num_results=10) in vector, keyword, hybrid with no ranking
  options (what a client gets by default), hybrid rrf (several k) and hybrid weighted (several alpha) modes,
  and hybrid reranked by each model of NEURAL_MODELS (ranker "neural": the default fusion's 50 candidates reordered
  by the model); each mode's mean and median (p50) time per query is recorded;
- with --builtin, the same against Llama Stack's BUILT-IN inline::milvus provider (the same run.yaml without
  `module: llama_stack_milvus`). A mode that fails there is recorded with its error text, not a number.
Prints a table per set (with the difference to fp32 brute force), writes results/quality_<set>.json and .png, and
ends with one markdown table of every mode on every set, the defaults marked, and the verdict on each rerank model:
recommended only if it beats the default hybrid by at least NEURAL_MIN_GAIN nDCG@10 on every set at under
NEURAL_MAX_SLOWDOWN times its median latency.
"""

import argparse
import json
import logging
import math
import platform
import re
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import _common as common
import numpy as np

K = 10
# The sets and where they are looked for: the project's shared data, then the builder's default output.
DATASETS = ("pyfaq", "debfaq")
REFERENCE = "brute-force cosine (torch fp32)"
# Modes a client gets without asking: search_mode defaults to vector; hybrid's default ranker is weighted.
DEFAULT_MARKS = {"vector": "default search_mode", "hybrid default": "default hybrid, recommended"}
RESULTS = Path(__file__).resolve().parent / "results"
RRF_KS = (10, 30, 60)
ALPHAS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)
BASELINE_RRF_K = 60
# How deep each list goes into the plain RRF baselines: 100, and the stack's own over-fetch (max_num_results x
# chunk_multiplier = 10 x 5), which makes that baseline the in-process twin of `hybrid rrf k=60`.
BASELINE_DEPTHS = (100, 50)
# The rerank models of the milvus-embedded distribution (inline::rerank), and when one would become the default.
NEURAL_MODELS = ("rerank/minilm-late-interaction",)
NEURAL_MIN_GAIN = 0.01
NEURAL_MAX_SLOWDOWN = 3.0
INSERT_BATCH = 500


# ---------------------------------------------------------------------------------------------------- metrics


def metrics(rankings: dict[str, list[str]], qrels: dict[str, set[str]], k: int = K) -> dict[str, float]:
    """Binary-relevance nDCG@k, Recall@k and MRR@k averaged over every judged query (a missing ranking scores 0)."""
    ndcg = recall = mrr = 0.0
    for query_id, relevant in qrels.items():
        ranked = list(dict.fromkeys(rankings.get(query_id, [])))[:k]  # first occurrence of each id
        gains = [1.0 if doc in relevant else 0.0 for doc in ranked]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
        ndcg += dcg / ideal
        recall += sum(gains) / len(relevant)
        mrr += next((1.0 / (i + 1) for i, g in enumerate(gains) if g), 0.0)
    n = len(qrels)
    return {"ndcg@10": ndcg / n, "recall@10": recall / n, "mrr@10": mrr / n}


# -------------------------------------------------------------------------------------------------- baselines


def passage_text(doc: dict, fields: str) -> str:
    """What is embedded, indexed by BM25 and stored as the chunk content. BEIR's convention (and the one the
    published pyfaq baselines use) is the title, a space, then the text."""
    if fields == "text" or not doc["title"]:
        return doc["text"]
    return f"{doc['title']} {doc['text']}"


def dense_rankings(query_ids, query_vectors, doc_ids, doc_vectors, depth: int) -> dict[str, list[str]]:
    scores = query_vectors @ doc_vectors.T  # both L2-normalised: cosine
    top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    return {q: [doc_ids[j] for j in row] for q, row in zip(query_ids, top, strict=True)}


def bm25_rankings(query_ids, query_texts, doc_ids, doc_texts, depth: int) -> dict[str, list[str]]:
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize(doc_texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False
    )
    tokens = bm25s.tokenize(query_texts, stopwords="en", stemmer=stemmer, show_progress=False)
    found, scores = retriever.retrieve(tokens, k=depth, show_progress=False, n_threads=1)
    rankings = {}
    for q, row, row_scores in zip(query_ids, found, scores, strict=True):
        rankings[q] = [doc_ids[j] for j, s in zip(row, row_scores, strict=True) if s > 0]
    return rankings


def rrf(lists: list[list[str]], k: float) -> list[str]:
    fused: dict[str, float] = {}
    for ranking in lists:
        for rank, doc in enumerate(ranking, start=1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (k + rank)
    # Ties (a passage at rank r in one list only, another at rank r in the other only) are common and move
    # nDCG@10 by about 0.01 depending on which wins: break them by passage id, as the provider does.
    return sorted(fused, key=lambda doc: (-fused[doc], doc))


# ------------------------------------------------------------------------------------------- through the stack


def dataset_folder(name: str) -> Path:
    for folder in (common.ROOT.parent / "shared" / "data" / name, common.cache_root() / "data" / name):
        if (folder / "corpus.jsonl").exists():
            return folder
    raise SystemExit(f"no {name} set: build it with scripts/bench/build_{name}.py (see its docstring)")


def stack_configs() -> list[tuple[str, dict]]:
    configs = [
        ("vector", {"search_mode": "vector"}),
        ("keyword", {"search_mode": "keyword"}),
        ("hybrid default", {"search_mode": "hybrid"}),
    ]
    for k in RRF_KS:
        configs.append(
            (f"hybrid rrf k={k}", {"search_mode": "hybrid", "ranking_options": {"ranker": "rrf", "impact_factor": k}})
        )
    for alpha in ALPHAS:
        configs.append(
            (
                f"hybrid weighted a={alpha}",
                {"search_mode": "hybrid", "ranking_options": {"ranker": "weighted", "alpha": alpha}},
            )
        )
    return configs


def neural_configs() -> list[tuple[str, dict]]:
    return [
        (f"hybrid neural {model}", {"search_mode": "hybrid", "ranking_options": {"ranker": "neural", "model": model}})
        for model in NEURAL_MODELS
    ]


def error_text(error: Exception) -> str:
    body = getattr(error, "body", None)
    detail = json.dumps(body)[:400] if body else str(error)[:400]
    status = getattr(error, "status_code", None)
    return f"HTTP {status}: {detail}" if status else f"{type(error).__name__}: {detail}"


def log_errors(text: str, limit: int = 3) -> list[str]:
    """Distinct error lines of a server log (timestamps dropped, each with the line after it)."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        if "error" in line.lower() and "Traceback" not in line:
            joined = " ".join(part.strip() for part in lines[i : i + 2])
            found.append(re.sub(r"^\d{4}-\d\d-\d\d [\d:,.]+ ", "", joined)[:500])
    return list(dict.fromkeys(found))[:limit]


def run_stack(
    label: str,
    run_yaml: Path,
    data,
    doc_ids,
    doc_texts,
    doc_vectors,
    batch: int,
    only: str | None = None,
    embedder: str = "torch",
) -> dict:
    from llama_stack_client import LlamaStackClient

    result: dict = {"configs": {}}
    with tempfile.TemporaryDirectory(prefix=f"quality-{label}-") as tmp:
        with common.stack_server(run_yaml, Path(tmp)) as server:
            result["server_start_s"] = round(server.start_seconds[-1], 1)
            print(f"[{label}] server up in {server.start_seconds[-1]:.0f} s on {server.base_url}", file=sys.stderr)
            client = LlamaStackClient(base_url=server.base_url, timeout=900, max_retries=0)
            store = client.vector_stores.create(name=f"quality-{data.folder.name}")
            started = time.perf_counter()
            rows = [
                {"id": doc_id, "text": text, "document_id": doc_id, "attributes": {"document_id": doc_id}}
                for doc_id, text in zip(doc_ids, doc_texts, strict=True)
            ]
            common.insert_chunks(client, store.id, rows, doc_vectors, embedder, batch)
            result["insert_s"] = round(time.perf_counter() - started, 1)
            print(f"[{label}] inserted {len(doc_ids)} chunks in {result['insert_s']} s", file=sys.stderr)
            try:  # warm-up, not timed: the server loads the embedding model on its first query
                client.vector_stores.search(vector_store_id=store.id, query="warm-up", max_num_results=K)
            except Exception as error:  # noqa: BLE001
                print(f"[{label}] warm-up search failed: {error_text(error)}", file=sys.stderr)
            vector_rankings: dict = {}
            for name, request in stack_configs() + neural_configs():
                if only and not any(part in name for part in only.split(",")):
                    continue
                log_offset = server.log_size()
                rankings, errors, empty, times = {}, [], 0, []
                started = time.perf_counter()
                for query_id, text in data.queries.items():
                    asked = time.perf_counter()
                    try:
                        page = client.vector_stores.search(
                            vector_store_id=store.id, query=text, max_num_results=K, **request
                        )
                    except Exception as error:  # noqa: BLE001 - recorded, the run goes on
                        errors.append(error_text(error))
                        continue
                    rankings[query_id] = [
                        str((hit.attributes or {}).get("document_id") or hit.file_id) for hit in page.data
                    ]
                    empty += not page.data
                    times.append(time.perf_counter() - asked)
                elapsed = time.perf_counter() - started
                entry: dict = {"request": request, "ms_per_query": round(1000 * elapsed / len(data.queries), 1)}
                if times:
                    entry["p50_ms"] = round(1000 * float(np.median(times)), 1)
                answered = len(data.queries) - len(errors)
                logged = log_errors(server.log_since(log_offset))
                if errors:
                    entry["error"] = f"{len(errors)}/{len(data.queries)} queries failed: {errors[0]}"
                if answered and empty == answered:
                    entry["error"] = (
                        entry.get("error", "") + f" {empty} queries answered 200 with NO results; "
                        f"server log: {' | '.join(logged) or '(nothing logged)'}"
                    ).strip()
                elif answered:
                    entry.update(metrics(rankings, data.qrels))
                if logged:
                    entry["server_log_errors"] = logged
                if request["search_mode"] == "vector":
                    vector_rankings = rankings
                elif request["search_mode"] == "hybrid" and rankings and rankings == vector_rankings:
                    entry["note"] = "same ranking as vector mode for every query: the keyword leg added nothing"
                result["configs"][name] = entry
                shown = f"nDCG@10 {entry['ndcg@10']:.4f}" if "ndcg@10" in entry else f"ERROR {entry['error'][:150]}"
                print(f"[{label}] {name:24} {shown}  ({entry['ms_per_query']} ms/query)", file=sys.stderr)
    return result


# ------------------------------------------------------------------------------------------------------ output


def table(results: dict) -> str:
    brute = results["baselines"][REFERENCE]["ndcg@10"]
    rows = [("system", "mode", "nDCG@10", "Recall@10", "MRR@10", "vs fp32", "ms/q")]
    for name, entry in results["baselines"].items():
        rows.append(("baseline", name, *fmt(entry, brute), "-"))
    for system in ("ours", "builtin"):
        for name, entry in results.get(system, {}).get("configs", {}).items():
            if "ndcg@10" in entry:
                rows.append((system, name, *fmt(entry, brute), f"{entry['ms_per_query']:.0f}"))
            else:
                rows.append((system, name, "ERROR", "", "", "", f"{entry['ms_per_query']:.0f}"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            str(cell).ljust(w) if i < 2 else str(cell).rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    for system in ("ours", "builtin"):
        for name, entry in results.get(system, {}).get("configs", {}).items():
            if "error" in entry:
                lines.append(f"{system} {name}: ERROR {entry['error']}")
            elif "note" in entry:
                lines.append(f"{system} {name}: {entry['note']}")
    return "\n".join(lines)


def fmt(entry: dict, brute: float) -> tuple[str, str, str, str]:
    return (
        f"{entry['ndcg@10']:.4f}",
        f"{entry['recall@10']:.4f}",
        f"{entry['mrr@10']:.4f}",
        f"{entry['ndcg@10'] - brute:+.4f}",
    )


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values, colors = [], [], []
    palette = {"baseline": "#888888", "ours": "#1f77b4", "builtin": "#ff7f0e"}
    for name, entry in results["baselines"].items():
        labels.append(f"baseline: {name}")
        values.append(entry["ndcg@10"])
        colors.append(palette["baseline"])
    for system in ("ours", "builtin"):
        for name, entry in results.get(system, {}).get("configs", {}).items():
            suffix = " (ERROR)" if "ndcg@10" not in entry else " (= vector)" if "note" in entry else ""
            labels.append(f"{system}: {name}{suffix}")
            values.append(entry.get("ndcg@10", 0.0))
            colors.append(palette[system])
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(labels) + 1.4))
    y = np.arange(len(labels))
    ax.barh(y, values, color=colors)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    brute = results["baselines"][REFERENCE]["ndcg@10"]
    ax.axvline(brute, color="black", linestyle="--", linewidth=1, label=f"{REFERENCE} {brute:.4f}")
    for yi, v in zip(y, values, strict=True):
        ax.text(v + 0.003, yi, f"{v:.3f}", va="center", fontsize=7)
    ax.set_xlabel("nDCG@10")
    ax.set_xlim(0, max(values) * 1.12)
    ax.set_title(
        f"Retrieval quality on {results['data']['name']} ({results['data']['queries']} queries), "
        + results.get("embedder", common.EMBEDDING_MODEL),
        fontsize=10,
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def versions() -> dict[str, str]:
    names = ("llama_stack", "llama_stack_client", "pymilvus", "milvus-lite", "sentence-transformers", "torch", "bm25s")
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def evaluate(folder: Path, args, settings: dict[str, str]) -> dict:
    """Every baseline and every mode of ours (and the built-in's with --builtin) on one BEIR set."""
    began = time.perf_counter()
    data = common.load_beir(folder)
    doc_ids = data.doc_ids
    doc_texts = [passage_text(data.corpus[d], args.fields) for d in doc_ids]
    if args.queries:
        data.queries = dict(list(data.queries.items())[: args.queries])
        data.qrels = {q: data.qrels[q] for q in data.queries}
    query_ids = list(data.queries)
    query_texts = [data.queries[q] for q in query_ids]
    print(
        f"{folder}: {len(doc_ids)} passages, {len(query_ids)} judged queries, "
        f"{sum(map(len, data.qrels.values()))} judgments",
        file=sys.stderr,
    )

    corpus_key = common.file_digest(folder / "corpus.jsonl")
    query_key = common.file_digest(folder / "queries.jsonl")

    def vectors(embedder: str) -> tuple[np.ndarray, np.ndarray]:
        return (
            common.cached_embeddings(f"corpus-{corpus_key}-{args.fields}", doc_texts, "corpus", args.cache, embedder),
            common.cached_embeddings(
                f"queries-{query_key}-{len(query_texts)}", query_texts, "queries", args.cache, embedder
            ),
        )

    depth = min(max(BASELINE_DEPTHS), len(doc_ids))
    dense_by_model = {}
    for embedder in common.STACK_MODEL_IDS:
        model_doc_vectors, model_query_vectors = vectors(embedder)
        dense_by_model[embedder] = dense_rankings(query_ids, model_query_vectors, doc_ids, model_doc_vectors, depth)
    dense = dense_by_model[args.embedder]
    bm25 = bm25_rankings(query_ids, query_texts, doc_ids, doc_texts, depth)
    results: dict = {
        "data": {
            "path": str(folder.resolve()),
            "name": folder.resolve().name,
            "passages": len(doc_ids),
            "median_passage_chars": int(np.median([len(text) for text in doc_texts])),
            "queries": len(query_ids),
            "judgments": sum(map(len, data.qrels.values())),
            "corpus_sha256_16": corpus_key,
            "fields": args.fields,
        },
        "embedder": common.STACK_MODEL_IDS[args.embedder],
        "k": K,
        "baselines": {
            REFERENCE: metrics(dense_by_model["torch"], data.qrels),
            "brute-force cosine (int8 ONNX)": metrics(dense_by_model["onnx"], data.qrels),
            "brute-force cosine (int8 ONNX, smoothed)": metrics(dense_by_model["smooth"], data.qrels),
            "BM25 (bm25s)": metrics(bm25, data.qrels),
            **{
                f"RRF(BM25, dense) k={BASELINE_RRF_K} top{n}": metrics(
                    {q: rrf([dense[q][:n], bm25.get(q, [])[:n]], BASELINE_RRF_K) for q in query_ids}, data.qrels
                )
                for n in BASELINE_DEPTHS
            },
        },
        "versions": versions(),
    }
    for name, entry in results["baselines"].items():
        print(f"[baseline] {name:32} nDCG@10 {entry['ndcg@10']:.4f}", file=sys.stderr)

    doc_vectors = vectors(args.embedder)[0]
    with tempfile.TemporaryDirectory(prefix="quality-yaml-") as tmp:
        ours_yaml = common.run_yaml_with_settings(Path(tmp) / "ours.yaml", settings, args.embedder, llm=False)
        systems = [] if args.no_ours else [("ours", ours_yaml, args.embedder)]
        if settings:
            results["ours_settings"] = settings
        if args.builtin:
            systems.append(("builtin", common.run_yaml_without_module(Path(tmp) / "run.yaml"), "torch"))
        for label, run_yaml, embedder in systems:
            try:
                system_vectors = doc_vectors if embedder == args.embedder else vectors(embedder)[0]
                results[label] = run_stack(
                    label, run_yaml, data, doc_ids, doc_texts, system_vectors, args.batch, args.only, embedder
                )
            except Exception as error:  # noqa: BLE001 - a provider that cannot even ingest is a result too
                results[label] = {"error": error_text(error), "configs": {}}
                print(f"[{label}] FAILED: {error_text(error)}", file=sys.stderr)
    results["total_s"] = round(time.perf_counter() - began, 1)
    return results


def summary(all_results: list[dict]) -> str:
    """One markdown table: nDCG@10 of every mode on every set, and its difference to fp32 brute force."""
    names = [r["data"]["name"] for r in all_results]
    header = "| mode | " + " | ".join(f"{n} nDCG@10 | {n} vs fp32 dense" for n in names) + " |"
    lines = [header, "| --- |" + " ---: | ---: |" * len(names)]
    rows: dict[str, list[str]] = {}
    for index, results in enumerate(all_results):
        reference = results["baselines"][REFERENCE]["ndcg@10"]
        entries = [(f"baseline: {name}", entry) for name, entry in results["baselines"].items()]
        for system in ("ours", "builtin"):
            entries += [
                (
                    f"{system} ({results['embedder']}): {name}"
                    + (f" **({DEFAULT_MARKS[name]})**" if name in DEFAULT_MARKS and system == "ours" else ""),
                    entry,
                )
                for name, entry in results.get(system, {}).get("configs", {}).items()
            ]
        for label, entry in entries:
            cells = rows.setdefault(label, ["", ""] * len(names))
            if "ndcg@10" in entry:
                cells[2 * index : 2 * index + 2] = [f"{entry['ndcg@10']:.4f}", f"{entry['ndcg@10'] - reference:+.4f}"]
            else:
                cells[2 * index] = "ERROR"
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows.items()]
    return "\n".join(lines)


def neural_verdict(all_results: list[dict]) -> str:
    """Each rerank model against the default hybrid of the same run: nDCG@10 gained, median latency ratio, and
    whether that makes it the recommended mode (NEURAL_MIN_GAIN on every set, under NEURAL_MAX_SLOWDOWN)."""
    lines = []
    for model in NEURAL_MODELS:
        name, passes, parts = f"hybrid neural {model}", True, []
        for results in all_results:
            configs = results.get("ours", {}).get("configs", {})
            neural, fused = configs.get(name, {}), configs.get("hybrid default", {})
            if "ndcg@10" not in neural or "ndcg@10" not in fused:
                passes = False
                parts.append(f"{results['data']['name']}: not measured in this run")
                continue
            gain = neural["ndcg@10"] - fused["ndcg@10"]
            slowdown = neural["p50_ms"] / fused["p50_ms"]
            passes &= gain >= NEURAL_MIN_GAIN and slowdown < NEURAL_MAX_SLOWDOWN
            parts.append(
                f"{results['data']['name']}: nDCG@10 {neural['ndcg@10']:.4f} vs {fused['ndcg@10']:.4f} ({gain:+.4f}), "
                f"p50 {neural['p50_ms']:.0f} vs {fused['p50_ms']:.0f} ms ({slowdown:.1f}x)"
            )
        verdict = "RECOMMENDED" if passes else "stays opt-in"
        lines.append(f"{model} vs the default hybrid (weighted): {'; '.join(parts)} -> {verdict}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dataset", choices=(*DATASETS, "both"), default="both", help="which of our sets (default: both)"
    )
    parser.add_argument("--data", type=Path, help="any other BEIR-format folder (instead of --dataset)")
    parser.add_argument("--builtin", action="store_true", help="also run Llama Stack's built-in milvus provider")
    parser.add_argument("--no-ours", action="store_true", help="skip our provider (with --builtin: only the built-in)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and PNG go")
    parser.add_argument("--batch", type=int, default=INSERT_BATCH, help="chunks per vector_io.insert request")
    parser.add_argument("--cache", type=Path, help="embedding cache folder (default ~/.cache/llama-stack-milvus/bench)")
    parser.add_argument(
        "--fields",
        choices=("title+text", "text"),
        default="title+text",
        help="what a passage is made of (default: title, a space, then the text)",
    )
    parser.add_argument(
        "--embedder",
        choices=sorted(common.STACK_MODEL_IDS),
        default="smooth",
        help="the embedding model of our stores (default: the distribution's; the built-in always uses torch)",
    )
    parser.add_argument("--queries", type=int, help="only the first N judged queries (a quick smoke run)")
    parser.add_argument(
        "--only",
        help="only the stack modes whose name contains this, or one of these comma-separated parts "
        "(e.g. 'vector', 'hybrid default,neural')",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra key in our provider's config for this run (e.g. hnsw_ef_search=512); repeatable",
    )
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.data:
        folders = [args.data]
    else:
        folders = [dataset_folder(name) for name in (DATASETS if args.dataset == "both" else (args.dataset,))]
    settings = dict(item.split("=", 1) for item in args.set)
    all_results = []
    for folder in folders:
        results = evaluate(folder, args, settings)
        stem = (
            f"quality_{results['data']['name']}"
            + ("" if args.embedder == "onnx" else f"_{args.embedder}")
            + "".join("_" + re.sub(r"[^A-Za-z0-9.]+", "-", f"{key}-{value}") for key, value in settings.items())
        )
        if args.only or args.queries:
            stem += "_partial"
        common.save_results(results, args.out, stem, plot, table)
        for label in ("ours", "builtin"):
            if results.get(label, {}).get("error"):
                print(f"{label}: FAILED before searching: {results[label]['error']}")
        all_results.append(results)
    print(summary(all_results))
    print(neural_verdict(all_results))


if __name__ == "__main__":
    main()
