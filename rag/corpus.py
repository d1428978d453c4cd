"""Reading paper collections: the scraped title/abstract text format and JSONL.

Both readers stream (one paper at a time) and raise :class:`CorpusError` naming the file, the
line and what is wrong. Rows of the arXiv metadata snapshot (``arxiv-metadata-oai-snapshot.json``)
are JSONL rows like any other: their id becomes the paper's id and arXiv link.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
import sqlite3
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from .text import split_sentences

MAX_TITLE_CHARS = 500
MAX_ABSTRACT_CHARS = 100_000
# An abstract line is at least this long; shorter lines at the top of a scraped file are page junk.
MIN_ABSTRACT_CHARS = 100
# The scraped page glues its "Subscribe" button text to the first title.
_GLUED_PREFIX = re.compile(r"^Subscribe(?=[A-Z0-9])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
#: Fields only the arXiv metadata snapshot has: a row with any of them is an arXiv row.
ARXIV_FIELDS = frozenset({"submitter", "authors_parsed", "versions", "update_date", "journal-ref", "report-no"})
#: New-style (2301.01234, optional version) and old-style (hep-th/9901001, math.GT/0309136) arXiv ids.
_ARXIV_ID = re.compile(r"^(?:\d{4}\.\d{4,5}|[a-z-]+(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?$")


class CorpusError(ValueError):
    """A collection file that cannot be read; says which file, which line and what is wrong."""

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line else str(self.path)
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Paper:
    """One paper of a collection."""

    id: str
    title: str
    abstract: str
    url: str | None = None
    authors: tuple[str, ...] = field(default_factory=tuple)
    year: int | None = None

    @property
    def content_hash(self) -> str:
        """Hash of everything stored about the paper; a change means re-embedding."""
        blob = json.dumps([self.title, self.abstract, self.url, list(self.authors), self.year])
        return hashlib.sha256(blob.encode()).hexdigest()[:32]



def clean_text(text: str) -> str:
    """Normalise Unicode, drop control characters and fold white space."""
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text)
    return " ".join(text.split())


def title_key(title: str) -> str:
    """A title folded for comparison: a paper with the same key replaces the stored one."""
    return " ".join(re.findall(r"\w+", title.casefold()))


def paper_id(title: str, abstract: str) -> str:
    """The stable id of a paper whose file gives none."""
    return hashlib.sha256(f"{title_key(title)}\n{clean_text(abstract)}".encode()).hexdigest()[:16]


def stored_text(title: str, chunk: str) -> str:
    """A chunk as it is stored, embedded and searched: the paper's title line, then the chunk (a
    chunk far into an abstract still matches the paper's name)."""
    return f"{title}\n{chunk}"


def stored_body(text: str) -> str:
    """The chunk of a :func:`stored_text`, without its title line (what answers quote)."""
    return text.partition("\n")[2] or text


def chunk_abstract(abstract: str, max_words: int) -> list[str]:
    """Split an abstract into chunks of whole sentences of at most ``max_words`` words.

    Abstracts shorter than that stay one chunk: one node per paper retrieves best here.
    """
    if len(abstract.split()) <= max_words:
        return [abstract]
    return pack_sentences(split_sentences(abstract), max_words, lambda s: len(s.split()))


def pack_sentences(sentences: list[str], budget: int, size: Callable[[str], int]) -> list[str]:
    """Join consecutive sentences into pieces of at most ``budget`` (as ``size`` counts; a single
    longer sentence stays whole)."""
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    for sentence in sentences:
        n = size(sentence)
        if current and used + n > budget:
            pieces.append(" ".join(current))
            current, used = [], 0
        current.append(sentence)
        used += n
    if current:
        pieces.append(" ".join(current))
    return pieces


def _make_paper(
    path: Path, line: int, title: str, abstract: str, pid: str | None = None, **extra: object
) -> Paper:
    title = clean_text(title)
    abstract = clean_text(abstract)
    if not title:
        raise CorpusError(path, line, "the title is empty")
    if not abstract:
        raise CorpusError(path, line, "the abstract is empty")
    if len(title) > MAX_TITLE_CHARS:
        raise CorpusError(
            path, line, f"the title is {len(title)} characters long (at most {MAX_TITLE_CHARS}): "
            "is a title or abstract line missing above?"
        )
    if len(abstract) > MAX_ABSTRACT_CHARS:
        raise CorpusError(path, line, f"the abstract is longer than {MAX_ABSTRACT_CHARS} characters")
    return Paper(id=pid or paper_id(title, abstract), title=title, abstract=abstract, **extra)  # type: ignore[arg-type]


def _read_lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        # utf-8-sig: files saved by Excel and Windows tools start with a byte-order mark.
        with path.open(encoding="utf-8-sig") as f:
            for number, line in enumerate(f, 1):
                yield number, line.rstrip("\r\n")
    except FileNotFoundError:
        raise CorpusError(path, None, "no such file") from None
    except IsADirectoryError:
        raise CorpusError(path, None, "is a directory, not a collection file") from None
    except UnicodeDecodeError as e:
        raise CorpusError(path, None, f"not UTF-8 text ({e.reason} at byte {e.start})") from None


def iter_text(path: Path) -> Iterator[Paper]:
    """Papers from a title line / abstract line file; leading page junk is skipped."""
    lines = ((n, s) for n, s in _read_lines(path) if s.strip())
    pending: tuple[int, str] | None = None
    started = False
    for number, text in lines:
        if pending is None:
            pending = (number, text)
            continue
        title_line, title = pending
        if not started and len(text.strip()) < max(MIN_ABSTRACT_CHARS, 2 * len(title.strip())):
            # Still in the page junk: the line after a title is a long abstract.
            pending = (number, text)
            continue
        if not started:
            title = _GLUED_PREFIX.sub("", title.strip())
        started = True
        yield _make_paper(path, title_line, title, text)
        pending = None
    if pending is not None:
        if started:
            raise CorpusError(path, pending[0], "a title line without an abstract line after it")
        raise CorpusError(path, None, "no title/abstract line pairs found")
    if not started:
        raise CorpusError(path, None, "the file holds no papers")


