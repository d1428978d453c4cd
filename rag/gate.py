"""The relevance gate: whether retrieval found anything worth answering from, decided before any
model call (a question about something the collection does not hold abstains here)."""

from __future__ import annotations

import re

from .citations import support
from .retrieve import Hit, HybridRetriever
from .settings import Settings
from .text import content_terms, mentions, name_forms, name_slots, question_names, squash, word_grams
from .tuning import GATE_SHARED_TERMS, GATE_SUPPORT, LONG_NAME, UNKNOWN_NAME_MIN


class RelevanceGate:
    """Decides from the hits alone: a name no hit mentions, a named paper, a close dense match, or
    enough shared rare words."""

    def __init__(self, settings: Settings, retriever: HybridRetriever) -> None:
        self.settings = settings
        self.retriever = retriever

    def relevant(self, question: str, hits: list[Hit], strict_names: bool = True) -> bool:
        """Whether retrieval found anything worth answering from. ``strict_names`` False (a
        translated question) checks only names by form (CamelCase, acronyms, digits): a left-over
        capitalised German noun is not a name."""
        if not hits:
            return False
        if self.unknown_name(question, hits, strict_names):
            return False  # the question names something (GPT-5, PagedAttention) no retrieved paper mentions
        if any(h.named for h in hits):
            return True  # "What does DistServe do?": the question names a retrieved paper
        if max((h.similarity or 0.0) for h in hits) >= self.settings.gate.min_similarity:
            return True
        terms = content_terms(question)
        weights = self.retriever.term_weights()
        for h in hits:
            text = f"{h.title} {h.text}"
            # One shared rare word ("capital" in "capitalizes") is not a topic match.
            if support(terms, text, weights) >= GATE_SUPPORT and len(terms & content_terms(text)) >= GATE_SHARED_TERMS:
                return True
        return False

    def unknown_name(self, question: str, hits: list[Hit], strict_names: bool = True) -> bool:
        """Whether the question uses a name (of UNKNOWN_NAME_MIN or more letters: a user's own short
        acronym, "ODE", may be spelt out in the abstract) that none of ``hits`` mentions. In English,
        a word where a name goes that is no word ("how many heads does medusa use?") is a name too."""
        if strict_names:
            names = question_names(question)
            if slots := name_slots(question):
                lexicon = self.retriever.lexicon()  # over the index retrieval has just checked
                names += [w for w in slots if not lexicon.is_word(w)]
        else:
            names = name_forms(question)
        names = [n for n in names if len(squash(n)) >= UNKNOWN_NAME_MIN]
        # A piece of a longer name the question uses ("Qwen2" of "Qwen2.5-1M") is that name.
        names = [n for n in names if not any(squash(n) in squash(m) != squash(n) for m in names)]
        if not names:
            return False
        text = " ".join(f"{h.title} {h.text}" for h in hits)
        evidence, squashed = word_grams(text), squash(text)

        def found(name: str) -> bool:
            # A long name with digits may sit inside a longer one ("Llama-3.1-70B-Instruct").
            if len(squash(name)) >= LONG_NAME and re.search(r"\d", name) and squash(name) in squashed:
                return True
            if mentions(name, evidence) or mentions(name.rstrip("s"), evidence):
                return True
            # LaTeX left in scraped abstracts writes a resolution "512x512" as "512times512".
            if re.fullmatch(r"\d+x\d+", name, re.I) and mentions(re.sub("x", "times", name, flags=re.I), evidence):
                return True
            # Other languages join a name to their own words ("LoRA-Training", "KV-Cache-Größe"):
            # the name before them counts ("GPT-7" is all name).
            head = re.fullmatch(r"(.+?)(?:-[^\W\d_]{3,})+", name) if not strict_names else None
            return head is not None and bool(name_forms(head[1])) and found(head[1])

        return not all(found(n) for n in names)
