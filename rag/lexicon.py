"""Which words are words: a lower-case "medusa" or "mooncake" in a question may be a system's
name, but "savngs", "duplicating" or "tweak" is an ordinary word, typed or inflected. The relevance
gate asks this of the words a question puts where a name goes (:func:`rag.text.name_slots`), the
translator whether a question in Latin letters is English at all."""

from __future__ import annotations

import functools
import json
import re
from difflib import get_close_matches
from typing import TYPE_CHECKING

from .embedding import TOKENIZER_PATH
from .text import tokenize
from .tuning import FOREIGN_MIN_SHARE, FOREIGN_MIN_WORDS, WORD_CUTOFF

if TYPE_CHECKING:  # the index imports the dictionary below
    from .retrieve import KeywordIndex

# Endings an English word takes, with what its stem may need back ("duplicat|ing" + "e").
_INFLECTIONS = (("s", ""), ("es", ""), ("ing", ""), ("ing", "e"), ("ed", ""), ("ed", "e"), ("ly", ""), ("er", ""))


@functools.lru_cache(maxsize=1)
def dictionary() -> tuple[str, ...]:
    """The whole words (four letters or more) of the embedding model's tokenizer: about 20,000
    English words and common names, shipped with the project, so no word list is downloaded."""
    return tuple(sorted(w for w in english() if len(w) >= 4))


@functools.lru_cache(maxsize=1)
def english() -> frozenset[str]:
    """Every whole word of the embedding model's tokenizer (lower case)."""
    vocab = json.loads(TOKENIZER_PATH.read_text(encoding="utf-8"))["model"]["vocab"]
    return frozenset(w for w in vocab if w.isalpha())


class Lexicon:
    """The dictionary above and the collection's own words (``index``)."""

    def __init__(self, index: KeywordIndex) -> None:
        self.index = index
        self.words = dictionary()
        self._known = english()
        self._parts: dict[str, bool] = {}  # a near spelling is a scan of the dictionary (~20 ms)

    def is_word(self, word: str) -> bool:
        """Whether ``word`` is a word rather than a name: one the collection uses, a dictionary word
        or its inflection, or a near spelling of either ("savngs", "transfomer"). Each part of a
        hyphenated or underscored word counts alone ("transfomer-lite")."""
        if self.index.known(word):
            return True
        return all(self._part_is_word(part) for part in re.split(r"[-_]", word.lower()) if part)

    def reads_foreign(self, text: str) -> bool:
        """Whether a text in Latin letters is in a language whose function words
        :func:`rag.intent.language` does not know (Dutch, Turkish, Vietnamese, ...): FOREIGN_MIN_WORDS
        or more of its first 40 words of four letters or more, and FOREIGN_MIN_SHARE of them, are no
        words (Dutch "welke", "getest"; Turkish "kadar"). Casual English, with its typos and a name
        the collection does not hold, has fewer; English made mostly of such names ("kvquant kivi
        gear zipcache: which compresses most?") reads as foreign, and is translated with its names
        kept as written."""
        words = re.findall(r"[^\W\d_]{4,}", text)[:40]  # the first words tell; a scan costs ~20 ms a word
        needed = max(FOREIGN_MIN_WORDS, FOREIGN_MIN_SHARE * len(words))
        # The exact tests first; a near spelling is asked only of the words left, while it can matter.
        unsure = [w for w in words if not (self.index.known(w) or w.lower() in self._known)]
        foreign = 0
        for n, word in enumerate(unsure):
            if foreign + len(unsure) - n < needed:
                return False
            foreign += not self.is_word(word)
            if foreign >= needed:
                return True
        return False

    def _part_is_word(self, part: str) -> bool:
        if (found := self._parts.get(part)) is None:
            if len(self._parts) > 10_000:
                self._parts.clear()
            found = self._parts[part] = self._spelt_as_word(part)
        return found

    def _spelt_as_word(self, part: str) -> bool:
        if len(part) < 4 or not part.isalpha() or part in self._known:
            return True  # too short to tell, or it has digits: other checks read those as names
        # British spellings: "summarise", "optimiser", "analysed", "colours" (the dictionary is American).
        american = re.sub(r"our(s|ed|ing)?$", r"or\1", re.sub(r"(i|y)s(e[ds]?|ers?|ing|ations?)$", r"\1z\2", part))
        if american != part and self._spelt_as_word(american):
            return True
        stems = [part[:-len(end)] + back for end, back in _INFLECTIONS if part.endswith(end)]
        if any(len(stem) >= 3 and (stem in self._known or self.index.known(stem)) for stem in stems):
            return True  # "duplicating", "llms"
        # Two letters typed in the wrong order: "waht's", "thier", "tehy" (short words, which a
        # near spelling below cannot reach).
        if any(part[:i] + part[i + 1] + part[i] + part[i + 2:] in self._known for i in range(len(part) - 1)):
            return True
        if get_close_matches(part, self.words, n=1, cutoff=WORD_CUTOFF):
            return True
        # The collection's words are held as stems: a near spelling of one is compared stem to stem.
        return any(self.index.near_spelling(t, WORD_CUTOFF) for t in tokenize([part])[0])
