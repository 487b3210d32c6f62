"""Embedding exports of all-MiniLM-L6-v2 against fp32 sentence-transformers: quality on both sets and speed.

    .venv/bin/python scripts/bench/embedders.py [--only NAME,NAME] [--sample 256] [--no-quality]

For each candidate export (built here from the packaged weights, cached under <cache>/bench/embedders):
- quality: brute-force cosine nDCG@10 over the whole of pyfaq and debfaq (title + text, as quality.py embeds
  them), and the difference to fp32 torch (sentence-transformers) on the same set;
- speed: passages per second on the same --sample passages of each set (their natural lengths: debfaq's median
  is 755 characters, pyfaq's 854), torch timed right before and right after the candidate in the same run; the
  ratio is the candidate's rate over the mean of those two torch rates. 2 threads each. On a machine shared with
  other jobs absolute rates move by 2-3x between runs; the ratios are what to read, and they are noisy too.
Writes results/embedders.json and prints a markdown table.
"""

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path

import _common as common
import numpy as np
from quality import DATASETS, dataset_folder, dense_rankings, metrics, passage_text

from llama_stack_milvus.embeddings.encoder import OnnxEncoder
from llama_stack_milvus.embeddings.export import (
    EMBEDDING_DIMENSION,
    MAX_SEQ_LENGTH,
    PLAIN_MODEL_ID,
    SMOOTH_MODEL_ID,
    SMOOTHING_ALPHA,
    TOKENIZER_FILE,
    _export_fp32,
    ensure_onnx_model,
    packaged_model_dir,
)

RESULTS = Path(__file__).resolve().parent / "results"
# Activation x activation products (query x key, attention x value). ONNX Runtime's dynamic quantiser leaves them
# in fp32 by itself (it quantises MatMuls with a constant weight only): the shipped export already does.
ATTENTION_PRODUCTS = ("attention/self/MatMul", "attention/self/MatMul_1")
# Candidates whose vectors quality.py embeds too: the same cache.
SHARED_CACHE = {"torch": "torch", "int8 plain": "onnx"}


def work_dir() -> Path:
    return common.cache_root() / "embedders"


def fp32_model() -> Path:
    path = work_dir() / "fp32.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _export_fp32(packaged_model_dir(), path)
    return path


def matmuls(model: Path) -> list[str]:
    import onnx

    return [node.name for node in onnx.load(str(model)).graph.node if node.op_type == "MatMul"]


