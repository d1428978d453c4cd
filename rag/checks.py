"""The last stage: the model's answer checked (citations, no echo, carries what was asked, figures
from a sentence that answers) and completed, or rejected so that a source sentence is quoted."""

from __future__ import annotations

from . import grounding, prompts
from .citations import Source, TermWeights, attribute
from .conversation import Turn
from .grounding import Scored
from .retrieve import Hit
from .text import mentions, paper_names
from .written import Written, with_quote


def answers_question(text: str, question: str, turn: Turn, answering: list[Scored]) -> bool:
    """The checks on a model's answer: it says more than the question, carries what was asked,
    and a figure it gives comes from a source sentence that answers the question."""
    subject = " ".join(h.title for h in turn.subject)
    if grounding.is_echo(text, question, subject) or not grounding.carries(text, turn.wants, question):
        return False
    if turn.wants == "figure":
        new = grounding.figures(text) - grounding.figures(question)
        return any(new & grounding.figures(sc.text) for sc in answering)
    return True


def checked_answer(raw: str, sources: list[Source], question: str, turn: Turn,
                   answering: list[tuple[Scored, Hit]], weights: TermWeights | None) -> Written | None:
    """The model's reply with checked and completed citations, or None when it refused or fails
    the checks of :func:`answers_question` (``answering``: the sentences that answer, best first)."""
    if prompts.REFUSAL_SENTINEL in raw.upper() or not raw.strip():
        return None
    text, citations = attribute(raw, sources, weights)
    if not citations or not answers_question(text, question, turn, [sc for sc, _ in answering]):
        return None
    best, best_hit = answering[0]
    if not (turn.followup or best_hit.named) and not any(mentions(text, paper_names(c.title)) for c in citations):
        # The question described its paper without naming it: say which paper it is.
        text = f"\u201c{citations[0].title}\u201d: {text}"
    if turn.wants == "figure" and grounding.figures(best.text) - grounding.figures(text):
        # The model gave another of the paper's figures, or only some: the sentence that
        # answers is quoted too, so the exact figures are there to check.
        text, citations = with_quote(text, citations, best, best_hit)
    return text, citations
