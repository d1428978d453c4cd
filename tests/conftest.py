"""Shared fakes: a queue-fed LLM and a deterministic embedding that still tells texts apart."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from rag import Engine, Settings
from rag.settings import DEFAULT_CORPUS, StoreSettings

DIM = 256
# Without these, every question would look alike to a bag of words.
STOPWORDS = {"what", "which", "does", "the", "and", "for", "with", "that", "this", "from", "how", "are", "its"}


class FakeLLM:
    """Replies from a queue, in order; records every prompt it was given."""

    name = "fake"

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.calls: list[list[dict[str, str]]] = []
        self.usage: dict[str, int] = {}

    def stream(self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float) -> Iterator[str]:
        self.calls.append(messages)
        if not self.replies:
            raise AssertionError("FakeLLM called more often than replies were queued")
        reply = self.replies.pop(0)
        self.usage = {"prompt_tokens": sum(len(m["content"].split()) for m in messages), "completion_tokens": 0}
        for word in re.findall(r"\S+\s*", reply):
            self.usage["completion_tokens"] += 1
            yield word


class HashEmbedding(BaseEmbedding):
    """Bag of lower-cased content words hashed into 256 dimensions, L2-normalised. Counts what it embeds."""

    _embedded: list[int] = PrivateAttr(default_factory=lambda: [0])

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(model_name="fake-hash-256", **kwargs)

    @property
    def embedded(self) -> int:
        """How many texts were embedded so far."""
        return self._embedded[0]

    def _vector(self, text: str) -> list[float]:
        v = np.zeros(DIM)
        for word in re.findall(r"\w+", text.lower()):
            if len(word) < 3 or word in STOPWORDS:
                continue
            v[int(hashlib.md5(word.encode()).hexdigest(), 16) % DIM] += 1.0
        n = np.linalg.norm(v)
        return (v / n if n else v).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        self._embedded[0] += 1
        return self._vector(text)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", store=StoreSettings(default_corpus=None))


@pytest.fixture
def embed() -> HashEmbedding:
    return HashEmbedding()


@pytest.fixture
def make_engine(tmp_path: Path, embed: HashEmbedding):
    """Build an engine over the default collection with the fakes and the given LLM replies."""

    def build(*replies: str, **groups: Any) -> Engine:
        """``groups``: settings groups, e.g. ``ui=UISettings(concurrency=2)``."""
        groups.setdefault("store", StoreSettings(default_corpus=DEFAULT_CORPUS))
        s = Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", **groups)
        return Engine(s, llm=FakeLLM(*replies), embed_model=embed)

    return build


def llama_server_cmd(port: int, *extra: str, n_ctx: int = 4096) -> list[str]:
    """llama-cpp-python's OpenAI-compatible server on the bundled GGUF, as model "qwen-0.5b"."""
    import sys

    from rag.weights import default_model_path

    model = default_model_path(Settings().cache_dir)
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "qwen-0.5b", *extra,
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", "2"]