def quantised(name: str, keep_fp32) -> Path:
    """fp32.onnx with its MatMuls quantised to int8 (dynamic, per channel) except those keep_fp32(node) names."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = work_dir() / f"{name}.onnx"
    if not path.exists():
        source = fp32_model()
        quantize_dynamic(
            str(source),
            str(path),
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=[node for node in matmuls(source) if keep_fp32(node)],
        )
    return path


def session(model: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = common.THREADS
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


class Encoder:
    """Mean-pooled, L2-normalised embeddings from an ONNX model: one text per pass, or padded batches of texts of
    similar length (batch > 1; only for fp32 weights and activations, whose vectors do not depend on the batch)."""

    def __init__(self, model: Path, batch: int) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(packaged_model_dir() / TOKENIZER_FILE))
        self.tokenizer.enable_truncation(MAX_SEQ_LENGTH)
        self.tokenizer.no_padding()
        self.session = session(model)
        self.batch = batch

    def encode(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        vectors = np.empty((len(texts), EMBEDDING_DIMENSION), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self.batch):
            rows = order[start : start + self.batch]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for j, i in enumerate(rows):
                ids[j, : len(encodings[i].ids)] = encodings[i].ids
                mask[j, : len(encodings[i].ids)] = 1
            (hidden,) = self.session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            )
            pooled = (hidden * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
            vectors[rows] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return vectors


class Torch:
    def encode(self, texts: list[str]) -> np.ndarray:
        return common.embed(texts, "torch")


def candidates() -> dict[str, tuple[str, object]]:
    """name -> (what it is, a factory of something with encode(texts))."""
    return {
        "int8 plain": (
            f"{PLAIN_MODEL_ID} (the default until {SMOOTH_MODEL_ID}): every weight MatMul int8, one text per pass",
            lambda: OnnxEncoder(ensure_onnx_model(PLAIN_MODEL_ID), intra_op_threads=common.THREADS),
        ),
        "int8 smooth": (
            f"{SMOOTH_MODEL_ID}, the default: as plain, activations smoothed per channel first (SmoothQuant, alpha "
            f"{SMOOTHING_ALPHA}), weights rounded by GPTQ, one text per pass",
            lambda: OnnxEncoder(ensure_onnx_model(SMOOTH_MODEL_ID), intra_op_threads=common.THREADS),
        ),
        "fp32 onnx": ("fp32 export, graph optimisation ALL, one text per pass", lambda: Encoder(fp32_model(), 1)),
        "fp32 onnx batched": (
            "fp32 export, graph optimisation ALL, batches of 16 texts of similar length",
            lambda: Encoder(fp32_model(), 16),
        ),
        "int8 ffn": (
            "int8 only the feed-forward MatMuls (intermediate, output); attention in fp32; one text per pass",
            lambda: Encoder(quantised("int8-ffn", lambda node: "/attention/" in node), 1),
        ),
        "int8 but ffn-down": (
            "int8 weight MatMuls except each layer's feed-forward down-projection (output.dense, whose input is the "
            "GELU output, with its outliers); one text per pass",
            lambda: Encoder(
                quantised("int8-but-ffn-down", lambda node: "/output/dense/" in node and "/attention/" not in node), 1
            ),
        ),
        "int8 but ffn-down and layer 0": (
            "int8 weight MatMuls except each layer's feed-forward down-projection and all of layer 0; one text per "
            "pass",
            lambda: Encoder(
                quantised(
                    "int8-but-ffn-down-layer0",
                    lambda node: ("/output/dense/" in node and "/attention/" not in node) or "layer.0/" in node,
                ),
                1,
            ),
        ),
        "int8 but all output.dense": (
            "int8 weight MatMuls except every output projection (feed-forward down and attention output); one text "
            "per pass",
            lambda: Encoder(quantised("int8-but-output-dense", lambda node: "/output/dense/" in node), 1),
        ),
        "int8 weights edges-fp32": (
            "as shipped, with layers 0 and 5 entirely fp32; one text per pass",
            lambda: Encoder(
                quantised(
                    "int8-weights-edges",
                    lambda node: node.endswith(ATTENTION_PRODUCTS) or "layer.0/" in node or "layer.5/" in node,
                ),
                1,
            ),
        ),
    }


def corpus_texts(folder: Path) -> tuple[list[str], list[str], list[str], dict]:
    data = common.load_beir(folder)
    ids = data.doc_ids
    return ids, [passage_text(data.corpus[d], "title+text") for d in ids], list(data.queries), data


def cached(name: str, key: str, texts: list[str], encoder_factory) -> np.ndarray:
    # The description says what the export is (its parameters too): a changed recipe gets fresh vectors.
    recipe = name + candidates()[name][0]
    path = work_dir() / "vectors" / f"{key}-{hashlib.sha256(recipe.encode()).hexdigest()[:8]}.npy"
    if path.exists():
        return np.load(path)
    started = time.perf_counter()
    vectors = encoder_factory().encode(texts)
    print(f"  {name}: {len(texts)} texts in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def quality(name: str, factory, sets: dict) -> tuple[dict, dict]:
    """nDCG@10 on each set, and the cosine of each passage's vector to torch's (mean, min)."""
    found, cosines = {}, {}
    for set_name, (doc_ids, doc_texts, query_ids, data) in sets.items():
        query_texts = [data.queries[q] for q in query_ids]
        corpus_key = common.file_digest(data.folder / "corpus.jsonl")
        query_key = common.file_digest(data.folder / "queries.jsonl")
        if name in SHARED_CACHE:  # the vectors quality.py caches
            embedder = SHARED_CACHE[name]
            doc_vectors = common.cached_embeddings(
                f"corpus-{corpus_key}-title+text", doc_texts, "corpus", embedder=embedder
            )
            query_vectors = common.cached_embeddings(
                f"queries-{query_key}-{len(query_texts)}", query_texts, "queries", embedder=embedder
            )
        else:
            doc_vectors = cached(name, f"{set_name}-corpus-{corpus_key}", doc_texts, factory)
            query_vectors = cached(name, f"{set_name}-queries-{query_key}", query_texts, factory)
        rankings = dense_rankings(query_ids, query_vectors, doc_ids, doc_vectors, 10)
        found[set_name] = metrics(rankings, data.qrels)["ndcg@10"]
        reference = common.cached_embeddings(f"corpus-{corpus_key}-title+text", doc_texts, "corpus", embedder="torch")
        cosine = np.sum(doc_vectors * reference, axis=1)
        cosines[set_name] = [round(float(cosine.mean()), 5), round(float(cosine.min()), 5)]
    return found, cosines


def rate(encoder, texts: list[str]) -> float:
    started = time.perf_counter()
    encoder.encode(texts)
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated candidate names (default: all)")
    parser.add_argument("--sample", type=int, default=256, help="passages per set timed for speed")
    parser.add_argument("--no-quality", action="store_true", help="speed only")
    parser.add_argument("--no-speed", action="store_true", help="quality only")
    parser.add_argument("--dataset", choices=(*DATASETS, "both"), default="both", help="which sets (default: both)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    chosen = candidates()
    if args.only:
        chosen = {name: chosen[name] for name in args.only.split(",")}
    names = DATASETS if args.dataset == "both" else (args.dataset,)
    sets = {name: corpus_texts(dataset_folder(name)) for name in names}
    rng = random.Random(0)
    sample = [text for _, texts, _, _ in sets.values() for text in rng.sample(texts, args.sample)]
    results: dict = {"sample_passages": len(sample), "threads": common.THREADS, "candidates": {}}
    torch = Torch()
    torch.encode(sample[:8])  # loads the model outside the clock
    if not args.no_quality:
        results["torch"] = quality("torch", Torch, sets)[0]
        print(f"torch fp32: {results['torch']}", file=sys.stderr)
    for name, (description, factory) in chosen.items():
        entry: dict = {"description": description}
        if not args.no_quality:
            entry["ndcg@10"], entry["cosine_to_torch"] = quality(name, factory, sets)
        if not args.no_speed:
            encoder = factory()
            encoder.encode(sample[:8])
            before, ours, after = rate(torch, sample), rate(encoder, sample), rate(torch, sample)
            entry.update(torch_per_s=[round(before, 1), round(after, 1)], per_s=round(ours, 1))
            entry["x_torch"] = round(ours / ((before + after) / 2), 2)
        results["candidates"][name] = entry
        print(f"{name}: {json.dumps(entry)}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "embedders" if args.dataset == "both" else f"embedders_{args.dataset}"
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results, list(sets)))


def table(results: dict, names: list[str]) -> str:
    lines = [
        "| export | "
        + " | ".join(f"{n} nDCG@10 (vs torch) | {n} cosine to torch, mean / min" for n in names)
        + " | passages/s | x torch (same run) |",
        "| --- |" + " ---: |" * (2 * len(names) + 2),
    ]
    if "torch" in results:
        lines.append(
            "| torch fp32 (sentence-transformers) | "
            + " | ".join(f"{results['torch'][n]:.4f} | 1" for n in names)
            + " | | 1.00 |"
        )
    for name, entry in results["candidates"].items():
        cells = []
        for n in names:
            if "ndcg@10" in entry:
                cells.append(f"{entry['ndcg@10'][n]:.4f} ({entry['ndcg@10'][n] - results['torch'][n]:+.4f})")
                cells.append(" / ".join(f"{c:.4f}" for c in entry["cosine_to_torch"][n]))
            else:
                cells += ["", ""]
        speed = [str(entry.get("per_s", "")), f"{entry['x_torch']:.2f}" if "x_torch" in entry else ""]
        lines.append(f"| {name}: {entry['description']} | " + " | ".join(cells + speed) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
