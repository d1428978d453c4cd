"""Whether a text answers a question: checks on what an answer contains, not on how it is phrased.

An answer must (1) say something the question did not (no echo), (2) carry what was asked (a
figure for "how much", a name for "which"), and (3) carry it from a source sentence about what was
asked: a figure taken from a sentence about something else is a restatement, not an answer. The
same checks pick the sentence to quote when the model fails, and decide a near miss (the paper
is there, the asked detail is not).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .citations import TermWeights, support
from .text import NAME, PROPER, content_terms, mentions, name_forms, squash, whole_name, whole_words, word_grams
from .tuning import (
    ANCHORED_COVERAGE,
    ASKED_MAX_WORDS,
    ASKED_WINDOW,
    ECHO_NEW_TERMS,
    FIGURE_BONUS,
    FIGURE_WINDOW,
    GENERIC_NAME_SHARE,
    UNANCHORED_MIN_SCORE,
)

# Words that say what kind of thing is asked about, not which one: they are in almost every
# question and abstract of a paper collection and carry no focus.
GENERIC = frozenset(content_terms(
    "paper papers work works study method methods approach approaches system systems model models propose "
    "proposed present introduce show report achieve use used using based new novel existing technique framework "
    "result results author authors abstract collection does anything tell say know find one reach get give "
    "attain obtain deliver bring offer provide enable compare compared versus vs differ difference actually "
    "really exactly roughly approximately rather instead"))
# A figure stands on its own ("2.3x", "7B", "1,000"); digits inside a name (A100, Llama-2, FP16,
# W4A8) are not figures.
_NUMBER = re.compile(r"(?<![A-Za-z0-9.])(?<![A-Za-z]-)\d+(?:[.,]\d+)*")


_MARKERS = re.compile(r"\[\d+(?:\s*[,;]\s*\d+)*\]")


# LaTeX left in scraped arXiv abstracts glues a figure to a word: "$\sim$3x" -> "sim3x".
_LATEX_BEFORE_NUMBER = re.compile(r"\\?(?:sim|approx|times|leq|geq|le|ge)(?=\d)")


# The items of an enumeration ("two stages: 1) a prefilling stage, 2) ...", "(3) we merge") are
# counted, not measured.
_ENUMERATOR = re.compile(r"(?:(?<=\s)|^)\(?\d\)(?=\s|$)")


def figures(text: str) -> set[str]:
    """The numbers a text states (1,000 and 1000 alike); citation markers and the items of an
    enumeration are not figures."""
    text = _ENUMERATOR.sub(" ", _LATEX_BEFORE_NUMBER.sub(" ", _MARKERS.sub(" ", text)))
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


# Where the thing asked about starts: after "what / which / how many / how much" and an optional
# "is the" ("what [chunk size] did ...", "whats the [acceptance rate] of ..."), and "kind of" ("what
# kind of [speedup] ...").
_ASKED_START = re.compile(r"\b(?:what(?:'s|s)?|which|how (?:many|much))\s+(?:(?:is|are|was|were)\s+)?"
                          r"(?:(?:the|a|an)\s+)?(?:(?:kinds?|sorts?|types?)\s+of\s+(?:(?:the|a|an)\s+)?)?", re.I)
# Words that say what kind of figure is asked, not what it is a figure of: the figure itself is
# checked, and an abstract says "2.3x faster" for "how much speedup", "reduces memory by 40%" for
# "how much does it cut memory". English words for a quantity and its change, not topics
# ("better", "max", "overall" added in session 10 after dev's "how much better ...", "the max
# speedup" asked for "better" and "max" beside the figure).
FIGURE_KIND = frozenset(content_terms(
    "speedup speed speeds fast faster quick quicker accelerate acceleration size rate ratio number percentage "
    "fraction share factor amount times improvement improve reduction reduce gain cut shrink lower decrease "
    "drop save saving savings boost increase raise grow slash count long take took big large small high low "
    "more less better best good max maximum min minimum peak overall total"))


# What a question sets aside ("decoding, not prefill", "rather than training"): up to three words
# after the negation, to the end of the clause. English grammar, not topics; from the dev split's
# near misses, which ask for the detail next to the one an abstract reports.
# A bare "not" only after a comma, a bracket, "and" or "but": "does it not need ..." asks about it.
_SET_ASIDE = re.compile(r"(?:(?:[,(]\s*|\b(?:and|but)\s+)not|\b(?:rather than|instead of|excluding|other than|"
                        r"apart from|as opposed to))"
                        r"\s+((?:[\w'./-]+\s*){1,3})", re.I)


def set_aside(question: str) -> frozenset[str]:
    """The content terms a question excludes from what it asks ("..., not the prefill?" -> prefill)."""
    found = [re.split(r"[,;:?!()]", m.group(1))[0] for m in _SET_ASIDE.finditer(question)]
    return content_terms(" ".join(found)) if found else frozenset()


def focus_terms(question: str, subject: str = "", terms: frozenset[str] | None = None,
                wants: str = "other") -> frozenset[str]:
    """The question's content terms (or ``terms``, e.g. spell-corrected ones) that say what is
    asked: not the subject's name or title words (``subject``), nor words every question has,
    nor what it sets aside ("not prefill"), nor, when a figure is asked (``wants``), the words
    for its kind (FIGURE_KIND)."""
    kind = FIGURE_KIND if wants == "figure" else frozenset()
    terms = content_terms(question) if terms is None else terms
    return frozenset(terms - content_terms(subject) - GENERIC - kind - set_aside(question))


# A question that asks for a percentage ("what percentage of tokens", "what % of params",
# "(% of compute)"), as opposed to a description that mentions one ("a 30% masking ratio").
_ASKS_PERCENT = re.compile(r"\b(?:what(?:'?s)?(?:\s+(?:is|are|was|were))?(?:\s+the)?|how many|which)\s*"
                           r"(?:percent(?:age)?|pct|%)|\(\s*%", re.I)
# LaTeX left in scraped abstracts writes "54.6\%".
_PERCENT = re.compile(r"\d\s*\\?%|\bpercent", re.I)


# A question for a speedup ("how much faster", "speedup number?") is answered by a ratio ("2.3x",
# "2.00times", "three times", "40%"), not by another figure of the paper ("up to 10 million
# tokens"). English words for a ratio, from the dev split's follow-ups; "speed" alone is not one
# ("prefill speed in tokens/s").
_ASKS_RATIO = re.compile(r"\b(?:speed-?ups?|speed up|faster|slower|how many times)\b", re.I)
_RATIO = re.compile(r"\d\s*(?:x\b|\u00d7|times\b)|\btimes\b|\w*fold\b", re.I)


# A question for a duration ("how many GPU hours", "how long did training take") or an amount of
# money ("how much did it cost", "how much $", "in dollars") is answered by a figure in that unit,
# not by another figure of the paper ("560 TFlops/GPU", "less than 1% accuracy drop"). English
# words for units, added in session 12 for dev's near misses that ask a training time or cost.
# "How much time" may ask for a share of it, so it is not read as a duration. "cost" is asked only
# as the verb of its own clause: not "the memory cost", nor "how much does it cut the cost".
_ASKS_TIME = re.compile(r"\bhow many\s+(?:[gt]pu[\s-]*)?(?:hours?|hrs?|days?|minutes?|mins?|seconds?|weeks?|months?)\b"
                        r"|\bhow long\s+(?:did|does|do|would|will|was|is)\b[^?]{0,80}?\b(?:take|takes|took)\b", re.I)
_ASKS_MONEY = re.compile(r"\bhow much\s+(?:money|\$)|\bdollars?\b|\busd\b|\bprice\b"
                         r"|\b(?:how much|what)\s+(?:did|does|do|would|will)\s+"
                         r"(?:(?!reduc|cut|lower|sav|decreas|slash|shrink|increas|rais|memory|compute|latency|kv|cache)"
                         r"[\w'-]+\s+){0,4}?cost\b(?!\s+(?:in|of)\s+(?:memory|compute|latency|time))", re.I)
_NUMBER_WORD = r"(?:\d[\d.,]*\s*[KMB]?|one|two|three|four|five|six|seven|eight|nine|ten|a few|several|half an?)"
_TIME = re.compile(rf"(?<![\w.]){_NUMBER_WORD}[\s-]*(?:(?:gpu|tpu)s?[\s-]+)?"
                   r"(?:hours?|hrs?|days?|minutes?|mins?|seconds?|secs?|weeks?|months?|ms)\b", re.I)
_MONEY = re.compile(r"\$\s*\d|\d\s*(?:[KMB]|thousand|million|billion)?\s*(?:dollars?|usd)\b|\busd\s*\d", re.I)


def states_asked_kind(question: str, sentence: str, wants: str = "figure") -> bool:
    """Whether a sentence states the kind of figure asked: a percentage for "what percentage ...?"
    ("2.2-3.3x" does not say what share of the tokens is recomputed), a ratio or a percentage for
    a speedup (when a figure is asked: "how does it speed up RAG?" asks how), a duration for "how
    many GPU hours", an amount of money for "how much did it cost"; True for other questions."""
    if wants == "figure" and _ASKS_RATIO.search(question) and not (
            _RATIO.search(sentence) or _PERCENT.search(sentence)):
        return False
    if _ASKS_TIME.search(question) and not _TIME.search(sentence) or \
            _ASKS_MONEY.search(question) and not _MONEY.search(sentence):
        return False
    return not _ASKS_PERCENT.search(question) or bool(_PERCENT.search(sentence))


