"""The first stage of an answer: the question in English, and resolved against the conversation
(a follow-up keeps the conversation's papers and, for an ellipsis, what was asked)."""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass

from . import grounding, prompts
from .corpus import clean_text
from .gate import RelevanceGate
from .generate import Generator, condense_start, translate_messages
from .intent import asked_clause, function_word, intent, language, spell_out
from .llm import LLMError, Message
from .retrieve import Hit, HybridRetriever, KeywordIndex
from .settings import Settings
from .text import content_terms, mentions, name_forms, question_names, short_name, squash, whole_name, word_grams
from .tuning import ELLIPSIS_TERMS

log = logging.getLogger(__name__)

# A question of its own starts with a question word; a fragment ("decoding?") does not.
_QUESTION_WORD = re.compile(r"^\W*(what|which|how|why|who|whose|where|when|is|are|does|do|did|can|could|any|"
                            r"tell|explain|describe|list|show|give)\b", re.I)
# Words that lead into a question that goes on from the previous one ("and ...", "ok so ...").
_LEADS = r"and|also|so|but|then|ok"
# What opens a fragment before its question word, if it has one: "and", "what about" ...
_OPENER = re.compile(rf"^\W*(?:(?:{_LEADS})\b\W*)*(?:(?:what|how)\s+about\b)?", re.I)
# A question that opens like this continues the conversation ("and for decoding?", "what about
# memory?"); chosen on the dev split's follow-ups, with REFERS_BACK below.
_CONTINUES = re.compile(rf"^\W*({_LEADS}|what about|how about|same|vs\.?|versus|compared)\b", re.I)
#: Words that say "a kind of" ("what kind of hardware?"), not what kind.
_KIND = frozenset(content_terms("kind kinds sort sorts type types"))
# "what is pruning?", "what are draft models?": a question for what a thing is, not a detail of
# the conversation's paper ("what is the batch size?", "what is its speedup?").
_DEFINES = re.compile(r"^\W*(?:what|who)(?:'s|\s+(?:is|are))\s+(?!(?:the|its?|their|this|that|they)\b)", re.I)
# A fragment that opens with a preposition ("and on weatherbench?", "what about for llama 13b?",
# "also, on h100?"), and a setting phrase of a question ("on Moving MNIST", "for LLaMA-13B").
_PREPOSITION = r"(?:on|for|with|at|in|using|under)"
_SLOT = re.compile(rf"^\W*(?:and|also)?\W*(?:what about|how about)?\s*{_PREPOSITION}\s", re.I)
_SETTING_PHRASE = re.compile(rf"\b{_PREPOSITION}\s+(?:(?!{_PREPOSITION}\b)[^\s,;:?.!]+\s*){{1,3}}", re.I)
#: Words by which a follow-up refers to the conversation before it.
REFERS_BACK = re.compile(r"\b(it|its|it's|they|them|their|theirs|this|that|these|those|he|she|his|her|"
                         r"the (paper|method|model|approach|system|work|technique|authors?|same))\b", re.I)
#: Translations kept (questions of a conversation are replayed on every turn).
TRANSLATION_CACHE_SIZE = 1024


@dataclass
class Turn:
    """What a conversation is about after one question: the question in English (as retrieval
    and the checks see it), the papers it is about, and what it asks for."""

    question: str
    subject: list[Hit]
    hits: list[Hit]
    followup: bool = False
    focus_question: str = ""  # whose words say what is asked (an ellipsis borrows the previous one's)
    wants: str = "other"
    kind: str = "fact"  # "fact", "list" or "compare" (see intent.intent)


def rare_words(text: str, index: KeywordIndex) -> list[str]:
    """The words of ``text`` that the collection uses in few chunks (:meth:`KeywordIndex.rare`), not
    counting the function words of the languages :func:`intent.language` knows ("plus")."""
    # Latin-script words only: Chinese or Japanese text has no spaces between its words.
    words = re.findall(r"[A-Za-z\u00c0-\u024f][\w-]{3,}", re.sub(r"[^\w\s-]|[^\x00-\u024f]", " ", text))
    return [w for w in words if not function_word(w) and index.rare(w)]


