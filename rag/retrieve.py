"""Hybrid retrieval: dense (Chroma through llama-index) + BM25 (bm25s), fused by reciprocal rank.

Local Chroma has no keyword search and llama-index's BM25 retriever sees an empty docstore over
a Chroma-backed index, so the keyword index is built here from the stored chunk texts.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import bm25s
import bm25s.stopwords
import numpy as np
import Stemmer
from llama_index.core import VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding

from .settings import Settings
from .store import Store

_STEMMER = Stemmer.Stemmer("english")
# bm25s' "en" list has 33 words and keeps "what", "does", "which": questions need the longer one.
STOPWORDS = sorted(set(bm25s.stopwords.STOPWORDS_EN_PLUS) | {"much", "many", "paper", "papers"})


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


# Names in a question: CamelCase (CacheBlend), acronyms (TTFT), or words with digits (GPT-5, A100).
NAME = re.compile(r"\b(?:[A-Za-z]*[a-z][A-Z]\w*|[A-Z]{2,}\w*|[A-Za-z]+-?\d[\w.]*|\d+[A-Za-z]\w*)(?:[-.]\w+)*")

# Snowball keeps the "s" of "NPUs" or "GPUs" (a vowel precedes it): drop acronym plurals first.
_ACRONYM_PLURAL = re.compile(r"\b([A-Z][A-Z0-9]+)s\b")


def tokenize(texts: list[str]) -> list[list[str]]:
    """Stemmed, stopword-free tokens, the same for the index and for queries."""
    texts = [_ACRONYM_PLURAL.sub(r"\1", t) for t in texts]
    return bm25s.tokenize(texts, stemmer=_STEMMER, stopwords=STOPWORDS, return_ids=False, show_progress=False)


@functools.lru_cache(maxsize=4096)
def content_terms(text: str) -> frozenset[str]:
    """The stemmed content words and numbers of a text.

    Cached: citation checking scores every answer sentence against the same source texts.
    """
    terms = set(tokenize([text])[0]) | set(re.findall(r"\d+(?:\.\d+)?", text))
    terms.discard("")
    return frozenset(terms)


class KeywordIndex:
    """A BM25 index over every stored chunk."""

    def __init__(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]]) -> None:
        self.ids, self.texts, self.metadatas = ids, texts, metadatas
        self.bm25 = bm25s.BM25()
        tokens = tokenize(texts) if texts else []
        if texts:
            self.bm25.index(tokens, show_progress=False)
        df: dict[str, int] = {}
        for doc in tokens:
            for t in set(doc):
                df[t] = df.get(t, 0) + 1
        #: How telling each term is (rare terms weigh more); a term seen nowhere gets the maximum.
        self.idf = {t: math.log(1 + len(texts) / n) for t, n in df.items()}
        self.max_idf = math.log(1 + max(len(texts), 1))

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """(chunk index, score) of the best ``k`` chunks with a positive score."""
        if not self.texts:
            return []
        terms = [t for t in tokenize([query])[0] if t in self.bm25.vocab_dict]
        if not terms:
            return []
        scores = self.bm25.get_scores(terms)
        top = np.argsort(-scores)[:k]
        return [(int(i), float(scores[i])) for i in top if scores[i] > 0]


class HybridRetriever:
    """Ranks papers by reciprocal-rank fusion of a dense and a BM25 ranking of their chunks."""

    def __init__(self, store: Store, embed_model: BaseEmbedding, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.embed_model = embed_model
        index = VectorStoreIndex.from_vector_store(store.vector_store, embed_model=embed_model)
        self._index = index
        self._keywords: KeywordIndex | None = None
        self._keywords_version = -1
        self._lock = threading.Lock()
        self._rebuilding: threading.Thread | None = None

    def keyword_index(self) -> KeywordIndex:
        """The BM25 index, rebuilt when the store has changed since it was built.

        Small collections are rebuilt before the query. Above ``keyword_background_chunks`` the
        rebuild runs in a background thread (22 s at 100,000 papers) and queries keep the previous
        index until it is ready: papers just added are found by the dense side meanwhile.
        """
        with self._lock:
            version = self.store.version
            if self._keywords is None:
                self._keywords, self._keywords_version = KeywordIndex(*self.store.chunks()), version
            elif self._keywords_version != version:
                if len(self._keywords.ids) < self.settings.keyword_background_chunks:
                    self._keywords, self._keywords_version = KeywordIndex(*self.store.chunks()), version
                elif self._rebuilding is None or not self._rebuilding.is_alive():
                    self._rebuilding = threading.Thread(target=self._rebuild, args=(version,), daemon=True,
                                                        name="paperchat-bm25")
                    self._rebuilding.start()
            return self._keywords

    def _rebuild(self, version: int) -> None:
        index = KeywordIndex(*self.store.chunks())
        with self._lock:
            self._keywords, self._keywords_version = index, version

    def dense(self, query: str, k: int) -> list[tuple[str, str, dict[str, Any], float]]:
        """(chunk id, text, metadata, cosine similarity) of the ``k`` nearest chunks."""
        if self.store.count() == 0:
            return []
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
        k = k or self.settings.retrieve_k
        n = max(self.settings.candidates, k)
        s = self.settings
        hits: dict[str, Hit] = {}

        def add(rank: int, weight: float, text: str, meta: dict[str, Any]) -> Hit:
            pid = meta["paper_id"]
            hit = hits.get(pid)
            if hit is None:
                # Stored chunk texts start with the title line; the hit carries the abstract text.
                body = text.partition("\n")[2] or text
                hit = hits[pid] = Hit(pid, meta["title"], body, 0.0, url=meta.get("url"), metadata=meta)
            hit.score += weight / (s.rrf_k + rank)
            return hit

        for rank, (_, text, meta, cosine) in enumerate(self._unique(self.dense(query, n)), 1):
            hit = add(rank, s.dense_weight, text, meta)
            hit.similarity, hit.dense_rank = cosine, rank
        keywords = self.keyword_index()
        ranked = [(keywords.ids[i], keywords.texts[i], keywords.metadatas[i], score)
                  for i, score in keywords.search(query, n)]
        for rank, (_, text, meta, score) in enumerate(self._unique(ranked), 1):
            hit = add(rank, s.bm25_weight, text, meta)
            hit.bm25, hit.bm25_rank = score, rank
        # A third ranking: papers whose title carries a name the question uses ("ZipVL"). Both
        # other rankings can bury a paper the question names when its abstract is short on the
        # question's other words.
        names = [n.casefold() for n in NAME.findall(query) if len(n) > 2]
        if names and s.title_weight:
            named = [(sum(n in h.title.casefold() for n in names), h) for h in hits.values()]
            named = sorted(((c, h) for c, h in named if c), key=lambda ch: -ch[0])
            for rank, (_, hit) in enumerate(named, 1):
                hit.score += s.title_weight / (s.rrf_k + rank)
        return sorted(hits.values(), key=lambda h: -h.score)[:k]

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
