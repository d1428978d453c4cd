"""The catalog of stored papers: every paper, how many there are, and search by title."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .store import Store, pages

#: Characters Chroma's (Rust) regex syntax needs escaped.
_REGEX_META = frozenset("\\.+*?()|[]{}^$#&-~")


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


def count_papers(collection: Any) -> int:
    """Papers in a collection: its first chunks, counted by id only, 100,000 a page."""
    return sum(len(got["ids"]) for got in pages(collection, include=[], where={"chunk": 0}, page=100_000))


class Catalog:
    """The papers in a :class:`Store`, read from its chunks' metadata (reads only).

    Keep one per store where the count is read often (the web page reads it on every load): the
    count is kept until the store's stamp changes.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._count: tuple[str, int] | None = None  # (stamp, papers) of the last paper_count()

    def papers(self) -> dict[str, StoredPaper]:
        """Every stored paper by id."""
        out: dict[str, StoredPaper] = {}
        for got in self.store.pages(include=["metadatas"]):
            for meta in got["metadatas"] or []:
                pid = meta["paper_id"]
                if pid not in out:
                    out[pid] = StoredPaper.from_metadata(meta)
        return out

    def paper_count(self) -> int:
        """Number of papers stored (their first chunks, counted by id only; ~1 s at 100,000 papers,
        so the count is kept until the store's stamp changes)."""
        # A collection created again (deleted by another client) has a new stamp, so a count kept
        # from before cannot outlive it.
        stamp = self.store.stamp()
        if self._count is None or self._count[0] != stamp:
            self._count = (stamp, count_papers(self.store.collection))
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
            found = self.store.collection.get(where=where, include=["metadatas"], limit=limit)["metadatas"] or []
            total = self.paper_count()
        else:
            pattern = "(?i)\\A[^\\n]*" + "".join("\\" + c if c in _REGEX_META else c for c in text)
            found = [m for got in self.store.pages(["metadatas"], where=where, where_document={"$regex": pattern})
                     for m in got["metadatas"]]
            by_id = self.store.collection.get(where={"$and": [{"paper_id": text}, where]}, include=["metadatas"])
            titled = {m["paper_id"] for m in found}
            found += [m for m in by_id["metadatas"] or [] if m["paper_id"] not in titled]
            total = len(found)
        papers = [StoredPaper.from_metadata(m) for m in found]
        return sorted(papers, key=lambda p: p.title.casefold())[:limit], total


__all__ = ["Catalog", "StoredPaper", "count_papers"]
