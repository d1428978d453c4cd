"""The engine: the stages of an answer wired together, and the answer it returns."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding

from . import prompts
from .checks import checked_answer
from .citations import Citation
from .conversation import FollowUps, Translator
from .corpus import clean_text
from .evidence import SPECIAL_TOKEN, Evidence
from .gate import RelevanceGate
from .generate import Generator, answer_messages
from .grounding import Scored
from .ingest import IngestReport, ProgressCallback, ingest_files
from .intent import spell_out
from .llamaindex import LlamaIndexViews
from .llm import LLM, Message, make_llm
from .plan import Planner
from .prefill import Prefiller
from .retrieve import Hit, HybridRetriever
from .settings import Settings
from .store import Store
from .written import Written, WrittenAnswers


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



def check_question(question: Any, max_chars: int) -> str:
    """The cleaned question, or :class:`QuestionError` saying what is wrong with it."""
    if not isinstance(question, str):
        raise QuestionError(f"the question must be a string, not {type(question).__name__}")
    if len(question) > max_chars:
        raise QuestionError(f"the question is {len(question)} characters long; the limit is {max_chars}")
    cleaned = clean_text(SPECIAL_TOKEN.sub(" ", question))
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
        if not (isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)):
            raise QuestionError(f"history[{i}] must be {{'role': 'user'|'assistant', 'content': str}}")
        out.append({"role": m["role"], "content": clean_text(SPECIAL_TOKEN.sub(" ", m["content"]))[:2000]})
    return out


class Engine(LlamaIndexViews):
    """Cited question answering over a paper collection: wires the stages of an answer.

    follow-up rewrite (conversation.py) -> retrieval (retrieve.py) -> relevance gate (gate.py) ->
    evidence selection (evidence.py) -> answers written by code (written.py; plan.py decides) ->
    generation (generate.py) -> citation check (checks.py, citations.py). The LLM and the embedding
    model are passed in or built from ``settings``; nothing falls back to a hosted default. The LLM
    is loaded on first use (or by :meth:`warm_up`).
    """

    def __init__(self, settings: Settings | None = None, *, llm: LLM | None = None,
                 embed_model: BaseEmbedding | None = None) -> None:
        self.settings = settings = settings or Settings()
        if embed_model is None:
            from .embedding import make_embedding

            embed_model = make_embedding(settings)
        self.embed_model = embed_model
        self.store = Store(settings, embed_model)
        self.retriever = HybridRetriever(self.store, embed_model, settings)
        self._llm, self._llm_lock = llm, threading.Lock()
        self.generator = Generator(settings, lambda: self.llm)
        self.gate = RelevanceGate(settings, self.retriever)
        self.translator = Translator(self.generator, self.retriever)
        self.followups = FollowUps(settings, self.retriever, self.gate, self.generator, self.translator)
        self.evidence = Evidence(settings, embed_model, self.retriever)
        self.written = WrittenAnswers(self.evidence, self.retriever)
        self.planner = Planner(self.retriever, self.gate, self.evidence, self.written)
        self.prefiller = Prefiller(settings, self.store, lambda: self.llm)
        if self.store.count() == 0 and settings.store.default_corpus:
            self.ingest([settings.store.default_corpus])

    def ingest(self, paths: Iterable[Path | str], progress: bool | None = None,
               on_progress: ProgressCallback | None = None, max_papers: int | None = None) -> list[IngestReport]:
        """Add collection files to the store (see :func:`rag.ingest.ingest_files`)."""
        return ingest_files(self.store, paths, progress=progress, on_progress=on_progress, max_papers=max_papers)

    def retrieve(self, question: str, k: int | None = None) -> list[Hit]:
        """The best ``k`` papers for a question."""
        return self.retriever.retrieve(check_question(question, self.settings.answer.max_question_chars), k)

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
        self.prefiller.prefill_prompt_starts()
        self.retriever.keyword_index()

    def ask_stream(self, question: str, history: list[Message] | None = None) -> Iterator[str | Answer]:
        """Yield the answer's text deltas as the model writes them, then the final :class:`Answer`.

        The final answer's text may differ from the streamed text: markers are checked and
        completed, and a refusal, or an answer that fails the checks, is replaced by the quote of
        the source sentence that answers.
        """
        start = time.perf_counter()
        question = check_question(question, self.settings.answer.max_question_chars)
        history = check_history(history)
        timings: dict[str, float] = {"prompt_tokens": 0, "completion_tokens": 0}
        english, lang = self.translator.english(question)
        english = spell_out(english)
        t = time.perf_counter()
        turn = self.followups.turn(english, self.followups.conversation(history))
        timings["retrieve_s"] = time.perf_counter() - t
        plan = self.planner.plan(english, turn, lang)
        hits = plan.candidates if plan.kind == "list" else turn.hits  # a list's papers are its sources

        def finish(written: Written, reason: str = "", by: str = "", standalone: str = turn.question) -> Answer:
            timings["total_s"] = time.perf_counter() - start
            timings.setdefault("first_token_s", timings["total_s"])
            return Answer(question, *written, bool(reason), hits, timings, standalone, reason, "" if reason else by,
                          lang, plan.best)

        if plan.kind != "fact":
            yield (written := plan.reply())[0]
            yield finish(written, plan.kind if plan.abstains else "", plan.kind)
            return
        best_sentence, best_hit = plan.answering[0]
        standalone = self.followups.standalone(turn, history, best_hit)
        t = time.perf_counter()
        ordered = [best_hit, *[h for h in plan.candidates if h.paper_id != best_hit.paper_id]]
        sources = self.evidence.select_sources(standalone, ordered)
        timings["select_s"] = time.perf_counter() - t
        raw = yield from self.generator.answer(answer_messages(sources, standalone), timings, start)
        weights = self.retriever.term_weights()
        if checked := checked_answer(raw, sources, standalone, turn, plan.answering, weights):
            written, by = checked, "model"
        else:  # refused, echoed the question, or restated a sentence about something else
            written, by = self.written.quote(best_sentence, best_hit, *plan.parts[1:]), "quote"
        if plan.unstated:  # the parts of a question that asks several things no sentence answers
            notes = "".join(f"\n\n{prompts.UNSTATED_TEMPLATE.format(part=part)}" for part in plan.unstated)
            yield notes
            written = (written[0] + notes, written[1])
        yield finish(written, by=by, standalone=standalone)

    def ask(self, question: str, history: list[Message] | None = None) -> Answer:
        """Answer a question (see :meth:`ask_stream`)."""
        for item in self.ask_stream(question, history):
            if isinstance(item, Answer):
                return item
        raise AssertionError("ask_stream ended without an answer")

