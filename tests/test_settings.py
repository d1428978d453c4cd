"""Settings: the groups, their environment variables (PAPERCHAT_GROUP__FIELD), the flat names of
before the groups (still accepted as keyword arguments and environment variables), precedence and
the checks across fields."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import SettingsError

from rag.settings import (
    DEFAULT_CORPUS,
    OLD_NAMES,
    AnswerSettings,
    EmbeddingSettings,
    LLMSettings,
    Settings,
    StoreSettings,
    UISettings,
)

GROUPS = ["store", "embedding", "retrieval", "gate", "answer", "conversation", "llm", "ui"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PAPERCHAT_* variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.upper().startswith("PAPERCHAT_"):
            monkeypatch.delenv(name)


def value(s: Settings, group: str, field: str) -> Any:
    got = getattr(getattr(s, group), field)
    return got.get_secret_value() if isinstance(got, SecretStr) else got


# Every old name: its text in the environment and the value it gives (not the default).
OLD_SAMPLES: dict[str, tuple[str, Any]] = {
    "chroma_url": ("http://chroma:8000", "http://chroma:8000"),
    "chroma_headers": ('{"Authorization": "Bearer t"}', {"Authorization": "Bearer t"}),
    "chroma_timeout_s": ("7.5", 7.5),
    "collection": ("lab", "lab"),
    "default_corpus": ("/tmp/papers.jsonl", Path("/tmp/papers.jsonl")),
    "chunk_words": ("120", 120),
    "ingest_batch": ("32", 32),
    "embed_threads": ("3", 3),
    "embed_base_url": ("http://embed/v1", "http://embed/v1"),
    "embed_model": ("bge-small", "bge-small"),
    "embed_api_key": ("ek", "ek"),
    "embed_batch": ("16", 16),
    "embed_concurrency": ("2", 2),
    "embed_timeout_s": ("9", 9.0),
    "embed_retries": ("1", 1),
    "retrieve_k": ("7", 7),
    "candidates": ("30", 30),
    "rrf_k": ("60", 60),
    "dense_weight": ("0.5", 0.5),
    "bm25_weight": ("1.5", 1.5),
    "title_weight": ("0", 0.0),
    "keyword_background_chunks": ("100", 100),
    "min_similarity": ("0.4", 0.4),
    "top_k": ("5", 5),
    "sentences_per_source": ("2", 2),
    "first_source_full": ("false", False),
    "max_tokens": ("64", 64),
    "temperature": ("0.7", 0.7),
    "max_question_chars": ("500", 500),
    "history_turns": ("2", 2),
    "llm_base_url": ("http://llm/v1", "http://llm/v1"),
    "llm_model": ("qwen", "qwen"),
    "llm_api_key": ("lk", "lk"),
    "llm_timeout_s": ("30", 30.0),
    "llm_retries": ("0", 0),
    "model_path": ("/models/m.gguf", Path("/models/m.gguf")),
    "chat_format": ("chatml", "chatml"),
    "n_threads": ("4", 4),
    "n_ctx": ("2048", 2048),
    "prefix_cache_mb": ("0", 0),
    "prefill_papers": ("10", 10),
    "host": ("0.0.0.0", "0.0.0.0"),
    "port": ("8080", 8080),
    "ui_username": ("ann", "ann"),
    "ui_password": ("pw", "pw"),
    "ui_max_upload_mb": ("5", 5),
    "ui_max_upload_papers": ("100", 100),
    "ui_concurrency": ("2", 2),
    "ui_queue_size": ("8", 8),
}

# Fields that need a partner (checked across fields): set with its new environment name.
PARTNERS = {
    "llm_base_url": {"PAPERCHAT_LLM__MODEL": "m"},
    "llm_model": {"PAPERCHAT_LLM__BASE_URL": "http://llm/v1"},
    "embed_base_url": {"PAPERCHAT_EMBEDDING__MODEL": "e"},
    "embed_model": {"PAPERCHAT_EMBEDDING__BASE_URL": "http://embed/v1"},
    "ui_username": {"PAPERCHAT_UI__PASSWORD": "pw"},
    "ui_password": {"PAPERCHAT_UI__USERNAME": "ann"},
}


def test_every_field_is_in_a_group_typed_defaulted_and_described():
    assert list(Settings.model_fields) == ["data_dir", "cache_dir", *GROUPS]
    for name, info in Settings.model_fields.items():
        assert info.description and not info.is_required(), name
    targets = set()
    for group in GROUPS:
        model = Settings.model_fields[group].annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        assert model.model_config.get("extra") == "forbid"
        for field, info in model.model_fields.items():
            assert info.annotation is not None and info.description and not info.is_required(), f"{group}.{field}"
            targets.add((group, field))
    # The table of old names covers every field once, and nothing else; fields added after the
    # grouping never had a flat name.
    newer = {("llm", "contexts")}
    assert sorted(OLD_NAMES.values()) == sorted(targets - newer) and set(OLD_SAMPLES) == set(OLD_NAMES)


def test_defaults_and_paths(tmp_path):
    s = Settings(data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert s.answer.sources == 3 and s.retrieval.k == 5 and s.store.default_corpus == DEFAULT_CORPUS
    assert s.llm.base_url is None and s.ui.port == 7860 and s.gate.min_similarity == 0.30
    assert s.chroma_path == tmp_path / "chroma" and s.keyword_path == tmp_path / "keywords" / "papers"
    served = Settings(data_dir=tmp_path, cache_dir=tmp_path / "cache", store=StoreSettings(url="http://c:8000"))
    assert served.keyword_path.parent == tmp_path / "cache" / "keywords"


def test_nested_environment_variables(monkeypatch):
    monkeypatch.setenv("PAPERCHAT_ANSWER__SOURCES", "4")
    monkeypatch.setenv("PAPERCHAT_LLM__BASE_URL", "http://llm/v1")
    monkeypatch.setenv("PAPERCHAT_LLM__MODEL", "qwen")
    monkeypatch.setenv("PAPERCHAT_STORE__HEADERS", '{"Authorization": "Bearer t"}')
    monkeypatch.setenv("PAPERCHAT_STORE__DEFAULT_CORPUS", "")  # empty disables
    monkeypatch.setenv("PAPERCHAT_UI__PORT", "9000")
    monkeypatch.setenv("paperchat_retrieval__rrf_k", "30")  # names are case-insensitive, as before
    monkeypatch.setenv("PAPERCHAT_NOT_A_SETTING", "1")  # other variables with the prefix are ignored, as before
    s = Settings()
    assert s.answer.sources == 4 and s.llm.base_url == "http://llm/v1" and s.llm.model == "qwen"
    assert s.store.headers == {"Authorization": "Bearer t"} and s.store.default_corpus is None
    assert s.ui.port == 9000 and s.retrieval.rrf_k == 30


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_every_old_name_works_in_the_environment_and_as_a_keyword(old, monkeypatch):
    group, field = OLD_NAMES[old]
    text, expected = OLD_SAMPLES[old]
    for name, partner in PARTNERS.get(old, {}).items():
        monkeypatch.setenv(name, partner)
    assert value(Settings(**{old: expected}), group, field) == expected
    monkeypatch.setenv(f"PAPERCHAT_{old.upper()}", text)
    assert value(Settings(), group, field) == expected


def test_an_empty_default_corpus_disables_it_under_either_name(monkeypatch):
    monkeypatch.setenv("PAPERCHAT_DEFAULT_CORPUS", "")
    assert Settings().store.default_corpus is None
    assert Settings(default_corpus="").store.default_corpus is None
    monkeypatch.delenv("PAPERCHAT_DEFAULT_CORPUS")
    monkeypatch.setenv("PAPERCHAT_STORE__DEFAULT_CORPUS", "")
    assert Settings().store.default_corpus is None


def test_precedence_keyword_then_new_env_then_old_env_then_default(monkeypatch):
    assert Settings().answer.sources == 3
    monkeypatch.setenv("PAPERCHAT_TOP_K", "2")
    assert Settings().answer.sources == 2
    monkeypatch.setenv("PAPERCHAT_ANSWER__SOURCES", "4")
    assert Settings().answer.sources == 4  # the new name beats the old one
    assert Settings(answer={"sources": 5}).answer.sources == 5
    assert Settings(answer=AnswerSettings(sources=6)).answer.sources == 6
    assert Settings(top_k=7).answer.sources == 7  # an old keyword beats both environments
    assert Settings(answer=AnswerSettings(max_tokens=50), top_k=8).answer == AnswerSettings(sources=8, max_tokens=50)


def test_sources_are_merged_field_by_field(monkeypatch):
    monkeypatch.setenv("PAPERCHAT_TOP_K", "2")  # old env
    monkeypatch.setenv("PAPERCHAT_ANSWER__MAX_TOKENS", "99")  # new env
    for answer in ({"temperature": 0.5}, AnswerSettings(temperature=0.5)):  # a dict or a model: the fields set
        got = Settings(answer=answer).answer
        assert (got.sources, got.max_tokens, got.temperature, got.sentences_per_source) == (2, 99, 0.5, 3)
    # A key in the environment is kept when the server is given in code, as with the old flat names.
    monkeypatch.setenv("PAPERCHAT_LLM__API_KEY", "sk-env")
    s = Settings(llm=LLMSettings(base_url="http://llm/v1", model="m"))
    assert (s.llm.base_url, s.llm.model, s.llm.api_key) == ("http://llm/v1", "m", "sk-env")
    assert Settings(llm_base_url="http://llm/v1", llm_model="m").llm.api_key == "sk-env"
    # A field explicitly set to its default in a model still counts as set.
    monkeypatch.setenv("PAPERCHAT_EMBEDDING__BATCH", "8")
    assert Settings(embedding=EmbeddingSettings(batch=64)).embedding.batch == 64
    assert Settings(embedding=EmbeddingSettings(threads=1)).embedding.batch == 8


def test_unknown_names_are_rejected():
    with pytest.raises(ValidationError, match="nope"):
        Settings(nope=1)
    with pytest.raises(ValidationError, match="answer.nope"):
        Settings(answer={"nope": 1})
    with pytest.raises(ValidationError, match="nope"):
        AnswerSettings(nope=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="sources"):  # the new name is not also a top-level one
        Settings(sources=3)


def test_bad_values_name_the_field(monkeypatch):
    monkeypatch.setenv("PAPERCHAT_TOP_K", "many")
    with pytest.raises(ValidationError, match="answer.sources"):
        Settings()
    monkeypatch.delenv("PAPERCHAT_TOP_K")
    with pytest.raises(ValidationError, match="answer.sources"):
        Settings(top_k=0)
    monkeypatch.setenv("PAPERCHAT_CHROMA_HEADERS", "not json")
    with pytest.raises(SettingsError, match="PAPERCHAT_CHROMA_HEADERS"):
        Settings()


@pytest.mark.parametrize(("env", "message"), [
    ({"PAPERCHAT_LLM__BASE_URL": "http://llm/v1"}, "PAPERCHAT_LLM__BASE_URL is set but PAPERCHAT_LLM__MODEL is not"),
    ({"PAPERCHAT_LLM_BASE_URL": "http://llm/v1"}, "PAPERCHAT_LLM__BASE_URL is set but PAPERCHAT_LLM__MODEL is not"),
    ({"PAPERCHAT_LLM__MODEL": "qwen"}, "PAPERCHAT_LLM__MODEL is set but PAPERCHAT_LLM__BASE_URL is not"),
    ({"PAPERCHAT_EMBEDDING__BASE_URL": "http://e/v1"},
     "PAPERCHAT_EMBEDDING__BASE_URL is set but PAPERCHAT_EMBEDDING__MODEL is not"),
    ({"PAPERCHAT_EMBED_MODEL": "bge"}, "PAPERCHAT_EMBEDDING__MODEL is set but PAPERCHAT_EMBEDDING__BASE_URL is not"),
    ({"PAPERCHAT_UI__USERNAME": "ann"}, "set both PAPERCHAT_UI__USERNAME and PAPERCHAT_UI__PASSWORD"),
    ({"PAPERCHAT_UI_PASSWORD": "pw"}, "set both PAPERCHAT_UI__USERNAME and PAPERCHAT_UI__PASSWORD"),
])
def test_checks_across_fields_name_the_new_variables(env, message, monkeypatch):
    for name, text in env.items():
        monkeypatch.setenv(name, text)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_checks_across_fields_on_keywords():
    with pytest.raises(ValidationError, match="PAPERCHAT_LLM__MODEL is not"):
        Settings(llm=LLMSettings(base_url="http://llm/v1"))
    with pytest.raises(ValidationError, match="PAPERCHAT_EMBEDDING__BASE_URL is not"):
        Settings(embed_model="bge")
    with pytest.raises(ValidationError, match="PAPERCHAT_UI__PASSWORD"):
        Settings(ui=UISettings(username="ann"))
    s = Settings(ui=UISettings(username="ann", password=SecretStr("pw")))
    assert s.ui.password is not None and s.ui.password.get_secret_value() == "pw" and "pw" not in repr(s)
