"""Text analysis shared by retrieval, the relevance gate, evidence ranking and citations:
tokens and content terms, sentence splitting, and names matched by token.

One module so that every stage reads a text the same way: the keyword index and the question use
the same tokens, and "does this text name X" has one answer everywhere.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import bm25s
import bm25s.stopwords
import Stemmer

from .tuning import FUZZY_NAME

# ----- tokens ------------------------------------------------------------------------------------
_STEMMER = Stemmer.Stemmer("english")
# bm25s' "en" list has 33 words and keeps "what", "does", "which": questions need the longer one.
STOPWORDS = sorted(set(bm25s.stopwords.STOPWORDS_EN_PLUS) | {"much", "many", "paper", "papers"})


# Snowball keeps the "s" of "NPUs" or "GPUs" (a vowel precedes it): drop acronym plurals first.
_ACRONYM_PLURAL = re.compile(r"\b([A-Z][A-Z0-9]+)s\b")


def tokenize(texts: list[str]) -> list[list[str]]:
    """Stemmed, stopword-free tokens, the same for the index and for queries."""
    texts = [_ACRONYM_PLURAL.sub(r"\1", t) for t in texts]
    return bm25s.tokenize(texts, stemmer=_STEMMER, stopwords=STOPWORDS, return_ids=False, show_progress=False)


@functools.lru_cache(maxsize=4096)
def content_terms(text: str) -> frozenset[str]:
    """The stemmed content words and numbers of a text.

    Cached: citation checking scores every answer sentence against the same source texts.
    """
    terms = {_COMPARATIVES.get(t, t) for t in tokenize([text])[0]} | set(re.findall(r"\d+(?:\.\d+)?", text))
    terms.discard("")
    return frozenset(terms)


# The stemmer keeps comparatives: "how fast" should find "22.4x faster" (content terms only; the
# keyword index keeps its own tokens).
_COMPARATIVES = {"faster": "fast", "fastest": "fast", "slower": "slow", "smaller": "small", "larger": "larg",
                 "higher": "high", "lower": "low", "longer": "long", "shorter": "short", "cheaper": "cheap",
                 "better": "good", "best": "good", "quicker": "quick"}
FOLDED = frozenset(_COMPARATIVES.values())

# Two single words joined as alternatives or parts of one whole: "prefill and decode", "training or
# inference", "A vs B". Not "/": it joins units ("tokens/second") and URLs as often as alternatives.
COORDINATED = re.compile(r"([A-Za-z][\w-]*)\s*(?:,?\s+and\s+|\s+or\s+|\s+vs\.?\s+|\s+versus\s+)([A-Za-z][\w-]*)")
_INNER_HYPHEN = re.compile(r"(?<=[A-Za-z])-(?=[A-Za-z])")


def whole_words(text: str) -> frozenset[str]:
    """:func:`content_terms` with each hyphenated word as one word: "pre-filling" is "prefil", and
    "training-free" is not "train"."""
    return content_terms(_INNER_HYPHEN.sub("", text))


def coordinated(text: str) -> set[tuple[str, str]]:
    """Pairs of content terms a text coordinates ("prefilling and decoding" -> ("prefil", "decod")),
    each one whole word, in both orders."""
    pairs = set()
    for left, right in COORDINATED.findall(text):
        a, b = whole_words(left), whole_words(right)
        if len(a) == len(b) == 1 and a != b and not (x := next(iter(a))).isdigit() \
                and not (y := next(iter(b))).isdigit():
            pairs |= {(x, y), (y, x)}
    return pairs


# ----- sentences ---------------------------------------------------------------------------------
# Scientific prose: a sentence ends at . ! ? followed by a capital, a digit or an opening bracket.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[\"'])")
#: A citation marker as the model writes it: [1], [1, 2], [1; 3].
MARKER = re.compile(r"\s*\[(\d+(?:\s*[,;]\s*\d+)*)\]")


def split_sentences(text: str) -> list[str]:
    """Split an abstract into sentences (good enough for scientific prose)."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def split_answer(text: str) -> list[str]:
    """An answer's sentences, each keeping the markers that follow its full stop. Unlike
    :func:`split_sentences`, a line break also ends a sentence (lists) and a marker after the full stop
    stays with its sentence."""
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z0-9\[(])|\n+", text.strip())
    sentences: list[str] = []
    for part in parts:
        part = part.strip()
        if not part:
            continue
        if MARKER.fullmatch(part) and sentences:
            sentences[-1] += " " + part  # "... claim. [2]" style
        else:
            sentences.append(part)
    return sentences


