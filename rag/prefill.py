"""Saved model states of answer prompts (the TurboRAG idea): the fixed start of every prompt, and
that start with each passage as source [1], computed ahead so an answer only reads the rest."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from . import prompts
from .citations import Source
from .corpus import stored_body
from .evidence import evidence_text
from .generate import condense_start, prompt_start
from .llm import LLM
from .settings import Settings
from .store import Store

log = logging.getLogger(__name__)


class Prefiller:
    """Computes and saves prompt-start states through the LLM's ``prefill`` (llama.cpp only; other
    backends have none and this does nothing)."""

    def __init__(self, settings: Settings, store: Store, llm: Callable[[], LLM]) -> None:
        self.settings = settings
        self.store = store
        self._llm = llm
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._again = threading.Event()

    def prefill_prompt_starts(self) -> None:
        """Save the state of the fixed start of every answer prompt and follow-up rewrite."""
        prefill = getattr(self._llm(), "prefill", None)
        if prefill is not None:
            prefill(prompt_start())
            head = prompts.CONDENSE_TEMPLATE.split("{history}")[0]
            prefill([*condense_start(), {"role": "user", "content": head}])

    def in_background(self) -> threading.Thread:
        """Run :meth:`prefill_papers` in a daemon thread (again if papers were added meanwhile).

        Each passage holds the model for ~3 s, so a question asked meanwhile waits at most that.
        """
        with self._lock:
            self._again.set()
            if self._thread is None or not self._thread.is_alive():
                def run() -> None:
                    while self._again.is_set():
                        self._again.clear()
                        try:
                            self.prefill_papers()
                        except Exception:  # a missed prefill only costs speed
                            log.exception("saving prompt states failed")
                            return

                self._thread = threading.Thread(target=run, name="paperchat-prefill", daemon=True)
                self._thread.start()
            return self._thread

    def prefill_papers(self, limit: int | None = None, stop: threading.Event | None = None) -> int:
        """Save the model state of the answer prompt's start with each passage as the first source,
        for up to ``limit`` passages (default: the ``llm.prefill_papers`` setting); returns how many were
        computed now.

        A question whose best paper has a saved state only makes the model read the other sources
        and the question. States already saved (on disk, from an earlier run) are skipped.
        """
        prefill = getattr(self._llm(), "prefill", None)
        if prefill is None or not self.settings.answer.first_source_full:
            return 0
        limit = self.settings.llm.prefill_papers if limit is None else limit
        done = 0
        for i, (_, text, meta) in enumerate(self.store.iter_chunks()):
            if i >= limit or (stop is not None and stop.is_set()):
                break
            done += prefill(prompt_start(Source(1, meta["paper_id"], meta["title"], evidence_text(stored_body(text)))))
        return done
