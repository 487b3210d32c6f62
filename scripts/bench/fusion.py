"""Hybrid fusion candidates on both sets, in-process: which ranker, weight and normalisation to make the default.

    .venv/bin/python scripts/bench/fusion.py [--dataset pyfaq|debfaq|both] [--analyzer english|standard]

Each set goes into a fresh Milvus Lite collection made by the provider's own schema code, so with the analyser the
provider would give it on this Milvus (run it with .venv-lite25's python for the English one: Milvus Lite 3.x has
only `standard`), with the cached int8 ONNX embeddings of quality.py. Each query's two lists are fetched once, 50
deep (max_num_results 10 x chunk_multiplier 5, as the stack asks): the vector list by brute force (the provider's
vector mode ranks exactly so), the keyword list from Milvus' BM25. Every candidate fuses them: the provider's
weighted (alpha) and RRF (k) rankers, and weighted fusion with min-max normalised cosines. --analyzer-params
tries any other Milvus analyser. Prints nDCG@10 per set
and the difference to brute-force fp32 torch cosine (quality.py's reference); writes results/fusion_<analyser>_
lite<major>.json. Choose on one set, confirm on the other: only a candidate that wins on both is a default.
"""

import argparse
import asyncio
import hashlib
import importlib.metadata
import json
import sys
import tempfile
from pathlib import Path

import _common as common
import numpy as np
import quality

from llama_stack_milvus.vector_io import schema
from llama_stack_milvus.vector_io.backend import open_lite_backend
from llama_stack_milvus.vector_io.config import InlineMilvusConfig
from llama_stack_milvus.vector_io.fusion import reciprocal_rank_fusion, weighted_fusion
from llama_stack_milvus.vector_io.schema import CHUNK_INFO, CONTENT, ROW_ID, SPARSE, VECTOR, create_chunk_collection

DEPTH = 50
ALPHAS = (0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97)
MINMAX_ALPHAS = (0.5, 0.6, 0.7, 0.8, 0.9)
RRF_KS = (5, 10, 30, 60)
PERSISTENCE = {"namespace": "vector_io::milvus", "backend": "kv_default"}

Hits = list[tuple[str, float]]


def minmax(hits: Hits) -> Hits:
    if not hits:
        return hits
    low, high = min(score for _, score in hits), max(score for _, score in hits)
    return [(row_id, (score - low) / (high - low) if high > low else 1.0) for row_id, score in hits]


def candidates() -> dict:
    """Name -> fusion(vector_hits, keyword_hits) -> ranked ids."""
    found = {"vector only": lambda v, k: v, "keyword only": lambda v, k: k}
    for alpha in ALPHAS:
        found[f"weighted a={alpha}"] = lambda v, k, a=alpha: weighted_fusion(v, k, a)
    for alpha in MINMAX_ALPHAS:
        found[f"min-max weighted a={alpha}"] = lambda v, k, a=alpha: weighted_fusion(minmax(v), k, a)
    for rrf_k in RRF_KS:
        found[f"rrf k={rrf_k}"] = lambda v, k, c=rrf_k: reciprocal_rank_fusion(v, k, c)
    return found


