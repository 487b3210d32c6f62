"""Chooses the smoothing strength (alpha) of the default embedding export by cosine to fp32, on text in neither
evaluation set.

    .venv/bin/python scripts/bench/smoothing.py [--alphas 0.3,0.4,0.5,0.6,0.7,0.8]

The package's calibration text (this project's own docs) is split in two: even passages calibrate (max |X_j| of
each MatMul input), odd passages are held out. For each alpha the fp32 export is smoothed, quantised as the shipped
exports are, and each held-out passage's vector compared with the fp32 export's (cosine: mean, min). The plain int8
export (no smoothing) is the baseline of the same run. nDCG on pyfaq/debfaq plays no part here: embedders.py
measures the chosen alpha on both sets afterwards. Writes results/smoothing.json and prints a markdown table.
"""

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from embedders import RESULTS, Encoder, fp32_model

from llama_stack_milvus.embeddings.export import TOKENIZER_FILE, _quantise, calibration_texts, packaged_model_dir, smooth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alphas", default="0.3,0.4,0.5,0.6,0.7,0.8")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    texts = calibration_texts()
    calibrate, held_out = texts[0::2], texts[1::2]
    reference = Encoder(fp32_model(), 1).encode(held_out)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for alpha in [None, *(float(a) for a in args.alphas.split(","))]:
            source = fp32_model()
            if alpha is not None:
                source = work / f"smooth-{alpha}.onnx"
                smooth(fp32_model(), source, packaged_model_dir() / TOKENIZER_FILE, calibrate, alpha)
            int8 = work / f"int8-{alpha}.onnx"
            _quantise(source, int8)
            cosine = np.sum(Encoder(int8, 1).encode(held_out) * reference, axis=1)
            name = "int8, no smoothing" if alpha is None else f"int8, smoothed alpha {alpha}"
            rows[name] = {"mean_cosine": round(float(cosine.mean()), 5), "min_cosine": round(float(cosine.min()), 5)}
            print(name, rows[name], flush=True)
    result = {"calibration_passages": len(calibrate), "held_out_passages": len(held_out), "exports": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "smoothing.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| export | held-out cosine to fp32, mean | min |\n| --- | ---: | ---: |")
    for name, row in rows.items():
        print(f"| {name} | {row['mean_cosine']:.5f} | {row['min_cosine']:.5f} |")


if __name__ == "__main__":
    main()