# ----- names -----------------------------------------------------------------------------------
# Names in a question: CamelCase (CacheBlend), acronyms (TTFT), or words with digits (GPT-5, A100).
NAME = re.compile(r"\b(?:[A-Za-z]*[a-z][A-Z]\w*|[A-Z]{2,}\w*|[A-Za-z]+-?\d[\w.]*|\d+[A-Za-z]\w*)(?:[-.]\w+)*")
# Capitalised words inside a sentence (Medusa, Mixtral) are names too.
PROPER = re.compile(r"(?<=[a-z,;:] )[A-Z][a-z]{2,}\w*")


def squash(text: str) -> str:
    """A name folded for comparison: "Llama-2", "llama 2" and "LLaMA2" alike ("512×512" as "512x512")."""
    return re.sub(r"[^0-9a-z]", "", text.casefold().replace("×", "x"))


def paper_names(title: str) -> set[str]:
    """The squashed names a paper goes by: the named words of its title, and the part before
    the colon when that is short ("CacheBlend: Fast ..." -> cacheblend)."""
    # Acronym plurals (GPUs, LLMs) name a kind of thing, not a paper.
    names = {squash(n) for n in NAME.findall(title) if not re.fullmatch(r"[A-Z]{2,}s", n)}
    # A capitalised hyphenated word is a name where a title introduces one ("... with
    # Sarathi-Serve"), not elsewhere ("Efficient Fine-Tuning of ...").
    names |= {squash(w) for w in _TITLE_NAME.findall(title) if re.search(r"[A-Z]", w)}
    return {n for n in names | {squash(h) for h in _head(title)} if len(n) >= 3}


# Where a title introduces a hyphenated name: "... with Sarathi-Serve", "Self-Infilling Code ...".
_TITLE_NAME = re.compile(r"(?:^|\b(?:with|via|using|by|from)\s)(\w+(?:-\w+)+)")


def _title_head(title: str) -> str:
    """The part of a title before its colon ("" without one)."""
    head, colon, _ = title.partition(":")
    return head if colon else ""


def _head(title: str) -> set[str]:
    """The part of a title before its colon, when it is short enough to be a name."""
    head = _title_head(title)
    return {head} if head and len(head.split()) <= 3 else set()


_INTRODUCES = r"\b(?:(?:propose|present|introduce|call|called|named|dubbed|develop|design)s?|our proposed)\s+"


@functools.lru_cache(maxsize=4096)
def _introduced(title: str, abstract: str) -> frozenset[str]:
    """The names an abstract introduces (see :func:`own_names`); cached, as every retrieval asks it
    of each hit."""
    defined = {n for n in re.findall(_INTRODUCES + r"(?:a |an |the )?(?:\w+\s){0,2}?"
                                     r"([A-Za-z][\w.]*[A-Z0-9][\w.]*(?:-[\w.]+)*)", abstract)
               if re.search(r"[a-z][A-Z]|\d", n) or re.fullmatch(r"[A-Z]{3,}(?:-[A-Z0-9]+)*", n)}
    # Within the verb's object: "we propose A B C (ABC)", not "we present X, a system for D E (DE)".
    defined |= {n for n in re.findall(_INTRODUCES + r"(?:[\w'-]+\s+){0,6}?\(([A-Za-z][\w.]*[A-Z][\w.]*"
                                      r"(?:-[\w.]+)*)\)", abstract) if not re.fullmatch(r"[A-Z]{2,}s", n)}
    # An acronym of the title's head ("You Only Cache Once" ... "YOCO").
    initials = "".join(w[0] for w in re.findall(r"[A-Za-z][\w']*", _title_head(title))).casefold()
    if len(initials) >= 3:  # the abstract is searched only when there is such an acronym to find
        defined |= {n for n in re.findall(r"\b[A-Z][A-Za-z]*[A-Z]\b", abstract) if n.casefold() == initials}
    return frozenset(defined)


