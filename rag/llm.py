"""LLM backends behind one small interface: the embedded llama.cpp model, or any
OpenAI-compatible server. Which one is chosen by settings, never by fallback.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np

from .prefix_cache import PrefixCache, shared_prefix
from .settings import Settings

if TYPE_CHECKING:
    from llama_cpp.llama_types import CreateCompletionStreamResponse
    from openai.types.chat import ChatCompletionMessageParam

Message = dict[str, str]


class LLMError(RuntimeError):
    """The LLM backend cannot be used (misconfigured, unreachable, or failing)."""


NO_LOCAL_MODEL = ("no LLM is set up: this install has no embedded model (llama-cpp-python is not installed). "
                  'Install it with pip install "paperchat[local]", or set PAPERCHAT_LLM__BASE_URL and '
                  "PAPERCHAT_LLM__MODEL to an OpenAI-compatible server")


class LLM(Protocol):
    """What the engine needs of a model: stream a chat reply and report token usage."""

    name: str
    #: Token counts of the last call: prompt_tokens, completion_tokens.
    usage: dict[str, int]

    def stream(self, messages: list[Message], *, max_tokens: int, temperature: float) -> Iterator[str]:
        """Yield the reply to ``messages`` as text deltas. A backend may also take ``usage=``, a dict
        it fills with this call's token counts (the engine passes one when it does)."""
        ...


class LlamaCppLLM:
    """A GGUF model run in-process by llama.cpp; one generation at a time.

    With a :class:`PrefixCache`, every prompt starts from the saved state that shares the longest
    prefix with it, and :meth:`prefill` saves the state of a prompt start for later prompts.
    """

    def __init__(
        self, model_path: Path, n_threads: int = 2, n_ctx: int = 4096, prefix_cache: PrefixCache | None = None,
        chat_format: str | None = None,
    ) -> None:
        # With the default busy-wait, 2 threads collapse to <1 tok/s when another process runs.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise LLMError(NO_LOCAL_MODEL) from e
        self.name = f"llama.cpp:{model_path.name}"
        self.usage: dict[str, int] = {}
        self.prefix_cache = prefix_cache
        self._lock = threading.Lock()
        try:
            self._llm = Llama(
                model_path=str(model_path), n_ctx=n_ctx, n_threads=n_threads, n_batch=512, verbose=False
            )
        except (ValueError, RuntimeError) as e:
            raise LLMError(f"llama.cpp could not load {model_path}: {e}") from e
        from .chat_template import chat_template

        model = self._llm._model
        #: How this model wants a conversation written (from the GGUF, or the llm.chat_format setting).
        self.template = chat_template(self._llm.metadata, model.token_get_text, chat_format, model_path.name)

    def tokenize(self, text: str) -> list[int]:
        return self._llm.tokenize(text.encode(), add_bos=False, special=True)

    # ----- saved states ------------------------------------------------------------------
    def _save_state(self) -> bytes:
        import llama_cpp

        ctx = self._llm._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        n = llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)
        return bytes(memoryview(buf)[:n])

    def _restore_state(self, tokens: np.ndarray, data: bytes) -> bool:
        import llama_cpp

        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if llama_cpp.llama_state_seq_set_data(self._llm._ctx.ctx, buf, len(data), 0) != len(data):
            self._llm.reset()
            return False
        self._llm.input_ids[: len(tokens)] = tokens
        self._llm.n_tokens = len(tokens)
        self._llm._requires_eval = True  # the logits are not part of the saved state
        return True

    def _start_from_best_state(self, tokens: list[int]) -> None:
        """Load the saved state sharing the most tokens with ``tokens``, when it beats the current one."""
        if self.prefix_cache is None:
            return
        current = shared_prefix(self._llm.input_ids[: self._llm.n_tokens], np.asarray(tokens))
        key, shared = self.prefix_cache.best(tokens)
        if shared > current + 8:  # restoring costs a few ms; re-reading 8 tokens costs ~70 ms
            found = self.prefix_cache.load(key)
            if found is not None and not self._restore_state(*found):
                self.prefix_cache.discard(key)

    def prefill(self, messages: list[Message]) -> bool:
        """Read the start of a prompt (``messages``, the last one unfinished) and save the model's
        state, so later prompts that start the same way skip it. False if it was saved already."""
        if self.prefix_cache is None:
            return False
        prefix = self.template.prefix(messages)
        if prefix is None:  # the template rewrites message text: no prompt start to save
            return False
        tokens = self.tokenize(prefix)
        with self._lock:
            if tokens in self.prefix_cache:
                return False
            self._start_from_best_state(tokens)
            done = shared_prefix(self._llm.input_ids[: self._llm.n_tokens], np.asarray(tokens))
            self._llm.n_tokens = done
            self._llm.eval(tokens[done:])
            self.prefix_cache.add(tokens, self._save_state())
        return True

    # ----- generation --------------------------------------------------------------------
    def stream(self, messages: list[Message], *, max_tokens: int, temperature: float,
               usage: dict[str, int] | None = None) -> Iterator[str]:
        tokens = self.tokenize(self.template.render(messages))
        with self._lock:
            if len(tokens) + max_tokens > self._llm.n_ctx():
                raise LLMError(f"the prompt ({len(tokens)} tokens) does not fit the context window")
            self._start_from_best_state(tokens)
            completion_tokens = 0
            self.usage = calls = usage if usage is not None else {}
            calls.update({"prompt_tokens": len(tokens), "completion_tokens": 0,
                          "cached_tokens": shared_prefix(self._llm.input_ids[: self._llm.n_tokens],
                                                         np.asarray(tokens))})
            # stream=True: an iterator of chunks (the declared return type also has the whole response).
            chunks = cast("Iterator[CreateCompletionStreamResponse]", self._llm.create_completion(
                tokens, max_tokens=max_tokens, temperature=temperature, top_k=1 if temperature == 0 else 40,
                stop=self.template.stop, stream=True,
            ))
            try:
                for chunk in chunks:
                    completion_tokens += 1
                    calls["completion_tokens"] = completion_tokens
                    text = chunk["choices"][0]["text"]
                    if text:
                        yield text
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:  # a generation stopped early (Stop) ends here, under the lock
                    close()
                self._free_sampler()

    def _free_sampler(self) -> None:
        """Free the generation's llama.cpp sampler now. llama-cpp-python makes one per generation and
        leaves the old one in a reference cycle, so its native vocabulary-sized buffer (1.8 MB for
        Qwen) waits for Python's cyclic GC; dozens piled up and ratcheted the heap (+64 MB in the soak)."""
        sampler, self._llm._sampler = getattr(self._llm, "_sampler", None), None
        if sampler is not None:
            sampler.close()


