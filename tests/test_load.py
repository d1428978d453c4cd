"""Many users at once: 8 concurrent chat sessions against the running page, through gradio_client."""

from __future__ import annotations

import statistics
import threading
import time

import pytest

from eval.browser import running_app
from eval.load import rss_kb
from eval.suite import p90

pytestmark = pytest.mark.integration

# One paper per session: a follow-up ("it") must come back about the session's own paper.
PAPERS = {
    "CacheBlend": "CacheBlend: Fast Large Language Model Serving",
    "TurboRAG": "TurboRAG: Accelerating Retrieval-Augmented Generation",
    "LazyLLM": "LazyLLM: Dynamic Token Pruning",
    "DistServe": "DistServe: Disaggregating Prefill and Decoding",
    "ZipVL": "ZipVL: Efficient Large Vision-Language Models",
    "LServe": "LServe: Efficient Long-sequence LLM Serving",
    "SwiftKV": "SwiftKV: Fast Prefill-Optimized Inference",
    "FastKV": "FastKV: KV Cache Compression",
}
SESSIONS = 8
REQUEST_TIMEOUT_S = 600  # each request is bounded; the whole test ends when all 24 are answered


def test_eight_concurrent_sessions_are_all_answered_in_their_own_conversation(tmp_path):
    from gradio_client import Client

    with running_app(tmp_path / "data", env={"PAPERCHAT_LLM__PREFILL_PAPERS": "0"}) as app:
        assert app.url.startswith("http://127.0.0.1:")
        rss_start = rss_kb(app.pid)
        results: dict[str, list[tuple[str, str, float]]] = {}
        errors: list[str] = []

        def session(name: str) -> None:
            client = Client(app.url, analytics_enabled=False, verbose=False)
            chat: list = []
            out = []
            try:
                for question in (f"What does {name} do?", "How much faster is it?",
                                 "What context length do the Qwen2.5-1M models extend to?"):
                    start = time.monotonic()
                    chat, _ = client.predict(question, chat, api_name="/accept")
                    job = client.submit(chat, api_name="/answer")
                    chat, sources = job.result(timeout=REQUEST_TIMEOUT_S)
                    if isinstance(sources, dict):  # a gr.update() with the Markdown's value
                        sources = sources.get("value", "")
                    out.append((question, sources, time.monotonic() - start))
                results[name] = out
            except Exception as e:  # noqa: BLE001 - collected and reported below
                errors.append(f"{name}: {type(e).__name__}: {e}")
            finally:
                client.close()

        start = time.monotonic()
        threads = [threading.Thread(target=session, args=(name,)) for name in list(PAPERS)[:SESSIONS]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=3 * REQUEST_TIMEOUT_S)
        wall = time.monotonic() - start
        rss_end = rss_kb(app.pid)

    assert not errors, errors
    assert len(results) == SESSIONS
    latencies = sorted(t for answers in results.values() for _, _, t in answers)
    for name, answers in results.items():
        (_, first, _), (_, follow, _), (_, third, _) = answers
        assert PAPERS[name] in first, (name, first)
        # The follow-up was rewritten from this session's history, not another's.
        assert PAPERS[name] in follow, (name, follow)
        assert "Qwen2.5-1M" in third and "⚠️" not in first + follow + third
    slowest = p90(latencies)
    print(f"\nload: {len(latencies)} requests from {SESSIONS} sessions in {wall:.1f} s "
          f"({60 * len(latencies) / wall:.1f} answers/min); latency median {statistics.median(latencies):.1f} s, "
          f"p90 {slowest:.1f} s; server RSS {rss_start // 1024} -> {rss_end // 1024} MB")
    assert rss_end < rss_start + 600 * 1024  # bounded: no per-request growth beyond the model's buffers