# A figure that sets what is measured, not a value asked about: a model size, a context length,
# a number of GPUs or bits ("llama 13b", "at 128k", "8 gpus", "4-bit"). "2x", "30%" or "1000
# tokens/s" are values, not settings.
_SETTING = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)[\s-]?(b|bn|m|k|billion|million|gpus?|bits?)(?![\w/])", re.I)
# A batch size is a setting written before its number ("at batch size 64", "a batch of 32"); added
# in session 11 for the two dev follow-ups and one dev translation that ask a figure at a batch size.
_BATCH = re.compile(r"\b(?:batch(?:[\s-]+sizes?)?|bs)\s*(?:of\s+|=\s*|\s)(\d+)\b", re.I)
_SCALE = {"k": 1_000, "m": 1_000_000, "million": 1_000_000}


def _numbers(text: str) -> set[float]:
    """Every number written in ``text``, digits inside names too ("Falcon-180B" holds 180)."""
    return {float(n) for n in re.findall(r"\d+(?:\.\d+)?", text.replace(",", ""))}


def keeps_settings(question: str, sentence: str, subject: str = "") -> bool:
    """Whether a sentence holds every setting the question asks about ("speedup on Llama 13B", "at
    128K context", "on 8 GPUs"): a figure for another setting ("1.4x for Llama 7B") does not answer
    it. "128k" is also held by "128,000" or "131,072"; numbers in the subject's name
    ("Qwen2.5-1M") are not settings."""
    held = _numbers(sentence)
    names = _numbers(subject)
    for number, unit in [*_SETTING.findall(question), *((n, "") for n in _BATCH.findall(question))]:
        value = float(number)
        if value in names:
            continue
        scale = _SCALE.get(unit.casefold(), 1)
        if not (value in held or (scale > 1 and any(value * scale <= n <= value * scale * 1.05 for n in held))):
            return False
    return True


