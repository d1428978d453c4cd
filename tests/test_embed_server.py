"""Embeddings from an OpenAI-compatible server: batching, order, concurrency, retries and errors
against a small fake server run in-process; the store's model check; and one run against
llama-cpp-python's real server embedding with the project's GGUF."""

from __future__ import annotations

import hashlib
import http.server
import json
import random
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from eval.browser import free_port, serving
from rag import Engine, Settings
from rag.catalog import Catalog
from rag.corpus import load_papers
from rag.embedding import EmbeddingError, MiniLMEmbedding, OpenAICompatibleEmbedding, make_embedding
from rag.ingest import ingest_file
from rag.settings import DEFAULT_CORPUS, EmbeddingSettings, StoreSettings
from rag.store import Store, StoreError
from tests.conftest import llama_server_cmd

from .conftest import FakeLLM

DIM = 16


def fake_vector(text: str, dim: int = DIM) -> list[float]:
    """Hashed bag of words (not normalised: the client must do it), never all zero."""
    v = [0.0] * dim
    v[0] = 0.01
    for word in re.findall(r"\w+", text.lower()):
        if len(word) > 2:
            v[int(hashlib.md5(word.encode()).hexdigest(), 16) % dim] += 1.0
    return v


class FakeServer:
    """An OpenAI-compatible /v1/embeddings endpoint with knobs: delay, failures, shuffled answers."""

    def __init__(self, dim: int = DIM) -> None:
        self.dim = dim
        self.delay = 0.0  # seconds per request (random up to this with jitter=True)
        self.jitter = False
        self.fail_next = 0  # answer this many requests with fail_status, then work
        self.fail_status = 503
        self.always_fail = False
        self.token_level = False  # one vector per word, as llama.cpp's server without pooling
        self.drop_one = False  # answer one vector too few
        self.requests: list[dict[str, Any]] = []
        self.inflight = 0
        self.max_inflight = 0
        self._lock = threading.Lock()

    def handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        body = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))
        with self._lock:
            self.requests.append(body)
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            fail = self.always_fail or self.fail_next > 0
            self.fail_next -= 1
        try:
            time.sleep(random.uniform(0, self.delay) if self.jitter else self.delay)
            if fail:
                self._send(handler, self.fail_status, {"error": {"message": "model overloaded"}})
                return
            inputs = body["input"]
            if self.token_level:
                vectors: list[Any] = [[fake_vector(w, self.dim) for w in t.split() or ["x"]] for t in inputs]
            else:
                vectors = [fake_vector(t, self.dim) for t in inputs]
            data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
            random.shuffle(data)  # the index field gives the order, not the position
            if self.drop_one:
                data = data[1:]
            self._send(handler, 200, {"object": "list", "data": data, "model": body["model"],
                                      "usage": {"prompt_tokens": 1, "total_tokens": 1}})
        finally:
            with self._lock:
                self.inflight -= 1

    @staticmethod
    def _send(handler: http.server.BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        raw = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(raw)))
        handler.end_headers()
        handler.wfile.write(raw)

    def batch_sizes(self) -> list[int]:
        return [len(r["input"]) for r in self.requests]


@contextmanager
def fake_server(dim: int = DIM) -> Iterator[tuple[FakeServer, str]]:
    fake = FakeServer(dim)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's naming
            fake.handle(self)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def served() -> Iterator[tuple[FakeServer, str]]:
    with fake_server() as got:
        yield got


