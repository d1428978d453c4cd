"""The persistent chunk store: a Chroma collection written through llama-index, and its errors.

One Chroma record per chunk (most abstracts are one chunk), with the paper's id, title, title key
and content hash as metadata. The collection's metadata carries a stamp that every write changes
(see :meth:`Store.stamp`), which tells a saved keyword index whether it is still current. The
papers it holds are listed by :mod:`rag.catalog`; files are added by :mod:`rag.ingest`.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Chroma's product telemetry would try to reach the internet.
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import chromadb
from chromadb.config import Settings as ChromaSettings
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.vector_stores.chroma import ChromaVectorStore

from .settings import Settings

log = logging.getLogger(__name__)
REBUILD_HINT = "rebuild it with: paperchat rebuild"
#: Collection metadata: a random value replaced on every write, from any process (the saved
#: keyword index is valid only for the stamp it was built from).
STAMP = "paperchat_stamp"
#: Collection metadata: 2 once every record carries ``title_key`` (stores from before it get it on
#: their first ingest).
SCHEMA, SCHEMA_VERSION = "paperchat_schema", 2
#: Collection metadata: the length of the vectors, beside the ``embedding_model`` name (stores
#: from before it have the name only).
EMBEDDING_DIMENSION = "embedding_dimension"


class StoreError(RuntimeError):
    """The store is missing, damaged, unreachable, or was built with another embedding model."""


# Raised by our own mistakes, not by Chroma or the disk: never dressed up as a store failure.
_PROGRAMMING_ERRORS = (TypeError, AttributeError, KeyError, IndexError, AssertionError, NotImplementedError)


def _disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    text = str(error).lower()
    return isinstance(error, sqlite3.Error) and ("full" in text or "disk i/o" in text) or "no space left" in text


#: Below this much free space on the store's disk, a failed write is reported as a full disk.
#: Chroma's own message for it is "Error in compaction: Failed to apply logs to the metadata
#: segment" (measured on a 6 MB tmpfs); the store needs room for its write-ahead log and compaction.
LOW_DISK_BYTES = 64 << 20


def free_bytes(path: Path) -> int | None:
    """Free space on the disk holding ``path`` (its nearest existing parent); None if unknown."""
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def _collection_missing(error: BaseException) -> bool:
    from chromadb.errors import NotFoundError

    return isinstance(error, NotFoundError)


#: Chroma calls that write: only their failures can be a full disk.
WRITES = frozenset({"add", "upsert", "update", "delete", "modify", "create_collection", "get_or_create_collection",
                    "delete_collection"})


def free_text(free: int) -> str:
    """Free space as the messages write it ("12.3 MB free")."""
    return f"{free / 2**20:.1f} MB free"


def store_failure(settings: Settings, error: Exception, write: bool = True) -> StoreError:
    """What a failure of Chroma (or of the disk under it) means for the user, and what to do;
    ``write``: the failed call was a write (a failed read is never blamed on a full disk)."""
    import httpx

    where = (f"the Chroma server at {settings.store.url}" if settings.store.url
             else f"the store at {settings.chroma_path}")
    if isinstance(error, httpx.TimeoutException):
        return StoreError(f"{where} did not answer within {settings.store.timeout_s:g} s (it may be overloaded "
                          "or stopped); try again once it answers (PAPERCHAT_STORE__TIMEOUT_S sets the wait)")
    if isinstance(error, (httpx.TransportError, ConnectionError)):
        return StoreError(f"cannot reach {where} ({error}): start it again (chroma run …) or check "
                          "PAPERCHAT_STORE__URL; the next question works once it answers, without a restart")
    if _collection_missing(error):
        return StoreError(f"the collection {settings.store.collection!r} no longer exists in {where} (deleted by "
                          "another client?); it is empty now: add the papers again with paperchat ingest FILE, or "
                          "paperchat rebuild")
    free = store_free_bytes(settings) if write else None
    if _disk_full(error) or (free is not None and free < LOW_DISK_BYTES):
        left = free_text(free) if free is not None else "full"
        return StoreError(f"the disk holding {where} is full ({left}; {type(error).__name__}: {error}): free some "
                          "space, then run the same command again; the papers stored before are kept whole and "
                          "an ingest goes on where it stopped")
    return StoreError(f"{where} failed ({type(error).__name__}: {error}); if this repeats, {REBUILD_HINT}")


def pages(
    collection: Any, include: list[str], where: dict[str, Any] | None = None, page: int = 5000,
    where_document: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """A Chroma collection's records (``collection.get`` results) a page at a time."""
    offset = 0
    while True:
        got = collection.get(include=include, where=where, where_document=where_document, limit=page, offset=offset)
        if got["ids"]:
            yield got
        if len(got["ids"]) < page:
            return
        offset += page


