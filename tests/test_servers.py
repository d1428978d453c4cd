"""paperchat on servers: a Chroma server instead of the embedded store, an OpenAI-compatible server
(llama-cpp-python's own, serving the embedded GGUF) instead of the in-process model, and servers
that are down or failing."""

from __future__ import annotations

import http.server
import sys
import threading
import time
from pathlib import Path

import pytest

from eval.browser import free_port, serving
from rag import Answer, Engine, LLMError, Settings
from rag.catalog import Catalog
from rag.llm import OpenAICompatibleLLM
from rag.settings import LLMSettings, StoreSettings
from tests.conftest import llama_server_cmd

VENV_BIN = Path(sys.executable).parent


class _Failing(http.server.BaseHTTPRequestHandler):
    requests = 0

    def do_GET(self) -> None:  # http.server's naming
        type(self).requests += 1
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": {"message": "model crashed"}}')

    do_POST = do_GET  # noqa: N815 - http.server's naming

    def log_message(self, *args: object) -> None:
        pass


def test_llm_server_that_fails_gives_a_clear_error_after_bounded_retries():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        llm = OpenAICompatibleLLM(url, "some-model", None, timeout_s=5, retries=2)
        start = time.monotonic()
        with pytest.raises(LLMError, match="answered with an error"):
            llm.check()
        assert _Failing.requests == 3  # the first try and 2 retries, no more
        with pytest.raises(LLMError, match="answered with an error"):
            list(llm.stream([{"role": "user", "content": "hi"}], max_tokens=5, temperature=0))
        assert time.monotonic() - start < 30
    finally:
        server.shutdown()


def test_llm_server_that_is_down_is_an_error_at_start(tmp_path):
    settings = Settings(data_dir=tmp_path, store=StoreSettings(default_corpus=None),
                        llm=LLMSettings(base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", retries=1,
                                        timeout_s=3))
    engine = Engine(settings, embed_model=None)
    start = time.monotonic()
    with pytest.raises(LLMError, match="cannot reach the LLM server"):
        engine.warm_up()
    assert time.monotonic() - start < 30


@pytest.mark.integration
def test_chroma_server_keeps_the_collection_across_restarts(tmp_path):
    port = free_port()
    cmd = [str(VENV_BIN / "chroma"), "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1",
           "--port", str(port)]
    heartbeat = f"http://127.0.0.1:{port}/api/v2/heartbeat"
    settings = Settings(data_dir=tmp_path / "unused",
                        store=StoreSettings(url=f"http://127.0.0.1:{port}", collection="lab-papers"))
    with serving(cmd, heartbeat, tmp_path / "chroma.log", timeout=120):
        engine = Engine(settings)  # empty collection on the server: the default papers are ingested
        assert len(Catalog(engine.store).papers()) == 71
        assert engine.retrieve("How does CacheBlend reuse KV caches?")[0].title.startswith("CacheBlend")
        answer = engine.ask("How does CacheBlend reuse KV caches?")
        assert answer.citations and answer.citations[0].title.startswith("CacheBlend")
    assert not (tmp_path / "unused").exists()  # nothing went to an embedded store
    with serving(cmd, heartbeat, tmp_path / "chroma.log", timeout=120):
        again = Engine(settings)
        assert len(Catalog(again.store).papers()) == 71
        (report,) = again.ingest([settings.store.default_corpus])
        assert report.unchanged == 71 and report.chunks == 0
        assert again.retrieve("What context length does Qwen2.5-1M support?")[0].title.startswith("Qwen2.5-1M")


@pytest.mark.integration
def test_openai_compatible_server_streams_cited_answers(tmp_path):
    port = free_port()
    with serving(llama_server_cmd(port), f"http://127.0.0.1:{port}/v1/models", tmp_path / "llama-server.log",
                 timeout=120):
        settings = Settings(data_dir=tmp_path / "data",
                            llm=LLMSettings(base_url=f"http://127.0.0.1:{port}/v1", model="qwen-0.5b"))
        engine = Engine(settings)
        pieces = list(engine.ask_stream("What context length do the Qwen2.5-1M models extend to?"))
        answer = pieces[-1]
        assert isinstance(answer, Answer) and len(pieces) > 3  # streamed in pieces
        assert not answer.abstained and answer.citations[0].title.startswith("Qwen2.5-1M")
        assert answer.timings["completion_tokens"] > 3  # counted from the stream (this server sends no usage)
        with pytest.raises(LLMError, match="has no model 'gpt-4o'"):
            Engine(Settings(data_dir=tmp_path / "data",
                            llm=LLMSettings(base_url=f"http://127.0.0.1:{port}/v1", model="gpt-4o"))).warm_up()
