"""Ingestion: collection files checked, diffed against what the store holds, embedded and written."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from llama_index.core.schema import TextNode
from tqdm import tqdm

from . import store as _store  # LOW_DISK_BYTES is read at call time (tests lower it on rag.store)
from .catalog import StoredPaper
from .corpus import CorpusError, Paper, chunk_abstract, iter_papers, stored_text, title_key
from .store import SCHEMA, SCHEMA_VERSION, Store, StoreError, free_text, store_free_bytes

#: Called with (papers done, papers in the file) while a file is ingested.
ProgressCallback = Callable[[int, int], None]


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


def _batched(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    it = iter(items)
    while batch := list(islice(it, n)):
        yield batch


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


def ingest_file(
    store: Store,
    path: Path | str,
    progress: bool | None = None,
    on_progress: ProgressCallback | None = None,
    max_papers: int | None = None,
) -> IngestReport:
    """Add the papers of one collection file to ``store``.

    Ingestion is idempotent: unchanged papers are skipped before anything is embedded, changed ones
    are replaced, and a bad file is rejected before any write. It streams: each batch of papers is
    checked against the store by a lookup in Chroma, so memory does not grow with the file or the
    collection.

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
    free = store_free_bytes(store.settings)
    low = _store.LOW_DISK_BYTES
    if free is not None and free < low:  # found before the first write, not half way
        raise StoreError(f"the disk holding the store at {store.settings.chroma_path} has {free_text(free)} "
                         f"(at least {low >> 20} MB needed to write): free some space, then run "
                         "the same command again; nothing was written")
    store.writing += 1
    try:
        _add_title_keys(store)
        # Memory stays flat however big the file: one batch of papers at a time, and what is stored
        # is looked up per batch in Chroma rather than held for the whole collection.
        with tqdm(total=report.papers, desc=f"ingest {path.name}", unit="paper", disable=not show) as bar:
            for batch in _batched(iter_papers(path), store.settings.store.ingest_batch):
                stored, by_title = _stored(store, batch)
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
                    report.chunks += _write(store, todo, stale, source=path.name)
                    report.replaced_ids += sorted(stale)
                bar.update(len(batch))
                if on_progress is not None:
                    on_progress(report.added + report.replaced + report.unchanged, report.papers)
    finally:
        store.writing -= 1
    report.seconds = time.perf_counter() - start
    return report


def ingest_files(
    store: Store,
    paths: Iterable[Path | str],
    progress: bool | None = None,
    on_progress: ProgressCallback | None = None,
    max_papers: int | None = None,
) -> list[IngestReport]:
    """Ingest several files; every file is checked before the first one is written."""
    files = [Path(p) for p in paths]
    # ingest_file checks its own file before writing: only the files after the first need a pass here.
    for path in files[1:]:
        check_file(path, max_papers)
    return [ingest_file(store, p, progress=progress, on_progress=on_progress, max_papers=max_papers) for p in files]


def remove(store: Store, paper_ids: list[str]) -> None:
    """Delete papers by id."""
    if paper_ids:
        store.touch()
        store.collection.delete(where={"paper_id": {"$in": list(paper_ids)}})
        store.touch()


def _stored(store: Store, papers: list[Paper]) -> tuple[dict[str, StoredPaper], dict[str, str]]:
    """The stored papers that share an id or a title with ``papers``: by id, and id by title key."""
    ids = sorted({p.id for p in papers})
    keys = sorted({title_key(p.title) for p in papers})
    got = store.collection.get(
        where={"$or": [{"paper_id": {"$in": ids}}, {"title_key": {"$in": keys}}]},
        include=["metadatas"],
    )
    by_id: dict[str, StoredPaper] = {}
    by_title: dict[str, str] = {}
    for meta in got["metadatas"] or []:
        paper = by_id.setdefault(meta["paper_id"], StoredPaper.from_metadata(meta))
        by_title[str(meta.get("title_key"))] = paper.id
    return by_id, by_title


def _add_title_keys(store: Store) -> None:
    """Give every record of a store from before ``title_key`` existed that field (once)."""
    if store.metadata().get(SCHEMA) == SCHEMA_VERSION:
        return
    for got in store.pages(include=["metadatas"]):
        # update() merges metadata keys, so this adds one field and keeps the rest.
        store.collection.update(ids=got["ids"], metadatas=[{"title_key": title_key(m["title"])}
                                                             for m in got["metadatas"]])
    store.update_metadata({SCHEMA: SCHEMA_VERSION})


def _write(store: Store, papers: list[Paper], stale: set[str], source: str) -> int:
    nodes: list[TextNode] = []
    for paper in papers:
        for i, chunk in enumerate(chunk_abstract(paper.abstract, store.settings.store.chunk_words)):
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
            nodes.append(TextNode(id_=f"{paper.id}:{i}", text=stored_text(paper.title, chunk), metadata=metadata))
    vectors = store.embed_model.get_text_embedding_batch([n.text for n in nodes])
    for node, vector in zip(nodes, vectors):
        node.embedding = vector
    # The stamp changes before (a crash mid-write must not leave a saved keyword index looking
    # current) and after (a reader that indexed during the write must index again).
    store.touch()
    # Old versions go first: a crash in between leaves the paper missing, and a rerun adds it.
    if stale:
        store.collection.delete(where={"paper_id": {"$in": sorted(set(stale))}})
    store.vector_store.add([*nodes])  # a list of BaseNode to the type checker (list is invariant)
    store.touch()
    return len(nodes)


__all__ = ["CorpusError", "IngestReport", "ProgressCallback", "check_file", "ingest_file", "ingest_files", "remove"]