def _optional_str(path: Path, line: int, obj: dict, key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value).strip() or None
    raise CorpusError(path, line, f"'{key}' must be a string, not {type(value).__name__}")


def _arxiv_authors(obj: dict[str, Any]) -> tuple[str, ...]:
    """Names from the snapshot's ``authors_parsed`` ([last, first, suffix] lists, sometimes with an
    affiliation after them, which is left out); () when it is missing or not in that shape (the
    ``authors`` string is used then)."""
    parsed = obj.get("authors_parsed")
    if not isinstance(parsed, list):
        return ()
    names = []
    for parts in parsed:
        if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
            return ()
        last, first, suffix = [*parts, "", "", ""][:3]
        names.append(clean_text(f"{first} {last} {suffix}"))
    return tuple(n for n in names if n)


def _arxiv_year(obj: dict[str, Any]) -> int | None:
    """The year of the first version ("Mon, 2 Apr 2007 19:18:42 GMT"); None when it cannot be read.

    Not ``update_date``: that is when the record last changed, often years after publication.
    """
    versions = obj.get("versions")
    try:
        return parsedate_to_datetime(versions[0]["created"]).year  # type: ignore[index]
    except (TypeError, KeyError, IndexError, ValueError):
        return None


def iter_jsonl(path: Path) -> Iterator[Paper]:
    """Papers from a JSONL file: one object per line with title, abstract and optional
    id, url, authors (list or string) and year; rows of the arXiv metadata snapshot as they are."""
    count = 0
    for number, line in _read_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(path, number, f"not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise CorpusError(path, number, f"expected a JSON object, found {type(obj).__name__}")
        for key in ("title", "abstract"):
            if key not in obj:
                raise CorpusError(path, number, f"missing field '{key}'")
            if not isinstance(obj[key], str):
                raise CorpusError(path, number, f"'{key}' must be a string, not {type(obj[key]).__name__}")
        arxiv = not ARXIV_FIELDS.isdisjoint(obj)
        # The snapshot's "authors" string mixes names with affiliations ("A (MIT), B and C");
        # its "authors_parsed" has the names alone.
        authors = (_arxiv_authors(obj) if arxiv else ()) or obj.get("authors") or []
        if isinstance(authors, str):
            authors = tuple(a.strip() for a in authors.split(",") if a.strip())
        elif isinstance(authors, (list, tuple)) and all(isinstance(a, str) for a in authors):
            authors = tuple(clean_text(a) for a in authors)
        else:
            raise CorpusError(path, number, "'authors' must be a list of strings or a string")
        pid = _optional_str(path, number, obj, "id")
        url = _optional_str(path, number, obj, "url")
        if arxiv and url is None and pid and _ARXIV_ID.match(pid):
            url = f"https://arxiv.org/abs/{pid}"
        year = obj.get("year")
        if year is None and arxiv:
            year = _arxiv_year(obj)
        if year is not None and (isinstance(year, bool) or not isinstance(year, int)):
            if isinstance(year, str) and year.strip().isdigit():
                year = int(year)
            else:
                raise CorpusError(path, number, f"'year' must be an integer, not {year!r}")
        yield _make_paper(path, number, obj["title"], obj["abstract"], pid=pid, url=url, authors=authors, year=year)
        count += 1
    if count == 0:
        raise CorpusError(path, None, "the file holds no papers")


def is_jsonl(path: Path) -> bool:
    """JSONL by extension, else by a first non-blank character of '{'."""
    if path.suffix.lower() in {".jsonl", ".json", ".ndjson"}:
        return True
    if path.suffix.lower() in {".txt", ".text"}:
        return False
    try:
        with path.open("rb") as f:
            head = f.read(4096).removeprefix(codecs.BOM_UTF8).lstrip()
    except OSError:
        return False
    return head.startswith(b"{")


def iter_papers(path: Path | str) -> Iterator[Paper]:
    """Stream the papers of a collection file, in either format.

    Duplicate papers (same id and content) are yielded once; the same id with different content
    is an error. The ids seen so far live in a temporary SQLite file, not in memory, so a file of
    millions of papers streams in constant memory.
    """
    path = Path(path)
    reader = iter_jsonl if is_jsonl(path) else iter_text
    # "" = a private temporary database that SQLite deletes on close; its page cache is bounded.
    seen = sqlite3.connect("")
    try:
        seen.execute("CREATE TABLE seen (id TEXT PRIMARY KEY, hash TEXT, title TEXT) WITHOUT ROWID")
        for paper in reader(path):
            added = seen.execute("INSERT OR IGNORE INTO seen VALUES (?, ?, ?)",
                                 (paper.id, paper.content_hash, paper.title)).rowcount
            if not added:
                previous_hash, previous_title = seen.execute(
                    "SELECT hash, title FROM seen WHERE id = ?", (paper.id,)).fetchone()
                if previous_hash != paper.content_hash:
                    raise CorpusError(path, None, f"id {paper.id!r} is used by two different papers "
                                      f"({previous_title!r} and {paper.title!r})")
                continue
            yield paper
    finally:
        seen.close()


def load_papers(path: Path | str) -> list[Paper]:
    """All papers of a collection file (see :func:`iter_papers`)."""
    return list(iter_papers(path))
