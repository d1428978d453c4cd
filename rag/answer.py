"""The engine: retrieve, choose evidence, prompt the LLM, check citations, decide abstention."""

from __future__ import annotations

import inspect
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding

from . import grounding, prompts
from .citations import Citation, Source, attribute, support
from .corpus import clean_text, split_sentences
from .grounding import Scored
from .intent import NAME as _NAME
from .intent import (intent, language, mentions, name_forms, paper_names, question_names, sides, spell_out, squash,
                     word_grams)
from .llm import LLM, LLMError, Message, make_llm
from .retrieve import Hit, HybridRetriever, content_terms
from .settings import Settings
from .store import IngestReport, ProgressCallback, Store, ingest_files
from .tuning import ELLIPSIS_TERMS, LIST_CANDIDATES, LIST_COVERAGE, LIST_SIMILARITY, RANK_PENALTY

if TYPE_CHECKING:
    from .llamaindex import LlamaIndexLLM, PaperChatEngine, PaperQueryEngine, PaperRetriever


@dataclass
class Plan:
    """How a question will be answered (see :meth:`Engine.plan`)."""

    kind: str  # "retrieval" / "near-miss" (abstain), "list" / "compare" (written by code), "fact"
    ranked: list[tuple[Scored, Hit]] = field(default_factory=list)  # every candidate sentence, best first
    answering: list[tuple[Scored, Hit]] = field(default_factory=list)  # those that answer the question
    candidates: list[Hit] = field(default_factory=list)
    written: tuple[str, list[Citation]] | None = None


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
    #: Why the engine abstained: "retrieval" (nothing relevant retrieved, or a name no paper
    #: mentions) or "near-miss" (the paper is there, the asked detail is not); empty when it answered.
    abstain_reason: str = ""
    #: How the answer was written: "model", "quote" (a source sentence, when the model's answer
    #: failed the checks), "list", "compare" or "identify"; empty for abstentions.
    written_by: str = ""
    #: The question's language ("en", "de", ...); non-English questions are answered in English.
    language: str = "en"
    #: The source sentence judged to answer best, with its scores (None for lists, comparisons
    #: and abstentions before evidence was ranked).
    evidence: Scored | None = None

    def citation_dicts(self) -> list[dict[str, Any]]:
        """The citations as plain dicts (n, paper_id, title, url, quote), for JSON and llama-index."""
        return [{"n": c.n, "paper_id": c.paper_id, "title": c.title, "url": c.url, "quote": c.quote}
                for c in self.citations]


@dataclass
class Turn:
    """What a conversation is about after one question: the question in English (as retrieval
    and the checks see it), the papers it is about, and what it asks for."""

    question: str
    subject: list[Hit]
    hits: list[Hit]
    followup: bool = False
    focus_question: str = ""  # whose words say what is asked (an ellipsis borrows the previous one's)
    wants: str = "other"
    kind: str = "fact"  # "fact", "list" or "compare" (see intent.intent)


log = logging.getLogger(__name__)

# A question of its own starts with a question word; a fragment ("decoding?") does not.
_QUESTION_WORD = re.compile(r"^\W*(what|which|how|why|who|whose|where|when|is|are|does|do|did|can|could|any|"
                            r"tell|explain|describe|list|show|give)\b", re.I)
# A question that opens like this continues the conversation ("and for decoding?", "what about
# memory?"); chosen on the dev split's follow-ups, with _REFERS_BACK below.
_CONTINUES = re.compile(r"^\W*(and|also|so|but|then|ok|what about|how about|same|vs\.?|versus|compared)\b", re.I)
# Words by which a follow-up refers to the conversation before it.
_REFERS_BACK = re.compile(r"\b(it|its|it's|they|them|their|theirs|this|that|these|those|he|she|his|her|"
                          r"the (paper|method|model|approach|system|work|technique|authors?|same))\b", re.I)
