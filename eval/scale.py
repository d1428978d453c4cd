"""Scale benchmark: ``paperchat bench --scale`` (also ``python -m eval.scale``).

Builds synthetic collections (papers recombining sentences of the 71 real abstracts, so the text
is realistic) of growing size, each in a fresh process and store, and measures ingestion
throughput, store size on disk, retrieval latency (hybrid: Chroma HNSW + BM25) and peak memory.

Sizes up to ``--real-max`` are embedded with the real MiniLM model, which sets the ingestion
throughput. Larger ones are embedded as the mean of their sentences' MiniLM vectors (computed once):
the same vector space at a fraction of the cost, so retrieval can be measured at sizes the real
model would take hours to embed on 2 cores; their ingestion figures are marked ``mean-vectors``.
Queries are always embedded by the real model. Results: eval/results/scale.json and scale.png;
``--sizes 300000 --add`` measures a size on its own and merges it into the saved results.

With an embedding server (``PAPERCHAT_EMBEDDING__BASE_URL``/``__MODEL``, or ``--embed-server URL
--embed-model NAME``) it also ingests ``--embed-papers`` synthetic papers into fresh stores with the
local MiniLM and with the server, and reports both papers/s (eval/results/scale-embedding.json);
``--embed-only`` measures just that.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from rag.corpus import load_papers
from rag.settings import DEFAULT_CORPUS, EmbeddingSettings, Settings, StoreSettings
from rag.text import split_sentences

from .suite import RESULTS, load_questions, p90


def real_sentences() -> list[str]:
    return [s for p in load_papers(DEFAULT_CORPUS) for s in split_sentences(p.abstract)]


def write_corpus(path: Path, n: int, seed: int = 1) -> Path:
    """``n`` synthetic papers as title/abstract lines: 4-7 real sentences each, in random order."""
    rng = random.Random(seed)
    sentences = real_sentences()
    words = sorted({w for s in sentences for w in s.split() if w.isalpha() and len(w) > 5})
    with path.open("w") as f:
        for i in range(n):
            title = f"{' '.join(rng.sample(words, 4)).title()}: Study {i}"
            f.write(f"{title}\n{' '.join(rng.sample(sentences, rng.randint(4, 7)))}\n\n")
    return path


class SentenceMeanEmbedding(BaseEmbedding):
    """Texts as the normalised mean of their sentences' MiniLM vectors (sentences seen before are
    looked up); queries through the real model."""

    _real: Any = PrivateAttr()
    _vectors: dict[str, np.ndarray] = PrivateAttr()

    def __init__(self, real: BaseEmbedding, **kwargs: Any) -> None:
        super().__init__(model_name="minilm-sentence-mean", **kwargs)
        self._real = real
        sentences = real_sentences()
        self._vectors = dict(zip(sentences, np.asarray(real.get_text_embedding_batch(sentences))))

    def _vector(self, text: str) -> list[float]:
        parts = [self._vectors[s] for s in split_sentences(text.partition("\n")[2] or text) if s in self._vectors]
        v = np.mean(parts, axis=0) if parts else np.asarray(self._real.get_text_embedding(text))
        return (v / np.linalg.norm(v)).tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._real.get_query_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def measure_one(n: int, mean_vectors: bool, work: Path, trace: bool = True) -> dict[str, Any]:
    """Ingest ``n`` synthetic papers into a fresh store and time retrieval (run in its own process)."""
    from rag.catalog import Catalog
    from rag.embedding import MiniLMEmbedding
    from rag.ingest import ingest_file
    from rag.retrieve import HybridRetriever
    from rag.store import Store

    real = MiniLMEmbedding()
    mean = SentenceMeanEmbedding(real)
    embed: BaseEmbedding = mean if mean_vectors else real
    corpus = write_corpus(work / f"papers-{n}.txt", n)
    settings = Settings(data_dir=work / f"store-{n}", store=StoreSettings(default_corpus=None))
    store = Store(settings, embed)
    start = time.perf_counter()
    ingest_file(store, corpus, progress=sys.stderr.isatty())
    ingest_s = time.perf_counter() - start
    ingest_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    again = ingest_file(store, corpus, progress=False)  # nothing changed: per-batch lookups only
    reingest_s = time.perf_counter() - start
    assert again.unchanged == n, again
    catalog = Catalog(store)
    start = time.perf_counter()
    assert catalog.paper_count() == n
    count_s = time.perf_counter() - start
    start = time.perf_counter()
    found, matched = catalog.find_papers(f"study {n // 2}")  # the page's paper search (titles end "Study <i>")
    search_s = time.perf_counter() - start
    assert matched >= 1 and found[0].title.endswith(f"Study {n // 2}"), (matched, found[:1])
    retriever = HybridRetriever(store, embed, settings)
    start = time.perf_counter()
    retriever.keyword_index()  # built from the store and saved
    bm25_build_s = time.perf_counter() - start
    retriever = HybridRetriever(store, embed, settings)  # as at the next start
    start = time.perf_counter()
    retriever.keyword_index()  # loaded from disk
    bm25_load_s = time.perf_counter() - start
    questions = [r["question"] for r in load_questions()][:60]
    retriever.retrieve(questions[0])  # warm
    times = []
    for q in questions:
        start = time.perf_counter()
        retriever.retrieve(q)
        times.append(time.perf_counter() - start)
    times.sort()
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # The ingest's Python-side memory (our code, numpy, llama-index), in a second, traced ingest into
    # another store (tracing halves the speed, so it is not the timed one; mean vectors keep it cheap).
    # Chroma's own memory, mostly its HNSW index, is in Rust and shows in the RSS only.
    ingest_heap_mb = None
    if trace:
        traced = Store(Settings(data_dir=work / f"traced-{n}", store=StoreSettings(default_corpus=None)), mean)
        tracemalloc.start()
        ingest_file(traced, corpus, progress=False)
        ingest_heap_mb = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
    return {
        "papers": n, "embedding": "mean-vectors" if mean_vectors else "minilm", "ingest_s": round(ingest_s, 1),
        "papers_per_s": round(n / ingest_s, 1), "ingest_heap_mb": ingest_heap_mb,
        "ingest_rss_mb": round(ingest_rss_mb), "reingest_s": round(reingest_s, 1),
        "paper_count_s": round(count_s, 3), "paper_search_s": round(search_s, 3),
        "store_mb": round(dir_mb(settings.chroma_path), 1), "bm25_mb": round(dir_mb(settings.keyword_path), 1),
        "bm25_build_s": round(bm25_build_s, 2), "bm25_load_s": round(bm25_load_s, 3),
        "retrieve_s_p50": round(statistics.median(times), 4), "retrieve_s_p90": round(p90(times), 4),
        "rss_mb": round(peak_rss_mb),
    }


def compare_embeddings(n: int, work: Path, settings: Settings) -> dict[str, Any]:
    """Ingestion papers/s of ``n`` synthetic papers into fresh stores: local MiniLM, then the server."""
    from rag.embedding import MiniLMEmbedding, make_embedding
    from rag.ingest import ingest_file
    from rag.store import Store

    corpus = write_corpus(work / f"embed-papers-{n}.txt", n)
    rows: list[dict[str, Any]] = []
    for label in ("local", "server"):
        embed = make_embedding(settings) if label == "server" else MiniLMEmbedding(threads=settings.embedding.threads)
        store = Store(Settings(data_dir=work / f"embed-{label}", store=StoreSettings(default_corpus=None)), embed)
        start = time.perf_counter()
        report = ingest_file(store, corpus, progress=sys.stderr.isatty())
        seconds = time.perf_counter() - start
        rows.append({"embedding": label, "model": embed.model_name, "papers": n, "chunks": report.chunks,
                     "ingest_s": round(seconds, 1), "papers_per_s": round(n / seconds, 2)})
        if label == "server":  # the batch actually used (smaller when the server answers per token)
            rows[-1].update(server=settings.embedding.base_url, batch=getattr(embed, "batch", None),
                            concurrency=settings.embedding.concurrency, token_level=getattr(embed, "token_level", None))
        print(json.dumps(rows[-1]), flush=True)
    return {"papers": n, "rows": rows, "server_vs_local": round(rows[1]["papers_per_s"] / rows[0]["papers_per_s"], 3)}


def extrapolate(rows: list[dict[str, Any]], key: str, sizes: list[int]) -> dict[int, float]:
    """Fit key = a * papers^b through the two largest sizes (log-log) and evaluate at ``sizes``.

    The largest sizes, not all: fixed costs (embedding the query, ~5 ms) flatten the small end,
    and a fit through it would understate the growth."""
    rows = sorted(rows, key=lambda r: r["papers"])[-2:]
    xs = [math.log(r["papers"]) for r in rows]
    ys = [math.log(max(r[key], 1e-6)) for r in rows]
    b, a = np.polyfit(xs, ys, 1)
    return {s: round(math.exp(a) * s**b, 4) for s in sizes}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["papers"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].plot(sizes, [r["retrieve_s_p50"] * 1000 for r in rows], "o-", label="median")
    axes[0].plot(sizes, [r["retrieve_s_p90"] * 1000 for r in rows], "o--", label="p90")
    axes[0].set_title("retrieval latency (ms)")
    axes[0].legend()
    axes[1].plot(sizes, [r["store_mb"] for r in rows], "o-")
    axes[1].set_title("store on disk (MB)")
    axes[2].plot(sizes, [r["rss_mb"] for r in rows], "o-", label="peak RSS (ingest, keyword index, queries)")
    axes[2].plot(sizes, [r.get("ingest_rss_mb", 0) for r in rows], "o--", label="RSS after ingest")
    traced = [r for r in rows if r.get("ingest_heap_mb") is not None]
    axes[2].plot([r["papers"] for r in traced], [r["ingest_heap_mb"] for r in traced], "o:",
                 label="ingest Python heap peak")
    axes[2].set_title("memory (MB)")
    axes[2].legend()
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("papers")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paperchat bench --scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated collection sizes")
    parser.add_argument("--real-max", type=int, default=10000, help="largest size embedded with the real model")
    parser.add_argument("--trace-max", type=int, default=100000,
                        help="largest size whose ingest is traced again for its Python memory (doubles the time)")
    parser.add_argument("--add", action="store_true",
                        help="keep the rows of other sizes already in OUT/scale.json (measure big sizes separately)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--embed-server", metavar="URL",
                        help="an OpenAI-compatible embedding server to compare with the local model "
                        "(default: PAPERCHAT_EMBEDDING__BASE_URL)")
    parser.add_argument("--embed-model", metavar="NAME", help="its model (default: PAPERCHAT_EMBEDDING__MODEL)")
    parser.add_argument("--embed-papers", type=int, default=200, help="papers ingested with each embedding")
    parser.add_argument("--embed-only", action="store_true",
                        help="only compare the local and the server embedding (no collection sizes)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size here
    parser.add_argument("--mean-vectors", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-trace", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args.one, args.mean_vectors, args.work, trace=not args.no_trace)))
        return 0
    # Only the fields the flags give are set: the others still come from the environment.
    embedding = {k: v for k, v in (("base_url", args.embed_server), ("model", args.embed_model)) if v}
    try:
        embed_settings = Settings(embedding=EmbeddingSettings.model_validate(embedding))
    except ValueError as e:  # pydantic's ValidationError: the first message is the one that matters
        parser.error(e.errors()[0]["msg"] if hasattr(e, "errors") else str(e))
    if args.embed_only and not embed_settings.embedding.base_url:
        parser.error("--embed-only needs an embedding server: --embed-server URL --embed-model NAME")
    if not args.embed_only:
        sweep(args)
    if embed_settings.embedding.base_url:
        with tempfile.TemporaryDirectory() as tmp:
            comparison = compare_embeddings(args.embed_papers, Path(tmp), embed_settings)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scale-embedding.json").write_text(json.dumps(comparison, indent=1))
        print(json.dumps(comparison, indent=1))
    return 0


def sweep(args: argparse.Namespace) -> None:
    """Measure each collection size in its own process and save scale.json and scale.png."""
    sizes = [int(x) for x in args.sizes.split(",")]
    saved = args.out / "scale.json"
    rows = [r for r in json.loads(saved.read_text())["rows"] if r["papers"] not in sizes] if args.add else []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            cmd = [sys.executable, "-m", "eval.scale", "--one", str(n), "--work", tmp]
            if n > args.real_max:
                cmd.append("--mean-vectors")
            if n > args.trace_max:
                cmd.append("--no-trace")
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
            for leftover in Path(tmp).iterdir():
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    rows.sort(key=lambda r: r["papers"])
    report: dict[str, Any] = {"rows": rows}
    if len(rows) >= 2:
        big = [1_000_000, 10_000_000]
        report["extrapolated"] = {key: extrapolate(rows, key, big)
                                  for key in ("retrieve_s_p50", "store_mb", "bm25_build_s", "bm25_load_s")}
        real = [r for r in rows if r["embedding"] == "minilm"]
        if real:
            rate = max(real, key=lambda r: r["papers"])["papers_per_s"]
            report["extrapolated"]["ingest_hours_minilm"] = {s: round(s / rate / 3600, 1) for s in big}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(report, indent=1))
    plot(rows, args.out / "scale.png")
    print(json.dumps(report.get("extrapolated", {}), indent=1))


if __name__ == "__main__":
    sys.exit(main())