class LlamaCppPool:
    """Several :class:`LlamaCppLLM` contexts over one model file, each writing one answer at a time.

    llama.cpp memory-maps the weights, so a second context costs its KV cache and buffers (~130 MB
    of proportional set size for the 0.5B model), not a second copy of the model; saved states are
    shared. On 2 cores two answers written at once took 1.4x the time of one, so users waiting
    behind each other wait less.
    """

    def __init__(self, members: list[LlamaCppLLM]) -> None:
        self.members = members
        self.name = members[0].name
        self.usage: dict[str, int] = {}
        self._free: queue.Queue[LlamaCppLLM] = queue.Queue()
        for member in members:
            self._free.put(member)

    @contextmanager
    def _member(self) -> Iterator[LlamaCppLLM]:
        """The first free context (waiting for one when all are busy), given back afterwards."""
        member = self._free.get()
        try:
            yield member
        finally:
            self._free.put(member)

    def prefill(self, messages: list[Message]) -> bool:
        """Save a prompt start's state through a free context (see :meth:`LlamaCppLLM.prefill`)."""
        with self._member() as member:
            return member.prefill(messages)

    def stream(self, messages: list[Message], *, max_tokens: int, temperature: float,
               usage: dict[str, int] | None = None) -> Iterator[str]:
        """Stream a reply from the first free context."""
        with self._member() as member:
            self.usage = usage if usage is not None else {}
            yield from member.stream(messages, max_tokens=max_tokens, temperature=temperature, usage=self.usage)


