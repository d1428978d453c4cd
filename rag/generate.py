"""Generation: the prompts built from the sources, and the model's reply streamed with its token
counts (the refusal sentinel is held back, never shown as a draft)."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Generator as Gen, Iterator

from . import prompts
from .citations import Source
from .llm import LLM, Message
from .settings import Settings


def source_block(source: Source) -> str:
    """One numbered source as the model reads it."""
    return prompts.SOURCE_TEMPLATE.format(n=source.n, title=source.title, text=source.text)


def _fixed_messages() -> list[Message]:
    return [
        {"role": "system", "content": prompts.SYSTEM_PROMPT},
        {"role": "user", "content": prompts.EXAMPLE_QUESTION},
        {"role": "assistant", "content": prompts.EXAMPLE_ANSWER},
    ]


def condense_start() -> list[Message]:
    """How every follow-up rewriting prompt starts (instructions and a worked example)."""
    return [
        {"role": "system", "content": prompts.CONDENSE_SYSTEM_PROMPT},
        {"role": "user", "content": prompts.CONDENSE_EXAMPLE},
        {"role": "assistant", "content": prompts.CONDENSE_EXAMPLE_ANSWER},
    ]


def translate_messages(question: str, as_question: bool = False) -> list[Message]:
    """The prompt that translates a question into English (``as_question``: said again that it is
    a question, for a retry after a statement came back)."""
    system = f"{prompts.TRANSLATE_SYSTEM_PROMPT} {prompts.TRANSLATE_AS_QUESTION}" if as_question \
        else prompts.TRANSLATE_SYSTEM_PROMPT
    return [{"role": "system", "content": system},
            {"role": "user", "content": prompts.TRANSLATE_EXAMPLE},
            {"role": "assistant", "content": prompts.TRANSLATE_EXAMPLE_ANSWER},
            {"role": "user", "content": question}]


def answer_messages(sources: list[Source], question: str) -> list[Message]:
    """The answer prompt: instructions, worked example, then the sources and the question."""
    evidence = "\n".join(source_block(s) for s in sources)
    return [*_fixed_messages(),
            {"role": "user", "content": prompts.QUESTION_TEMPLATE.format(sources=evidence, question=question)}]


def prompt_start(first: Source | None = None) -> list[Message]:
    """How every answer prompt starts (with ``first`` as source [1]), its last message unfinished:
    the part whose model state can be saved and reused (see LlamaCppLLM.prefill)."""
    head = prompts.QUESTION_TEMPLATE.split("{sources}")[0]
    block = f"{source_block(first)}\n" if first is not None else ""
    return [*_fixed_messages(), {"role": "user", "content": head + block}]


class Generator:
    """Calls the LLM (``llm`` gives it, loading it on first use) with the settings' sampling."""

    def __init__(self, settings: Settings, llm: Callable[[], LLM]) -> None:
        self.settings = settings
        self._llm = llm

    def generate(self, messages: list[Message], max_tokens: int, usage: dict[str, int] | None = None) -> Iterator[str]:
        """The model's reply; ``usage`` gets this call's token counts. Our backends fill it per call
        (the page answers several questions at once, so a backend's ``usage`` attribute may already
        be another answer's); for others it is their ``usage`` attribute once the reply ends."""
        llm, usage = self._llm(), usage if usage is not None else {}
        stream: Callable[..., Iterator[str]] = llm.stream  # the LLM protocol has no ``usage``: optional
        if "usage" in inspect.signature(stream).parameters:
            yield from stream(messages, max_tokens=max_tokens, temperature=self.settings.answer.temperature,
                              usage=usage)
        else:
            yield from stream(messages, max_tokens=max_tokens, temperature=self.settings.answer.temperature)
            usage.update(getattr(llm, "usage", {}))

    def complete(self, messages: list[Message], max_tokens: int) -> str:
        """The whole reply, stripped."""
        return "".join(self.generate(messages, max_tokens)).strip()

    def answer(self, messages: list[Message], timings: dict[str, float], start: float) -> Gen[str, None, str]:
        """Yield the answer's text as the model writes it and return the whole reply. Text that could
        still be the refusal sentinel is held back; ``timings`` gets the token counts and the time
        of the first text shown (from ``start``)."""
        raw = ""
        emitted = 0
        usage: dict[str, int] = {}
        for delta in self.generate(messages, self.settings.answer.max_tokens, usage):
            raw += delta
            head = raw.lstrip().upper()
            if prompts.REFUSAL_SENTINEL.startswith(head[: len(prompts.REFUSAL_SENTINEL)]):
                continue
            if emitted == 0:
                timings["first_token_s"] = time.perf_counter() - start
            yield raw[emitted:]
            emitted = len(raw)
        timings.update(usage)
        return raw