# "Which method ...?" is answered by code with the paper whose sentence answers best. Narrower
# than intent's "which" (not "which model", which may ask for an LLM the paper used).
_IDENTIFY = re.compile(r"^\s*(which|what)\s+([\w-]+\s+){0,2}?(paper|work|method|system|approach|design|"
                       r"technique|framework|library|algorithm|study)\b(?!s)", re.I)
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
            from .embedding import make_embedding

            embed_model = make_embedding(self.settings)
        self.embed_model = embed_model
        self.store = Store(self.settings, embed_model)
        self.retriever = HybridRetriever(self.store, embed_model, self.settings)
        self._llm = llm
        self._llm_lock = threading.Lock()
        self._sentence_cache: dict[tuple[str, str], tuple[list[str], np.ndarray]] = {}
        self._translations: dict[str, str] = {}
        self._cache_lock = threading.Lock()  # the page's users share one engine
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

    # ----- llama-index objects (rag/llamaindex.py) -----------------------------------------
    def as_retriever(self, similarity_top_k: int | None = None) -> PaperRetriever:
        """This engine's retrieval as a llama-index ``BaseRetriever`` returning ``NodeWithScore``."""
        from .llamaindex import PaperRetriever

        return PaperRetriever(self, similarity_top_k)

    def as_query_engine(self) -> PaperQueryEngine:
        """A llama-index query engine answering with :meth:`ask` (citations in ``metadata``)."""
        from .llamaindex import PaperQueryEngine

        return PaperQueryEngine(self)

    def as_chat_engine(self) -> PaperChatEngine:
        """A llama-index chat engine (``chat``, ``stream_chat``) that reads follow-ups in context."""
        from .llamaindex import PaperChatEngine

        return PaperChatEngine(self)

    def as_llama_index_llm(self) -> LlamaIndexLLM:
        """This engine's LLM behind llama-index's LLM interface."""
        from .llamaindex import LlamaIndexLLM

        return LlamaIndexLLM(self.llm, context_window=self.settings.n_ctx, num_output=self.settings.max_tokens)

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

    def _generate(self, messages: list[Message], max_tokens: int, usage: dict[str, int] | None = None) -> Iterator[str]:
        """The model's reply; ``usage`` gets this call's token counts. Our backends fill it per call
        (the page answers several questions at once, so a backend's ``usage`` attribute may already
        be another answer's); for others it is their ``usage`` attribute once the reply ends."""
        llm, usage = self.llm, usage if usage is not None else {}
        if "usage" in inspect.signature(llm.stream).parameters:
            yield from llm.stream(messages, max_tokens=max_tokens, temperature=self.settings.temperature, usage=usage)
        else:
            yield from llm.stream(messages, max_tokens=max_tokens, temperature=self.settings.temperature)
            usage.update(getattr(llm, "usage", {}))

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

    def _sentences(self, hit: Hit) -> tuple[list[str], np.ndarray]:
        """A passage's sentences and their embeddings, cached: the same papers come back often."""
        key = (hit.paper_id, hit.text)
        found = self._sentence_cache.get(key)
        if found is None:
            sentences = split_sentences(hit.text) or [hit.text]
            found = (sentences, np.asarray(self.embed_model.get_text_embedding_batch(sentences)))
            with self._cache_lock:  # answers run side by side on the page
                self._sentence_cache[key] = found
                if len(self._sentence_cache) > 4096:
                    self._sentence_cache.pop(next(iter(self._sentence_cache)), None)
        return found

    def relevant(self, question: str, hits: list[Hit], strict_names: bool = True) -> bool:
        """Whether retrieval found anything worth answering from. ``strict_names`` False (a
        translated question) checks only names by form (CamelCase, acronyms, digits): a left-over
        capitalised German noun is not a name."""
        if not hits:
            return False
        if self._unknown_name(question, hits, strict_names):
            return False  # the question names something (GPT-5, PagedAttention) no retrieved paper mentions
        if any(h.named for h in hits):
            return True  # "What does DistServe do?": the question names a retrieved paper
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

    @staticmethod
    def _unknown_name(question: str, hits: list[Hit], strict_names: bool = True) -> bool:
        """Whether the question uses a name (of four or more letters: a user's own short acronym,
        "ODE", may be spelt out in the abstract) that none of ``hits`` mentions."""
        names = question_names(question) if strict_names else name_forms(question)
        names = [n for n in names if len(squash(n)) >= 4]
        if not names:
            return False
        text = " ".join(f"{h.title} {h.text}" for h in hits)
        evidence, squashed = word_grams(text), squash(text)

        def found(name: str) -> bool:
            # A long name with digits may sit inside a longer one ("Llama-3.1-70B-Instruct").
            if len(squash(name)) >= 6 and re.search(r"\d", name) and squash(name) in squashed:
                return True
            return mentions(name, evidence) or mentions(name.rstrip("s"), evidence)

        return not all(found(n) for n in names)

    # ----- the conversation ------------------------------------------------------------------
    def english(self, question: str, translate: bool = True) -> tuple[str, str]:
        """The question in English, and its language. Another language is translated by the model
        (names and figures kept as written); translations are cached. With ``translate`` False,
        or when the model fails, a question not translated before is used as written."""
        lang = language(question)
        if lang == "en":
            return question, lang
        with self._cache_lock:
            found = self._translations.get(question)
        if found is None and translate:
            try:
                found = self._translate(question)
            except LLMError as e:  # retrieval, the gate and quotes still work on the original words
                log.warning("translating the question failed, using it as written: %s", e)
        return found or question, lang

    def _translate(self, question: str) -> str:
        messages = [{"role": "system", "content": prompts.TRANSLATE_SYSTEM_PROMPT},
                    {"role": "user", "content": prompts.TRANSLATE_EXAMPLE},
                    {"role": "assistant", "content": prompts.TRANSLATE_EXAMPLE_ANSWER},
                    {"role": "user", "content": question}]
        out = "".join(self._generate(messages, max_tokens=80)).strip()
        found = clean_text(out.splitlines()[0] if out else "").strip("\"' ")
        if len(found) < 5:
            found = question
        # Names by their form only (CamelCase, acronyms, digits): in German every noun is capitalised.
        original = word_grams(question)
        for name in name_forms(found):  # one the original does not hold was made up
            if not mentions(name, original):
                found = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", " ", found)
        # A name the translation lost would lose the paper: keep every name of the original.
        lost = [n for n in name_forms(question) if n.casefold() not in found.casefold()]
        found = clean_text(" ".join([found, *lost]))
        with self._cache_lock:
            self._translations[question] = found
            if len(self._translations) > 1024:
                self._translations.pop(next(iter(self._translations)), None)
        return found

    def conversation(self, history: list[Message]) -> Turn | None:
        """What the conversation is about before the new question: its user questions replayed
        through :meth:`turn` (retrieval only, ~10 ms each; translations are cached)."""
        previous: Turn | None = None
        for m in history[-self.settings.history_turns :] if self.settings.history_turns else []:
            if m["role"] == "user":  # earlier questions were translated when asked (cached)
                previous = self.turn(spell_out(self.english(m["content"], translate=False)[0]), previous)
        return previous

    def turn(self, question: str, previous: Turn | None) -> Turn:
        """Resolve an English question against the conversation so far: a follow-up that names
        no paper of its own ("and for decoding?", "does it beat full fine-tuning?") stays with
        the previous question's papers, and an ellipsis keeps what the previous one asked for."""
        k = max(self.settings.retrieve_k, self.settings.top_k)
        hits = self.retriever.retrieve(question, k)
        named = [h for h in hits if h.named]
        focus = grounding.focus_terms(question)
        if previous is not None and previous.subject and not named:
            # "and MSG on bert-large?": a name the conversation's paper does not use, but another does.
            own = word_grams(" ".join(f"{h.title} {h.text}" for h in previous.subject))
            known = self.retriever.term_weights().known
            for name in question_names(question):
                if not mentions(name, own, known):
                    named = [h for h in hits if mentions(name, word_grams(f"{h.title} {h.text}"), known)][:1]
                    if named:
                        named[0].named = True
                        break
        wanted = intent(question, sum(h.named for h in hits))
        # A short question continues the conversation only if it is not a topic of its own: the
        # conversation's paper is among its hits, or it finds nothing relevant by itself
        # ("what is speculative decoding?" after a question about CacheBlend starts anew).
        ids = {h.paper_id for h in previous.subject} if previous is not None else set()
        short = len(focus) <= ELLIPSIS_TERMS and (
            not _QUESTION_WORD.search(question)  # a fragment: "decoding?", "on yi-9b?"
            or any(h.paper_id in ids for h in hits) or not self.relevant(question, hits))
        if previous is not None and previous.subject and not named and wanted.kind == "fact" and (
                _CONTINUES.search(question) or _REFERS_BACK.search(question) or short):
            hits = previous.subject + [h for h in hits if h.paper_id not in ids]
            elliptic = len(focus) <= ELLIPSIS_TERMS and not _REFERS_BACK.search(question)
            wants = previous.wants if wanted.wants == "other" and elliptic else wanted.wants
            aim = f"{question} {previous.focus_question}" if elliptic else question
            return Turn(question, previous.subject, hits, True, aim, wants)
        subject = named or hits[:1]
        return Turn(question, subject, hits, False, question, wanted.wants, wanted.kind)

    # ----- evidence ------------------------------------------------------------------------
    def rank_sentences(self, aim: str, hits: list[Hit], wants: str, others: str = "") -> list[tuple[Scored, Hit]]:
        """Every sentence of ``hits`` scored for how well it answers ``aim``, best first; a later
        hit's sentences lose RANK_PENALTY per rank (1.0: retrieval's order decides the paper).
        Words of the hit's title, and of ``others`` (the other papers of a comparison), are not
        what is asked."""
        query = self._query_vector(aim)
        weights = self.retriever.term_weights()
        # A misspelt word ("thruput", "cachblend") is read as the collection spells it, before the
        # paper's own name is taken out of what is asked.
        asked = frozenset(weights.correct_terms(content_terms(aim)))
        out: list[tuple[float, Scored, Hit]] = []
        for rank, hit in enumerate(hits):
            sentences, vectors = self._sentences(hit)
            focus = grounding.focus_terms(aim, f"{hit.title} {others}", asked)
            sims = vectors @ query
            for sentence, sim in zip(sentences, sims):
                scored = Scored(sentence, grounding.coverage(focus, sentence, weights), float(sim),
                                bool(grounding.figures(sentence)), grounding.figure_coverage(focus, sentence, weights))
                out.append((scored.score(wants) - RANK_PENALTY * rank, scored, hit))
        out.sort(key=lambda x: -x[0])
        return [(scored, hit) for _, scored, hit in out]

    def _candidates(self, turn: Turn) -> list[Hit]:
        """The papers a one-fact answer may come from: the conversation's or the named ones, else
        the best hits within half the best score."""
        if turn.followup or any(h.named for h in turn.subject):
            return turn.subject
        top = turn.hits[: self.settings.top_k]
        return [h for h in top if h.score >= 0.5 * top[0].score] if top else []

    # ----- answers written by code ---------------------------------------------------------
    def list_papers(self, hits: list[Hit], question: str) -> tuple[str, list[Citation]] | None:
        """"Any papers on X?": every one of ``hits`` whose best sentence is about X, with it."""
        lines: list[str] = []
        citations: list[Citation] = []
        for rank, hit in enumerate(hits):
            (best, _), *_ = self.rank_sentences(question, [hit], "other")
            if rank > 0 and not (best.coverage >= LIST_COVERAGE or best.similarity >= LIST_SIMILARITY):
                continue
            n = len(citations) + 1
            lines.append(f"- {hit.title}: {best.text.rstrip('. ')} [{n}].")
            citations.append(Citation(n, hit.paper_id, hit.title, best.text, hit.url))
        if not citations:
            return None
        return "Papers in the collection on this, best match first:\n" + "\n".join(lines), citations

    def compare(self, turn: Turn) -> tuple[str, list[Citation]] | None:
        """"A vs B": one row per named paper, each with its sentence that best answers the
        question, quoted and cited."""
        papers = [h for h in turn.hits if h.named]
        if len(papers) < 2:
            # Each side is the paper it names, else, when it describes one in three or more words
            # ("one-epoch training"), the paper its words retrieve first; a short side that names
            # no paper ("speedup vs vLLM") is a baseline.
            papers = []
            for side in sides(turn.question):
                found = self.retriever.retrieve(side, 3)
                best = next((h for h in found if h.named), None)
                if best is None and len(content_terms(side)) >= 3 and found:
                    best = found[0]
                if best is not None and best.paper_id not in {p.paper_id for p in papers}:
                    papers.append(best)
        if len(papers) < 2:
            return None
        rows: list[str] = []
        citations: list[Citation] = []
        others = " ".join(h.title for h in papers[:4])
        for hit in papers[:4]:
            # Rows are lenient (as for a described paper): a comparison's aspect is often broad
            # ("how does each ...", "which is faster"), so each paper's best-fitting sentence is shown.
            found = [sc for sc, _ in self.rank_sentences(turn.focus_question, [hit], turn.wants, others)
                     if grounding.answers(sc, turn.wants, anchored=False)]
            if not found:
                rows.append(f"- {_short_name(hit.title)}: its abstract does not state this.")
                continue
            n = len(citations) + 1
            rows.append(f"- {_short_name(hit.title)} [{n}]: {found[0].text}")
            citations.append(Citation(n, hit.paper_id, hit.title, found[0].text, hit.url))
        if not citations:
            return None
        return "Side by side, from each paper's abstract:\n" + "\n".join(rows), citations

    def plan(self, english: str, turn: Turn, lang: str = "en") -> Plan:
        """Decide how to answer, before any model call: abstain (nothing relevant retrieved, or a
        near miss), a list or comparison written by code, or one fact from the sentences that
        answer it."""
        if turn.followup:
            # "and Medusa?": a name neither the conversation's paper nor any hit mentions.
            if self._unknown_name(english, turn.hits, strict_names=lang == "en"):
                return Plan("retrieval")
        elif not self.relevant(english, turn.hits, strict_names=lang == "en"):
            return Plan("retrieval")
        if turn.kind == "compare" and (written := self.compare(turn)):
            return Plan("compare", written=written)
        if turn.kind == "list":
            hits = self.retriever.retrieve(turn.question, LIST_CANDIDATES)
            if written := self.list_papers(hits, turn.question):
                return Plan("list", candidates=hits, written=written)
        candidates = self._candidates(turn)
        ranked = self.rank_sentences(turn.focus_question, candidates, turn.wants)
        if not ranked:
            return Plan("retrieval")
        answering = [(sc, h) for sc, h in ranked if grounding.answers(sc, turn.wants, turn.followup or h.named)]
        return Plan("fact" if answering else "near-miss", ranked, answering, candidates)

    def ask_stream(self, question: str, history: list[Message] | None = None) -> Iterator[str | Answer]:
        """Yield the answer's text deltas as the model writes them, then the final :class:`Answer`.

        The final answer's text may differ from the streamed text: markers are checked and
        completed, and a refusal, or an answer that fails the checks, is replaced by the quote of
        the source sentence that answers.
        """
        start = time.perf_counter()
        question = check_question(question, self.settings.max_question_chars)
        history = check_history(history)
        timings: dict[str, float] = {"prompt_tokens": 0, "completion_tokens": 0}
        english, lang = self.english(question)
        english = spell_out(english)
        t = time.perf_counter()
        turn = self.turn(english, self.conversation(history))
        hits = turn.hits
        timings["retrieve_s"] = time.perf_counter() - t
        standalone = turn.question
        best: Scored | None = None

        def finish(text: str, citations: list[Citation], reason: str = "", by: str = "") -> Answer:
            timings["total_s"] = time.perf_counter() - start
            timings.setdefault("first_token_s", timings["total_s"])
            return Answer(question, text, citations, bool(reason), hits, timings, standalone, reason,
                          "" if reason else by, lang, best)

        plan = self.plan(english, turn, lang)
        if plan.kind == "list":
            hits = plan.candidates  # the papers the list was made from
        if plan.written is not None:
            yield plan.written[0]
            yield finish(*plan.written, by=plan.kind)
            return
        if plan.kind == "retrieval":
            yield prompts.ABSTAIN_TEXT
            yield finish(prompts.ABSTAIN_TEXT, [], "retrieval")
            return
        if plan.kind == "near-miss":
            # The paper is here, what was asked is not. Say so, and what it does say.
            best, best_hit = plan.ranked[0]
            text = prompts.NEAR_MISS_TEMPLATE.format(title=best_hit.title, quote=best.text)
            yield text
            yield finish(text, [], "near-miss")
            return
        answering, candidates = plan.answering, plan.candidates
        best, best_hit = answering[0]
        anchored = turn.followup or best_hit.named
        quote_text = prompts.QUOTE_TEMPLATE.format(title=best_hit.title, quote=best.text, n=1)
        quoted = (quote_text, [Citation(1, best_hit.paper_id, best_hit.title, best.text, best_hit.url)])
        if turn.wants == "name" and _IDENTIFY.search(english) and not turn.followup:
            # "Which system ...?": the answer is the paper, with its sentence that fits best.
            text = f"{best_hit.title} [1]: {best.text}"
            yield text
            yield finish(text, quoted[1], by="identify")
            return
        if turn.followup:
            standalone = self.condense(english, history) if _REFERS_BACK.search(english) else \
                f"{english} (about {_short_name(best_hit.title)})"
        t = time.perf_counter()
        ordered = [best_hit, *[h for h in candidates if h.paper_id != best_hit.paper_id]]
        sources = self.select_sources(standalone, ordered)
        messages = answer_messages(sources, standalone)
        timings["select_s"] = time.perf_counter() - t
        raw = ""
        emitted = 0
        usage: dict[str, int] = {}
        for delta in self._generate(messages, self.settings.max_tokens, usage):
            raw += delta
            # Hold text back while it could still be the refusal sentinel.
            head = raw.lstrip().upper()
            if prompts.REFUSAL_SENTINEL.startswith(head[: len(prompts.REFUSAL_SENTINEL)]):
                continue
            if emitted == 0:
                timings["first_token_s"] = time.perf_counter() - start
            yield raw[emitted:]
            emitted = len(raw)
        timings.update(usage)
        refused = prompts.REFUSAL_SENTINEL in raw.upper() or not raw.strip()
        text, citations = ("", []) if refused else attribute(raw, sources, self.retriever.term_weights())
        if citations and self.answers_question(text, standalone, turn, [sc for sc, _ in answering]):
            if not anchored and not any(mentions(text, paper_names(c.title)) for c in citations):
                # The question described its paper without naming it: say which paper it is.
                text = f"\u201c{citations[0].title}\u201d: {text}"
            if turn.wants == "figure" and grounding.figures(best.text) - grounding.figures(text):
                # The model gave another of the paper's figures, or only some: the sentence that
                # answers is quoted too, so the exact figures are there to check.
                text, citations = _with_quote(text, citations, best, best_hit)
            yield finish(text, citations, by="model")
            return
        # The model refused, echoed the question, or restated a sentence about something else:
        # the source sentence that does answer is quoted instead.
        yield finish(*quoted, by="quote")

    def answers_question(self, text: str, question: str, turn: Turn, answering: list[Scored]) -> bool:
        """The checks on a model's answer: it says more than the question, carries what was asked,
        and a figure it gives comes from a source sentence that answers the question."""
        subject = " ".join(h.title for h in turn.subject)
        if grounding.is_echo(text, question, subject) or not grounding.carries(text, turn.wants, question):
            return False
        if turn.wants == "figure":
            new = grounding.figures(text) - grounding.figures(question)
            return any(new & grounding.figures(sc.text) for sc in answering)
        return True

    def ask(self, question: str, history: list[Message] | None = None) -> Answer:
        """Answer a question (see :meth:`ask_stream`)."""
        for item in self.ask_stream(question, history):
            if isinstance(item, Answer):
                return item
        raise AssertionError("ask_stream ended without an answer")


def _with_quote(text: str, citations: list[Citation], quote: Scored, hit: Hit) -> tuple[str, list[Citation]]:
    """The answer with a source sentence quoted after it, cited (a new number if its paper is not
    cited yet)."""
    cite = next((c for c in citations if c.paper_id == hit.paper_id), None)
    if cite is None:
        cite = Citation(len(citations) + 1, hit.paper_id, hit.title, quote.text, hit.url)
        citations = [*citations, cite]
    return f"{text} The abstract says: \u201c{quote.text}\u201d [{cite.n}]", citations


def _short_name(title: str) -> str:
    """How a paper is called in a sentence: its name before the colon, else its title."""
    head, colon, _ = title.partition(":")
    return head if colon and len(head.split()) <= 4 else title