def asked_phrase(question: str) -> str:
    """The words after a question's question word (and "the", "kind of") up to the first stopword,
    "and", "or" or "vs", at most ASKED_MAX_WORDS ("what MSE reduction does ..." -> "MSE reduction",
    "how many points of ..." -> "points", "what kind of speedup ..." -> "speedup"); empty without a
    question word."""
    match = _ASKED_START.search(question)
    if not match:
        return ""
    words = []
    for word in re.findall(r"[\w'-]+", question[match.end():])[:ASKED_MAX_WORDS]:
        if not content_terms(word) or word.casefold() in ("and", "or", "vs"):
            break
        words.append(word)
    return " ".join(words)


def asked_terms(question: str, subject: str = "") -> frozenset[str]:
    """The content terms of what a question asks about: the words after its question word up to
    the first stopword ("what prefill chunk size did ..." -> prefill, chunk; "how many gpus and
    ..." -> gpus), less the subject's name, words every question has and figure kinds. Empty when
    the question has no such phrase ("how much does X speed up ...", "is there a paper ...").

    English grammar, not topics: a sentence about the paper that holds none of these words does
    not say what was asked (a near miss). Written on the dev split's near misses."""
    terms = content_terms(asked_phrase(question))
    if terms & GENERIC:  # "which closed model ...", "which system ...": a name is asked, not a detail
        return frozenset()
    return frozenset(terms - content_terms(subject) - FIGURE_KIND)


