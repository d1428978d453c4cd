"""paperchat: cited answers over a collection of paper abstracts.

>>> from rag import ask
>>> ask("What prefill speed does mllm-NPU reach?").text

The module-level functions share one engine built lazily from :class:`Settings` (environment
variables with the ``PAPERCHAT_`` prefix). Build an :class:`Engine` yourself for other settings.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from .answer import Answer, Engine, QuestionError
from .citations import Citation
from .corpus import CorpusError, Paper, load_papers
from .embedding import EmbeddingError, EmbeddingModelError
from .ingest import IngestReport
from .llm import LLMError, Message
from .prompts import ABSTAIN_TEXT, REFUSAL_SENTINEL
from .retrieve import Hit
from .settings import Settings
from .store import StoreError

__all__ = [
    "ABSTAIN_TEXT", "REFUSAL_SENTINEL", "Answer", "Citation", "CorpusError", "EmbeddingError",
    "EmbeddingModelError", "Engine", "Hit", "IngestReport",
    "LLMError", "Paper", "QuestionError", "Settings", "StoreError", "ask", "ask_stream", "default_engine",
    "ingest", "load_papers", "retrieve",
]

_default: Engine | None = None
_default_lock = threading.Lock()


def default_engine() -> Engine:
    """The shared engine, built from the environment on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Engine(Settings())
        return _default


def retrieve(question: str, k: int | None = None) -> list[Hit]:
    """The ``k`` papers best matching ``question`` (hybrid dense + BM25), best first."""
    return default_engine().retrieve(question, k)


def ask(question: str, history: list[Message] | None = None) -> Answer:
    """Answer ``question`` from the collection, with citations, or abstain."""
    return default_engine().ask(question, history)


def ask_stream(question: str, history: list[Message] | None = None) -> Iterator[str | Answer]:
    """Text deltas of the answer as they are generated, then the final :class:`Answer`."""
    return default_engine().ask_stream(question, history)


def ingest(*paths: str | Path, progress: bool | None = None) -> list[IngestReport]:
    """Add collection files (JSONL or title/abstract text) to the store."""
    return default_engine().ingest(paths, progress=progress)
