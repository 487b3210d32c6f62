"""Mean-pooled, L2-normalised sentence embeddings from the exported ONNX model (what sentence-transformers does)."""

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .export import EMBEDDING_DIMENSION, MAX_SEQ_LENGTH, MODEL_FILE, TOKENIZER_FILE


class OnnxEncoder:
    def __init__(self, model_dir: Path, intra_op_threads: int = 0) -> None:
        """`intra_op_threads` texts are embedded at once (0: one per core), each pass on a single thread.

        Passes of one short text are small: split over two threads, every operator ends in a barrier that waits for
        the slower thread, and any other work on the cores (Milvus, HTTP, the chunker) stalls both. Two
        single-threaded passes side by side were 1.3x as fast alone and stayed fast under load (docs/performance.md,
        Ingestion).
        """
        import onnxruntime
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
        self.tokenizer.enable_truncation(MAX_SEQ_LENGTH)
        self.tokenizer.no_padding()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        # ONNX Runtime's run() may be called from several threads at once on one session.
        self.session = onnxruntime.InferenceSession(
            str(model_dir / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        threads = intra_op_threads or len(os.sched_getaffinity(0))
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="onnx-encoder") if threads > 1 else None

    def encode(self, texts: list[str]) -> np.ndarray:
        """One float32 row per text, in input order.

        One text per forward pass, on purpose: dynamic int8 quantisation scales activations by the range of the
        whole input tensor, so in a padded batch a text's vector would depend on its neighbours (cosine 0.99 to
        itself alone). Alone, a text always gets the same vector, and no time goes into padding (measured here:
        as fast as batches of 32).
        """
        vectors = np.empty((len(texts), EMBEDDING_DIMENSION), dtype=np.float32)
        for row, states in enumerate(self.token_states(texts)):
            pooled = states.mean(axis=0)
            vectors[row] = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
        return vectors

    def token_states(self, texts: list[str]) -> list[np.ndarray]:
        """Each text's last hidden states, one row per word piece ([CLS] and [SEP] included), one pass per text."""
        encodings = self.tokenizer.encode_batch(texts)
        if self._pool is None or len(encodings) == 1:
            return [self._pass(encoding.ids) for encoding in encodings]
        return list(self._pool.map(self._pass, [encoding.ids for encoding in encodings]))

    def _pass(self, ids: list[int]) -> np.ndarray:
        input_ids = np.array([ids], dtype=np.int64)
        (hidden,) = self.session.run(
            None,
            {
                "input_ids": input_ids,
                "attention_mask": np.ones_like(input_ids),
                "token_type_ids": np.zeros_like(input_ids),
            },
        )
        return hidden[0]
