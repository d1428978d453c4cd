from __future__ import annotations

from rag.retrieve import KeywordIndex, content_terms, tokenize


def test_hits_carry_paper_fields_and_fused_scores(make_engine):
    engine = make_engine()
    hits = engine.retrieve("CacheBlend: Fast Large Language Model Serving for RAG with Cached Knowledge Fusion", k=5)
    assert len(hits) == 5
    assert hits[0].title.startswith("CacheBlend")
    assert hits[0].paper_id and hits[0].text.startswith("Large language models")
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].similarity is not None and hits[0].bm25 is not None
    assert len({h.paper_id for h in hits}) == 5


def test_keyword_side_finds_rare_terms():
    index = KeywordIndex(["a", "b"], ["mllm-NPU runs on NPUs", "GPUs run kernels"], [{}, {}])
    assert index.search("Which paper uses phone NPUs?", 2)[0][0] == 0
    assert index.search("zebra", 2) == []
    assert tokenize(["NPUs and GPUs"]) == [["npu", "gpu"]]
    assert "2.2" in content_terms("a 2.2x speedup")


def test_keyword_index_follows_new_papers(make_engine, tmp_path):
    engine = make_engine()
    assert not any(h.title == "Zebrafish Attention" for h in engine.retrieve("zebrafish attention"))
    path = tmp_path / "z.jsonl"
    path.write_text('{"title": "Zebrafish Attention", "abstract": "Attention heads modelled on zebrafish vision."}\n')
    engine.ingest([path])
    assert engine.retrieve("zebrafish attention", k=1)[0].title == "Zebrafish Attention"


def test_big_keyword_index_is_rebuilt_in_the_background_after_a_write(make_engine, tmp_path):
    import json

    engine = make_engine(keyword_background_chunks=10)  # 71 chunks: "big"
    retriever = engine.retriever
    old = retriever.keyword_index()
    path = tmp_path / "new.jsonl"
    path.write_text(json.dumps({"title": "Zyxwv Decoding", "abstract": "Zyxwv decodes tokens in parallel."}) + "\n")
    engine.ingest([path])
    assert retriever.keyword_index() is old  # still answering from the previous index
    retriever._rebuilding.join(timeout=60)
    new = retriever.keyword_index()
    assert new is not old and len(new.ids) == 72
    assert new.metadatas[new.search("zyxwv", 1)[0][0]]["title"] == "Zyxwv Decoding"