def expected(texts: list[str]) -> np.ndarray:
    v = np.asarray([fake_vector(t) for t in texts], dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


TEXTS = [f"paper {i} about topic{i % 7} and method{i}" for i in range(50)]


def test_construction_probes_the_dimension_and_names_the_model(served):
    fake, url = served
    emb = OpenAICompatibleEmbedding(url, "fake-model")
    assert emb.dimension == DIM and emb.model_name == f"server:fake-model:{DIM}"
    assert len(fake.requests) == 1 and fake.requests[0]["model"] == "fake-model"


def test_batches_keep_input_order_and_are_normalised(served):
    fake, url = served
    fake.jitter, fake.delay = True, 0.05  # batches finish out of order
    emb = OpenAICompatibleEmbedding(url, "m", batch=8, concurrency=4)
    fake.requests.clear()
    got = np.asarray(emb.get_text_embedding_batch(TEXTS))  # through llama-index, as the store calls it
    assert got.shape == (50, DIM)
    np.testing.assert_allclose(got, expected(TEXTS), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    assert sorted(fake.batch_sizes()) == [2] + [8] * 6  # 50 texts in requests of at most 8, each sent once
    assert sorted(t for r in fake.requests for t in r["input"]) == sorted(TEXTS)
    assert emb.embed(TEXTS).dtype == np.float32
    q = np.asarray(emb.get_query_embedding(TEXTS[3]))
    np.testing.assert_allclose(q, expected([TEXTS[3]])[0], atol=1e-6)


def test_concurrent_requests_stay_within_the_bound(served):
    fake, url = served
    fake.delay = 0.15
    emb = OpenAICompatibleEmbedding(url, "m", batch=2, concurrency=3)
    fake.max_inflight = 0
    start = time.monotonic()
    emb.embed(TEXTS[:20])  # 10 requests
    took = time.monotonic() - start
    assert 2 <= fake.max_inflight <= 3
    assert took < 10 * 0.15  # they overlapped
    one = OpenAICompatibleEmbedding(url, "m", batch=2, concurrency=1)
    fake.max_inflight = 0
    one.embed(TEXTS[:8])
    assert fake.max_inflight == 1


def test_a_server_that_fails_twice_then_answers_is_retried(served):
    fake, url = served
    emb = OpenAICompatibleEmbedding(url, "m", batch=100, retries=2)
    for status in (503, 429):
        fake.requests.clear()
        fake.fail_next, fake.fail_status = 2, status
        got = emb.embed(TEXTS[:5])
        np.testing.assert_allclose(got, expected(TEXTS[:5]), atol=1e-6)
        assert len(fake.requests) == 3


def test_retries_are_bounded_and_the_error_names_the_server(served):
    fake, url = served
    emb = OpenAICompatibleEmbedding(url, "m", batch=4, concurrency=2, retries=2)
    fake.requests.clear()
    fake.always_fail, fake.fail_status = True, 500
    start = time.monotonic()
    with pytest.raises(EmbeddingError, match=re.escape(f"the embedding server at {url} answered with an error "
                                                      "(HTTP 500, tried 3 times)")):
        emb.embed(TEXTS[:4])
    assert len(fake.requests) == 3  # the first try and 2 retries, no more
    assert time.monotonic() - start < 20
    # Failing at construction: the probe fails the same way, before anything is stored.
    with pytest.raises(EmbeddingError, match=f"embedding server at {re.escape(url)} answered with an error"):
        OpenAICompatibleEmbedding(url, "m", retries=0)
    # A client error is not retried, and says what may cause it.
    fake.requests.clear()
    fake.fail_status = 413
    with pytest.raises(EmbeddingError, match="refused a batch of 4 texts.*PAPERCHAT_EMBEDDING__BATCH"):
        emb.embed(TEXTS[:4])
    assert len(fake.requests) == 1


def test_unreachable_or_slow_server_is_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EmbeddingError, match=re.escape(f"cannot reach the embedding server at {url} (tried 2 times)")):
        OpenAICompatibleEmbedding(url, "m", retries=1)
    with fake_server() as (fake, url):
        fake.delay = 2
        with pytest.raises(EmbeddingError, match=f"server at {re.escape(url)} did not answer within 0.5 s"):
            OpenAICompatibleEmbedding(url, "m", timeout_s=0.5, retries=0)


def test_malformed_answers_are_errors(served):
    fake, url = served
    emb = OpenAICompatibleEmbedding(url, "m")
    fake.drop_one = True
    with pytest.raises(EmbeddingError, match="answered 2 vectors for 3 texts"):
        emb.embed(TEXTS[:3])


def test_token_level_vectors_are_averaged_in_small_batches(served):
    fake, url = served
    fake.token_level = True
    emb = OpenAICompatibleEmbedding(url, "m", batch=64)
    assert emb.token_level and emb.batch == 4 and emb.dimension == DIM
    fake.requests.clear()
    got = emb.embed(["alpha beta", "gamma"] * 5)
    assert max(fake.batch_sizes()) == 4
    mean = np.mean([fake_vector("alpha"), fake_vector("beta")], axis=0)
    np.testing.assert_allclose(got[0], mean / np.linalg.norm(mean), atol=1e-6)


def test_settings_choose_the_embedding(monkeypatch, served, tmp_path):
    fake, url = served
    monkeypatch.setenv("PAPERCHAT_EMBEDDING__BASE_URL", url)
    with pytest.raises(ValueError, match="PAPERCHAT_EMBEDDING__MODEL is not"):
        Settings()
    monkeypatch.setenv("PAPERCHAT_EMBEDDING__MODEL", "fake-model")
    monkeypatch.setenv("PAPERCHAT_EMBEDDING__API_KEY", "secret-key")
    monkeypatch.setenv("PAPERCHAT_EMBEDDING__BATCH", "3")
    settings = Settings(data_dir=tmp_path / "data", store=StoreSettings(default_corpus=None))
    emb = make_embedding(settings)
    assert isinstance(emb, OpenAICompatibleEmbedding) and emb.batch == 3
    assert "secret-key" not in repr(settings)
    with pytest.raises(ValueError, match="PAPERCHAT_EMBEDDING__BASE_URL is not"):
        Settings(embedding=EmbeddingSettings(base_url=None))
    # The engine builds it when none is passed, and ingests and retrieves through it.
    corpus = tmp_path / "papers.jsonl"
    corpus.write_text(json.dumps({"title": "Zebra Caching", "abstract": "We cache zebra stripes for faster serving."})
                      + "\n" + json.dumps({"title": "Giraffe Decoding",
                                           "abstract": "Speculative decoding with long-necked draft models."}) + "\n")
    engine = Engine(settings, llm=FakeLLM())
    assert engine.embed_model.model_name == f"server:fake-model:{DIM}"
    engine.ingest([corpus])
    assert engine.retrieve("speculative decoding draft models")[0].title == "Giraffe Decoding"
    monkeypatch.delenv("PAPERCHAT_EMBEDDING__BASE_URL")
    monkeypatch.delenv("PAPERCHAT_EMBEDDING__MODEL")
    assert make_embedding(Settings()).__class__ is MiniLMEmbedding


def test_store_refuses_another_model_or_dimension(served, tmp_path):
    fake, url = served
    settings = Settings(data_dir=tmp_path / "data", store=StoreSettings(default_corpus=None))
    emb = OpenAICompatibleEmbedding(url, "fake-model")
    store = Store(settings, emb)
    ingest_file(store, DEFAULT_CORPUS)
    assert len(Catalog(Store(settings, emb)).papers()) == 71  # the same model opens it
    other = OpenAICompatibleEmbedding(url, "other-model")
    with pytest.raises(StoreError, match=re.escape(
            f"built with the embedding model 'server:fake-model:{DIM}' ({DIM} dimensions), but the configured one "
            f"is 'server:other-model:{DIM}' ({DIM} dimensions)") + ".*paperchat rebuild"):
        Store(settings, other)
    with fake_server(dim=32) as (_, url32):
        wider = OpenAICompatibleEmbedding(url32, "fake-model")
        wider.model_name = f"server:fake-model:{DIM}"  # same name, other length: the dimension still tells
        with pytest.raises(StoreError, match=re.escape(f"({DIM} dimensions), but the configured one is "
                                                       f"'server:fake-model:{DIM}' (32 dimensions)")):
            Store(settings, wider)


@pytest.mark.integration
def test_llama_cpp_server_embeddings_ingest_and_retrieve(tmp_path):
    """llama-cpp-python's OpenAI-compatible server, embedding with the project's GGUF (Qwen2.5-Coder-0.5B:
    no pooling in the file, so the server answers one vector per token and they are averaged)."""
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed")
    from rag.weights import ModelFileError, default_model_path

    try:
        default_model_path(Settings().cache_dir)  # the file llama_server_cmd serves
    except ModelFileError as e:
        pytest.skip(f"the project's GGUF is not available: {e}")
    port = free_port()
    cmd = llama_server_cmd(port, "--embedding", "true", n_ctx=2048)
    chosen = load_papers(DEFAULT_CORPUS)[:8]  # CacheBlend, Qwen2.5-1M and six others
    corpus = tmp_path / "few.jsonl"
    corpus.write_text("".join(json.dumps({"title": p.title, "abstract": p.abstract}) + "\n" for p in chosen))
    with serving(cmd, f"http://127.0.0.1:{port}/v1/models", tmp_path / "llama-server.log", timeout=180):
        settings = Settings(data_dir=tmp_path / "data", store=StoreSettings(default_corpus=corpus),
                            embedding=EmbeddingSettings(base_url=f"http://127.0.0.1:{port}/v1", model="qwen-0.5b"))
        engine = Engine(settings, llm=FakeLLM())  # the empty store gets the few papers, embedded by the server
        assert engine.embed_model.model_name == "server:qwen-0.5b:896"
        assert len(Catalog(engine.store).papers()) == len(chosen)
        # The stored vectors are the server's (averaged over tokens, normalised).
        got = engine.store.collection.get(ids=[f"{chosen[6].id}:0"], include=["embeddings", "documents"])
        np.testing.assert_allclose(got["embeddings"][0], engine.embed_model.embed(got["documents"])[0], atol=1e-4)
        for question, title in [("How does CacheBlend reuse KV caches?", "CacheBlend"),
                                ("What context length do the Qwen2.5-1M models extend to?", "Qwen2.5-1M")]:
            # A chat model's averaged states are weak retrieval vectors (dense recall@1 on the 71 papers:
            # 5%, MiniLM 55%), so only the hybrid ranking the engine uses is expected to find the paper.
            dense = engine.retriever.dense(question, 3)
            assert len(dense) == 3 and all(-1.0 <= d[3] <= 1.0 for d in dense)
            assert engine.retrieve(question)[0].title.startswith(title)
    with pytest.raises(StoreError, match="paperchat rebuild"):
        Store(Settings(data_dir=tmp_path / "data"), MiniLMEmbedding())
