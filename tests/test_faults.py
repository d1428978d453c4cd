"""Dependencies that fail while paperchat runs: a Chroma server killed, stopped, restarted or whose
collection is deleted; an LLM server killed, stopped mid-answer or closing the stream half way; an
embedding server that is down. Each is paperchat's own error with a next step (Python API, CLI, page),
and the next question works once the dependency is back, without a restart."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from eval.browser import free_port, serving
from rag import Answer, EmbeddingError, Engine, LLMError, Settings, StoreError
from rag.cli import main
from rag.settings import DEFAULT_CORPUS, EmbeddingSettings, LLMSettings, StoreSettings
from tests.conftest import FakeLLM, HashEmbedding, llama_server_cmd
from tests.test_answer import QUESTION, REPLY
from ui.app import respond

pytestmark = pytest.mark.integration
VENV_BIN = Path(sys.executable).parent
NPU = "Empowering 1000 tokens/second"


def _cli_error(argv: list[str], env: dict[str, str], monkeypatch, capsys) -> tuple[int, str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def _page_text(engine: Engine, question: str) -> str:
    *_, (chat, _sources, _turns, _abstained) = respond(engine, question, [], [])
    return chat[-1]["content"]


def test_chroma_server_killed_stopped_restarted_or_emptied(tmp_path, monkeypatch, capsys):
    port = free_port()
    cmd = [str(VENV_BIN / "chroma"), "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1",
           "--port", str(port)]
    heartbeat = f"http://127.0.0.1:{port}/api/v2/heartbeat"
    settings = Settings(data_dir=tmp_path / "unused", cache_dir=tmp_path / "cache",
                        store=StoreSettings(url=f"http://127.0.0.1:{port}", timeout_s=3))
    llm = FakeLLM(*[REPLY] * 8)
    with serving(cmd, heartbeat, tmp_path / "chroma.log", timeout=120) as chroma:
        engine = Engine(settings, llm=llm, embed_model=HashEmbedding())
        assert engine.ask(QUESTION).citations[0].title.startswith(NPU)

        # Killed: a StoreError that says what to do, in the API, the CLI (one line, exit 1) and the page.
        chroma.kill()
        chroma.wait()
        with pytest.raises(StoreError, match="cannot reach the Chroma server .* start it again"):
            engine.ask(QUESTION)
        code, err = _cli_error(["ask", QUESTION], {"PAPERCHAT_STORE__URL": settings.store.url or "",
                                                   "PAPERCHAT_DATA_DIR": str(tmp_path / "unused"),
                                                   "PAPERCHAT_CACHE_DIR": str(tmp_path / "cache")}, monkeypatch, capsys)
        assert code == 1 and err.startswith("error: ") and "Chroma server" in err and "\n" not in err
        assert _page_text(engine, QUESTION).startswith("⚠️ The paper store cannot be read: cannot reach")

    # Back on the same port: the same engine answers, no restart.
    with serving(cmd, heartbeat, tmp_path / "chroma.log", timeout=120) as chroma:
        assert engine.ask(QUESTION).citations[0].title.startswith(NPU)

        # Stopped (SIGSTOP): no hang, a timeout error; answers again once it continues.
        os.kill(chroma.pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            with pytest.raises(StoreError, match="did not answer within 3 s"):
                engine.ask(QUESTION)
            with pytest.raises(StoreError, match="did not answer within 3 s"):  # nor at start
                Engine(settings, llm=FakeLLM(), embed_model=HashEmbedding())
            assert time.monotonic() - start < 30
        finally:
            os.kill(chroma.pid, signal.SIGCONT)
        assert engine.ask(QUESTION).citations[0].title.startswith(NPU)

        # Its collection deleted by another client: said once; then an empty store (abstains) that
        # an ingest fills again, all in the same engine.
        import chromadb

        other = chromadb.HttpClient(host="127.0.0.1", port=port)
        other.delete_collection(settings.store.collection)
        with pytest.raises(StoreError, match="no longer exists .* paperchat ingest"):
            engine.ask(QUESTION)
        assert engine.ask(QUESTION).abstained
        engine.ingest([DEFAULT_CORPUS])
        assert engine.ask(QUESTION).citations[0].title.startswith(NPU)


# Answered by the model (not decided or quoted before it), so the server is asked.
MODEL_QUESTION = "What context length do the Qwen2.5-1M models extend to?"


def test_llm_server_killed_or_stopped_mid_answer(tmp_path, monkeypatch, capsys):
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    settings = Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache",
                        llm=LLMSettings(base_url=url, model="qwen-0.5b", timeout_s=20, retries=0))
    log = tmp_path / "llama.log"
    with serving(llama_server_cmd(port), f"{url}/models", log, timeout=120) as server:
        engine = Engine(settings)
        assert not engine.ask(MODEL_QUESTION).abstained

        # Stopped half way through an answer: a timeout error, and the partial text is no answer.
        stream = engine.ask_stream(MODEL_QUESTION)
        first = next(stream)
        assert isinstance(first, str)
        os.kill(server.pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            with pytest.raises(LLMError, match="sent nothing for 20 s .* dropped"):
                for item in stream:
                    assert not isinstance(item, Answer), "a half-written answer was given as finished"
            assert time.monotonic() - start < 60
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert not engine.ask(MODEL_QUESTION).abstained  # answers again once it continues

        server.kill()
        server.wait()
        with pytest.raises(LLMError, match="lost the LLM server .* ask again once it is back"):
            engine.ask(MODEL_QUESTION)
        assert _page_text(engine, MODEL_QUESTION).startswith("⚠️ The language model failed: lost the LLM server")
        code, err = _cli_error(["ask", MODEL_QUESTION], {"PAPERCHAT_LLM__BASE_URL": url,
                                                         "PAPERCHAT_LLM__MODEL": "qwen-0.5b",
                                                         "PAPERCHAT_LLM__RETRIES": "0",
                                                         "PAPERCHAT_DATA_DIR": str(tmp_path / "data"),
                                                         "PAPERCHAT_CACHE_DIR": str(tmp_path / "cache")},
                               monkeypatch, capsys)
        assert code == 1 and err.startswith("error: ") and "LLM server" in err and "\n" not in err

    with serving(llama_server_cmd(port), f"{url}/models", log, timeout=120):
        assert not engine.ask(MODEL_QUESTION).abstained  # the same engine, after the server came back


def _half_stream_server() -> tuple[socket.socket, threading.Thread]:
    """An OpenAI-compatible server that starts a streamed answer and drops the connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(65536)
            chunk = b'data: {"id":"x","object":"chat.completion.chunk","created":0,"model":"m","choices":' \
                    b'[{"index":0,"delta":{"content":"It extends to "},"finish_reason":null}]}\n\n'
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            time.sleep(0.2)
            conn.close()  # mid-stream, without the terminating chunk

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_llm_stream_closed_half_way_is_an_error_not_an_answer(tmp_path):
    from rag.llm import OpenAICompatibleLLM

    listener, _ = _half_stream_server()
    try:
        port = listener.getsockname()[1]
        llm = OpenAICompatibleLLM(f"http://127.0.0.1:{port}/v1", "m", None, timeout_s=5, retries=0)
        engine = Engine(Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache",
                                 store=StoreSettings(default_corpus=DEFAULT_CORPUS)),
                        llm=llm, embed_model=HashEmbedding())
        pieces = []
        with pytest.raises(LLMError, match="lost the LLM server .* dropped"):
            for item in engine.ask_stream(MODEL_QUESTION):
                pieces.append(item)
        assert not any(isinstance(p, Answer) for p in pieces)
    finally:
        listener.close()


