"""Chooses the smoothing strengths (alpha per kind of MatMul input) of the default embedding export by cosine to
fp32, on text in neither evaluation set.

    .venv/bin/python scripts/bench/smoothing.py [--alphas 0.5,0.7,0.8,0.85,0.9,1.0] [--gptq]
    .venv/bin/python scripts/bench/smoothing.py --speed 5

--speed N: no sweep; the shipped plain and smoothed exports, as the provider loads them (2 threads), embed all the
calibration passages in turn, N rounds, A B B A order; prints each one's passages/s and the ratio per round.

The package's calibration text (this project's own docs) is split in two: even passages calibrate (max |X_j| of
each MatMul input), odd passages are held out. Each candidate is smoothed from the fp32 export, quantised as the
shipped exports are, and each held-out passage's vector compared with the fp32 export's (cosine: mean, min). First
one alpha for every kind (--alphas), then, from the best of those, each kind in turn tries every alpha and no
smoothing, keeping the best. Weights are rounded to nearest, or with --gptq as the shipped export rounds them
(export.round_weights, calibrated on the same half). The plain int8 export (no smoothing) is the baseline of the
same run. nDCG on pyfaq/debfaq plays no part here: embedders.py measures the chosen setting on both sets afterwards.
Writes results/smoothing.json (smoothing_gptq.json) and prints a markdown table.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from embedders import RESULTS, Encoder, fp32_model

from llama_stack_milvus.embeddings.encoder import OnnxEncoder
from llama_stack_milvus.embeddings.export import (
    PLAIN_MODEL_ID,
    SMOOTH_MODEL_ID,
    SMOOTHING_ALPHA,
    TOKENIZER_FILE,
    _quantise,
    calibration_texts,
    ensure_onnx_model,
    packaged_model_dir,
    round_weights,
    smooth,
)

KINDS = tuple(SMOOTHING_ALPHA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alphas", default="0.5,0.7,0.8,0.85,0.9,1.0")
    parser.add_argument("--gptq", action="store_true", help="round the weights as the shipped export does")
    parser.add_argument("--speed", type=int, default=0, help="rounds of plain vs smoothed timing instead")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.speed:
        return speed(args.speed)
    grid = [float(a) for a in args.alphas.split(",")]
    texts = calibration_texts()
    calibrate, held_out = texts[0::2], texts[1::2]
    reference = Encoder(fp32_model(), 1).encode(held_out)
    rows: dict[str, dict] = {}

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)

        def score(alphas: dict | None) -> float:
            name = "no smoothing" if alphas is None else ", ".join(f"{k} {a}" for k, a in alphas.items())
            if name not in rows:
                source = fp32_model()
                if alphas is not None:
                    source = work / "smoothed.onnx"
                    smooth(fp32_model(), source, packaged_model_dir() / TOKENIZER_FILE, calibrate, alphas)
                _quantise(source, work / "int8.onnx")
                if args.gptq:
                    round_weights(source, work / "int8.onnx", packaged_model_dir() / TOKENIZER_FILE, calibrate)
                cosine = np.sum(Encoder(work / "int8.onnx", 1).encode(held_out) * reference, axis=1)
                rows[name] = {
                    "mean_cosine": round(float(cosine.mean()), 5),
                    "min_cosine": round(float(cosine.min()), 5),
                }
                print(name, rows[name], flush=True)
            return rows[name]["mean_cosine"]

        score(None)
        best = max(({kind: alpha for kind in KINDS} for alpha in grid), key=score)
        for kind in KINDS:
            best = max(({**best, kind: alpha} for alpha in [None, *grid]), key=score)
    result = {
        "weights": "gptq" if args.gptq else "round to nearest",
        "calibration_passages": len(calibrate),
        "held_out_passages": len(held_out),
        "best": best,
        "exports": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"smoothing{'_gptq' if args.gptq else ''}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"best: {best}\n| int8 export, alpha per MatMul input | held-out cosine to fp32, mean | min |")
    print("| --- | ---: | ---: |")
    for name, row in rows.items():
        print(f"| {name} | {row['mean_cosine']:.5f} | {row['min_cosine']:.5f} |")


def speed(rounds: int) -> None:
    texts = calibration_texts()
    encoders = {
        model: OnnxEncoder(ensure_onnx_model(model), intra_op_threads=2) for model in (PLAIN_MODEL_ID, SMOOTH_MODEL_ID)
    }
    for encoder in encoders.values():
        encoder.encode(texts[:8])
    for round_ in range(rounds):
        rates = {}
        for model in (PLAIN_MODEL_ID, SMOOTH_MODEL_ID) if round_ % 2 == 0 else (SMOOTH_MODEL_ID, PLAIN_MODEL_ID):
            started = time.perf_counter()
            encoders[model].encode(texts)
            rates[model] = len(texts) / (time.perf_counter() - started)
        print(
            f"round {round_ + 1}: plain {rates[PLAIN_MODEL_ID]:.1f}/s, smoothed {rates[SMOOTH_MODEL_ID]:.1f}/s, "
            f"smoothed/plain {rates[SMOOTH_MODEL_ID] / rates[PLAIN_MODEL_ID]:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
