"""Hybrid retrieval: dense (Chroma through llama-index) + BM25 (bm25s), fused by reciprocal rank.

Local Chroma has no keyword search and llama-index's BM25 retriever sees an empty docstore over
a Chroma-backed index, so the keyword index is built here from the stored chunk texts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bm25s
import bm25s.stopwords
import numpy as np
from llama_index.core import VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding

from .corpus import stored_body
from .lexicon import Lexicon, english
from .settings import Settings
from .store import Store
from .text import (
    COORDINATED,
    FOLDED,
    capitalised_names,
    coordinated,
    mentions,
    own_names,
    squash,
    tokenize,
    used_as_word,
    whole_name,
)
from .tuning import (
    COMMON_DF,
    MAX_CORRECTION_VOCAB,
    NAME_MAX_TITLES,
    SIBLING_MIN_PAPERS,
    SPELLING_CUTOFF,
    SPELLING_MIN_LETTERS,
)

log = logging.getLogger(__name__)


@dataclass
class Hit:
    """One retrieved paper, with its best-matching chunk."""

    paper_id: str
    title: str
    text: str
    score: float
    similarity: float | None = None  # dense cosine similarity of the best chunk
    bm25: float | None = None
    dense_rank: int | None = None  # 1 = the dense retriever's best paper
    bm25_rank: int | None = None
    url: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    named: bool = False  # the question names this paper (see text.mentions)



def _file_digest(path: Path) -> str:
    """A file's blake2b digest (~0.1 s for the 66 MB index of 100,000 papers)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