def store_free_bytes(settings: Settings) -> int | None:
    """Free space under the embedded store; None for a Chroma server (its disk is not ours to see)."""
    return None if settings.store.url else free_bytes(settings.chroma_path)


class _Guarded:
    """A Chroma client or collection whose calls fail with :class:`StoreError` (what broke and what
    to do) instead of chromadb's, httpx's or sqlite's own exceptions."""

    def __init__(self, target: Any, store: Store) -> None:
        self._target, self._store = target, store

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return value(*args, **kwargs)
            except (StoreError, *_PROGRAMMING_ERRORS):
                raise
            except Exception as e:
                raise self._store.failure(e, write=name in WRITES) from e

        return call


def _model_text(name: object, dimension: object) -> str:
    return f"{name!r} ({dimension} dimensions)" if dimension else f"{name!r} (dimension unknown)"


def open_client(settings: Settings) -> Any:
    """A Chroma server client when ``store.url`` is set, else an embedded persistent store."""
    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.store.url:
        from urllib.parse import urlparse

        url = urlparse(settings.store.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise StoreError(f"PAPERCHAT_STORE__URL {settings.store.url!r} is not an http(s)://host:port URL")
        import httpx

        # chromadb's client talks to the server while it is built, with no time limit: ask first,
        # with one, so a stopped server is an error at start, not a hang.
        base = f"{url.scheme}://{url.netloc}"
        try:
            httpx.get(f"{base}/api/v2/heartbeat", headers=settings.store.headers, timeout=settings.store.timeout_s)
        except httpx.HTTPError as e:
            raise store_failure(settings, e, write=False) from e
        try:
            client = chromadb.HttpClient(
                host=url.hostname, port=url.port or (443 if url.scheme == "https" else 8000),
                ssl=url.scheme == "https", headers=settings.store.headers, settings=chroma_settings,
            )
        except Exception as e:  # chromadb raises plain ValueError/ConnectionError here
            raise StoreError(f"cannot reach the Chroma server at {settings.store.url}: {e}") from e
        # chromadb's HTTP session waits forever (timeout=None): a stopped server would hang every question.
        session = getattr(getattr(client, "_server", None), "_session", None)
        if session is None:
            log.warning("cannot set a timeout on this chromadb version's HTTP client")
        else:
            session.timeout = httpx.Timeout(settings.store.timeout_s, connect=min(10.0, settings.store.timeout_s))
        return client
    path = settings.chroma_path
    if path.exists() and not (path / "chroma.sqlite3").is_file():
        raise StoreError(f"{path} exists but holds no Chroma store (chroma.sqlite3 is missing): {REBUILD_HINT}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=chroma_settings)
    except Exception as e:
        raise StoreError(f"the store at {path} cannot be opened ({e}): {REBUILD_HINT}") from e


class Store:
    """Chunks of papers in a Chroma collection, embedded with the given model."""

    def __init__(self, settings: Settings, embed_model: BaseEmbedding) -> None:
        self.settings = settings
        self.embed_model = embed_model
        self.client = _Guarded(open_client(settings), self)
        self._lost = False  # the collection was deleted behind our back: create it again on next use
        #: Ingests running in this process (the page answers while an upload is written).
        self.writing = 0
        self._open_collection()

    @property
    def collection(self) -> Any:
        """The Chroma collection (guarded: failures are :class:`StoreError`)."""
        if self._lost:
            # Deleted by another client: a new, empty one, so the next ingest or question works.
            self._lost = False
            self._open_collection()
        return self._collection

    def failure(self, error: Exception, write: bool = True) -> StoreError:
        """The :class:`StoreError` for a failed Chroma call (see :func:`store_failure`)."""
        if _collection_missing(error):
            self._lost = True
        return store_failure(self.settings, error, write)

    def _open_collection(self) -> None:
        settings, embed_model = self.settings, self.embed_model
        # The vectors' length, when the model states it (MiniLM and server embeddings do).
        dimension = getattr(embed_model, "dimension", None)
        dimension = dimension if isinstance(dimension, int) and dimension > 0 else None
        try:
            collection = self.client.get_or_create_collection(
                settings.store.collection,
                metadata={"hnsw:space": "cosine", "embedding_model": embed_model.model_name,
                          STAMP: uuid.uuid4().hex, SCHEMA: SCHEMA_VERSION,
                          **({EMBEDDING_DIMENSION: dimension} if dimension else {})},
                # None: Chroma must never embed on its own (its default downloads a model).
                embedding_function=None,
            )
            metadata = collection.metadata or {}
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(
                f"the store's collection {settings.store.collection!r} cannot be read ({e}): {REBUILD_HINT}"
            ) from e
        stored_model, stored_dimension = metadata.get("embedding_model"), metadata.get(EMBEDDING_DIMENSION)
        if stored_model != embed_model.model_name or (stored_dimension and dimension and stored_dimension != dimension):
            raise StoreError(
                f"the store was built with the embedding model {_model_text(stored_model, stored_dimension)}, "
                f"but the configured one is {_model_text(embed_model.model_name, dimension)} (PAPERCHAT_EMBEDDING__* "
                f"settings); their vectors cannot be mixed: {REBUILD_HINT}, or configure the store's model"
            )
        self._collection = _Guarded(collection, self)
        self.vector_store = ChromaVectorStore(chroma_collection=self._collection)

    def clear(self) -> None:
        """Delete the whole collection and start an empty one."""
        self.client.delete_collection(self.settings.store.collection)
        self._open_collection()

    # ----- chunks --------------------------------------------------------------------------
    def count(self) -> int:
        """Number of chunks stored."""
        return self.collection.count()

    def iter_chunks(self, page: int = 5000) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(id, text, metadata) of every chunk, in the store's order, read ``page`` chunks at a time
        as the caller goes (memory stays flat however big the collection)."""
        for got in self.pages(["documents", "metadatas"], page=page):
            for cid, text, meta in zip(got["ids"], got["documents"], got["metadatas"]):
                yield cid, text, dict(meta)

    def chunks(self) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        """All chunk ids, texts and metadata as three lists, for tests (the rest of paperchat reads
        with :meth:`iter_chunks` or :meth:`chunk_pages`, which do not hold the whole collection)."""
        ids: list[str] = []
        texts: list[str] = []
        metadatas: list[dict[str, Any]] = []
        for cid, text, meta in self.iter_chunks():
            ids.append(cid)
            texts.append(text)
            metadatas.append(meta)
        return ids, texts, metadatas

    def chunk_pages(self, page: int = 5000) -> Iterator[tuple[list[str], list[str]]]:
        """(chunk ids, texts) a page at a time, for building the keyword index."""
        for got in self.pages(include=["documents"], page=page):
            yield got["ids"], got["documents"] or []

    def get_chunks(self, ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """Text and metadata of the given chunks that exist, by chunk id."""
        if not ids:
            return {}
        got = self.collection.get(ids=ids, include=["documents", "metadatas"])
        return {i: (doc, dict(meta)) for i, doc, meta in zip(got["ids"], got["documents"], got["metadatas"])}

    def pages(
        self, include: list[str], where: dict[str, Any] | None = None, page: int = 5000,
        where_document: dict[str, Any] | None = None,
    ) -> Iterator[Any]:
        """The collection's records (``collection.get`` results) a page at a time."""
        return pages(self.collection, include, where, page, where_document)

    # ----- stamp and metadata --------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """The collection's metadata as stored now (another process may have written since)."""
        return dict(self.client.get_collection(self.settings.store.collection, embedding_function=None).metadata or {})

    def stamp(self) -> str:
        """A value that changes on every write to the collection, by this process or another."""
        return self.metadata().get(STAMP) or self.touch()

    def touch(self) -> str:
        """Give the collection a new stamp (before and after every write)."""
        stamp = uuid.uuid4().hex
        self.update_metadata({STAMP: stamp})
        return stamp

    def update_metadata(self, updates: dict[str, Any]) -> None:
        """Set keys of the collection's metadata, keeping the others."""
        # Chroma refuses hnsw:* keys in modify() (the distance is fixed at creation and kept).
        metadata = {k: v for k, v in self.metadata().items() if not k.startswith("hnsw:")}
        self.collection.modify(metadata={**metadata, **updates})


__all__ = [
    "LOW_DISK_BYTES", "REBUILD_HINT", "Store", "StoreError", "free_bytes", "open_client", "pages", "store_failure",
    "store_free_bytes",
]
