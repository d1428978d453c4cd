"""Answers written by code, not by the model: lists of papers, side-by-side comparisons, the paper
a "which method ...?" question describes, and quotes. Every line is a source sentence, cited."""

from __future__ import annotations

import re

from . import grounding, prompts
from .citations import Citation
from .conversation import Turn
from .evidence import Evidence
from .grounding import Scored
from .intent import sides
from .retrieve import Hit, HybridRetriever
from .text import content_terms, short_name
from .tuning import COMPARE_MAX_PAPERS, COMPARE_SIDE_TERMS, LIST_CANDIDATES, LIST_COVERAGE, LIST_SIMILARITY

#: An answer written by code: its text and its citations.
Written = tuple[str, list[Citation]]

# "Which method ...?" is answered by code with the paper whose sentence answers best. Narrower
# than intent's "which" (not "which model", which may ask for an LLM the paper used).
_IDENTIFY = re.compile(r"^\s*(which|what)\s+([\w-]+\s+){0,2}?(paper|work|method|system|approach|design|"
                       r"technique|framework|library|algorithm|study)\b(?!s)", re.I)


def cite(n: int, hit: Hit, quote: str) -> Citation:
    """Citation ``n``: ``hit``'s paper, with the sentence quoted from it."""
    return Citation(n, hit.paper_id, hit.title, quote, hit.url)


def with_quote(text: str, citations: list[Citation], quote: Scored, hit: Hit) -> Written:
    """The answer with a source sentence quoted after it, cited (a new number if its paper is not
    cited yet)."""
    cited = next((c for c in citations if c.paper_id == hit.paper_id), None)
    if cited is None:
        cited = cite(len(citations) + 1, hit, quote.text)
        citations = [*citations, cited]
    return f"{text} The abstract says: \u201c{quote.text}\u201d [{cited.n}]", citations


def _fits_row(sentence: Scored, turn: Turn) -> bool:
    """Whether a sentence may be a comparison row: a sentence about the question at all (as for a
    described paper), or, for a figure question, a figure beside one of the asked words; either
    way of the asked kind (a ratio for a speedup)."""
    fits = grounding.answers(sentence, turn.wants, anchored=False) or (
        turn.wants == "figure" and sentence.has_figure and sentence.figure_coverage > 0)
    return fits and grounding.states_asked_kind(turn.focus_question, sentence.text, turn.wants)


class WrittenAnswers:
    """Lists, comparisons and identifications, from the sentences :class:`Evidence` ranks."""

    def __init__(self, evidence: Evidence, retriever: HybridRetriever) -> None:
        self.evidence = evidence
        self.retriever = retriever

    def list_papers(self, hits: list[Hit], question: str) -> Written | None:
        """"Any papers on X?": every one of ``hits`` whose best sentence is about X, with it."""
        lines: list[str] = []
        citations: list[Citation] = []
        for rank, hit in enumerate(hits):
            # After the first, a paper is listed only if both retrievers rank it among the first
            # LIST_CANDIDATES: one found by its words alone, or by its meaning alone, is most often on
            # a neighbouring topic (dev and the retired splits, 130 list questions: precision / recall
            # 0.69 / 0.76 -> 0.80 / 0.70). Checked before its sentences are ranked.
            if rank > 0 and not all(r is not None and r <= LIST_CANDIDATES for r in (hit.dense_rank, hit.bm25_rank)):
                continue
            (best, _), *_ = self.evidence.rank_sentences(question, [hit], "other")
            if rank > 0 and not (best.coverage >= LIST_COVERAGE or best.similarity >= LIST_SIMILARITY):
                continue
            n = len(citations) + 1
            lines.append(f"- {hit.title}: {best.text.rstrip('. ')} [{n}].")
            citations.append(cite(n, hit, best.text))
        if not citations:
            return None
        return "Papers in the collection on this, best match first:\n" + "\n".join(lines), citations

    def compare(self, turn: Turn) -> Written | None:
        """"A vs B": one row per named paper, each with its sentence that best answers the
        question, quoted and cited."""
        papers = [h for h in turn.hits if h.named]
        if len(papers) < 2:
            # Each side is the paper it names, else, when it describes one in COMPARE_SIDE_TERMS or
            # more words ("one-epoch training"), the paper its words retrieve first; a short side
            # that names no paper ("speedup vs vLLM") is a baseline.
            papers = []
            for side in sides(turn.question):
                found = self.retriever.retrieve(side, 3)
                best = next((h for h in found if h.named), None)
                if best is None and len(content_terms(side)) >= COMPARE_SIDE_TERMS and found:
                    best = found[0]
                if best is not None and best.paper_id not in {p.paper_id for p in papers}:
                    papers.append(best)
        if len(papers) < 2:
            return None
        rows: list[str] = []
        citations: list[Citation] = []
        papers = papers[:COMPARE_MAX_PAPERS]
        others = " ".join(h.title for h in papers)
        for hit in papers:
            # Rows are lenient (as for a described paper): a comparison's aspect is often broad
            # ("how does each ...", "which is faster"), so each paper's best-fitting sentence is shown.
            # The user named the paper, so a figure beside an asked word is shown even when the
            # sentence as a whole shares little with the question.
            ranked = self.evidence.rank_sentences(turn.focus_question, [hit], turn.wants, others)
            answering = [sc for sc, _ in ranked if _fits_row(sc, turn)]
            if not answering:
                rows.append(f"- {short_name(hit.title)}: its abstract does not state this.")
                continue
            n = len(citations) + 1
            rows.append(f"- {short_name(hit.title)} [{n}]: {answering[0].text}")
            citations.append(cite(n, hit, answering[0].text))
        if not citations:
            return None
        return "Side by side, from each paper's abstract:\n" + "\n".join(rows), citations

    @staticmethod
    def identify(question: str, turn: Turn, best: Scored, hit: Hit) -> Written | None:
        """"Which system ...?": the answer is the paper, with its sentence that fits best."""
        if turn.wants != "name" or not _IDENTIFY.search(question) or turn.followup:
            return None
        return f"{hit.title} [1]: {best.text}", [cite(1, hit, best.text)]

    @staticmethod
    def quote(best: Scored, hit: Hit, *more: tuple[Scored, Hit]) -> Written:
        """The source sentence that answers, quoted and cited (when the model's answer fails); with
        ``more``, the sentences that answer the other parts of the question too, a paper's number
        kept for all its sentences."""
        numbers: dict[str, int] = {}
        lines: list[str] = []
        citations: list[Citation] = []
        for sentence, paper in ((best, hit), *more):
            if paper.paper_id in numbers:  # its title is said already
                lines.append(f"{sentence.text} [{numbers[paper.paper_id]}]")
            else:
                numbers[paper.paper_id] = len(numbers) + 1
                lines.append(prompts.QUOTE_TEMPLATE.format(title=paper.title, quote=sentence.text, n=len(numbers)))
            citations.append(cite(numbers[paper.paper_id], paper, sentence.text))
        return " ".join(lines), citations
