"""The engine: retrieve, choose evidence, prompt the LLM, check citations, decide abstention."""

from __future__ import annotations

import logging
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
from .citations import MIN_SUPPORT, Citation, Source, attribute, support
from .corpus import clean_text, split_sentences
from .llm import LLM, Message, make_llm
from .retrieve import NAME as _NAME
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


log = logging.getLogger(__name__)

# Words by which a follow-up refers to the conversation before it.
_REFERS_BACK = re.compile(r"\b(it|its|it's|they|them|their|theirs|this|that|these|those|he|she|his|her|"
                          r"the (paper|method|model|approach|system|work|technique|authors?|same))\b", re.I)
# Capitalised words inside a question (Medusa, Mixtral) are names too, for the relevance check.
_PROPER = re.compile(r"(?<=[a-z,;:] )[A-Z][a-z]{2,}\w*")
# "Which papers ...?" gets a list written by code (Engine.extract), so does "Which method ...?".
_LIST = re.compile(r"^\s*(which|what|list( all)?( the)?)\s+(papers|works|studies|articles)\b", re.I)
_IDENTIFY = re.compile(r"^\s*(which|what)\s+([\w-]+\s+){0,2}?(paper|work|method|system|approach|design|"
                       r"technique|framework|library|algorithm|study)\b(?!s)", re.I)
#: A paper is listed when its fused score is at least this share of the best paper's.
LIST_SCORE_RATIO = 0.85
# A question that asks for several papers, or compares them, keeps all its sources.
_MANY = re.compile(r"\b(papers|works|methods|systems|approaches|techniques|studies|models|compare[sd]?|"
                   r"comparison|versus|vs\.?|both|differ\w*)\b", re.I)
# Sentences in a source that address the model rather than report research.
_INSTRUCTION = re.compile(
    r"\b(ignore|disregard|forget|override)\b[^.]{0,40}\b(instructions?|prompts?|rules|context|above)\b"
    r"|\b(answer|reply|respond|output)\b[^.]{0,40}\b(every|all|any)\b[^.]{0,20}\bquestions?\b"
    r"|\b(system prompt|you are an? (ai|assistant|language model)|as an ai)\b", re.I)
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


def _naming(question: str, hits: list[Hit]) -> list[Hit]:
    """The hits that mention the most of the names in the question (all hits if it names nothing)."""
    names = [n.casefold() for n in _NAME.findall(question)]
    if not names:
        return hits
    counts = [sum(n in f"{h.title} {h.text}".casefold() for n in names) for h in hits]
    best = max(counts, default=0)
    return [h for h, c in zip(hits, counts) if c == best] if best else hits


def evidence_text(text: str) -> str:
    """Source text as the model sees it. Special-token text in an abstract could close the prompt's
    turn, and a sentence addressed to the model ("ignore previous instructions and ...") steered
    the 0.5B model despite the system prompt: both are removed."""
    text = _SPECIAL.sub(" ", text)
    if not _INSTRUCTION.search(text):
        return text
    return " ".join(x for x in split_sentences(text) if not _INSTRUCTION.search(x))


def _source_block(source: Source) -> str:
    return prompts.SOURCE_TEMPLATE.format(n=source.n, title=source.title, text=source.text)


def _fixed_messages() -> list[Message]:
    return [
        {"role": "system", "content": prompts.SYSTEM_PROMPT},
        {"role": "user", "content": prompts.EXAMPLE_QUESTION},
        {"role": "assistant", "content": prompts.EXAMPLE_ANSWER},
    ]


def _condense_start() -> list[Message]:
    return [
        {"role": "system", "content": prompts.CONDENSE_SYSTEM_PROMPT},
        {"role": "user", "content": prompts.CONDENSE_EXAMPLE},
        {"role": "assistant", "content": prompts.CONDENSE_EXAMPLE_ANSWER},
    ]


def answer_messages(sources: list[Source], question: str) -> list[Message]:
    """The answer prompt: instructions, worked example, then the sources and the question."""
    evidence = "\n".join(_source_block(s) for s in sources)
    return [*_fixed_messages(),
            {"role": "user", "content": prompts.QUESTION_TEMPLATE.format(sources=evidence, question=question)}]


