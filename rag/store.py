"""The persistent paper store: a Chroma collection written through llama-index.

One Chroma record per chunk (most abstracts are one chunk), with the paper's id, title, title key
and content hash as metadata. Ingestion is idempotent: unchanged papers are skipped before anything
is embedded, changed ones are replaced, and a bad file is rejected before any write. It streams:
each batch of papers is checked against the store by a lookup in Chroma, so memory does not grow
with the file or the collection. The collection's metadata carries a stamp that every write
changes (see :meth:`Store.stamp`), which tells a saved keyword index whether it is still current.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

# Chroma's product telemetry would try to reach the internet.
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import chromadb
from chromadb.config import Settings as ChromaSettings
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import TextNode
from llama_index.vector_stores.chroma import ChromaVectorStore
from tqdm import tqdm

from .corpus import CorpusError, Paper, chunk_abstract, iter_papers, title_key
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
#: Characters Chroma's (Rust) regex syntax needs escaped.
_REGEX_META = frozenset("\\.+*?()|[]{}^$#&-~")
#: Called with (papers done, papers in the file) while a file is ingested.
ProgressCallback = Callable[[int, int], None]


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
    return f"{free / 2**20:.1f} MB free"


def store_failure(settings: Settings, error: Exception, write: bool = True) -> StoreError:
    """What a failure of Chroma (or of the disk under it) means for the user, and what to do;
    ``write``: the failed call was a write (a failed read is never blamed on a full disk)."""
    import httpx

    where = f"the Chroma server at {settings.chroma_url}" if settings.chroma_url else f"the store at {settings.chroma_path}"
    if isinstance(error, httpx.TimeoutException):
        return StoreError(f"{where} did not answer within {settings.chroma_timeout_s:g} s (it may be overloaded "
                          "or stopped); try again once it answers (PAPERCHAT_CHROMA_TIMEOUT_S sets the wait)")
    if isinstance(error, (httpx.TransportError, ConnectionError)):
        return StoreError(f"cannot reach {where} ({error}): start it again (chroma run …) or check "
                          "PAPERCHAT_CHROMA_URL; the next question works once it answers, without a restart")
    if _collection_missing(error):
        return StoreError(f"the collection {settings.collection!r} no longer exists in {where} (deleted by another "
                          "client?); it is empty now: add the papers again with paperchat ingest FILE, or "
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


def count_papers(collection: Any) -> int:
    """Papers in a collection: its first chunks, counted by id only, 100,000 a page."""
    return sum(len(got["ids"]) for got in pages(collection, include=[], where={"chunk": 0}, page=100_000))


def store_free_bytes(settings: Settings) -> int | None:
    """Free space under the embedded store; None for a Chroma server (its disk is not ours to see)."""
    return None if settings.chroma_url else free_bytes(settings.chroma_path)


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


@dataclass
class StoredPaper:
    """What the store knows about one paper."""

    id: str
    title: str
    content_hash: str
    url: str | None = None
    source: str = ""  # the name of the file it was ingested from

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> StoredPaper:
        """The paper a chunk's metadata describes."""
        return cls(meta["paper_id"], meta["title"], meta["content_hash"], meta.get("url"), meta.get("source", ""))


@dataclass
class IngestReport:
    """What one ingestion of one file did."""

    path: Path
    papers: int = 0
    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    chunks: int = 0
    seconds: float = 0.0
    replaced_ids: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.path}: {self.papers} papers: {self.added} added, {self.replaced} replaced, "
                f"{self.unchanged} unchanged ({self.chunks} chunks embedded in {self.seconds:.1f} s)")


def _model_text(name: object, dimension: object) -> str:
    return f"{name!r} ({dimension} dimensions)" if dimension else f"{name!r} (dimension unknown)"