def test_embedding_server_down_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EmbeddingError, match="cannot reach the embedding server"):
        Engine(Settings(data_dir=tmp_path / "data", embedding=EmbeddingSettings(base_url=url, model="e", retries=0)),
               llm=FakeLLM())
    code, err = _cli_error(["ask", QUESTION], {"PAPERCHAT_EMBEDDING__BASE_URL": url, "PAPERCHAT_EMBEDDING__MODEL": "e",
                                               "PAPERCHAT_EMBEDDING__RETRIES": "0",
                                               "PAPERCHAT_DATA_DIR": str(tmp_path / "d")},
                           monkeypatch, capsys)
    assert code == 1 and err.startswith("error: cannot reach the embedding server") and "\n" not in err


DISK_SCRIPT = """
import signal, sys
from pathlib import Path
import rag.store
from rag import Engine, Settings, StoreError
from rag.catalog import Catalog
from rag.settings import DEFAULT_CORPUS, StoreSettings
from tests.conftest import FakeLLM, HashEmbedding, llama_server_cmd
data, low_mb, files = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
rag.store.LOW_DISK_BYTES = low_mb << 20
try:
    engine = Engine(Settings(data_dir=data, cache_dir=data / "cache",
                             store=StoreSettings(default_corpus=DEFAULT_CORPUS)),
                    llm=FakeLLM(), embed_model=HashEmbedding())
    engine.ingest(files)
except StoreError as e:
    print(e)
    sys.exit(3)
print(Catalog(engine.store).paper_count(), engine.retrieve("How does CacheBlend reuse KV caches?")[0].title)
"""


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB filesystem (tmpfs; needs root, as CI has)."""
    import subprocess

    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def _synthetic(path: Path, n: int) -> Path:
    import json

    with path.open("w") as f:
        for i in range(n):
            abstract = f"Synthetic paper {i} studies caching of keys and values for faster prefill. " * 3
            f.write(json.dumps({"id": f"syn-{i}", "title": f"Synthetic paper {i}", "abstract": abstract}) + "\n")
    return path


def test_a_full_disk_during_ingest_is_a_clear_error_and_the_store_stays_whole(small_disk, tmp_path):
    import subprocess

    def run(low_mb: int, *files: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", DISK_SCRIPT, str(small_disk / "data"), str(low_mb),
                               *map(str, files)],
                              capture_output=True, text=True, timeout=600, cwd=Path(__file__).parent.parent)

    big = _synthetic(tmp_path / "big.jsonl", 4000)
    built = run(1)  # the default 71 papers fit
    assert built.returncode == 0 and built.stdout.startswith("71 "), built.stderr[-2000:]
    # The disk fills half way through the file (the free-space check before writing is lowered
    # to 3 MB so the write itself hits the full disk).
    full = run(3, big)
    assert full.returncode == 3, (full.stdout, full.stderr[-2000:])
    assert ("the disk holding the store at" in full.stdout and "is full" in full.stdout
            and "free some space" in full.stdout)
    # The store opens, and every stored paper is whole: it answers, with the 71 papers and those of
    # the batches written before the disk filled.
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    after = run(1)
    assert after.returncode == 0 and "CacheBlend" in after.stdout, after.stderr[-2000:]
    kept = int(after.stdout.split()[0])
    assert 71 <= kept < 71 + 4000
    # With room again, the same command completes the ingest without duplicates.
    done = run(1, big)
    assert done.returncode == 0 and done.stdout.startswith(f"{71 + 4000} "), (done.stdout, done.stderr[-2000:])
    # A disk that is nearly full is refused before the first write (the default margin, 64 MB).
    refused = run(64, _synthetic(tmp_path / "more.jsonl", 10))
    assert refused.returncode == 3 and "nothing was written" in refused.stdout
