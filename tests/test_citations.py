from __future__ import annotations

from rag.citations import Source, attribute, support
from rag.text import content_terms

SOURCES = [
    Source(1, "p-npu", "mllm-NPU", "mllm-NPU achieves 22.4x faster prefill speed. It uses the phone NPU.",
           "Intro sentence about phones. mllm-NPU achieves 22.4x faster prefill speed. It uses the phone NPU."),
    Source(2, "p-cb", "CacheBlend", "CacheBlend reuses KV caches of retrieved chunks. It reduces TTFT by 2.2-3.3X."),
    Source(3, "p-q", "Qwen2.5-1M", "Qwen2.5-1M extends the context length to 1 million tokens."),
]


def test_model_markers_are_kept_renumbered_and_quoted():
    text, cites = attribute("CacheBlend reuses KV caches of retrieved chunks [2].", SOURCES)
    assert text == "CacheBlend reuses KV caches of retrieved chunks [1]."
    assert [(c.n, c.paper_id) for c in cites] == [(1, "p-cb")]
    assert cites[0].quote == "CacheBlend reuses KV caches of retrieved chunks."


def test_markers_to_no_source_are_dropped_and_missing_ones_attached():
    text, cites = attribute("mllm-NPU reaches 22.4x faster prefill [7]. Qwen2.5-1M handles 1 million tokens.", SOURCES)
    assert text == "mllm-NPU reaches 22.4x faster prefill [1]. Qwen2.5-1M handles 1 million tokens [2]."
    assert [c.paper_id for c in cites] == ["p-npu", "p-q"]
    assert "22.4x" in cites[0].quote


def test_a_marker_to_the_wrong_source_is_moved_to_the_supporting_one():
    text, cites = attribute("Qwen2.5-1M extends the context length to 1 million tokens [1].", SOURCES)
    assert [c.paper_id for c in cites] == ["p-q"] and text.endswith("[1].")


def test_unsupported_sentences_are_removed_and_only_cited_papers_are_listed():
    text, cites = attribute("The weather in Paris is mild in spring. CacheBlend reduces TTFT by 2.2-3.3X.", SOURCES)
    assert text == "CacheBlend reduces TTFT by 2.2-3.3X [1]."
    assert [c.paper_id for c in cites] == ["p-cb"]


def test_a_figure_the_source_does_not_hold_is_not_supported():
    text, cites = attribute("mllm-NPU achieves 22.4x faster prefill speed [1]. CacheBlend reduces TTFT by 7.5X [2].",
                            SOURCES)
    assert text == "mllm-NPU achieves 22.4x faster prefill speed [1]."
    assert [c.paper_id for c in cites] == ["p-npu"]


def test_several_markers_and_marker_after_full_stop():
    text, cites = attribute(
        "mllm-NPU uses the phone NPU [1, 3]. [2]\nCacheBlend reuses KV caches.", SOURCES
    )
    # [3] does not support the NPU claim; the lone "[2]" after the full stop belongs to that sentence.
    assert text.startswith("mllm-NPU uses the phone NPU [1].")
    assert [c.paper_id for c in cites] == ["p-npu", "p-cb"]


def test_no_sources_means_no_citations():
    assert attribute("Anything at all [1].", []) == ("", [])


def test_a_passages_hyphenated_compound_holds_the_word_typed_joined():
    asked = content_terms("prefill speedup")
    assert support(asked, "It speeds up pre-filling: a speed-up of 2.9x.") == 1.0
    assert support(asked, "It speeds up pre-filling by 2.9x.") == 0.5  # "speeds up" is not "speedup"
    assert support(asked, "It speeds up decoding by 2.9x.") == 0.0
