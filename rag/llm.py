"""LLM backends behind one small interface: the embedded llama.cpp model, or any
OpenAI-compatible server. Which one is chosen by settings, never by fallback.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from .settings import Settings

Message = dict[str, str]


class LLMError(RuntimeError):
    """The LLM backend cannot be used (misconfigured, unreachable, or failing)."""


class LLM(Protocol):
    """What the engine needs of a model: stream a chat reply and report token usage."""

    name: str
    #: Token counts of the last call: prompt_tokens, completion_tokens.
    usage: dict[str, int]

    def stream(self, messages: list[Message], *, max_tokens: int, temperature: float) -> Iterator[str]:
        """Yield the reply to ``messages`` as text deltas."""
        ...


def chatml(messages: list[Message]) -> str:
    """Format messages with the ChatML template (Qwen's), ending with an open assistant turn."""
    parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    return "".join(parts) + "<|im_start|>assistant\n"


class LlamaCppLLM:
    """A GGUF model run in-process by llama.cpp; one generation at a time."""

    def __init__(self, model_path: Path, n_threads: int = 2, n_ctx: int = 4096) -> None:
        # With the default busy-wait, 2 threads collapse to <1 tok/s when another process runs.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise LLMError(
                "llama-cpp-python is not installed: pip install llama-cpp-python==0.3.36 "
                "(or set PAPERCHAT_LLM_BASE_URL to use a server)"
            ) from e
        self.name = f"llama.cpp:{model_path.name}"
        self.usage: dict[str, int] = {}
        self._lock = threading.Lock()
        try:
            self._llm = Llama(
                model_path=str(model_path), n_ctx=n_ctx, n_threads=n_threads, n_batch=512, verbose=False
            )
        except (ValueError, RuntimeError) as e:
            raise LLMError(f"llama.cpp could not load {model_path}: {e}") from e

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=True))

    def stream(self, messages: list[Message], *, max_tokens: int, temperature: float) -> Iterator[str]:
        prompt = chatml(messages)
        with self._lock:
            prompt_tokens = self.count_tokens(prompt)
            if prompt_tokens + max_tokens > self._llm.n_ctx():
                raise LLMError(f"the prompt ({prompt_tokens} tokens) does not fit the context window")
            completion_tokens = 0
            self.usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 0}
            for chunk in self._llm.create_completion(
                prompt, max_tokens=max_tokens, temperature=temperature, top_k=1 if temperature == 0 else 40,
                stop=["<|im_end|>", "<|endoftext|>", "<|im_start|>"], stream=True,
            ):
                completion_tokens += 1
                self.usage["completion_tokens"] = completion_tokens
                text = chunk["choices"][0]["text"]
                if text:
                    yield text


class OpenAICompatibleLLM:
    """Any server speaking the OpenAI chat API (vLLM, Ollama, llama.cpp server, OpenAI)."""

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout_s: float, retries: int) -> None:
        from openai import OpenAI

        self.name = f"openai:{model}@{base_url}"
        self.model = model
        self.usage: dict[str, int] = {}
        # A local server needs no key, but the client insists on one.
        self._client = OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout_s, max_retries=retries)

    def check(self) -> None:
        """Fail at start, with a clear message, when the server cannot be reached."""
        import openai

        try:
            models = [m.id for m in self._client.models.list()]
        except openai.APIConnectionError as e:
            raise LLMError(f"cannot reach the LLM server at {self._client.base_url}: {e}") from e
        except openai.AuthenticationError as e:
            raise LLMError(f"the LLM server at {self._client.base_url} refused the API key") from e
        except openai.APIError as e:
            raise LLMError(f"the LLM server at {self._client.base_url} answered with an error: {e}") from e
        if models and self.model not in models:
            raise LLMError(f"the LLM server at {self._client.base_url} has no model {self.model!r} "
                           f"(it has: {', '.join(models[:10])})")

    def stream(self, messages: list[Message], *, max_tokens: int, temperature: float) -> Iterator[str]:
        import openai

        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}
        try:
            response = self._client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=max_tokens,  # type: ignore[arg-type]
                temperature=temperature, stream=True, stream_options={"include_usage": True},
            )
            for chunk in response:
                if chunk.usage:
                    self.usage = {"prompt_tokens": chunk.usage.prompt_tokens,
                                  "completion_tokens": chunk.usage.completion_tokens}
                if chunk.choices and chunk.choices[0].delta.content:
                    if not chunk.usage:
                        self.usage["completion_tokens"] += 1
                    yield chunk.choices[0].delta.content
        except openai.APIConnectionError as e:
            raise LLMError(f"lost the LLM server at {self._client.base_url}: {e}") from e
        except openai.APIError as e:
            raise LLMError(f"the LLM server at {self._client.base_url} answered with an error: {e}") from e


def make_llm(settings: Settings) -> LLM:
    """The backend the settings name: a server when ``llm_base_url`` is set, else llama.cpp."""
    if settings.llm_base_url:
        llm = OpenAICompatibleLLM(
            settings.llm_base_url, settings.llm_model or "", settings.llm_api_key,
            settings.llm_timeout_s, settings.llm_retries,
        )
        llm.check()
        return llm
    from .weights import check_gguf, default_model_path

    path = check_gguf(settings.model_path) if settings.model_path else default_model_path(settings.cache_dir)
    return LlamaCppLLM(path, n_threads=settings.n_threads, n_ctx=settings.n_ctx)