# "what/which" before a noun ("what hardware", "which benchmark"), not before a verb ("what does
# it do?", "what is padding?").
_ASKS_WHICH = re.compile(r"\b(?:what|which)\s+(?!(?:is|are|was|were|does|do|did|can|could|would|should|will|"
                         r"about|if|makes?|happens?)\b)[a-z]", re.I)


def asks_which(question: str) -> bool:
    """Whether a question asks which thing ("what hardware ...", "which benchmark ...")."""
    return bool(_ASKS_WHICH.search(question))


def names_new(sentence: str, question: str, known: set[str], share: Callable[[str], float]) -> bool:
    """Whether a sentence names something the question does not: a name by its form (H100,
    LongGenBench, Phi-3-mini) or a capitalised word inside it (Pythia), that is not one of
    ``known`` (the paper's own names, squashed), not a figure ("1.67x", "410M") and not a name most
    of the collection uses ("LLM", "KV": ``share`` of chunks GENERIC_NAME_SHARE or more)."""
    asked = word_grams(question)
    # A part of a name already known is not a new one ("NPU" of "mllm-NPU").
    whole = [*known, *(squash(n) for n in name_forms(question))]
    return any(not any(squash(n) in k for k in whole) and not _FIGURE_NAME.match(n)
               and max(share(part) for part in n.split("-")) < GENERIC_NAME_SHARE and not mentions(n, asked)
               for n in name_forms(sentence) + PROPER.findall(sentence))


# A question that asks for one particular thing ("which specific base model", "what exact GPU",
# "which GPU exactly"): a sentence that names nothing new does not say which. English words for
# "the instance, not the kind"; added in session 12 for dev's near misses. The adverb only right
# after "which/what <noun>": "what exactly does it reuse?" asks what, not which.
_ASKS_SPECIFIC = re.compile(r"\b(?:which|what)\s+(?:(?:\w+\s+){0,2}?(?:specific|exact|particular|precise)\s+\w"
                            r"|[\w-]+(?:\s+[\w-]+)?\s+(?:exactly|specifically|precisely|in particular)\b)", re.I)


def asks_specific(question: str) -> bool:
    """Whether a question asks which particular thing ("which specific model ...?")."""
    return bool(_ASKS_SPECIFIC.search(question)) and asks_which(question)


# A word that says "some of the kind", not which one: "various optimizers", "different maximum
# learning rates". English determiners, not topics ("a"/"an" introduce the paper's own things too:
# "a decoder-decoder architecture, YOCO").
_INDEFINITE = re.compile(r"\b(?:some|various|varied|several|different|multiple|many|other|diverse|numerous)\s+"
                         r"((?:[\w'/-]+\s+){0,3}[\w'/-]+)", re.I)


def only_indefinite(asked: frozenset[str], sentence: str) -> bool:
    """Whether a sentence holds the asked terms only after a word for "some" ("which optimizer" in
    "various optimizers"): it speaks of the kind, not of which one. False when it holds none of
    them, or one outside such a phrase."""
    vague = any(_stem_in(t, asked) for m in _INDEFINITE.finditer(sentence) for t in content_terms(m.group(1)))
    return vague and not any(_stem_in(t, asked) for t in content_terms(_INDEFINITE.sub(" ", sentence)))


def _stem_in(term: str, asked: frozenset[str]) -> bool:
    """Whether ``term`` is one of ``asked``, or a stem that extends one ("gpus" and "gpu")."""
    return any(a == term or (min(len(a), len(term)) >= 3 and (a.startswith(term) or term.startswith(a)))
               for a in asked)


# A figure with its unit is not a name: "1.67x", "410M", "4-bit", "2.00times", "128K-token".
_FIGURE_NAME = re.compile(r"\d[\d.,]*(?:[A-Za-z]{0,2}|times)(?:-|$)")


def holds_asked(asked: frozenset[str], sentence: str, wants: str = "other") -> bool:
    """Whether a sentence holds any of the asked terms (True when there are none); for a figure
    question, within ASKED_WINDOW words of a figure ("acceptance rate, block efficiency and up to
    3x speedup" gives no acceptance rate). Stems that extend each other match: "gpus" and "gpu",
    "param" and "paramet"."""
    if not asked:
        return True
    texts = figure_windows(sentence, ASKED_WINDOW) if wants == "figure" else [sentence]
    return any(_stem_in(t, asked) for text in texts for t in content_terms(text))