class Translator:
    """Questions in other languages, translated by the model for retrieval and the checks."""

    def __init__(self, generator: Generator, retriever: HybridRetriever) -> None:
        self.generator = generator
        self.retriever = retriever  # its vocabulary tells a paper's own words from the language's
        self._translations: dict[str, str] = {}
        self._lock = threading.Lock()  # the page's users share one engine

    def english(self, question: str, translate: bool = True) -> tuple[str, str]:
        """The question in English, and its language. Another language is translated by the model
        (names and figures kept as written); translations are cached. With ``translate`` False,
        or when the model fails, a question not translated before is used as written."""
        lang = language(question)
        if lang == "en" and self.retriever.lexicon().reads_foreign(question):
            lang = "other"  # Latin letters, but not English: translated like any other language
        if lang == "en":
            return question, lang
        with self._lock:
            found = self._translations.get(question)
        if found is None and translate:
            try:
                found = self._translate(question)
            except LLMError as e:  # retrieval, the gate and quotes still work on the original words
                log.warning("translating the question failed, using it as written: %s", e)
        return found or question, lang

    def _translate(self, question: str) -> str:
        found = self._complete(question)
        # A question that came back as a statement lost what it asks ("which specific base model?"
        # -> "uses a specific base model."), and sometimes gained an answer the model made up: asked
        # once more, with the instruction said again (6 of 93 dev translations, session 12; dev
        # planner: abstained +1, answers unchanged).
        if _ASKS.search(question) and "?" not in found:
            again = self._complete(question, as_question=True)
            found = again if "?" in again else found
        if len(found) < 5:
            found = question
        # Names by their form only (CamelCase, acronyms, digits): in German every noun is capitalised.
        original = word_grams(question)
        names = name_forms(question)
        found = re.sub(r"(?<=\d)\.\s+(?=\d)", ".", found)  # "Qwen2. 5-1M": the model's tokens split a name
        for name in name_forms(found):  # one the original does not hold was made up
            if not mentions(name, original):
                found = re.sub(whole_name(name), " ", found)
        # A name the translation lost would lose the paper: keep every name of the original, and
        # every word the collection uses in only a few chunks, which is how a name typed in lower
        # case looks ("minference", "prodiff"); the language's own words are not in its vocabulary,
        # and those that are ("plus") are function words. A rare word inside a name is that name.
        rare = [w for w in rare_words(question, self.retriever.keyword_index())
                if not any(squash(w) in squash(n) for n in names)]
        kept = {n.casefold(): n for n in [*names, *rare]}
        found = as_written(found, names)
        found = clean_text(" ".join([found, *(n for key, n in kept.items() if key not in found.casefold())]))
        with self._lock:
            self._translations[question] = found
            if len(self._translations) > TRANSLATION_CACHE_SIZE:
                self._translations.pop(next(iter(self._translations)), None)
        return found

    def _complete(self, question: str, as_question: bool = False) -> str:
        """The model's translation: its first line, unquoted."""
        out = self.generator.complete(translate_messages(question, as_question), max_tokens=80)
        return clean_text(out.splitlines()[0] if out else "").strip("\"' ")


def as_written(translation: str, names: list[str]) -> str:
    """``translation`` with each of ``names`` (names by their form: acronyms, CamelCase, digits) spelt
    as the user wrote it wherever the model wrote the same word in another case: "SPEED"
    translated as "the speed framework" is no longer a name."""
    for name in names:
        translation = re.sub(whole_name(name), name.replace("\\", r"\\"), translation, flags=re.I)
    return translation


# A question mark in any script.
_ASKS = re.compile(r"[?\uff1f\u061f]")


def _words(terms: frozenset[str]) -> set[str]:
    """The terms as words of a question: terms with digits ("2b", "2", "1.5", "5b" of "qwen 1.5b")
    are read out of one setting and count as one word (dev: J-046, "and on gemma 2b?")."""
    words = {t for t in terms if not any(c.isdigit() for c in t)}
    return words | ({"<setting>"} if len(words) < len(terms) else set())