def capitalised_names(title: str, abstract: str, common: Callable[[str], bool]) -> set[str]:
    """The names an abstract introduces in capitals that spell an ordinary word (``common``):
    "SPEED" names its paper only when typed so, as "speed up" does not."""
    return {n for n in _introduced(title, abstract) if n.isupper() and common(squash(n))}


def own_names(title: str, abstract: str, common: Callable[[str], bool] | None = None) -> set[str]:
    """The names a paper goes by itself, as written, as opposed to the names of what it uses (RAG,
    HBM, LoRA, ALiBi, "Low-Rank"): a question that uses one of these calls the paper by name. The
    title's head before a colon; a title word written as a name only a coined one has (CamelCase,
    digits: ZipVL, MInference, Qwen2.5-1M); a hyphenated title name its abstract repeats
    (Sarathi-Serve, mllm-NPU, Self-Infilling); a name the abstract introduces ("we propose JRT-RNN",
    "our proposed LongGen"), with its acronym in brackets ("we introduce Web Rephrase Augmented
    Pre-training (WRAP)"); an acronym of the title's head (YOCO of "You Only Cache Once"). A name from the
    abstract that is also a word the collection uses often (``common``: "SPEED") is left out:
    a question that uses the word ("speed up") does not name the paper."""
    names = _head(title)
    names |= {n for n in NAME.findall(title) if re.search(r"[a-z][A-Z]|[A-Z]{2}[a-z](?<!s)|\d", n)
              and not re.fullmatch(r"[A-Z]{2,}s", n)}
    # A hyphenated title name the abstract repeats as written; the word a title starts with, in
    # any case ("Self-Infilling Code Generation" ... "self-infilling"; not "Low-Rank", "Meta-Learning").
    names |= {w for w in _TITLE_NAME.findall(title) if re.search(r"[A-Z]", w) and (
        abstract.count(w) >= 2 or (title.startswith(w) and abstract.casefold().count(w.casefold()) >= 2))}
    defined = _introduced(title, abstract)
    names |= {n for n in defined if not (common and common(squash(n)))}
    return {n for n in names if len(squash(n)) >= 3}


_LATIN_HEAD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*(?=[^\x00-\u024f])")


def name_forms(text: str) -> list[str]:
    """Words that are names by their form, in any language: CamelCase, acronyms, words with
    digits, and hyphenated words with such a part ("mllm-NPU", "KV-Runahead"; not "Zero-Shot")."""
    # Dots inside a name are part of it ("llama-3.1-70b" is one name, not "llama-3" and "1-70b").
    hyphenated = [w for w in re.findall(r"\w+(?:\.\d+)*(?:-\w+(?:\.\d+)*)+", text)
                  if any(re.fullmatch(r"[A-Z]{2,}\w*|\w*[a-z][A-Z]\w*|\w*\d[\w.]*", part) for part in w.split("-"))]
    # A name typed in Latin letters ends where another script starts: Korean and Japanese attach
    # their particles to it ("DiffFit이", "FID는").
    names = [m.group(0) if (m := _LATIN_HEAD.match(n)) else n for n in hyphenated + NAME.findall(text)]
    # A count typed onto a name is not part of it: "8xa100" is eight A100s (not "Mixtral 8x7B", nor
    # "2xspeedup").
    names = [re.sub(r"^\d+[x\u00d7](?=[A-Za-z]+\d)", "", n) for n in names]
    return list(dict.fromkeys(n.rstrip(".") for n in names))