def _batched(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    it = iter(items)
    while batch := list(islice(it, n)):
        yield batch


def open_client(settings: Settings) -> Any:
    """A Chroma server client when ``chroma_url`` is set, else an embedded persistent store."""
    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_url:
        from urllib.parse import urlparse

        url = urlparse(settings.chroma_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise StoreError(f"PAPERCHAT_CHROMA_URL {settings.chroma_url!r} is not an http(s)://host:port URL")
        import httpx

        # chromadb's client talks to the server while it is built, with no time limit: ask first,
        # with one, so a stopped server is an error at start, not a hang.
        base = f"{url.scheme}://{url.netloc}"
        try:
            httpx.get(f"{base}/api/v2/heartbeat", headers=settings.chroma_headers, timeout=settings.chroma_timeout_s)
        except httpx.HTTPError as e:
            raise store_failure(settings, e, write=False) from e
        try:
            client = chromadb.HttpClient(
                host=url.hostname, port=url.port or (443 if url.scheme == "https" else 8000),
                ssl=url.scheme == "https", headers=settings.chroma_headers, settings=chroma_settings,
            )
        except Exception as e:  # chromadb raises plain ValueError/ConnectionError here
            raise StoreError(f"cannot reach the Chroma server at {settings.chroma_url}: {e}") from e
        # chromadb's HTTP session waits forever (timeout=None): a stopped server would hang every question.
        session = getattr(getattr(client, "_server", None), "_session", None)
        if session is None:
            log.warning("cannot set a timeout on this chromadb version's HTTP client")
        else:
            session.timeout = httpx.Timeout(settings.chroma_timeout_s, connect=min(10.0, settings.chroma_timeout_s))
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
    """Papers in a Chroma collection, embedded with the given model."""

    def __init__(self, settings: Settings, embed_model: BaseEmbedding) -> None:
        self.settings = settings
        self.embed_model = embed_model
        self.client = _Guarded(open_client(settings), self)
        self._lost = False  # the collection was deleted behind our back: create it again on next use
        #: Ingests running in this process (the page answers while an upload is written).
        self.writing = 0
        self._open_collection()
        self._count: tuple[str, int] | None = None  # (stamp, papers) of the last paper_count()

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
            self._count = None
        return store_failure(self.settings, error, write)

    def _open_collection(self) -> None:
        settings, embed_model = self.settings, self.embed_model
        # The vectors' length, when the model states it (MiniLM and server embeddings do).
        dimension = getattr(embed_model, "dimension", None)
        dimension = dimension if isinstance(dimension, int) and dimension > 0 else None
        try:
            collection = self.client.get_or_create_collection(
                settings.collection,
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
            raise StoreError(f"the store's collection {settings.collection!r} cannot be read ({e}): {REBUILD_HINT}") from e
        stored_model, stored_dimension = metadata.get("embedding_model"), metadata.get(EMBEDDING_DIMENSION)
        if stored_model != embed_model.model_name or (stored_dimension and dimension and stored_dimension != dimension):
            raise StoreError(
                f"the store was built with the embedding model {_model_text(stored_model, stored_dimension)}, "
                f"but the configured one is {_model_text(embed_model.model_name, dimension)} (PAPERCHAT_EMBED_* "
                f"settings); their vectors cannot be mixed: {REBUILD_HINT}, or configure the store's model"
            )
        self._collection = _Guarded(collection, self)
        self.vector_store = ChromaVectorStore(chroma_collection=self._collection)

    # ----- reading -------------------------------------------------------------------------
    def count(self) -> int:
        """Number of chunks stored."""
        return self.collection.count()

    def papers(self) -> dict[str, StoredPaper]:
        """Every stored paper by id."""
        out: dict[str, StoredPaper] = {}
        for meta in self._all(include=["metadatas"])["metadatas"]:
            pid = meta["paper_id"]
            if pid not in out:
                out[pid] = StoredPaper.from_metadata(meta)
        return out

    def paper_count(self) -> int:
        """Number of papers stored (their first chunks, counted by id only; ~1 s at 100,000 papers,
        so the count is kept until the store's stamp changes)."""
        stamp = self.stamp()
        if self._count is None or self._count[0] != stamp:
            self._count = (stamp, count_papers(self.collection))
        return self._count[1]

    def find_papers(self, text: str = "", limit: int = 500) -> tuple[list[StoredPaper], int]:
        """Up to ``limit`` papers whose title contains ``text`` (any case) or whose id is ``text``,
        sorted by title, and how many matched. No text: the first ``limit`` papers stored.

        The search runs in Chroma (a regex over the title line of first chunks), so it does not
        read the whole collection: a paper list stays quick at 100,000s of papers.
        """
        text = text.strip()
        where: dict[str, Any] = {"chunk": 0}
        if not text:
            found = self.collection.get(where=where, include=["metadatas"], limit=limit)["metadatas"] or []
            total = self.paper_count()
        else:
            pattern = "(?i)\\A[^\\n]*" + "".join("\\" + c if c in _REGEX_META else c for c in text)
            found = [m for got in self._pages(["metadatas"], where=where, where_document={"$regex": pattern})
                     for m in got["metadatas"]]
            by_id = self.collection.get(where={"$and": [{"paper_id": text}, where]}, include=["metadatas"])
            titled = {m["paper_id"] for m in found}
            found += [m for m in by_id["metadatas"] or [] if m["paper_id"] not in titled]
            total = len(found)
        papers = [StoredPaper.from_metadata(m) for m in found]
        return sorted(papers, key=lambda p: p.title.casefold())[:limit], total

    def chunks(self) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        """All chunk ids, texts and metadata (small collections and tests; see :meth:`chunk_pages`)."""
        got = self._all(include=["documents", "metadatas"])
        return got["ids"], got["documents"], got["metadatas"]

    def chunk_pages(self, page: int = 5000) -> Iterator[tuple[list[str], list[str]]]:
        """(chunk ids, texts) a page at a time, for building the keyword index."""
        for got in self._pages(include=["documents"], page=page):
            yield got["ids"], got["documents"] or []

    def get_chunks(self, ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """Text and metadata of the given chunks that exist, by chunk id."""
        if not ids:
            return {}
        got = self.collection.get(ids=ids, include=["documents", "metadatas"])  # type: ignore[list-item]
        return {i: (doc, dict(meta)) for i, doc, meta in zip(got["ids"], got["documents"], got["metadatas"])}

    def _pages(
        self, include: list[str], where: dict[str, Any] | None = None, page: int = 5000,
        where_document: dict[str, Any] | None = None,
    ) -> Iterator[Any]:
        """The collection's records (``collection.get`` results) a page at a time."""
        return pages(self.collection, include, where, page, where_document)

    def _all(self, include: list[str]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"ids": [], "documents": [], "metadatas": []}
        for got in self._pages(include):
            out["ids"] += got["ids"]
            for key in ("documents", "metadatas"):
                if got.get(key):
                    out[key] += got[key]
        return out

    def _metadata(self) -> dict[str, Any]:
        """The collection's metadata as stored now (another process may have written since)."""
        return dict(self.client.get_collection(self.settings.collection, embedding_function=None).metadata or {})

    def stamp(self) -> str:
        """A value that changes on every write to the collection, by this process or another."""
        return self._metadata().get(STAMP) or self.touch()

    def touch(self) -> str:
        """Give the collection a new stamp (before and after every write)."""
        stamp = uuid.uuid4().hex
        self._update_metadata({STAMP: stamp})
        return stamp

    def _update_metadata(self, updates: dict[str, Any]) -> None:
        """Set keys of the collection's metadata, keeping the others."""
        # Chroma refuses hnsw:* keys in modify() (the distance is fixed at creation and kept).
        metadata = {k: v for k, v in self._metadata().items() if not k.startswith("hnsw:")}
        self.collection.modify(metadata={**metadata, **updates})

    def _stored(self, papers: list[Paper]) -> tuple[dict[str, StoredPaper], dict[str, str]]:
        """The stored papers that share an id or a title with ``papers``: by id, and id by title key."""
        ids = sorted({p.id for p in papers})
        keys = sorted({title_key(p.title) for p in papers})
        got = self.collection.get(
            where={"$or": [{"paper_id": {"$in": ids}}, {"title_key": {"$in": keys}}]},  # type: ignore[dict-item]
            include=["metadatas"],  # type: ignore[list-item]
        )
        by_id: dict[str, StoredPaper] = {}
        by_title: dict[str, str] = {}
        for meta in got["metadatas"] or []:
            paper = by_id.setdefault(meta["paper_id"], StoredPaper.from_metadata(meta))
            by_title[str(meta.get("title_key"))] = paper.id
        return by_id, by_title

    def _add_title_keys(self) -> None:
        """Give every record of a store from before ``title_key`` existed that field (once)."""
        if self._metadata().get(SCHEMA) == SCHEMA_VERSION:
            return
        for got in self._pages(include=["metadatas"]):
            # update() merges metadata keys, so this adds one field and keeps the rest.
            self.collection.update(ids=got["ids"], metadatas=[{"title_key": title_key(m["title"])}
                                                                for m in got["metadatas"]])
        self._update_metadata({SCHEMA: SCHEMA_VERSION})

    # ----- writing -------------------------------------------------------------------------
    def ingest(
        self,
        path: Path | str,
        progress: bool | None = None,
        on_progress: ProgressCallback | None = None,
        max_papers: int | None = None,
    ) -> IngestReport:
        """Add the papers of one collection file; see the module docstring for the rules.

        The whole file is read and checked first: a bad file, or one with more than ``max_papers``
        papers, raises :class:`CorpusError` and leaves the store as it was. ``progress`` shows a
        progress bar on stderr (default: when it is a terminal); ``on_progress(done, total)`` is
        called after each batch (the web page's bar).
        """
        path = Path(path)
        start = time.perf_counter()
        report = IngestReport(path=path)
        show = progress if progress is not None else sys.stderr.isatty()
        report.papers = check_file(path, max_papers, show)  # nothing is written until the whole file is read
        free = store_free_bytes(self.settings)
        if free is not None and free < LOW_DISK_BYTES:  # found before the first write, not half way
            raise StoreError(f"the disk holding the store at {self.settings.chroma_path} has {free_text(free)} "
                             f"(at least {LOW_DISK_BYTES >> 20} MB needed to write): free some space, then run "
                             "the same command again; nothing was written")
        self.writing += 1
        try:
            self._add_title_keys()
            # Memory stays flat however big the file: one batch of papers at a time, and what is stored
            # is looked up per batch in Chroma rather than held for the whole collection.
            with tqdm(total=report.papers, desc=f"ingest {path.name}", unit="paper", disable=not show) as bar:
                for batch in _batched(iter_papers(path), self.settings.ingest_batch):
                    stored, by_title = self._stored(batch)
                    todo: list[Paper] = []
                    stale: set[str] = set()
                    for paper in batch:
                        old = stored.get(paper.id)
                        if old is not None and old.content_hash == paper.content_hash:
                            report.unchanged += 1
                            continue
                        # A changed paper keeps its id (JSONL) or its title (text format).
                        replaces = {old.id} if old else set()
                        if (same_title := by_title.get(title_key(paper.title))) is not None:
                            replaces.add(same_title)
                        stale |= replaces
                        report.replaced += bool(replaces)
                        report.added += not replaces
                        todo.append(paper)
                    if todo:
                        report.chunks += self._write(todo, stale, source=path.name)
                        report.replaced_ids += sorted(stale)
                    bar.update(len(batch))
                    if on_progress is not None:
                        on_progress(report.added + report.replaced + report.unchanged, report.papers)
        finally:
            self.writing -= 1
        report.seconds = time.perf_counter() - start
        return report

    def _write(self, papers: list[Paper], stale: set[str], source: str) -> int:
        nodes: list[TextNode] = []
        for paper in papers:
            for i, chunk in enumerate(chunk_abstract(paper.abstract, self.settings.chunk_words)):
                metadata: dict[str, Any] = {
                    "paper_id": paper.id, "title": paper.title, "title_key": title_key(paper.title),
                    "content_hash": paper.content_hash, "chunk": i, "source": source,
                }
                if paper.url:
                    metadata["url"] = paper.url
                if paper.year is not None:
                    metadata["year"] = paper.year
                if paper.authors:
                    metadata["authors"] = ", ".join(paper.authors)
                nodes.append(TextNode(id_=f"{paper.id}:{i}", text=f"{paper.title}\n{chunk}", metadata=metadata))
        vectors = self.embed_model.get_text_embedding_batch([n.text for n in nodes])
        for node, vector in zip(nodes, vectors):
            node.embedding = vector
        # The stamp changes before (a crash mid-write must not leave a saved keyword index looking
        # current) and after (a reader that indexed during the write must index again).
        self.touch()
        # Old versions go first: a crash in between leaves the paper missing, and a rerun adds it.
        if stale:
            self.collection.delete(where={"paper_id": {"$in": sorted(set(stale))}})
        self.vector_store.add(nodes)
        self.touch()
        return len(nodes)

    def remove(self, paper_ids: list[str]) -> None:
        """Delete papers by id."""
        if paper_ids:
            self.touch()
            self.collection.delete(where={"paper_id": {"$in": list(paper_ids)}})
            self.touch()

    def clear(self) -> None:
        """Delete the whole collection and start an empty one."""
        self.client.delete_collection(self.settings.collection)
        self._open_collection()


def check_file(path: Path, max_papers: int | None = None, progress: bool = False) -> int:
    """Read a whole collection file and count its papers; a bad file, or one with more than
    ``max_papers`` papers, raises :class:`CorpusError`."""
    n = 0
    with tqdm(desc=f"check {path.name}", unit="paper", disable=not progress, miniters=1000) as bar:
        for n, _ in enumerate(iter_papers(path), 1):
            if max_papers is not None and n > max_papers:
                raise CorpusError(path, None, f"holds more than {max_papers} papers")
            bar.update()
    return n


def ingest_files(
    store: Store,
    paths: Iterable[Path | str],
    progress: bool | None = None,
    on_progress: ProgressCallback | None = None,
    max_papers: int | None = None,
) -> list[IngestReport]:
    """Ingest several files; every file is checked before the first one is written."""
    paths = [Path(p) for p in paths]
    # Store.ingest checks its own file before writing: only the files after the first need a pass here.
    for path in paths[1:]:
        check_file(path, max_papers)
    return [store.ingest(p, progress=progress, on_progress=on_progress, max_papers=max_papers) for p in paths]


__all__ = ["CorpusError", "IngestReport", "Store", "StoreError", "StoredPaper", "check_file", "ingest_files", "open_client"]