def coverage(focus: frozenset[str], sentence: str, weights: TermWeights | None) -> float:
    """Share of the focus terms a sentence holds, weighted by rarity (1.0 when there is no focus)."""
    return support(focus, sentence, weights) if focus else 1.0


def figure_coverage(focus: frozenset[str], sentence: str, weights: TermWeights | None,
                    excluded: frozenset[str] = frozenset()) -> float:
    """The best coverage of the focus terms by the words around one figure of the sentence: a
    figure answers "how much faster at decoding" only if the words near it are about decoding
    ("2.34x for prefilling" is not). A figure next to what the question sets aside
    (``excluded``: "decoding, not the prefill") is a figure of that, and covers nothing. 0.0 for
    a sentence without figures."""
    return max((coverage(focus, window, weights) for window in figure_windows(sentence)
                if not excluded & content_terms(window)), default=0.0)


def figure_windows(sentence: str, window: int = FIGURE_WINDOW) -> list[str]:
    """The words within ``window`` of each figure of a sentence: what that figure is about."""
    words = sentence.split()
    return [" ".join(words[max(0, i - window): i + window + 1])
            for i, w in enumerate(words) if figures(w)]


# What a question rules out is not what it asks: "without any training", "w/o retraining". Not one of
# _SET_ASIDE's phrases: a figure beside a set-aside word covers nothing (figure_coverage), and "without"
# is often the answer's own condition ("2.3x faster without accuracy loss" answers "how much faster
# without losing accuracy?"). Only the sibling check reads it.
_WITHOUT = re.compile(r"\b(?:without|w/o)\s+(?:any\s+|extra\s+|additional\s+)?[A-Za-z][\w-]*", re.I)


def of_sibling(question: str, sentence: str, siblings: Mapping[str, frozenset[str]], subject: str = "") -> bool:
    """Whether a sentence is about a sibling of what the question asks instead: it lacks one of the
    question's words and holds a word the collection coordinates with that one ("prefill and decode")
    which the question does not use. "How much does it speed up decoding?" is not answered by
    "accelerates the prefilling stage by 2.34x". Whole words only ("training-free" does not ask
    about training), and not the words the question rules out ("without any training", "decoding,
    not the prefill")."""
    asked = whole_words(_WITHOUT.sub(" ", question)) - set_aside(question) - content_terms(subject) - GENERIC
    whole = whole_words(sentence)
    held = whole | content_terms(sentence)  # a word inside a hyphenated one still holds it
    return any(term not in held and (siblings.get(term, frozenset()) - asked - GENERIC) & whole for term in asked)


def is_echo(answer: str, question: str, subject: str = "") -> bool:
    """Whether an answer only repeats the question (and the subject's name): fewer than
    ECHO_NEW_TERMS new content terms and no figure that the question does not already hold."""
    answer = _MARKERS.sub(" ", answer)
    new_terms = content_terms(answer) - content_terms(question) - content_terms(subject) - GENERIC
    new_figures = figures(answer) - figures(question) - figures(subject)
    return not new_figures and len({t for t in new_terms if not t.isdigit()}) < ECHO_NEW_TERMS


def without_names(text: str, names: list[str]) -> str:
    """``text`` without the given names, written in any case ("qwen2.5-1m")."""
    for name in sorted(names, key=len, reverse=True):
        text = re.sub(whole_name(name), " ", text, flags=re.I)
    return text


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
    #: Share of the focus terms its paper uses that the words around its best figure hold.
    figure_coverage: float = 0.0

    def score(self, wants: str) -> float:
        # Word coverage is the sharper signal, the dense side rescues paraphrases; a figure
        # question prefers sentences that state one.
        bonus = FIGURE_BONUS if wants == "figure" and self.has_figure else 0.0
        return self.coverage + self.similarity + bonus


def answers(sentence: Scored, wants: str, anchored: bool = True) -> bool:
    """Whether a sentence answers the question: for a figure question it states one; when the
    question names its paper (``anchored``), it holds what was asked. A question that only
    describes its paper spends its words on the description, so its paper's sentence with the
    right kind of content answers if it is about the question at all (its word coverage and
    similarity add to UNANCHORED_MIN_SCORE)."""
    if wants == "figure" and not sentence.has_figure:
        return False
    if not anchored:
        return sentence.coverage + sentence.similarity >= UNANCHORED_MIN_SCORE
    held = sentence.figure_coverage if wants == "figure" else sentence.coverage
    return held >= ANCHORED_COVERAGE