class ChunkIds(Sequence[str]):
    """Chunk ids in index order, packed as UTF-8 bytes plus offsets (memory-mapped once saved)."""

    def __init__(self, blob: bytes | np.ndarray, offsets: np.ndarray) -> None:
        self.blob, self.offsets = blob, offsets

    @classmethod
    def pack(cls, ids: Iterable[str]) -> ChunkIds:
        blob, offsets = bytearray(), [0]
        for chunk_id in ids:
            blob += chunk_id.encode()
            offsets.append(len(blob))
        return cls(np.frombuffer(bytes(blob), dtype=np.uint8), np.asarray(offsets, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        return bytes(self.blob[int(self.offsets[i]):int(self.offsets[i + 1])]).decode()


def _sibling_rule() -> dict[str, Any]:
    """What the saved siblings were built by: another threshold or pattern builds them again."""
    return {"min_papers": SIBLING_MIN_PAPERS, "pattern": COORDINATED.pattern}


class KeywordIndex:
    """A BM25 index (bm25s, Lucene scoring) over every stored chunk, and the chunk ids in its order.

    Built page by page from the store, so building never holds all texts at once; saved to a folder
    and loaded memory-mapped, so a restart does not rebuild it. Texts and metadata stay in Chroma.
    """

    K1, B = 1.5, 0.75  # bm25s' defaults

    def __init__(self, bm25: bm25s.BM25, ids: ChunkIds, siblings: dict[str, frozenset[str]] | None = None) -> None:
        self.bm25, self.ids = bm25, ids
        #: Terms the collection coordinates with each term ("prefil" -> {"decod"}), see :meth:`build`.
        self.siblings = siblings or {}
        n = len(ids)
        df = np.diff(np.asarray(bm25.scores["indptr"]))
        #: How telling each term is (rare terms weigh more); a term seen nowhere gets the maximum.
        self.idf = {t: math.log(1 + n / int(df[i])) for t, i in bm25.vocab_dict.items() if df[i]}
        self.max_idf = math.log(1 + max(n, 1))
        self._words: list[str] | None = None
        self._corrections: dict[str, str] = {}  # memo: difflib scans the whole vocabulary
        self._word_tokens: dict[str, list[str]] = {}  # memo: bm25s' tokenizer costs ~0.1 ms a call

    @classmethod
    def build(cls, pages: Iterable[tuple[list[str], list[str]]]) -> KeywordIndex:
        """Index ``(chunk ids, texts)`` pages; memory: the term counts, not the texts."""
        vocab: dict[str, int] = {}
        ids: list[str] = []
        doc_parts: list[np.ndarray] = []
        term_parts: list[np.ndarray] = []
        tf_parts: list[np.ndarray] = []
        lengths: list[int] = []
        pair_papers: dict[tuple[str, str], set[str]] = {}
        for page_ids, texts in pages:
            for chunk_id, text in zip(page_ids, texts):
                for pair in coordinated(text):
                    pair_papers.setdefault(pair, set()).add(chunk_id.rpartition(":")[0])
            # (document, term, count) triples of one page, kept as compact arrays per page.
            page_docs: list[int] = []
            page_terms: list[int] = []
            page_tfs: list[int] = []
            for doc_tokens in tokenize(list(texts)) if texts else []:
                counts: dict[int, int] = {}
                for token in doc_tokens:
                    tid = vocab.setdefault(token, len(vocab))
                    counts[tid] = counts.get(tid, 0) + 1
                page_docs += [len(lengths)] * len(counts)
                page_terms += counts.keys()
                page_tfs += counts.values()
                lengths.append(len(doc_tokens))
            doc_parts.append(np.asarray(page_docs, dtype=np.int32))
            term_parts.append(np.asarray(page_terms, dtype=np.int32))
            tf_parts.append(np.asarray(page_tfs, dtype=np.float32))
            ids += page_ids
        n_docs, n_vocab = len(lengths), len(vocab)
        docs = np.concatenate(doc_parts) if doc_parts else np.zeros(0, np.int32)
        terms = np.concatenate(term_parts) if term_parts else np.zeros(0, np.int32)
        tf = np.concatenate(tf_parts) if tf_parts else np.zeros(0, np.float32)
        del doc_parts, term_parts, tf_parts
        doc_len = np.asarray(lengths, dtype=np.float32)
        df = np.bincount(terms, minlength=n_vocab)
        # Lucene BM25, as bm25s.BM25().index() computes it (tests/test_retrieve.py compares them).
        idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
        norm = cls.K1 * (1 - cls.B + cls.B * doc_len[docs] / max(float(doc_len.mean()) if n_docs else 1.0, 1e-9))
        scores = idf[terms] * tf / (tf + norm)
        order = np.argsort(terms, kind="stable")  # column-major (CSC): one slice of documents per term
        bm25 = bm25s.BM25(k1=cls.K1, b=cls.B, backend="numpy", csc_backend="numpy")
        bm25.scores = {
            "data": scores[order].astype(np.float32), "indices": docs[order],
            "indptr": np.concatenate([[0], np.cumsum(df)]).astype(np.int64), "num_docs": n_docs,
        }
        bm25.vocab_dict = vocab
        bm25.nonoccurrence_array = None
        # Siblings: terms that SIBLING_MIN_PAPERS papers or more join with "and", "or", "vs" ("prefill
        # and decode", "training and inference"): alternatives, so a figure of one is not a figure of
        # the other (grounding.of_sibling). One paper's "latency and high throughput" is not enough.
        siblings: dict[str, set[str]] = {}
        for (a, b), papers in pair_papers.items():
            if len(papers) >= SIBLING_MIN_PAPERS:
                siblings.setdefault(a, set()).add(b)
        return cls(bm25, ChunkIds.pack(ids), {t: frozenset(s) for t, s in siblings.items()})

    @classmethod
    def from_texts(cls, ids: list[str], texts: list[str]) -> KeywordIndex:
        return cls.build([(ids, texts)])

    def save(self, path: Path, stamp: str) -> None:
        """Write the index to ``path`` (replaced whole: a crash leaves the old one or none)."""
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            self.bm25.save(str(tmp), show_progress=False)
            np.save(tmp / "ids.offsets.npy", self.ids.offsets)
            (tmp / "ids.bin").write_bytes(bytes(self.ids.blob))
            (tmp / "siblings.json").write_text(json.dumps(
                {**_sibling_rule(), "siblings": {t: sorted(s) for t, s in sorted(self.siblings.items())}}))
            # Written last: a folder without it is never loaded. The digests make a damaged file (a
            # bad disk, a copy cut short) a rebuild instead of wrong search results.
            digests = {f.name: _file_digest(f) for f in sorted(tmp.iterdir())}
            (tmp / "stamp.json").write_text(json.dumps({"stamp": stamp, "chunks": len(self.ids), "digests": digests}))
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # a full disk leaves no partial copy behind
            raise
        old = path.with_name(f"{path.name}.old-{os.getpid()}-{threading.get_ident()}")
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, path: Path, stamp: str) -> KeywordIndex | None:
        """The index saved at ``path`` if it was built from the store as it is (``stamp``), else None."""
        try:
            saved = json.loads((path / "stamp.json").read_text())
            if saved.get("stamp") != stamp:
                return None
            files = {f.name for f in path.iterdir()} - {"stamp.json"}
            digests = saved.get("digests") or {}
            if set(digests) != files or any(_file_digest(path / name) != d for name, d in digests.items()):
                log.warning("the saved keyword index in %s is damaged or incomplete: building it again", path)
                return None
            # Siblings saved by a version without them, or by another rule, are built again.
            rule = json.loads((path / "siblings.json").read_text()) if "siblings.json" in files else {}
            if any(rule.get(key) != value for key, value in _sibling_rule().items()):
                log.info("the saved keyword index in %s has no siblings of this rule: building it again", path)
                return None
            bm25 = bm25s.BM25.load(str(path), mmap=True)
            offsets = np.load(path / "ids.offsets.npy", mmap_mode="r")
            blob = np.memmap(path / "ids.bin", dtype=np.uint8, mode="r") if offsets[-1] else np.zeros(0, np.uint8)
            siblings = {t: frozenset(s) for t, s in rule["siblings"].items()}
            index = cls(bm25, ChunkIds(blob, offsets), siblings)
        except (OSError, ValueError, KeyError) as e:
            if path.exists():
                log.warning("the saved keyword index in %s cannot be read (%s): building it again", path, e)
            return None
        if len(index.ids) != saved["chunks"] or index.bm25.scores["num_docs"] != saved["chunks"]:
            log.warning("the saved keyword index in %s is incomplete: building it again", path)
            return None
        return index

    def __len__(self) -> int:
        return len(self.ids)

    def _tokens(self, word: str) -> list[str]:
        """``tokenize`` of one word, memoised: the name checks ask about the same words per query."""
        found = self._word_tokens.get(word)
        if found is None:
            if len(self._word_tokens) > 100_000:
                self._word_tokens.clear()
            found = self._word_tokens[word] = tokenize([word])[0]
        return found

    def known(self, word: str) -> bool:
        """Whether the collection uses ``word`` (all its stemmed tokens are in the vocabulary)."""
        tokens = self._tokens(word)
        return bool(tokens) and all(t in self.bm25.vocab_dict for t in tokens)

    def _chunks_using(self, word: str) -> int:
        """How many chunks use ``word`` (0 for a word of several tokens, or none)."""
        tokens = self._tokens(word)
        if len(tokens) != 1 or tokens[0] not in self.bm25.vocab_dict:
            return 0
        i = self.bm25.vocab_dict[tokens[0]]
        indptr = self.bm25.scores["indptr"]
        return int(indptr[i + 1] - indptr[i])

    def common(self, word: str) -> bool:
        """Whether ``word`` is one ordinary word that many chunks use (so not a paper's name)."""
        # At least COMMON_DF chunks, and at least a thousandth of them in a big collection.
        return self._chunks_using(word) >= max(COMMON_DF, len(self.ids) // 1000)

    def share(self, word: str) -> float:
        """The share of chunks that use ``word`` (0.0 for a word of several tokens or none)."""
        return self._chunks_using(word) / len(self.ids) if self.ids else 0.0

    def rare(self, word: str) -> bool:
        """Whether the collection uses ``word``, in few chunks: how a paper's name typed in lower
        case looks ("minference", "jrt-rnn"), unlike an ordinary word ("decoding")."""
        return self.known(word) and not self.common(word)

    def correct(self, query: str) -> str:
        """The query with a close in-vocabulary spelling added after each word the collection
        never uses ("thruput" -> "throughput", "cachblend" -> "cacheblend"); a typo otherwise
        drops the word from the keyword side."""
        tokens = tokenize([query])[0]
        extra = [c for t, c in zip(tokens, self.correct_terms(tokens)) if c != t]
        return f"{query} {' '.join(extra)}" if extra else query

    def correct_terms(self, terms: Iterable[str]) -> list[str]:
        """Stemmed terms with each one the collection never uses replaced by its closest spelling
        in the vocabulary, if one is close ("param" -> "paramet"); see :meth:`correct`."""
        from difflib import get_close_matches

        vocab = self.bm25.vocab_dict
        if len(vocab) > MAX_CORRECTION_VOCAB:
            return list(terms)
        out = []
        for t in terms:
            # Comparatives are folded on purpose (see content_terms): "cheap" is no typo of "cheaper".
            if len(t) >= SPELLING_MIN_LETTERS and t.isalpha() and t not in vocab and t not in FOLDED:
                fixed = self._corrections.get(t)  # read once: another answer's thread may clear the memo
                if fixed is None:
                    if len(self._corrections) > 100_000:
                        self._corrections.clear()
                    close = get_close_matches(t, self._spellings(), n=1, cutoff=SPELLING_CUTOFF)
                    fixed = self._corrections[t] = close[0] if close else t
                t = fixed
            out.append(t)
        return out

    def _spellings(self) -> list[str]:
        if self._words is None:
            self._words = [w for w in self.bm25.vocab_dict if w.isalpha() and len(w) >= 4]
        return self._words

    def near_spelling(self, term: str, cutoff: float) -> bool:
        """Whether a stemmed term is a vocabulary term or within difflib ratio ``cutoff`` of one (above
        MAX_CORRECTION_VOCAB terms only the first: :meth:`correct_terms` does not correct there)."""
        from difflib import get_close_matches

        if term in self.bm25.vocab_dict:
            return True
        return len(self.bm25.vocab_dict) <= MAX_CORRECTION_VOCAB and \
            bool(get_close_matches(term, self._spellings(), n=1, cutoff=cutoff))

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """(chunk id, score) of the best ``k`` chunks with a positive score."""
        if not len(self.ids):
            return []
        terms = [t for t in tokenize([query])[0] if t in self.bm25.vocab_dict]
        if not terms:
            return []
        scores = self.bm25.get_scores(terms)
        top = np.argpartition(-scores, k)[:k] if len(scores) > k else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.ids[int(i)], float(scores[i])) for i in top if scores[i] > 0]