# What a chat question is about, typed before a colon as one hyphenated or numbered word:
# "zero-infinity: how big a model ...?" (not "quick question: ...").
_HEAD = re.compile(r"^\s*([\w.]+(?:-[\w.]+)+|[A-Za-z.]*\d[\w.]*)\s*:\s")


def question_names(question: str) -> list[str]:
    """The names an English question uses, as written: :func:`name_forms`, capitalised words
    inside a sentence (Medusa) and the words before a leading colon, as users name a subject."""
    heads = [head.group(1)] if (head := _HEAD.match(question)) else []
    return list(dict.fromkeys(name_forms(question) + PROPER.findall(question) + heads))


_WORD = r"[A-Za-z][\w.]*(?:-[\w.]+)*"
# The places a question puts a name, whatever its case: a possessive ("mooncake's"), the subject
# of does/did/do ("does medusa use"), each side of "vs". The first word is no slot of its own (it
# may still be a possessive): chat openers ("Tldr", "Gimme", "Summarise") and typos are capitalised
# there too (session 17's review).
_SLOTS = (re.compile(rf"(?<![\w-])({_WORD})['’]s\b"),
          re.compile(rf"\b(?:does|did|do)\s+({_WORD})\s+(?!of\b)[a-z]"),
          re.compile(rf"(?<![\w-])({_WORD})\s+(?:vs\.?|versus)\s"),
          re.compile(rf"\s(?:vs\.?|versus)\s+({_WORD})"))


def name_slots(question: str) -> list[str]:
    """The words of ``question`` in the places a name goes, typed in any case: whether one is a name
    or an ordinary word is for the caller to decide (:class:`rag.lexicon.Lexicon`)."""
    return list(dict.fromkeys(m.group(1).rstrip(".") for slot in _SLOTS for m in slot.finditer(question)))


def word_grams(text: str) -> set[str]:
    """A text's squashed words, their hyphen parts and adjacent word pairs: the ``names`` side of
    :func:`mentions` when the question is whether a text mentions a name."""
    words = re.findall(r"[\w.]+(?:-[\w.]+)*", text)
    parts = [p for w in words for p in w.split("-")]
    grams = {squash(w) for w in words + parts} | {squash(a + b) for a, b in zip(words, words[1:])}
    grams.discard("")
    return grams


# Before a word used as a word, not as a name: "what kind of ...", "the scope of ...".
_DETERMINER = re.compile(r"\b(?:a|an|the|this|that|these|those|what|which|whatever|some|any|each|every|no|its|"
                         r"their|our|his|her|my|your)\s+$", re.I)


def whole_name(name: str) -> str:
    """A pattern for ``name`` as a whole word: not inside a longer word or hyphenated name
    ("KV" not in "KV-Runahead")."""
    return rf"(?<![\w-]){re.escape(name)}(?![\w-])"


def used_as_word(name: str, question: str) -> bool:
    """Whether a one-word name ("KIND", "SCOPE") is used in ``question`` only as an ordinary word:
    in lower case, after a determiner and before "of". "What kind of task ...?" does not call the
    KIND paper by name; "kind vs difffit", "the kind adapter" and "what does KIND do?" do.
    Grammar, not a word list."""
    if not name.isalpha():
        return False
    found = list(re.finditer(whole_name(name), question, re.I))
    return bool(found) and all(
        m.group().islower() and _DETERMINER.search(question[:m.start()]) is not None
        and re.match(r"\s+of\b", question[m.end():], re.I) is not None
        for m in found)


