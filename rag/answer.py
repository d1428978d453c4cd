"""The engine: retrieve, choose evidence, prompt the LLM, check citations, decide abstention."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding

from . import prompts
from .citations import Citation, Source, attribute, support
from .corpus import clean_text, split_sentences
from .llm import LLM, Message, make_llm
from .retrieve import Hit, HybridRetriever, content_terms
from .settings import Settings
from .store import IngestReport, ProgressCallback, Store, ingest_files


class QuestionError(ValueError):
    """A question (or history) that cannot be answered as given: empty, too long, malformed."""


@dataclass
class Answer:
    """A finished answer; see the README for the contract."""

    question: str
    text: str
    citations: list[Citation]
    abstained: bool
    sources: list[Hit]
    timings: dict[str, float] = field(default_factory=dict)
    #: The question as retrieval saw it (rewritten when it was a follow-up).
    standalone_question: str = ""
    #: Why the engine abstained: "retrieval", "model" or "unsupported"; empty when it answered.
    abstain_reason: str = ""


# Names in a question: CamelCase (CacheBlend), acronyms (TTFT), or words with digits (GPT-5, A100).
_NAME = re.compile(r"\b(?:[A-Za-z]*[a-z][A-Z]\w*|[A-Z]{2,}\w*|[A-Za-z]+-?\d[\w.]*|\d+[A-Za-z]\w*)(?:[-.]\w+)*")
# Special-token text in an abstract could close the prompt's turn; it never belongs in evidence.
_SPECIAL = re.compile(r"<\|[^|>]{0,40}\|>")


def check_question(question: Any, max_chars: int) -> str:
    """The cleaned question, or :class:`QuestionError` saying what is wrong with it."""
    if not isinstance(question, str):
        raise QuestionError(f"the question must be a string, not {type(question).__name__}")
    if len(question) > max_chars:
        raise QuestionError(f"the question is {len(question)} characters long; the limit is {max_chars}")
    cleaned = clean_text(_SPECIAL.sub(" ", question))
    if not cleaned:
        raise QuestionError("the question is empty")
    return cleaned


def check_history(history: Any) -> list[Message]:
    """The chat history as a list of {"role", "content"} messages, checked."""
    if history is None:
        return []
    if not isinstance(history, (list, tuple)):
        raise QuestionError("history must be a list of {'role': ..., 'content': ...} messages")
    out = []
    for i, m in enumerate(history):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant") or not isinstance(m.get("content"), str):
            raise QuestionError(f"history[{i}] must be {{'role': 'user'|'assistant', 'content': str}}")
        out.append({"role": m["role"], "content": clean_text(_SPECIAL.sub(" ", m["content"]))[:2000]})
    return out


class Engine:
    """Cited question answering over a paper collection.

    The LLM and the embedding model are passed in or built from ``settings``; nothing falls back
    to a hosted default. The LLM is loaded on first use (or by :meth:`warm_up`).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        llm: LLM | None = None,
        embed_model: BaseEmbedding | None = None,
    ) -> None:
        self.settings = settings or Settings()
        if embed_model is None:
            from .embedding import MiniLMEmbedding

            embed_model = MiniLMEmbedding(threads=self.settings.embed_threads)
        self.embed_model = embed_model
        self.store = Store(self.settings, embed_model)
        self.retriever = HybridRetriever(self.store, embed_model, self.settings)
        self._llm = llm
        self._llm_lock = threading.Lock()
        if self.store.count() == 0 and self.settings.default_corpus:
            self.ingest([self.settings.default_corpus])

    # ----- collection --------------------------------------------------------------------
    def ingest(
        self,
        paths: Iterable[Path | str],
        progress: bool | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> list[IngestReport]:
        """Add collection files to the store (see :meth:`Store.ingest`)."""
        return ingest_files(self.store, paths, progress=progress, on_progress=on_progress)

    def retrieve(self, question: str, k: int | None = None) -> list[Hit]:
        """The best ``k`` papers for a question."""
        return self.retriever.retrieve(check_question(question, self.settings.max_question_chars), k)

    # ----- model -------------------------------------------------------------------------
    @property
    def llm(self) -> LLM:
        """The LLM, loaded on first use."""
        with self._llm_lock:
            if self._llm is None:
                self._llm = make_llm(self.settings)
            return self._llm

    def warm_up(self) -> None:
        """Load the model and the keyword index now rather than at the first question."""
        self.llm  # noqa: B018
        self.retriever.keyword_index()

    def _generate(self, messages: list[Message], max_tokens: int) -> Iterator[str]:
        return self.llm.stream(messages, max_tokens=max_tokens, temperature=self.settings.temperature)

    # ----- answering ---------------------------------------------------------------------
    def condense(self, question: str, history: list[Message]) -> str:
        """Rewrite a follow-up into a standalone question; no LLM call without history."""
        if not history or self.settings.history_turns == 0:
            return question
        turns = history[-self.settings.history_turns :]
        lines = "\n".join(f"{m['role'].capitalize()}: {m['content'][:600]}" for m in turns)
        messages = [
            {"role": "system", "content": prompts.CONDENSE_SYSTEM_PROMPT},
            {"role": "user", "content": prompts.CONDENSE_EXAMPLE},
            {"role": "assistant", "content": prompts.CONDENSE_EXAMPLE_ANSWER},
            {"role": "user", "content": prompts.CONDENSE_TEMPLATE.format(history=lines, question=question)},
        ]
        rewritten = "".join(self._generate(messages, max_tokens=60)).strip()
        rewritten = clean_text(rewritten.splitlines()[0] if rewritten else "").strip("\"' ")
        rewritten = re.sub(r"^(rewritten question|question)\s*:\s*", "", rewritten, flags=re.I)
        if len(rewritten) < 5 or rewritten.casefold() == question.casefold():
            # The model did not resolve the reference: search with the previous question as context.
            previous = next((m["content"] for m in reversed(history) if m["role"] == "user"), "")
            return f"{previous} {question}".strip()
        return rewritten

    def select_sources(self, question: str, hits: list[Hit]) -> list[Source]:
        """Number the best hits and keep each one's most relevant sentences."""
        s = self.settings
        top = hits[: s.top_k]
        if top:
            # A source scoring far below the best one costs prompt time and rarely helps.
            top = [h for h in top if h.score >= 0.5 * top[0].score]
        sentence_lists = [split_sentences(h.text) for h in top]
        flat = [sent for sentences in sentence_lists for sent in sentences]
        if not flat:
            return []
        vectors = np.asarray(self.embed_model.get_text_embedding_batch(flat + [question]))
        similarity = vectors[:-1] @ vectors[-1]
        terms = content_terms(question)
        weights = self.retriever.keyword_index()
        sources: list[Source] = []
        offset = 0
        for n, (hit, sentences) in enumerate(zip(top, sentence_lists), 1):
            scores = [similarity[offset + i] + 0.5 * support(terms, sent, weights) for i, sent in enumerate(sentences)]
            offset += len(sentences)
            keep = sorted(np.argsort(scores)[::-1][: s.sentences_per_source])  # in the abstract's order
            text = _SPECIAL.sub(" ", " ".join(sentences[i] for i in keep))
            sources.append(Source(n, hit.paper_id, hit.title, text, hit.text, hit.url))
        return sources

    def relevant(self, question: str, hits: list[Hit]) -> bool:
        """Whether retrieval found anything worth asking the model about."""
        if not hits:
            return False
        evidence = " ".join(f"{h.title} {h.text}" for h in hits).casefold()
        if any(name.casefold() not in evidence for name in _NAME.findall(question)):
            return False  # the question names something (GPT-5, PagedAttention) no retrieved paper mentions
        if max((h.similarity or 0.0) for h in hits) >= self.settings.min_similarity:
            return True
        terms = content_terms(question)
        weights = self.retriever.keyword_index()
        for h in hits:
            text = f"{h.title} {h.text}"
            # One shared rare word ("capital" in "capitalizes") is not a topic match.
            if support(terms, text, weights) >= 0.5 and len(terms & content_terms(text)) >= 2:
                return True
        return False

    def ask_stream(self, question: str, history: list[Message] | None = None) -> Iterator[str | Answer]:
        """Yield the answer's text deltas as the model writes them, then the final :class:`Answer`.

        The final answer's text may differ from the streamed text: markers are checked and
        completed, and a refusal becomes the abstention message.
        """
        start = time.perf_counter()
        question = check_question(question, self.settings.max_question_chars)
        history = check_history(history)
        timings: dict[str, float] = {"prompt_tokens": 0, "completion_tokens": 0}
        standalone = self.condense(question, history)
        timings["rewrite_s"] = time.perf_counter() - start
        t = time.perf_counter()
        hits = self.retriever.retrieve(standalone, max(self.settings.retrieve_k, self.settings.top_k))
        timings["retrieve_s"] = time.perf_counter() - t

        def finish(text: str, citations: list[Citation], reason: str = "") -> Answer:
            timings["total_s"] = time.perf_counter() - start
            timings.setdefault("first_token_s", timings["total_s"])
            return Answer(question, text, citations, bool(reason), hits, timings, standalone, reason)

        if not self.relevant(standalone, hits):
            yield prompts.ABSTAIN_TEXT
            yield finish(prompts.ABSTAIN_TEXT, [], "retrieval")
            return
        sources = self.select_sources(standalone, hits)
        evidence = "\n".join(prompts.SOURCE_TEMPLATE.format(n=s.n, title=s.title, text=s.text) for s in sources)
        messages = [
            {"role": "system", "content": prompts.SYSTEM_PROMPT},
            {"role": "user", "content": prompts.EXAMPLE_QUESTION},
            {"role": "assistant", "content": prompts.EXAMPLE_ANSWER},
            {"role": "user", "content": prompts.QUESTION_TEMPLATE.format(sources=evidence, question=standalone)},
        ]
        raw = ""
        emitted = 0
        for delta in self._generate(messages, self.settings.max_tokens):
            raw += delta
            # Hold text back while it could still be the refusal sentinel.
            head = raw.lstrip().upper()
            if prompts.REFUSAL_SENTINEL.startswith(head[: len(prompts.REFUSAL_SENTINEL)]):
                continue
            if emitted == 0:
                timings["first_token_s"] = time.perf_counter() - start
            yield raw[emitted:]
            emitted = len(raw)
        timings.update(self.llm.usage)
        if prompts.REFUSAL_SENTINEL in raw.upper() or not raw.strip():
            yield finish(prompts.ABSTAIN_TEXT, [], "model")
            return
        text, citations = attribute(raw, sources, self.retriever.keyword_index())
        if not citations:
            yield finish(prompts.ABSTAIN_TEXT, [], "unsupported")
            return
        yield finish(text, citations)

    def ask(self, question: str, history: list[Message] | None = None) -> Answer:
        """Answer a question (see :meth:`ask_stream`)."""
        for item in self.ask_stream(question, history):
            if isinstance(item, Answer):
                return item
        raise AssertionError("ask_stream ended without an answer")
