"""Whether a text answers a question: checks on what an answer contains, not on how it is phrased.

An answer must (1) say something the question did not (no echo), (2) carry what was asked (a
figure for "how much", a name for "which"), and (3) carry it from a source sentence about what was
asked: a figure taken from a sentence about something else is a restatement, not an answer. The
same checks pick the sentence to quote when the model fails, and decide a near miss (the paper
is there, the asked detail is not).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .citations import TermWeights, support
from .text import NAME, content_terms
from .tuning import ANCHORED_COVERAGE, ECHO_NEW_TERMS, FIGURE_BONUS, FIGURE_WINDOW

# Words that say what kind of thing is asked about, not which one: they are in almost every
# question and abstract of a paper collection and carry no focus.
GENERIC = frozenset(content_terms(
    "paper papers work works study method methods approach approaches system systems model models propose "
    "proposed present introduce show report achieve use used using based new novel existing technique framework "
    "result results author authors abstract collection does anything tell say know find one reach get give "
    "attain obtain deliver bring offer provide enable compare compared versus vs differ difference actually "
    "really exactly roughly approximately"))
# A figure stands on its own ("2.3x", "7B", "1,000"); digits inside a name (A100, Llama-2, FP16,
# W4A8) are not figures.
_NUMBER = re.compile(r"(?<![A-Za-z0-9.])(?<![A-Za-z]-)\d+(?:[.,]\d+)*")


_MARKERS = re.compile(r"\[\d+(?:\s*[,;]\s*\d+)*\]")


# LaTeX left in scraped arXiv abstracts glues a figure to a word: "$\sim$3x" -> "sim3x".
_LATEX_BEFORE_NUMBER = re.compile(r"\\?(?:sim|approx|times|leq|geq|le|ge)(?=\d)")


def figures(text: str) -> set[str]:
    """The numbers a text states (1,000 and 1000 alike); citation markers are not figures."""
    text = _LATEX_BEFORE_NUMBER.sub(" ", _MARKERS.sub(" ", text))
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


def focus_terms(question: str, subject: str = "", terms: frozenset[str] | None = None) -> frozenset[str]:
    """The question's content terms (or ``terms``, e.g. spell-corrected ones) that say what is
    asked: not the subject's name or title words (``subject``), nor words every question has."""
    return frozenset((content_terms(question) if terms is None else terms) - content_terms(subject) - GENERIC)


def coverage(focus: frozenset[str], sentence: str, weights: TermWeights | None) -> float:
    """Share of the focus terms a sentence holds, weighted by rarity (1.0 when there is no focus)."""
    return support(focus, sentence, weights) if focus else 1.0


def figure_coverage(focus: frozenset[str], sentence: str, weights: TermWeights | None) -> float:
    """The best coverage of the focus terms by the words around one figure of the sentence: a
    figure answers "how much faster at decoding" only if the words near it are about decoding
    ("2.34x for prefilling" is not). 0.0 for a sentence without figures."""
    words = sentence.split()
    spots = [i for i, w in enumerate(words) if figures(w)]
    return max((coverage(focus, " ".join(words[max(0, i - FIGURE_WINDOW): i + FIGURE_WINDOW + 1]), weights)
                for i in spots), default=0.0)


def is_echo(answer: str, question: str, subject: str = "") -> bool:
    """Whether an answer only repeats the question (and the subject's name): fewer than
    ECHO_NEW_TERMS new content terms and no figure that the question does not already hold."""
    answer = _MARKERS.sub(" ", answer)
    new_terms = content_terms(answer) - content_terms(question) - content_terms(subject) - GENERIC
    new_figures = figures(answer) - figures(question) - figures(subject)
    return not new_figures and len({t for t in new_terms if not t.isdigit()}) < ECHO_NEW_TERMS


def carries(answer: str, wants: str, question: str = "") -> bool:
    """Whether an answer holds the kind of thing asked: a figure the question does not hold, or a
    name (a capitalised or CamelCase word, an acronym)."""
    if wants == "figure":
        return bool(figures(answer) - figures(question))
    if wants == "name":
        return bool(NAME.search(answer)) or bool(re.search(r"(?<![.!?]\s)\b[A-Z][a-z]+[A-Z]?\w*", answer[1:]))
    return True


@dataclass(frozen=True)
class Scored:
    """A source sentence with how well it answers the question."""

    text: str
    coverage: float  # share of the question's focus terms it holds
    similarity: float  # dense cosine similarity to the question
    has_figure: bool
    figure_coverage: float = 0.0  # the same, within the clause of its best figure

    def score(self, wants: str) -> float:
        # Word coverage is the sharper signal, the dense side rescues paraphrases; a figure
        # question prefers sentences that state one.
        bonus = FIGURE_BONUS if wants == "figure" and self.has_figure else 0.0
        return self.coverage + self.similarity + bonus


def answers(sentence: Scored, wants: str, anchored: bool = True) -> bool:
    """Whether a sentence answers the question: for a figure question it states one; when the
    question names its paper, it holds what was asked. A question that only describes its paper
    spends its words on the description, so any sentence with the right kind of content answers."""
    if wants == "figure" and not sentence.has_figure:
        return False
    if not anchored:
        return True
    held = sentence.figure_coverage if wants == "figure" else sentence.coverage
    return held >= ANCHORED_COVERAGE
