from __future__ import annotations

import json

import bm25s
import numpy as np
import pytest

from rag.corpus import load_papers
from rag.ingest import ingest_file, remove
from rag.retrieve import KeywordIndex
from rag.settings import DEFAULT_CORPUS, RetrievalSettings
from rag.store import Store
from rag.text import tokenize


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
    index = KeywordIndex.from_texts(["a", "b"], ["mllm-NPU runs on NPUs", "GPUs run kernels"])
    assert index.search("Which paper uses phone NPUs?", 2)[0][0] == "a"
    assert index.search("zebra", 2) == []


def test_keyword_index_follows_new_papers(make_engine, tmp_path):
    engine = make_engine()
    assert not any(h.title == "Zebrafish Attention" for h in engine.retrieve("zebrafish attention"))
    path = tmp_path / "z.jsonl"
    path.write_text('{"title": "Zebrafish Attention", "abstract": "Attention heads modelled on zebrafish vision."}\n')
    engine.ingest([path])
    assert engine.retrieve("zebrafish attention", k=1)[0].title == "Zebrafish Attention"


def test_big_keyword_index_is_rebuilt_in_the_background_after_a_write(make_engine, tmp_path):
    import json

    engine = make_engine(retrieval=RetrievalSettings(keyword_background_chunks=10))  # 71 chunks: "big"
    retriever = engine.retriever
    old = retriever.keyword_index()
    path = tmp_path / "new.jsonl"
    path.write_text(json.dumps({"title": "Zyxwv Decoding", "abstract": "Zyxwv decodes tokens in parallel."}) + "\n")
    engine.ingest([path])
    assert retriever.keyword_index() is old  # still answering from the previous index
    retriever._rebuilding.join(timeout=60)
    new = retriever.keyword_index()
    assert new is not old and len(new.ids) == 72
    assert engine.retrieve("zyxwv", k=1)[0].title == "Zyxwv Decoding"


def test_streamed_build_scores_like_bm25s_own_index():
    papers = load_papers(DEFAULT_CORPUS)
    ids, texts = [p.id for p in papers], [f"{p.title}\n{p.abstract}" for p in papers]
    ours = KeywordIndex.build([(ids[:20], texts[:20]), (ids[20:50], texts[20:50]), (ids[50:], texts[50:])])
    reference = bm25s.BM25()
    reference.index(tokenize(texts), show_progress=False)
    for question in ("speed up prefill with chunking", "KV cache compression for long context", "LoRA adapters"):
        terms = [t for t in tokenize([question])[0] if t in reference.vocab_dict]
        assert terms
        assert np.allclose(ours.bm25.get_scores(terms), reference.get_scores(terms), atol=1e-5)
    assert list(ours.ids) == ids


def test_saved_keyword_index_is_loaded_at_start_and_dropped_after_any_write(make_engine, tmp_path, monkeypatch):
    engine = make_engine()
    first = engine.retrieve("chunked prefill", k=3)
    builds = []
    real_build = KeywordIndex.build.__func__
    monkeypatch.setattr(KeywordIndex, "build",
                        classmethod(lambda cls, pages: builds.append(1) or real_build(cls, pages)))
    again = make_engine()  # a restart: the saved index is current
    assert [h.paper_id for h in again.retrieve("chunked prefill", k=3)] == [h.paper_id for h in first]
    assert builds == []
    # Another process writes to the store: the saved index is stale, and this one notices too.
    other = Store(engine.settings, engine.embed_model)
    path = tmp_path / "z.jsonl"
    path.write_text('{"title": "Zebrafish Attention", "abstract": "Attention heads modelled on zebrafish vision."}\n')
    ingest_file(other, path)
    assert again.retrieve("zebrafish", k=1)[0].title == "Zebrafish Attention"
    assert builds == [1]
    make_engine().retrieve("zebrafish", k=1)
    assert builds == [1]  # ... and saved it for the next start


def test_unreadable_saved_index_is_rebuilt(make_engine, caplog):
    engine = make_engine()
    engine.retrieve("chunked prefill")
    saved = engine.settings.keyword_path
    (saved / "ids.offsets.npy").write_bytes(b"garbage")
    again = make_engine()
    assert again.retrieve("chunked prefill")[0].paper_id == engine.retrieve("chunked prefill")[0].paper_id
    assert "damaged or incomplete: building it again" in caplog.text


def test_removed_papers_are_not_returned_by_a_stale_keyword_index(make_engine):
    engine = make_engine(retrieval=RetrievalSettings(keyword_background_chunks=10))
    top = engine.retrieve("chunked prefill", k=1)[0]
    remove(engine.store, [top.paper_id])
    # The index is rebuilt in the background; meanwhile the removed paper must not come back.
    assert top.paper_id not in {h.paper_id for h in engine.retrieve("chunked prefill", k=5)}


@pytest.mark.parametrize("query", ["", "the of and", "zzzz qqqq"])
def test_keyword_search_without_known_terms_is_empty(query):
    assert KeywordIndex.from_texts(["a"], ["chunked prefill"]).search(query, 3) == []
    assert KeywordIndex.from_texts([], []).search("prefill", 3) == []