class OpenAICompatibleLLM:
    """Any server speaking the OpenAI chat API (vLLM, Ollama, llama.cpp server, OpenAI)."""

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout_s: float, retries: int) -> None:
        from openai import OpenAI

        self.name = f"openai:{model}@{base_url}"
        self.model = model
        self.timeout_s, self.retries = timeout_s, retries
        self.usage: dict[str, int] = {}
        # A local server needs no key, but the client insists on one.
        self._client = OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout_s,
                              max_retries=retries)

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

    def stream(self, messages: list[Message], *, max_tokens: int, temperature: float,
               usage: dict[str, int] | None = None) -> Iterator[str]:
        import httpx
        import openai

        url = self._client.base_url
        # Per call: several answers stream from one server at once.
        self.usage = calls = usage if usage is not None else {}
        calls.update({"prompt_tokens": 0, "completion_tokens": 0})
        response = None
        try:
            # Message is a plain {"role", "content"} dict; the client types each role's message apart.
            response = self._client.chat.completions.create(
                model=self.model, messages=cast("list[ChatCompletionMessageParam]", messages), max_tokens=max_tokens,
                temperature=temperature, stream=True, stream_options={"include_usage": True},
            )
            for chunk in response:
                if chunk.usage:
                    calls.update({"prompt_tokens": chunk.usage.prompt_tokens,
                                  "completion_tokens": chunk.usage.completion_tokens})
                if chunk.choices and chunk.choices[0].delta.content:
                    if not chunk.usage:
                        calls["completion_tokens"] += 1
                    yield chunk.choices[0].delta.content
        # Errors while the stream is read come from httpx itself, not wrapped by the openai client.
        except (openai.APITimeoutError, httpx.TimeoutException) as e:
            tries = f", {self.retries + 1} tries" if self.retries else ""
            raise LLMError(f"the LLM server at {url} sent nothing for {self.timeout_s:g} s{tries} (overloaded or "
                           "stopped?); the unfinished answer was dropped: ask again once it answers "
                           "(PAPERCHAT_LLM__TIMEOUT_S sets the wait)") from e
        except (openai.APIConnectionError, httpx.TransportError) as e:
            raise LLMError(f"lost the LLM server at {url} ({e}); the unfinished answer was dropped: ask "
                           "again once it is back (no restart needed)") from e
        except openai.APIError as e:
            raise LLMError(f"the LLM server at {url} answered with an error: {e}") from e
        finally:
            if response is not None:  # also on Stop: the server stops generating for us
                response.close()


def make_llm(settings: Settings) -> LLM:
    """The backend the settings name: a server when ``llm.base_url`` is set, else llama.cpp."""
    if settings.llm.base_url:
        llm = OpenAICompatibleLLM(
            settings.llm.base_url, settings.llm.model or "", settings.llm.api_key,
            settings.llm.timeout_s, settings.llm.retries,
        )
        llm.check()
        return llm
    import importlib.util

    # The base install (no `local` extra) has neither llama.cpp nor the weights: say what to do.
    if importlib.util.find_spec("llama_cpp") is None:
        raise LLMError(NO_LOCAL_MODEL)
    from .weights import check_gguf, default_model_path

    path = check_gguf(settings.llm.model_path) if settings.llm.model_path else default_model_path(settings.cache_dir)
    cache = None
    if settings.llm.prefix_cache_mb:
        import llama_cpp

        # Saved states only fit the model file and llama.cpp build that wrote them.
        stat = path.stat()
        namespace = hashlib.sha1(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}:{llama_cpp.__version__}".encode())
        cache = PrefixCache(settings.cache_dir / "kv" / namespace.hexdigest()[:16], settings.llm.prefix_cache_mb << 20)
    members = [LlamaCppLLM(path, n_threads=settings.llm.threads, n_ctx=settings.llm.n_ctx, prefix_cache=cache,
                           chat_format=settings.llm.chat_format) for _ in range(settings.llm.contexts)]
    return members[0] if len(members) == 1 else LlamaCppPool(members)