class HybridRetriever:
    """Ranks papers by reciprocal-rank fusion of a dense and a BM25 ranking of their chunks."""

    def __init__(self, store: Store, embed_model: BaseEmbedding, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.embed_model = embed_model
        self._index = VectorStoreIndex.from_vector_store(store.vector_store, embed_model=embed_model)
        self._keywords: KeywordIndex | None = None
        self._keywords_stamp: str | None = None
        self._lexicon: Lexicon | None = None
        self._lock = threading.Lock()
        self._rebuilding: threading.Thread | None = None

    def keyword_index(self) -> KeywordIndex:
        """The BM25 index of the store as it is now (its stamp changes on every write, from any process).

        At start the saved index is loaded if the store has not changed since it was saved, else it
        is built and saved. After a write, small collections are rebuilt before the query; above
        ``retrieval.keyword_background_chunks`` the rebuild runs in a background thread (seconds to minutes at
        100,000s of papers) and queries keep the previous index until it is ready: papers just
        added are found by the dense side meanwhile, and removed ones are skipped.
        """
        with self._lock:
            stamp = self.store.stamp()
            if self._keywords is None:
                self._keywords = KeywordIndex.load(self.settings.keyword_path, stamp)
                if self._keywords is None:
                    self._keywords = self._build(stamp)
                self._keywords_stamp = stamp
            elif self._keywords_stamp != stamp and not self.store.writing:
                # (While this process ingests, every batch changes the stamp: queries keep the
                # previous index until the ingest ends, as they do above the background threshold.)
                if len(self._keywords) < self.settings.retrieval.keyword_background_chunks:
                    self._keywords, self._keywords_stamp = self._build(stamp), stamp
                elif self._rebuilding is None or not self._rebuilding.is_alive():
                    self._rebuilding = threading.Thread(target=self._rebuild, args=(stamp,), daemon=True,
                                                        name="paperchat-bm25")
                    self._rebuilding.start()
            return self._keywords

    def own_names(self, hit: Hit) -> set[str]:
        """The names ``hit``'s paper goes by itself, as written (:func:`rag.text.own_names`); a name
        its abstract introduces that is an ordinary word here ("SPEED") is left out."""
        return own_names(hit.title, hit.text, self.term_weights().common)

    def term_weights(self) -> KeywordIndex:
        """The keyword index as of the last check, for term rarity (idf) within one question:
        ``retrieve`` has just checked the store's stamp, so no second read is needed."""
        return self._keywords if self._keywords is not None else self.keyword_index()

    def lexicon(self) -> Lexicon:
        """The words that are no names, over :meth:`term_weights` (an index one question old is
        fine for that), built once per index: it keeps what it has found out about each word."""
        index = self.term_weights()
        with self._lock:
            if self._lexicon is None or self._lexicon.index is not index:
                self._lexicon = Lexicon(index)
            return self._lexicon

    def _build(self, stamp: str) -> KeywordIndex:
        """Index the store and save the index for the next start."""
        index = KeywordIndex.build(self.store.chunk_pages())
        try:
            index.save(self.settings.keyword_path, stamp)
        except OSError as e:  # a read-only data dir still answers; the next start rebuilds
            log.warning("cannot save the keyword index to %s: %s", self.settings.keyword_path, e)
        return index

    def _rebuild(self, stamp: str) -> None:
        index = self._build(stamp)
        with self._lock:
            self._keywords, self._keywords_stamp = index, stamp

    def dense(self, query: str, k: int) -> list[tuple[str, str, dict[str, Any], float]]:
        """(chunk id, text, metadata, cosine similarity) of the ``k`` nearest chunks."""
        if self.store.count() == 0:
            return []
        if self._index.vector_store is not self.store.vector_store:  # the store opened its collection again
            self._index = VectorStoreIndex.from_vector_store(self.store.vector_store, embed_model=self.embed_model)
        retriever = self._index.as_retriever(similarity_top_k=k)
        out = []
        for nws in retriever.retrieve(query):
            # ChromaVectorStore reports exp(-distance); the collection's distance is 1 - cosine.
            cosine = 1.0 + math.log(max(nws.score or 1e-12, 1e-12))
            node = nws.node
            out.append((node.node_id, node.get_content(), dict(node.metadata), cosine))
        return out

    def retrieve(self, query: str, k: int | None = None) -> list[Hit]:
        """The ``k`` best papers for ``query``, best first; ``score`` is the fused RRF score."""
        s = self.settings.retrieval
        k = k or s.k
        n = max(s.candidates, k)
        hits: dict[str, Hit] = {}

        def add(rank: int, weight: float, text: str, meta: dict[str, Any]) -> Hit:
            pid = meta["paper_id"]
            hit = hits.get(pid)
            if hit is None:
                # The hit carries the chunk without its title line.
                hit = hits[pid] = Hit(pid, meta["title"], stored_body(text), 0.0, url=meta.get("url"), metadata=meta)
            hit.score += weight / (s.rrf_k + rank)
            return hit

        for rank, (_, text, meta, cosine) in enumerate(self._unique(self.dense(query, n)), 1):
            hit = add(rank, s.dense_weight, text, meta)
            hit.similarity, hit.dense_rank = cosine, rank
        index = self.keyword_index()
        found = index.search(index.correct(query), n)
        # Texts and metadata live in Chroma: fetch the chunks of papers the dense side did not
        # bring (chunk ids are "<paper id>:<n>"). A chunk deleted since the index was built is skipped.
        chunks = self.store.get_chunks([cid for cid, _ in found if cid.rpartition(":")[0] not in hits])
        known = {cid: ("", hits[pid].metadata) for cid, _ in found if (pid := cid.rpartition(":")[0]) in hits}
        chunks.update(known)
        ranked = [(cid, *chunks[cid], score) for cid, score in found if cid in chunks]
        for rank, (_, text, meta, score) in enumerate(self._unique(ranked), 1):
            hit = add(rank, s.bm25_weight, text, meta)
            hit.bm25, hit.bm25_rank = score, rank
        # A third ranking: papers the question names ("ZipVL", "cachblend", "sarathi serve"). Both
        # other rankings can bury a paper the question names when its abstract is short on the
        # question's other words.
        if s.title_weight:
            # Only the names a paper goes by itself: "RAG" or "HBM" in a question that describes
            # a paper does not name the papers that use them (dev split: described questions).
            # "What kind of task ...?" does not name KIND (:func:`rag.text.used_as_word`).
            names = {h.paper_id: {squash(n) for n in self.own_names(h) if not used_as_word(n, query)}
                     for h in hits.values()}
            # A name several candidates go by ("LLM", "KV") names none of them.
            counts = Counter(n for ns in names.values() for n in ns)
            named = [h for h in hits.values()
                     if mentions(query, {n for n in names[h.paper_id] if counts[n] <= NAME_MAX_TITLES}, index.known)
                     or self._typed_in_capitals(query, h, hits.values(), index)]
            for rank, hit in enumerate(sorted(named, key=lambda h: -h.score), 1):
                hit.named = True
                hit.score += s.title_weight / (s.rrf_k + rank)
        return sorted(hits.values(), key=lambda h: -h.score)[:k]

    @staticmethod
    def _typed_in_capitals(query: str, hit: Hit, hits: Iterable[Hit], index: KeywordIndex) -> bool:
        """Whether ``query`` writes, in capitals, a name ``hit``'s abstract introduces that spells an
        ordinary English word the collection uses often ("SPEED"; "LLM" or "GPU" are no English
        words), and which few candidates write in capitals (not "RAG" in a collection on RAG)."""

        def ordinary(name: str) -> bool:
            return index.common(name) and name in english()

        def written(name: str, text: str) -> bool:
            return re.search(whole_name(name), text) is not None

        return any(written(n, query) and sum(written(n, h.text) for h in hits) <= NAME_MAX_TITLES
                   for n in capitalised_names(hit.title, hit.text, ordinary))

    @staticmethod
    def _unique(ranked: list[tuple[str, str, dict[str, Any], float]]) -> list[tuple[str, str, dict[str, Any], float]]:
        """Keep each paper's best chunk only, so a paper's rank is its best chunk's."""
        seen: set[str] = set()
        out = []
        for item in ranked:
            if item[2]["paper_id"] not in seen:
                seen.add(item[2]["paper_id"])
                out.append(item)
        return out
