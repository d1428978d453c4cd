"""Ingestion killed at random points (SIGKILL) and rerun loses nothing and duplicates nothing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from eval.scale import write_corpus
from rag.catalog import Catalog
from rag.corpus import load_papers
from rag.ingest import ingest_file
from rag.settings import Settings, StoreSettings
from rag.store import Store

from .conftest import HashEmbedding

ROOT = Path(__file__).resolve().parents[1]
# The real Store and Chroma in a child process; the hashing embedding keeps each run short.
CHILD = """
import sys
from rag.ingest import ingest_file
from rag.settings import Settings, StoreSettings
from rag.store import Store
from tests.conftest import HashEmbedding
settings = Settings(data_dir=sys.argv[1], store=StoreSettings(default_corpus=None, ingest_batch=40))
store = Store(settings, HashEmbedding())
print("start", flush=True)
ingest_file(store, sys.argv[2], progress=False)
print("done", flush=True)
"""


KILLS = 10


def run_child(data_dir: Path, corpus: Path, kill_after: float | None) -> tuple[bool, float]:
    """Run one ingest; kill it ``kill_after`` seconds after it started ingesting.
    Returns whether it finished, and the seconds from the start of ingesting to its end."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(data_dir), str(corpus)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "start"
    started = time.monotonic()
    if kill_after is not None:
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=300)
    return proc.returncode == 0, time.monotonic() - started


def test_killed_ingests_then_a_rerun_leave_exactly_the_collection(tmp_path):
    corpus = write_corpus(tmp_path / "big.txt", 1200)  # sentences of the real abstracts, recombined
    expected = {p.id for p in load_papers(corpus)}
    data_dir = tmp_path / "data"
    finished, whole = run_child(tmp_path / "timing", corpus, None)  # how long one whole ingest takes here
    assert finished
    rng = random.Random(11)
    kills = 0
    for _ in range(KILLS):
        # Early in the remaining work, so most kills land while papers are being written.
        finished, _ = run_child(data_dir, corpus, rng.uniform(0.02, 0.3) * whole)
        kills += not finished
    print(f"\ncrash test: {kills} of {KILLS} ingest runs killed mid-way, then a full rerun")
    assert kills >= KILLS // 2, "the kills landed after the ingest had finished: the corpus is too small"
    assert run_child(data_dir, corpus, None)[0]

    embed = HashEmbedding()
    store = Store(Settings(data_dir=data_dir, store=StoreSettings(default_corpus=None)), embed)
    assert set(Catalog(store).papers()) == expected  # nothing missing, nothing extra
    ids, texts, metadatas = store.chunks()
    assert len(ids) == len(set(ids)) == store.count() == len(expected)  # one chunk each, no duplicates
    got = store.collection.get(include=["embeddings"], limit=len(ids) + 10)
    assert len(got["ids"]) == len(ids) and all(len(e) > 0 for e in got["embeddings"])
    # The dense index finds every paper by its own text, as the keyword index (built from the same
    # stored texts) does.
    for text in rng.sample(texts, 25):
        vector = np.asarray(embed.get_text_embedding(text), dtype=np.float32)
        top = store.collection.query(query_embeddings=[vector.tolist()], n_results=1, include=["documents"])
        assert top["documents"][0][0] == text
    report = ingest_file(store, corpus, progress=False)
    assert report.unchanged == len(expected) and report.chunks == 0
