"""Saved llama.cpp model states, found again by the longest prompt prefix they share.

Reading a prompt is most of the wait on a CPU (~9 ms a token for the 0.5B model). The instructions,
the worked example and the first source's abstract are the same whenever the same paper ranks
first, so their state (the KV cache, ~12 KB a token) is computed once, kept here and restored in a
few milliseconds: the TurboRAG / CacheBlend idea, with llama.cpp's own state save and restore.

States live in a folder (a few MB each, least recently used dropped beyond ``max_bytes``); only
their token lists are kept in memory. Without a folder they are kept in memory.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def shared_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Number of leading tokens two token arrays share."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


@dataclass
class _Entry:
    tokens: np.ndarray
    size: int
    used: float
    data: bytes | None = field(default=None, repr=False)  # in-memory mode only
    digest: str = ""  # of the state bytes: a damaged state file is never loaded into the model


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()  # ~7 ms for a 7 MB state


class PrefixCache:
    """Model states keyed by the tokens that produced them; several llama.cpp contexts share one."""

    def __init__(self, folder: Path | None, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.RLock()  # contexts answering at once look up and add states
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            # Files left by a crash between a state and its token list: never counted, so removed.
            kept = {p.name.removesuffix(".tokens.npy") for p in folder.glob("*.tokens.npy")}
            for path in folder.iterdir():
                if path.name.split(".")[0] not in kept:
                    path.unlink(missing_ok=True)
            for path in folder.glob("*.tokens.npy"):
                key = path.name.removesuffix(".tokens.npy")
                state = folder / f"{key}.state"
                try:
                    tokens = np.load(path)
                    digest = (folder / f"{key}.digest").read_text().strip()
                    self._entries[key] = _Entry(tokens, state.stat().st_size, state.stat().st_mtime, digest=digest)
                except (OSError, ValueError):
                    self.discard(key)  # half-written, damaged or from before digests: recomputed when needed

    @staticmethod
    def key(tokens: Sequence[int]) -> str:
        return hashlib.sha1(np.asarray(tokens, dtype=np.int32).tobytes()).hexdigest()[:24]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, tokens: Sequence[int]) -> bool:
        return self.key(tokens) in self._entries

    @property
    def size(self) -> int:
        """Bytes of all kept states."""
        with self._lock:
            return sum(e.size for e in self._entries.values())

    def best(self, tokens: Sequence[int]) -> tuple[str, int]:
        """The kept state sharing the longest prefix with ``tokens``: (key, shared tokens); ("", 0) if none."""
        arr = np.asarray(tokens, dtype=np.int32)
        best_key, best_n = "", 0
        with self._lock:
            entries = list(self._entries.items())
        for key, entry in entries:
            n = shared_prefix(entry.tokens, arr)
            if n > best_n:
                best_key, best_n = key, n
        return best_key, best_n

    def load(self, key: str) -> tuple[np.ndarray, bytes] | None:
        """The tokens and state bytes of an entry, or None when it cannot be read (it is dropped)."""
        with self._lock:
            return self._load(key)

    def _load(self, key: str) -> tuple[np.ndarray, bytes] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        entry.used = time.time()
        if entry.data is not None:
            return entry.tokens, entry.data
        try:
            data = (self.folder / f"{key}.state").read_bytes()  # type: ignore[operator]
        except OSError:
            self.discard(key)
            return None
        if len(data) != entry.size or _digest(data) != entry.digest:
            log.warning("the saved model state %s is damaged: dropped (it is computed again when needed)", key)
            self.discard(key)
            return None
        return entry.tokens, data

    def add(self, tokens: Sequence[int], data: bytes) -> None:
        """Keep a state; the least recently used ones go when the cache is over its size."""
        with self._lock:
            self._add(tokens, data)

    def _add(self, tokens: Sequence[int], data: bytes) -> None:
        key = self.key(tokens)
        arr = np.asarray(tokens, dtype=np.int32)
        if self.folder is None:
            self._entries[key] = _Entry(arr, len(data), time.time(), data)
        else:
            # The state is written before its token list: a token list always has a whole state.
            digest = _digest(data)
            try:
                tmp = self.folder / f"{key}.state.tmp"
                tmp.write_bytes(data)
                tmp.replace(self.folder / f"{key}.state")
                (self.folder / f"{key}.digest").write_text(digest)
                with (self.folder / f"{key}.tokens.tmp").open("wb") as f:
                    np.save(f, arr)
                (self.folder / f"{key}.tokens.tmp").replace(self.folder / f"{key}.tokens.npy")
            except OSError as e:  # a full disk: the state is not kept, which only costs speed
                log.warning("cannot save a model state in %s (%s): answers stay correct, only slower", self.folder, e)
                self.discard(key)
                for suffix in (".state.tmp", ".tokens.tmp"):
                    (self.folder / f"{key}{suffix}").unlink(missing_ok=True)
                return
            self._entries[key] = _Entry(arr, len(data), time.time(), digest=digest)
        total = self.size
        for old in sorted(self._entries, key=lambda k: self._entries[k].used):
            if total <= self.max_bytes:
                break
            if old == key:
                continue
            total -= self._entries[old].size
            self.discard(old)

    def discard(self, key: str) -> None:
        """Forget an entry (and delete its files)."""
        with self._lock:
            self._entries.pop(key, None)
            if self.folder is not None:
                for suffix in (".tokens.npy", ".state", ".digest"):
                    (self.folder / f"{key}{suffix}").unlink(missing_ok=True)