class FollowUps:
    """Resolves each question against the conversation before it (the conversation's state is its
    user questions, replayed: retrieval only, ~10 ms each)."""

    def __init__(self, settings: Settings, retriever: HybridRetriever, gate: RelevanceGate, generator: Generator,
                 translator: Translator) -> None:
        self.settings = settings
        self.retriever = retriever
        self.gate = gate
        self.generator = generator
        self.translator = translator

    def conversation(self, history: list[Message]) -> Turn | None:
        """What the conversation is about before the new question: its user questions replayed
        through :meth:`turn` (translations are cached)."""
        previous: Turn | None = None
        turns = self.settings.conversation.history_turns
        for m in history[-turns:] if turns else []:
            if m["role"] == "user":  # earlier questions were translated when asked (cached)
                previous = self.turn(spell_out(self.translator.english(m["content"], translate=False)[0]), previous)
        return previous

    def turn(self, question: str, previous: Turn | None) -> Turn:
        """Resolve an English question against the conversation so far: a follow-up that names
        no paper of its own ("and for decoding?", "does it beat full fine-tuning?") stays with
        the previous question's papers, and an ellipsis keeps what the previous one asked for."""
        k = max(self.settings.retrieval.k, self.settings.answer.sources)
        hits = self.retriever.retrieve(question, k)
        named = [h for h in hits if h.named]
        focus = _words(grounding.focus_terms(question))
        if previous is not None and previous.subject and not named:
            # "and MSG on bert-large?": a name the conversation's paper does not use, but another
            # paper goes by or mentions. After a word that refers back ("its speedup on an h100?",
            # "does it work for llama 13b?"), only a paper's own name starts a new subject: a name
            # another abstract merely mentions is asked of the conversation's paper ("and YOCO,
            # what does it do?" names its subject first).
            own = word_grams(" ".join(f"{h.title} {h.text}" for h in previous.subject))
            known = self.retriever.term_weights().known
            back = REFERS_BACK.search(question)
            for name in question_names(question):
                if not mentions(name, own, known):
                    refers = back is not None and back.start() < question.find(name)
                    named = [h for h in hits if mentions(name, word_grams(
                        " ".join(self.retriever.own_names(h)) if refers else f"{h.title} {h.text}"), known)][:1]
                    if named:
                        named[0].named = True
                        break
        wanted = intent(question, sum(h.named for h in hits))
        # A short question continues the conversation only if it is not a topic of its own: the
        # conversation's paper is among its hits, or it finds nothing relevant by itself
        # ("what is speculative decoding?" after a question about CacheBlend starts anew).
        ids = {h.paper_id for h in previous.subject} if previous is not None else set()
        # A question with no word of its own ("which models?") or only words the conversation's
        # paper uses ("what gpu?" of a paper run on a 2080Ti GPU) asks about that paper; one that
        # asks what a thing is ("what is pruning?") is a topic of its own.
        # So does one that asks only which thing ("which gpus?", "what kind of hardware?"): it has
        # no topic besides the one word for what it asks, which any paper that names such things
        # would match. Not "what diffusion models?" or "which vision transformers?": a word every
        # question has, or two words, make a topic (asked_terms). Session 18: no change on the
        # 1,767 chosen-on questions; on two reviewers' labelled conversations (207, written before
        # they saw this rule) 21 changed, none for the worse: abstentions now name the
        # conversation's paper, not SARATHI, and answers quoted from another paper (SARATHI's
        # "A100 GPU" for FastKV) now abstain.
        asked = focus - _KIND
        short = len(focus) <= ELLIPSIS_TERMS and (
            not _QUESTION_WORD.search(question)  # a fragment: "decoding?", "on yi-9b?"
            or (previous is not None and not _DEFINES.search(question)
                and (focus <= _words(content_terms(" ".join(h.text for h in previous.subject)))
                     or grounding.asks_which(question) and len(asked) == 1
                     and asked <= _words(grounding.asked_terms(question))))
            or any(h.paper_id in ids for h in hits) or not self.gate.relevant(question, hits))
        if previous is not None and previous.subject and not named and wanted.kind == "fact" and (
                _CONTINUES.search(question) or REFERS_BACK.search(question) or short):
            hits = previous.subject + [h for h in hits if h.paper_id not in ids]
            elliptic = len(focus) <= ELLIPSIS_TERMS and not REFERS_BACK.search(question)
            # A fragment with no question word of its own ("and for masked LMs on GLUE?", "what about
            # zero-shot QA?") cannot ask another kind of thing than the question it continues.
            fragment = not _QUESTION_WORD.search(_OPENER.sub("", question))
            wants = previous.wants if wanted.wants == "other" and (elliptic or fragment) else wanted.wants
            # An ellipsis with a word of its own ("storage?", "and for decoding?") asks about that,
            # in the previous question's kind (a figure); one that only names something ("on
            # llama-70b?", "and jrt-rnn?") asks the previous question again about it.
            # A setting of its own ("on llama-33b?") replaces the previous question's ("for LLaMA-13B").
            earlier = re.sub(r"\S*\d\S*", " ", previous.focus_question) if re.search(r"\d", question) \
                else previous.focus_question
            # So does a setting after a preposition ("and on weatherbench?" after "... MSE on Moving
            # MNIST?"): the previous question's last such phrase, up to the next preposition or
            # punctuation. Grammar, added in session 12 for a dev follow-up; from session 17 also
            # for a fragment that only names a setting of the paper ("what about TaxiBJ?",
            # "weatherbench?"), not a measure ("what about SSIM?"). Dev and the retired splits
            # (1,692, model-free planner): answered +3, nothing lost.
            names = self._names(question)
            own_aspect = self._own_aspect(question, names)
            if _SLOT.match(question) or (elliptic and not own_aspect and self._names_setting(names, previous)):
                phrases = list(_SETTING_PHRASE.finditer(earlier))
                if phrases:
                    earlier = earlier[:phrases[-1].start()] + " " + earlier[phrases[-1].end():]
            aim = f"{question} {earlier}" if elliptic and not own_aspect else question
            return Turn(question, previous.subject, hits, True, aim, wants)
        subject = named or hits[:1]
        # A question that describes its paper has found it by the description; what it asks is in
        # its last asking clause, and only that clause's words say which sentence answers.
        # A question for a name ("- what is it called?") is answered by the description itself, and
        # so is a clause that asks for nothing in particular ("- how much faster?"): with no focus
        # of its own, any figure of the paper would cover it.
        clause = question if named or wanted.wants == "name" else asked_clause(question)
        aim = clause if grounding.focus_terms(clause, wants=wanted.wants) else question
        return Turn(question, subject, hits, False, aim, wanted.wants, wanted.kind)

    def _names(self, question: str) -> list[str]:
        """A fragment's names: by their form, and the words the collection uses in few chunks (a
        name typed in lower case). Retrieval has just checked the store, so its index is current."""
        return question_names(question) + rare_words(question, self.retriever.term_weights())

    @staticmethod
    def _names_setting(names: list[str], previous: Turn) -> bool:
        """Whether a fragment's ``names`` name a setting of the conversation's paper: a name its
        abstract writes after a preposition ("For TaxiBJ, ...", "on WeatherBench"), unlike a measure
        ("improves SSIM by ...")."""
        text = " ".join(h.text for h in previous.subject)
        return any(re.search(rf"\b{_PREPOSITION}\s+(?:the\s+)?{re.escape(n)}(?![\w-])", text, re.I) for n in names)

    @staticmethod
    def _own_aspect(question: str, names: list[str]) -> bool:
        """Whether a fragment has a content word that is not one of its ``names``, nor a number, nor
        a word for a figure's kind ("and the speedup?" asks the previous question's topic)."""
        named = content_terms(" ".join(names))
        own = content_terms(question) - named - grounding.GENERIC - grounding.FIGURE_KIND
        return any(not t.isdigit() for t in own)

    def standalone(self, turn: Turn, history: list[Message], paper: Hit) -> str:
        """The question as the model is asked it: a follow-up that refers back is rewritten
        (:meth:`condense`), an ellipsis gets the name of its paper; others stay as they are."""
        if not turn.followup:
            return turn.question
        if REFERS_BACK.search(turn.question):
            return self.condense(turn.question, history)
        return f"{turn.question} (about {short_name(paper.title)})"

    def condense(self, question: str, history: list[Message]) -> str:
        """Rewrite a follow-up into a standalone question. No LLM call without history, nor for a
        question that refers to nothing before it (no "it", "they", "this paper"...)."""
        if not history or self.settings.conversation.history_turns == 0 or not REFERS_BACK.search(question):
            return question
        turns = history[-self.settings.conversation.history_turns :]
        lines = "\n".join(f"{m['role'].capitalize()}: {m['content'][:600]}" for m in turns)
        messages = [*condense_start(),
                    {"role": "user", "content": prompts.CONDENSE_TEMPLATE.format(history=lines, question=question)}]
        rewritten = self.generator.complete(messages, max_tokens=60)
        rewritten = clean_text(rewritten.splitlines()[0] if rewritten else "").strip("\"' ")
        rewritten = re.sub(r"^(rewritten question|question)\s*:\s*", "", rewritten, flags=re.I)
        if len(rewritten) < 5 or rewritten.casefold() == question.casefold():
            # The model did not resolve the reference: search with the previous question as context.
            previous = next((m["content"] for m in reversed(history) if m["role"] == "user"), "")
            return f"{previous} {question}".strip()
        return rewritten