def mentions(question: str, names: set[str], known: Callable[[str], bool] | None = None) -> bool:
    """Whether the question mentions one of ``names`` (squashed): as one to three adjacent words,
    exactly, or with a typo (``FUZZY_NAME``) in a word typed in lower case that is not a word the
    collection uses (``known``): "cachblend" finds CacheBlend, but "inference" is not a typo of
    MInference, nor "Mixtral" of Mistral."""
    from difflib import SequenceMatcher

    words = re.findall(r"[\w.]+(?:-[\w.]+)*", question)
    grams = {squash("".join(words[i:i + n])) for n in (1, 2, 3) for i in range(len(words) - n + 1)}
    grams.discard("")
    if grams & names:
        return True
    long_names = [n for n in names if len(n) >= 6]
    if not long_names:
        return False
    # A typo is forgiven within one word ("cachblend"), not across words ("the attention"), and
    # digits are versions, not typos: "flashattention3" is not FlashAttention.
    singles = {squash(w) for w in words if w.islower() and not (known and known(w))}
    return any(abs(len(g) - len(name)) <= 2 and re.sub(r"\D", "", g) == re.sub(r"\D", "", name)
               and SequenceMatcher(None, g, name).ratio() >= FUZZY_NAME
               for name in long_names for g in singles)


def names_in(text: str, name: str) -> bool:
    """Whether ``text`` mentions ``name``, matched by token as :func:`mentions` does: "npu" is not
    in "input" nor "rag" in "storage", "Llama-2" is "Llama 2", and "LLMs" mentions "LLM"."""
    return mentions(_ACRONYM_PLURAL.sub(r"\1", name), word_grams(_ACRONYM_PLURAL.sub(r"\1", text)))


def short_name(title: str) -> str:
    """How a paper is called in a sentence: its name before the colon, else its title."""
    head, colon, _ = title.partition(":")
    return head if colon and len(head.split()) <= 4 else title


# "time-to-first-token (TTFT)", "Neural Processing Unit (NPU)": a long form, then its acronym in
# brackets. Up to eight words before the bracket are tried.
_DEFINED = re.compile(r"(?<![\w'])((?:[A-Za-z][\w']*[\s-]+){1,8})\(([A-Z][A-Za-z0-9]{1,9}?)s?\)")


def acronyms(text: str) -> dict[str, str]:
    """The acronyms a text defines, each with its long form: "time-to-first-token (TTFT)" ->
    {"TTFT": "time-to-first-token"}. The long form is the shortest run of words before the
    bracket whose initials spell the acronym's letters."""
    found: dict[str, str] = {}
    for m in _DEFINED.finditer(text):
        acronym, before = m.group(2), m.group(1)
        letters = "".join(c for c in acronym.casefold() if c.isalpha())
        if len(letters) < 2:  # "accelerator (A100)" spells nothing
            continue
        # A hyphenated word gives one letter or one per part: "Pre-training" is the P of "Web
        # Rephrase Augmented Pre-training (WRAP)" and the PT of "Pre-Training (PT)".
        for pattern in (r"[A-Za-z][\w']*", r"[A-Za-z][\w'-]*"):
            words = list(re.finditer(pattern, before))
            k = next((k for k in range(1, len(words) + 1)
                      if "".join(w[0][0].casefold() for w in words[-k:]) == letters), 0)
            if k:
                found.setdefault(acronym, before[words[-k].start():].strip(" -"))
                break
    return found


def spell_acronyms(sentence: str, defined: dict[str, str]) -> str:
    """``sentence`` with each acronym of ``defined`` it uses followed by its long form, and each
    long form by its acronym, so that either name matches a question's words ("how much does it
    cut time to first token?" and "...reduces TTFT by 9.4x")."""
    for acronym, long in defined.items():
        # Whole words only: not the "NPU" of "mllm-NPU", nor the "key value" of "monkey values".
        short = re.compile(rf"(?<![\w-]){re.escape(acronym)}s?(?![\w-])")
        full = re.compile(rf"\b{re.escape(long)}s?\b", re.I)
        found_short, found_long = short.search(sentence), full.search(sentence)
        if found_short and not found_long:
            sentence = f"{sentence[:found_short.end()]} ({long}){sentence[found_short.end():]}"
        elif found_long and not found_short:
            sentence = f"{sentence[:found_long.end()]} ({acronym}){sentence[found_long.end():]}"
    return sentence
