"""Evidence selection: which retrieved papers, and which of their sentences, answer a question;
and the numbered sources the model is shown."""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding

from . import grounding
from .citations import Source, support
from .grounding import Scored
from .retrieve import Hit, HybridRetriever
from .settings import Settings
from .text import NAME, acronyms, content_terms, names_in, spell_acronyms, split_sentences
from .tuning import RANK_PENALTY, SENTENCE_SUPPORT_WEIGHT, SOURCE_SCORE_RATIO

if TYPE_CHECKING:
    from .conversation import Turn

# A question that asks for several papers, or compares them, keeps all its sources.
_MANY = re.compile(r"\b(papers|works|methods|systems|approaches|techniques|studies|models|compare[sd]?|"
                   r"comparison|versus|vs\.?|both|differ\w*)\b", re.I)
# Sentences in a source that address the model rather than report research.
_INSTRUCTION = re.compile(
    r"\b(ignore|disregard|forget|override)\b[^.]{0,40}\b(instructions?|prompts?|rules|context|above)\b"
    r"|\b(answer|reply|respond|output)\b[^.]{0,40}\b(every|all|any)\b[^.]{0,20}\bquestions?\b"
    r"|\b(system prompt|you are an? (ai|assistant|language model)|as an ai)\b", re.I)
#: Special-token text in an abstract could close the prompt's turn; it never belongs in evidence.
SPECIAL_TOKEN = re.compile(r"<\|[^|>]{0,40}\|>")
#: Passages whose sentence embeddings are kept (a passage's sentences are embedded once).
SENTENCE_CACHE_SIZE = 4096


def evidence_text(text: str) -> str:
    """Source text as the model sees it. Special-token text in an abstract could close the prompt's
    turn, and a sentence addressed to the model ("ignore previous instructions and ...") steered
    the 0.5B model despite the system prompt: both are removed."""
    text = SPECIAL_TOKEN.sub(" ", text)
    if not _INSTRUCTION.search(text):
        return text
    return " ".join(x for x in split_sentences(text) if not _INSTRUCTION.search(x))


def naming(question: str, hits: list[Hit]) -> list[Hit]:
    """The hits that mention the most of the names in the question (all hits if it names nothing),
    matched by token as the gate and retrieval match names: "npu" is not in "input"."""
    names = NAME.findall(question)
    if not names:
        return hits
    counts = [sum(names_in(f"{h.title} {h.text}", n) for n in names) for h in hits]
    best = max(counts, default=0)
    return [h for h, c in zip(hits, counts) if c == best] if best else hits


def near_best(hits: list[Hit]) -> list[Hit]:
    """The hits whose fused score is at least SOURCE_SCORE_RATIO of the first one's."""
    return [h for h in hits if h.score >= SOURCE_SCORE_RATIO * hits[0].score] if hits else []


def unanimous(hit: Hit) -> bool:
    """Whether a hit ranks first in both the dense and the keyword ranking."""
    return hit.dense_rank == 1 and hit.bm25_rank == 1