def test_a_damaged_saved_keyword_index_is_rebuilt_never_used(tmp_path):
    from rag.retrieve import KeywordIndex

    texts = [f"Paper {i} on {w} caches" for i, w in enumerate(["key", "value", "prefix", "paged"])]
    index = KeywordIndex.from_texts([f"p{i}" for i in range(4)], texts)
    index.save(tmp_path / "kw", "stamp-1")
    assert KeywordIndex.load(tmp_path / "kw", "stamp-1") is not None
    ids = tmp_path / "kw" / "ids.bin"
    blob = bytearray(ids.read_bytes())
    blob[0] ^= 1  # one flipped bit: same size, same structure, wrong ids
    ids.write_bytes(bytes(blob))
    assert KeywordIndex.load(tmp_path / "kw", "stamp-1") is None
    (tmp_path / "kw" / "extra.npy").write_bytes(b"")  # a stray file is not part of the saved index
    index.save(tmp_path / "kw", "stamp-1")
    assert KeywordIndex.load(tmp_path / "kw", "stamp-1") is not None
    (tmp_path / "kw" / "ids.bin").unlink()
    assert KeywordIndex.load(tmp_path / "kw", "stamp-1") is None


def test_siblings_are_the_terms_several_papers_coordinate(tmp_path):
    from rag.retrieve import KeywordIndex, _file_digest
    from rag.tuning import SIBLING_MIN_PAPERS

    ids = [f"p{i}:0" for i in range(SIBLING_MIN_PAPERS + 1)]
    texts = ["We speed up prefilling and decoding.", "Prefill or decode: both get faster.",
             "Latency and high throughput on pre-filling or decoding, in tokens/second.",
             "Training and inference costs."][:len(ids)]
    texts += ["Prefilling and decoding again, in the same paper."]  # a paper's second chunk counts once
    ids += ["p0:1"]
    index = KeywordIndex.from_texts(ids, texts)
    assert index.siblings["decod"] == {"prefil"} and index.siblings["prefil"] == {"decod"}
    # One paper's "latency and high throughput" or "training and inference" makes no siblings.
    assert "latenc" not in index.siblings and "train" not in index.siblings
    index.save(tmp_path / "kw", "stamp-1")
    assert KeywordIndex.load(tmp_path / "kw", "stamp-1").siblings == index.siblings
    assert "token" not in index.siblings  # "/" joins units, not alternatives
    # Siblings saved by another rule (another threshold), or an index saved before siblings were
    # kept, are built again, not used.
    saved = tmp_path / "kw"
    rule = json.loads((saved / "siblings.json").read_text())
    (saved / "siblings.json").write_text(json.dumps({**rule, "min_papers": SIBLING_MIN_PAPERS + 1}))
    stamp = json.loads((saved / "stamp.json").read_text())
    stamp["digests"]["siblings.json"] = _file_digest(saved / "siblings.json")  # a valid file, of another rule
    (saved / "stamp.json").write_text(json.dumps(stamp))
    assert KeywordIndex.load(saved, "stamp-1") is None
    (saved / "siblings.json").unlink()
    del stamp["digests"]["siblings.json"]
    (saved / "stamp.json").write_text(json.dumps(stamp))
    assert KeywordIndex.load(saved, "stamp-1") is None


def test_the_share_of_chunks_that_use_a_word(make_engine):
    index = make_engine().retriever.keyword_index()
    assert 0.3 < index.share("LLM") <= 1.0  # most of the bundled abstracts
    assert 0.0 < index.share("LongGenBench") < 0.05  # one abstract
    assert index.share("zyzzyva") == 0.0 and index.share("two words") == 0.0


def test_a_name_that_is_an_ordinary_word_names_its_paper_only_when_used_as_a_name(make_engine):
    engine = make_engine()

    def named(question: str) -> list[str]:
        return [h.title.split(":")[0] for h in engine.retriever.retrieve(question, 5) if h.named]

    assert "KIND" not in named("What kind of task did they validate it on?")
    assert "KIND" not in named("which kind of adapter trains fewer parameters?")
    assert "KIND" in named("What does KIND do for diffusion models?")
    assert "KIND" in named("kind vs difffit: which trains fewer parameters?")  # lower case, used as a name
    assert "KIND" in named("how many parameters does the kind adapter train?")
    assert "CacheBlend" in named("in the cacheblend paper, how much faster is ttft?")


def test_a_name_in_capitals_that_spells_a_word_names_one_paper_not_a_crowd():
    from rag.retrieve import Hit, HybridRetriever

    class Index:  # "speed" and "rag" are words many chunks use
        @staticmethod
        def common(word: str) -> bool:
            return word in {"speed", "rag"}

    speed = Hit("1", "Little Giants", "We propose SPEED, a framework that aligns small models.", 1.0)
    rags = [Hit(str(i), f"Paper {i}", f"We introduce RAG, a pipeline {i}. RAG helps.", 1.0) for i in range(2, 6)]
    hits = [speed, *rags]
    typed = HybridRetriever._typed_in_capitals
    assert typed("How few API calls does SPEED use?", speed, hits, Index())
    assert not typed("how do they speed up the calls?", speed, hits, Index())
    # Four candidates write "RAG" in capitals: it names none of them.
    assert not typed("which papers cut RAG latency?", rags[0], hits, Index())
    assert typed("which papers cut RAG latency?", rags[0], hits[:2], Index())
