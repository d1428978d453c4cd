"""How a question will be answered, decided before any model call: abstain (the relevance gate, or
a near miss), an answer written by code, or one fact for the model to state."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from . import grounding, prompts
from .conversation import REFERS_BACK, Turn
from .evidence import Evidence
from .gate import RelevanceGate
from .grounding import Scored
from .intent import asking_clauses, intent, last_sentence
from .retrieve import Hit, HybridRetriever
from .text import acronyms, squash
from .tuning import ANCHORED_COVERAGE, LIST_CANDIDATES
from .written import Written, WrittenAnswers


@dataclass
class Plan:
    """How a question will be answered (see :meth:`Planner.plan`)."""

    kind: str  # "retrieval" / "near-miss" (abstain), "list" / "compare" / "identify" (by code), "fact"
    ranked: list[tuple[Scored, Hit]] = field(default_factory=list)  # every candidate sentence, best first
    answering: list[tuple[Scored, Hit]] = field(default_factory=list)  # those that answer the question
    candidates: list[Hit] = field(default_factory=list)
    written: Written | None = None
    unstated: list[str] = field(default_factory=list)  # parts of the question no sentence answers
    parts: list[tuple[Scored, Hit]] = field(default_factory=list)  # the best sentence of each answered part

    @property
    def abstains(self) -> bool:
        """Whether the answer is an abstention (nothing relevant retrieved, or a near miss)."""
        return self.kind in ("retrieval", "near-miss")

    @property
    def best(self) -> Scored | None:
        """The sentence judged to answer best (for a near miss: the closest one)."""
        ranked = self.ranked if self.kind == "near-miss" else self.answering
        return ranked[0][0] if ranked else None

    def reply(self) -> Written:
        """What the answer says when no model writes it: the code-written answer, or the
        abstention (for a near miss: the paper checked and what it does say)."""
        if self.written is not None:
            return self.written
        if self.kind == "near-miss":
            best, hit = self.ranked[0]
            return prompts.NEAR_MISS_TEMPLATE.format(title=hit.title, quote=best.text), []
        return prompts.ABSTAIN_TEXT, []


class Planner:
    """Runs the relevance gate, the answers written by code and the evidence ranking in order."""

    def __init__(self, retriever: HybridRetriever, gate: RelevanceGate, evidence: Evidence,
                 written: WrittenAnswers) -> None:
        self.retriever = retriever
        self.gate = gate
        self.evidence = evidence
        self.written = written

    def plan(self, english: str, turn: Turn, lang: str = "en", settings: str | None = None) -> Plan:
        """Decide how to answer: abstain (nothing relevant retrieved, or a near miss), a list,
        comparison or identified paper written by code, or one fact from the sentences that answer it.
        ``settings``: the question whose settings a figure must keep (a part of a question keeps the
        whole question's "on Llama 13B"); by default the question itself."""
        if turn.followup:
            # "and Medusa?": a name neither the conversation's paper nor any hit mentions.
            if self.gate.unknown_name(english, turn.hits, strict_names=lang == "en"):
                return Plan("retrieval")
        elif not self.gate.relevant(english, turn.hits, strict_names=lang == "en"):
            return Plan("retrieval")
        if turn.kind == "compare" and (written := self.written.compare(turn)):
            return Plan("compare", written=written)
        if turn.kind == "list":
            hits = self.retriever.retrieve(turn.question, LIST_CANDIDATES)
            if written := self.written.list_papers(hits, turn.question):
                return Plan("list", candidates=hits, written=written)
        candidates = self.evidence.candidates(turn)
        ranked = self.evidence.rank_sentences(turn.focus_question, candidates, turn.wants)
        if not ranked:
            return Plan("retrieval")
        # A question about its paper (named, or a follow-up) that uses a name the paper never
        # mentions ("its speedup on an h100?" of an A100 paper) asks what the paper does not report.
        # English only: a translation's names are the model's spelling ("Qwen2. 5-1M").
        if lang == "en" and (turn.followup or any(h.named for h in turn.subject)) and \
                self.gate.unknown_name(english, turn.subject):
            return Plan("near-miss", ranked, [], candidates)
        # Title words other than the paper's names may be what is asked ("what chunk size does
        # SARATHI use for its chunked prefills?").
        own = [n for h in turn.subject for n in self.retriever.own_names(h)]
        names = " ".join(own)
        asked = grounding.asked_terms(turn.focus_question, names)
        # A figure asked for a setting ("on Llama 13B", "at 128K") is a figure of that setting (dev
        # planner, 375: abstained 91 -> 92 of 104, answers unchanged). The settings are the
        # question's own: an ellipsis's aim also holds the previous question's words.
        # A translation's words are the 0.5B model's paraphrase ("delay" for latency), not the
        # user's: a translated question is held to meaning, as a described one is (dev split).
        whole = settings is None  # not a part of a question already
        if settings is None:
            settings = turn.question if turn.followup else turn.focus_question
        # The digits of the paper's own name ("Qwen2.5-1M") are not a figure the question holds.
        unnamed = grounding.without_names(settings, names.split())
        # A follow-up that asks which thing ("what hardware did they use?", "which benchmark?") is
        # answered by a sentence that names one, not by one that uses the category's word: the
        # abstract says "on Nvidia H100 GPU", "experiments on LongGenBench" (dev planner, 465:
        # answered 210 -> 216 of 241, abstained unchanged, 120 of 138, with 24 unanswerable
        # follow-ups among them that ask for hardware, models or benchmarks an abstract does not name).
        instance = turn.followup and turn.wants != "figure" and grounding.asks_which(turn.question)
        # "Which specific base model ...?" is not answered by a sentence that names nothing new, nor
        # "which optimizer ...?" by "various optimizers" (dev split, session 12).
        which = turn.wants != "figure" and grounding.asks_which(turn.focus_question)
        known = {squash(n) for n in own}
        if instance or which:  # only these ask whether a sentence names something new
            # The words an own acronym stands for are its name too ("Web Rephrase Augmented
            # Pre-training (WRAP)" names nothing new).
            known |= {squash(word) for h in turn.subject for short, long in acronyms(f"{h.title} {h.text}").items()
                      if squash(short) in known for word in re.split(r"[\s-]+", long)}
        index = self.retriever.term_weights()
        generic = index.share
        # A figure of the prefill is no figure of the decoding: the collection's own coordinations
        # ("prefill and decode") say which words are alternatives (dev and the retired splits, 1,467
        # questions, model-free planner: 7 more near misses abstained, no answer lost).
        siblings = index.siblings

        def names_one(sc: Scored) -> bool:
            return grounding.names_new(sc.text, turn.question, known, generic)

        # A question that describes its paper and then asks ("the paper that clusters keys ahead of
        # time ... - how big a speedup?") spends most of its words on the description, which found
        # the paper (its only candidate, Evidence.candidates). Its last sentence says what it asks: a
        # sentence of the paper that holds ANCHORED_COVERAGE of that sentence's own words answers it
        # (over the whole sentence, looser than the words around a figure a named question is held
        # to; translations included). A last sentence with no words of its own asks for a figure of
        # its kind ("How big a speedup did they get?": states_asked_kind checks the kind), or for
        # nothing a sentence can hold ("What did they find?"). Dev and the retired splits (1,767
        # questions, model-free planner): answered 1,146 -> 1,150 of 1,283, one of the four with
        # another figure of the right paper; abstained unchanged. The same at coverage 0.5.
        last = last_sentence(turn.focus_question) if not turn.followup else ""
        last_focus = {h.paper_id: grounding.focus_terms(last, " ".join([h.title, *self.retriever.own_names(h)]),
                                                        wants=turn.wants)
                      for h in candidates if last and not h.named}

        def answers_last(sc: Scored, h: Hit) -> bool:
            focus = last_focus.get(h.paper_id)
            if focus is None or (turn.wants == "figure" and not sc.has_figure):
                return False
            return (bool(focus) or turn.wants == "figure") and \
                grounding.coverage(focus, sc.text, index) >= ANCHORED_COVERAGE

        answering = [(sc, h) for sc, h in ranked
                     if ((grounding.answers(sc, turn.wants, (turn.followup or h.named) and lang == "en")
                          or answers_last(sc, h))
                         and grounding.holds_asked(asked, sc.text, turn.wants)
                         or instance and names_one(sc) and grounding.answers(sc, turn.wants, anchored=False))
                     and grounding.states_asked_kind(turn.focus_question, sc.text, turn.wants)
                     and (turn.wants != "figure" or grounding.keeps_settings(settings, sc.text, names)
                          and grounding.carries(sc.text, "figure", unnamed)
                          and not grounding.of_sibling(settings, sc.text, siblings, names))]
        if which:
            specific = grounding.asks_specific(turn.focus_question)
            answering = [(sc, h) for sc, h in answering if names_one(sc) or not (
                specific or grounding.only_indefinite(asked, sc.text))]
        if not answering:
            # "How many steps does it need, and is it faster than real time?": the part the paper
            # states is answered, and the answer says which part it does not. Dev and the retired
            # splits (1,542 questions, model-free planner): answered 964 -> 971 of 1,115, abstained
            # 386 -> 385 of 427 (a two-part near miss, now answered on its stated part).
            if whole and (by_parts := self._answered_parts(english, turn, lang, settings)):
                return by_parts
            return Plan("near-miss", ranked, answering, candidates)
        if instance:  # the sentences that name a thing first
            answering.sort(key=lambda pair: not names_one(pair[0]))
        if identified := self.written.identify(english, turn, *answering[0]):
            return Plan("identify", ranked, answering, candidates, identified)
        return Plan("fact", ranked, answering, candidates)

    def _answered_parts(self, english: str, turn: Turn, lang: str, settings: str) -> Plan | None:
        """A question that asks several things, planned part by part: the parts some sentence answers
        make one fact answer (``parts``: each one's best sentence; ``answering``: all of them), the
        others are ``unstated``. None when it asks one thing, or no part is answered.

        Only a question whose paper is fixed is split: one that names it, or a follow-up that refers
        back to it ("where do they offload ... and how much memory does that save?"). A part of a
        question that describes its paper loses the description ("... and how fast is its
        inference?"), and an ellipsis ("and decoding? and memory?") asks in the previous question's
        terms, which its parts alone do not hold. A part with no word of its own ("by how much?") is
        not asked alone. A part keeps the whole question's settings ("on mistral 7b? what's the
        saving there?"); one those do not fit is answered in its own terms, unless it points back at
        them ("there")."""
        if turn.followup:
            if not REFERS_BACK.search(turn.question) or turn.focus_question != turn.question:
                return None
        elif not any(h.named for h in turn.subject):
            return None
        clauses = asking_clauses(turn.focus_question)
        if len(clauses) < 2:
            return None
        named = sum(h.named for h in turn.subject)
        answered: list[Plan] = []
        unstated: list[str] = []
        for clause in clauses:
            wants = intent(clause, named).wants
            if not grounding.focus_terms(clause, wants=wants):
                continue
            part = replace(turn, focus_question=clause, wants=wants)
            if (plan := self.plan(english, part, lang, settings)).kind == "fact":
                answered.append(plan)
            # A part that points back at the other part's setting ("what's the saving there?") is
            # not answered by a figure of another setting; any other part is answered in its own terms.
            elif not _POINTS_BACK.search(clause) and (own := self.plan(english, part, lang, clause)).kind == "fact":
                answered.append(own)
            else:
                unstated.append(clause)
        if not answered:
            return None
        answering = _distinct([pair for plan in answered for pair in plan.answering])
        parts = _distinct([plan.answering[0] for plan in answered])
        return Plan("fact", answered[0].ranked, answering, answered[0].candidates, unstated=unstated, parts=parts)


# A part that points back at a setting named elsewhere in the question: "there" (not "is there ...",
# "there are ..."), "that model", "the same setting". English grammar, chosen on no question set.
_POINTS_BACK = re.compile(r"(?<!\bis )(?<!\bare )(?<!\bwas )(?<!\bwere )\bthere\b(?!\s+(?:is|are|was|were)\b)|"
                          r"\b(?:that|those|these|this|the same)\s+(?:setting|model|size|length|case|benchmark|dataset|"
                          r"task|gpu|hardware|config\w*)s?\b", re.I)


def _distinct(pairs: list[tuple[Scored, Hit]]) -> list[tuple[Scored, Hit]]:
    """The pairs without repeats of a sentence (two parts answered by one sentence), in order."""
    seen: set[tuple[str, str]] = set()
    out = []
    for scored, hit in pairs:
        if (hit.paper_id, scored.text) not in seen:
            seen.add((hit.paper_id, scored.text))
            out.append((scored, hit))
    return out