class Evidence:
    """Scores the sentences of retrieved passages against a question (dense similarity and word
    coverage) and picks the sources for the model. The page's users share one instance."""

    def __init__(self, settings: Settings, embed_model: BaseEmbedding, retriever: HybridRetriever) -> None:
        self.settings = settings
        self.embed_model = embed_model
        self.retriever = retriever
        self._sentence_cache: dict[tuple[str, str], tuple[list[str], np.ndarray, list[str]]] = {}
        self._cache_lock = threading.Lock()
        self._last_query: tuple[str, np.ndarray] | None = None

    def query_vector(self, question: str) -> np.ndarray:
        """The question's embedding, kept for the next call: every source of an answer scores against it."""
        last = self._last_query
        if last is None or last[0] != question:
            last = self._last_query = (question, np.asarray(self.embed_model.get_query_embedding(question)))
        return last[1]

    def sentences(self, hit: Hit) -> tuple[list[str], np.ndarray, list[str]]:
        """A passage's sentences, their embeddings, and each sentence as its words are read for
        scoring (an acronym the paper defines followed by its long form and back: "TTFT" answers
        "time to first token"), cached: the same papers come back often."""
        key = (hit.paper_id, hit.text)
        found = self._sentence_cache.get(key)
        if found is None:
            sentences = split_sentences(hit.text) or [hit.text]
            defined = acronyms(f"{hit.title} {hit.text}")
            found = (sentences, np.asarray(self.embed_model.get_text_embedding_batch(sentences)),
                     [spell_acronyms(sentence, defined) for sentence in sentences])
            with self._cache_lock:  # answers run side by side on the page
                self._sentence_cache[key] = found
                if len(self._sentence_cache) > SENTENCE_CACHE_SIZE:
                    self._sentence_cache.pop(next(iter(self._sentence_cache)), None)
        return found

    def best_sentences(self, question: str, hit: Hit, k: int) -> tuple[list[str], float]:
        """The ``k`` sentences of a passage that best match the question (in the passage's order),
        and the best word support any sentence gives the question."""
        sentences, vectors, _ = self.sentences(hit)
        terms = content_terms(question)
        weights = self.retriever.term_weights()
        supports = np.array([support(terms, x, weights) for x in sentences])
        scores = vectors @ self.query_vector(question) + SENTENCE_SUPPORT_WEIGHT * supports
        keep = sorted(np.argsort(scores)[::-1][:k])
        return [sentences[i] for i in keep], float(supports.max(initial=0.0))

    def rank_sentences(self, aim: str, hits: list[Hit], wants: str, others: str = "") -> list[tuple[Scored, Hit]]:
        """Every sentence of ``hits`` scored for how well it answers ``aim``, best first; a later
        hit's sentences lose RANK_PENALTY per rank (1.0: retrieval's order decides the paper).
        Words of the hit's title and own names, and of ``others`` (the other papers of a
        comparison), are not what is asked. A figure is scored by the asked words around it that
        its paper uses (all of them if it uses none), and not at all beside a word the question
        sets aside."""
        query = self.query_vector(aim)
        weights = self.retriever.term_weights()
        # A misspelt word ("thruput", "cachblend") is read as the collection spells it, before the
        # paper's own name is taken out of what is asked.
        asked = frozenset(weights.correct_terms(content_terms(aim)))
        set_aside = grounding.set_aside(aim)
        out: list[tuple[float, Scored, Hit]] = []
        for rank, hit in enumerate(hits):
            sentences, vectors, readings = self.sentences(hit)
            names = " ".join(self.retriever.own_names(hit))
            focus = grounding.focus_terms(aim, f"{hit.title} {names} {others}", asked, wants)
            # A figure answers when the words around it are the asked words its paper uses: a
            # word the paper never uses (the user's own, "e2e", "hardware") cannot sit beside it.
            # A paper that uses none of them says nothing about what was asked: all count.
            held = focus & content_terms(f"{hit.title} {hit.text}") or focus
            # "the decoding stage, not the prefill stage": "stage" is asked as well as set aside.
            excluded = set_aside - focus
            # Words are read with the paper's acronyms spelt out (dev: J-019, "TTFT" for "time to
            # first token").
            sims = vectors @ query
            for sentence, read, sim in zip(sentences, readings, sims):
                scored = Scored(sentence, grounding.coverage(focus, read, weights), float(sim),
                                bool(grounding.figures(sentence)),
                                grounding.figure_coverage(held, read, weights, excluded))
                out.append((scored.score(wants) - RANK_PENALTY * rank, scored, hit))
        out.sort(key=lambda x: -x[0])
        return [(scored, hit) for _, scored, hit in out]

    def candidates(self, turn: Turn) -> list[Hit]:
        """The papers a one-fact answer may come from: the conversation's or the named ones, else
        the best hit (lists and comparisons find their papers themselves)."""
        if turn.followup or any(h.named for h in turn.subject):
            return turn.subject
        # A question that describes one paper without naming it is about the paper retrieval ranks
        # first. Another paper's sentence that holds the asked detail answers a different question:
        # when the described paper lacks the detail, it is a near miss. Chosen on the dev split (375
        # questions, model-free planner) against the hits within SOURCE_SCORE_RATIO of the best:
        # alone, abstained 83 -> 92 of 104 and answered 192 -> 187 of 213, the five lost answers
        # all from a wrong paper; with the asked clause (conversation.py), answered 192, abstained 91.
        return turn.hits[:1]

    def select_sources(self, question: str, hits: list[Hit]) -> list[Source]:
        """Number the best hits as sources: the first one whole (see ``answer.first_source_full``), the
        others cut to their most relevant sentences.

        Hits far below the best one are left out, and so are hits that miss a name the question
        asks about while others have it: every source costs ~10 ms a token of prompt reading.
        """
        s = self.settings.answer
        top = near_best(hits[: s.sources])
        if top:
            top = naming(question, top)
            # First in both rankings, and the question asks for one thing: the others only distract
            # the model (it named the wrong paper from them) and cost prompt time.
            if unanimous(top[0]) and not _MANY.search(question):
                top = top[:1]
        sources: list[Source] = []
        for n, hit in enumerate(top, 1):
            if n == 1 and s.first_source_full:
                # Its model state is usually saved already (see prefill.py), so its length is free.
                text = evidence_text(hit.text)
            else:
                text = evidence_text(" ".join(self.best_sentences(question, hit, s.sentences_per_source)[0]))
            if text.strip():
                sources.append(Source(len(sources) + 1, hit.paper_id, hit.title, text, hit.text, hit.url))
        return sources