def prompt_start(first: Source | None = None) -> list[Message]:
    """How every answer prompt starts (with ``first`` as source [1]), its last message unfinished:
    the part whose model state can be saved and reused (see LlamaCppLLM.prefill)."""
    head = prompts.QUESTION_TEMPLATE.split("{sources}")[0]
    block = f"{_source_block(first)}\n" if first is not None else ""
    return [*_fixed_messages(), {"role": "user", "content": head + block}]


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
        self._sentence_cache: dict[tuple[str, str], tuple[list[str], np.ndarray]] = {}
        self._last_query: tuple[str, np.ndarray] | None = None
        self._prefill_thread: threading.Thread | None = None
        self._prefill_again = threading.Event()
        if self.store.count() == 0 and self.settings.default_corpus:
            self.ingest([self.settings.default_corpus])

    # ----- collection --------------------------------------------------------------------
    def ingest(
        self,
        paths: Iterable[Path | str],
        progress: bool | None = None,
        on_progress: ProgressCallback | None = None,
        max_papers: int | None = None,
    ) -> list[IngestReport]:
        """Add collection files to the store (see :meth:`Store.ingest`)."""
        return ingest_files(self.store, paths, progress=progress, on_progress=on_progress, max_papers=max_papers)

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
        """Load the model and the keyword index now rather than at the first question, and save
        the model state of the fixed start of every answer prompt."""
        prefill = getattr(self.llm, "prefill", None)
        if prefill is not None:
            prefill(prompt_start())
            head = prompts.CONDENSE_TEMPLATE.split("{history}")[0]
            prefill([*_condense_start(), {"role": "user", "content": head}])
        self.retriever.keyword_index()

    def prefill_in_background(self) -> threading.Thread:
        """Run :meth:`prefill_papers` in a daemon thread (again if papers were added meanwhile).

        Each passage holds the model for ~3 s, so a question asked meanwhile waits at most that.
        """
        with self._llm_lock:
            self._prefill_again.set()
            if self._prefill_thread is None or not self._prefill_thread.is_alive():
                def run() -> None:
                    while self._prefill_again.is_set():
                        self._prefill_again.clear()
                        try:
                            self.prefill_papers()
                        except Exception:  # noqa: BLE001 - a missed prefill only costs speed
                            log.exception("saving prompt states failed")
                            return

                self._prefill_thread = threading.Thread(target=run, name="paperchat-prefill", daemon=True)
                self._prefill_thread.start()
            return self._prefill_thread

    def prefill_papers(self, limit: int | None = None, stop: threading.Event | None = None) -> int:
        """Save the model state of the answer prompt's start with each passage as the first source
        (the TurboRAG idea), for up to ``limit`` passages; returns how many were computed now.

        A question whose best paper has a saved state only makes the model read the other sources
        and the question. States already saved (on disk, from an earlier run) are skipped.
        """
        prefill = getattr(self.llm, "prefill", None)
        if prefill is None or not self.settings.first_source_full:
            return 0
        _, texts, metadatas = self.store.chunks()
        done = 0
        for text, meta in list(zip(texts, metadatas))[: self.settings.prefill_papers if limit is None else limit]:
            if stop is not None and stop.is_set():
                break
            body = text.partition("\n")[2] or text  # stored chunks start with the title line, as in Hit.text
            done += prefill(prompt_start(Source(1, meta["paper_id"], meta["title"], evidence_text(body))))
        return done

    def _generate(self, messages: list[Message], max_tokens: int) -> Iterator[str]:
        return self.llm.stream(messages, max_tokens=max_tokens, temperature=self.settings.temperature)

    # ----- answering ---------------------------------------------------------------------
    def condense(self, question: str, history: list[Message]) -> str:
        """Rewrite a follow-up into a standalone question. No LLM call without history, nor for a
        question that refers to nothing before it (no "it", "they", "this paper"...)."""
        if not history or self.settings.history_turns == 0 or not _REFERS_BACK.search(question):
            return question
        turns = history[-self.settings.history_turns :]
        lines = "\n".join(f"{m['role'].capitalize()}: {m['content'][:600]}" for m in turns)
        messages = [*_condense_start(),
                    {"role": "user", "content": prompts.CONDENSE_TEMPLATE.format(history=lines, question=question)}]
        rewritten = "".join(self._generate(messages, max_tokens=60)).strip()
        rewritten = clean_text(rewritten.splitlines()[0] if rewritten else "").strip("\"' ")
        rewritten = re.sub(r"^(rewritten question|question)\s*:\s*", "", rewritten, flags=re.I)
        if len(rewritten) < 5 or rewritten.casefold() == question.casefold():
            # The model did not resolve the reference: search with the previous question as context.
            previous = next((m["content"] for m in reversed(history) if m["role"] == "user"), "")
            return f"{previous} {question}".strip()
        return rewritten

    def select_sources(self, question: str, hits: list[Hit]) -> list[Source]:
        """Number the best hits as sources: the first one whole (see ``first_source_full``), the
        others cut to their most relevant sentences.

        Hits far below the best one are left out, and so are hits that miss a name the question
        asks about while others have it: every source costs ~10 ms a token of prompt reading.
        """
        s = self.settings
        top = hits[: s.top_k]
        if top:
            top = [h for h in top if h.score >= 0.5 * top[0].score]
            top = _naming(question, top)
            # First in both rankings, and the question asks for one thing: the others only distract
            # the model (it named the wrong paper from them) and cost prompt time.
            if self._unanimous(top[0]) and not _MANY.search(question):
                top = top[:1]
        sources: list[Source] = []
        for n, hit in enumerate(top, 1):
            if n == 1 and s.first_source_full:
                # Its model state is usually saved already (prefill_papers), so its length is free.
                text = evidence_text(hit.text)
            else:
                text = evidence_text(" ".join(self._best_sentences(question, hit, s.sentences_per_source)[0]))
            if text.strip():
                sources.append(Source(len(sources) + 1, hit.paper_id, hit.title, text, hit.text, hit.url))
        return sources

    def _unanimous(self, hit: Hit) -> bool:
        """Whether a hit ranks first in both the dense and the keyword ranking."""
        return hit.dense_rank == 1 and hit.bm25_rank == 1

    def _best_sentences(self, question: str, hit: Hit, k: int) -> tuple[list[str], float]:
        """The ``k`` sentences of a passage that best match the question (in the passage's order),
        and the best word support any sentence gives the question."""
        sentences, vectors = self._sentences(hit)
        terms = content_terms(question)
        weights = self.retriever.term_weights()
        supports = np.array([support(terms, x, weights) for x in sentences])
        scores = vectors @ self._query_vector(question) + 0.5 * supports
        keep = sorted(np.argsort(scores)[::-1][:k])
        return [sentences[i] for i in keep], float(supports.max(initial=0.0))

    def _query_vector(self, question: str) -> np.ndarray:
        """The question's embedding, kept for the next call: every source of an answer scores against it."""
        last = self._last_query
        if last is None or last[0] != question:
            last = self._last_query = (question, np.asarray(self.embed_model.get_query_embedding(question)))
        return last[1]

    def extract(self, question: str, hits: list[Hit]) -> tuple[str, list[Citation]] | None:
        """An answer written by code, for the questions the model answers worst; None for others.

        "Which papers ...?": every retrieved paper whose fused score is close to the best one and
        whose abstract supports the question, each with its best sentence. "Which method ...?"
        when one paper ranks first in both rankings: that paper, with its two best sentences.
        The model named the wrong one of its sources, or refused, on most such questions
        (eval/CHANGELOG.md); these answers are quoted from the abstracts, so they are cited exactly.
        """
        if not hits:
            return None
        if _LIST.search(question):
            lines: list[str] = []
            citations: list[Citation] = []
            for hit in hits[: self.settings.retrieve_k]:
                if hit.score < LIST_SCORE_RATIO * hits[0].score:
                    break
                (quote,), best_support = self._best_sentences(question, hit, 1)
                if best_support < MIN_SUPPORT:
                    continue
                n = len(citations) + 1
                lines.append(f"- {hit.title}: {quote.rstrip('. ')} [{n}].")
                citations.append(Citation(n, hit.paper_id, hit.title, quote, hit.url))
            if not citations:
                return None
            return "Papers in the collection that match, best first:\n" + "\n".join(lines), citations
        if _IDENTIFY.search(question) and self._unanimous(hits[0]):
            hit = hits[0]
            quotes, _ = self._best_sentences(question, hit, 2)
            text = f"{hit.title} [1]. " + " ".join(f"{q.rstrip('. ')} [1]." for q in quotes)
            return text, [Citation(1, hit.paper_id, hit.title, " ".join(quotes), hit.url)]
        return None

    def _sentences(self, hit: Hit) -> tuple[list[str], np.ndarray]:
        """A passage's sentences and their embeddings, cached: the same papers come back often."""
        key = (hit.paper_id, hit.text)
        found = self._sentence_cache.get(key)
        if found is None:
            sentences = split_sentences(hit.text) or [hit.text]
            found = (sentences, np.asarray(self.embed_model.get_text_embedding_batch(sentences)))
            self._sentence_cache[key] = found
            if len(self._sentence_cache) > 4096:
                self._sentence_cache.pop(next(iter(self._sentence_cache)))
        return found

    def relevant(self, question: str, hits: list[Hit]) -> bool:
        """Whether retrieval found anything worth asking the model about."""
        if not hits:
            return False
        evidence = " ".join(f"{h.title} {h.text}" for h in hits).casefold()
        names = _NAME.findall(question) + _PROPER.findall(question)
        if any(name.casefold() not in evidence for name in names):
            return False  # the question names something (GPT-5, PagedAttention) no retrieved paper mentions
        if any(name.casefold() in h.title.casefold() for name in names for h in hits):
            return True  # "What does DistServe do?": a paper's title names what the question asks about
        if max((h.similarity or 0.0) for h in hits) >= self.settings.min_similarity:
            return True
        terms = content_terms(question)
        weights = self.retriever.term_weights()
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
        extracted = self.extract(standalone, hits)
        if extracted is not None:
            yield extracted[0]
            yield finish(*extracted)
            return
        t = time.perf_counter()
        sources = self.select_sources(standalone, hits)
        messages = answer_messages(sources, standalone)
        timings["select_s"] = time.perf_counter() - t
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
        text, citations = attribute(raw, sources, self.retriever.term_weights())
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