def retrieve(folder: Path, analyzer: str, work: Path) -> tuple[common.BeirSet, dict, dict, float]:
    """The set, each query's vector and keyword hits (row id, score), and the fp32 brute-force nDCG@10."""
    data = common.load_beir(folder)
    doc_ids = data.doc_ids
    texts = [quality.passage_text(data.corpus[d], "title+text") for d in doc_ids]
    query_ids = list(data.queries)
    corpus_key = common.file_digest(folder / "corpus.jsonl")
    query_key = common.file_digest(folder / "queries.jsonl")
    query_texts = [data.queries[q] for q in query_ids]

    def vectors(embedder: str) -> tuple[np.ndarray, np.ndarray]:
        return (
            common.cached_embeddings(f"corpus-{corpus_key}-title+text", texts, "corpus", None, embedder),
            common.cached_embeddings(f"queries-{query_key}-{len(query_ids)}", query_texts, "queries", None, embedder),
        )

    fp32_docs, fp32_queries = vectors("torch")
    reference = quality.metrics(quality.dense_rankings(query_ids, fp32_queries, doc_ids, fp32_docs, 10), data.qrels)
    doc_vectors, query_vectors = vectors("onnx")

    config = InlineMilvusConfig(db_path=str(work / f"{folder.name}.db"), persistence=PERSISTENCE)
    config = config.model_copy(update={"keyword_analyzer": analyzer})
    backend = open_lite_backend(config)
    client, name = backend.client, "fusion"
    asyncio.run(create_chunk_collection(backend, name, doc_vectors.shape[1], config, shared=False))
    for start in range(0, len(doc_ids), 1000):
        rows = [
            {ROW_ID: doc_ids[i], CONTENT: texts[i], VECTOR: doc_vectors[i].tolist(), CHUNK_INFO: {}}
            for i in range(start, min(start + 1000, len(doc_ids)))
        ]
        client.insert(name, rows)
    client.flush(name)
    client.load_collection(name)
    # The vector leg by brute force: the provider's vector mode ranks exactly so (HNSW at ef 256, FLAT on Lite 2.5).
    cosines = query_vectors @ doc_vectors.T
    vector_hits, keyword_hits = {}, {}
    for row, query_id in enumerate(query_ids):
        top = np.argsort(-cosines[row], kind="stable")[:DEPTH]
        vector_hits[query_id] = [(doc_ids[j], float(cosines[row, j])) for j in top]
        found = client.search(
            name,
            data=[data.queries[query_id]],
            anns_field=SPARSE,
            limit=DEPTH,
            output_fields=[ROW_ID],
            search_params={"metric_type": "BM25"},
        )
        # Milvus Lite 3.x reports BM25 as negative distances (best first), as in the provider.
        keyword_hits[query_id] = [(hit["entity"][ROW_ID], abs(hit["distance"])) for hit in found[0]]
    backend.close()
    return data, vector_hits, keyword_hits, reference["ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=(*quality.DATASETS, "both"), default="both")
    parser.add_argument("--analyzer", choices=("english", "standard"), default="english")
    parser.add_argument(
        "--analyzer-params",
        type=json.loads,
        help="Milvus analyzer_params to try instead of the provider's, e.g. "
        '\'{"tokenizer": "standard", "filter": ["lowercase", {"type": "stemmer", "language": "english"}]}\'',
    )
    parser.add_argument("--out", type=Path, default=quality.RESULTS)
    args = parser.parse_args()
    out_name = args.analyzer
    if args.analyzer_params:
        schema.analyzer = lambda config, backend: {"analyzer_params": args.analyzer_params}
        out_name = "params-" + hashlib.sha1(json.dumps(args.analyzer_params, sort_keys=True).encode()).hexdigest()[:8]
    names = quality.DATASETS if args.dataset == "both" else (args.dataset,)
    results: dict = {
        "analyzer": args.analyzer_params or args.analyzer,
        "milvus-lite": importlib.metadata.version("milvus-lite"),
        "sets": {},
    }
    with tempfile.TemporaryDirectory(prefix="fusion-") as tmp:
        for set_name in names:
            folder = quality.dataset_folder(set_name)
            data, vector_hits, keyword_hits, reference = retrieve(folder, args.analyzer, Path(tmp))
            scores = {}
            for label, fuse in candidates().items():
                rankings = {q: [row_id for row_id, _ in fuse(vector_hits[q], keyword_hits[q])] for q in data.queries}
                scores[label] = quality.metrics(rankings, data.qrels)["ndcg@10"]
            results["sets"][set_name] = {"fp32 dense": reference, "ndcg@10": scores}
            print(f"{set_name}: done", file=sys.stderr)
    header = "| candidate | " + " | ".join(f"{n} nDCG@10 | {n} vs fp32 dense" for n in names) + " |"
    print(f"analyser {results['analyzer']}, milvus-lite {results['milvus-lite']}\n{header}")
    print("| --- |" + " ---: | ---: |" * len(names))
    for label in candidates():
        cells = []
        for set_name in names:
            entry = results["sets"][set_name]
            score = entry["ndcg@10"][label]
            cells += [f"{score:.4f}", f"{score - entry['fp32 dense']:+.4f}"]
        print(f"| {label} | " + " | ".join(cells) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"fusion_{out_name}_lite{results['milvus-lite'].split('.')[0]}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
