from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rag.catalog import Catalog
from rag.corpus import CorpusError, load_papers
from rag.ingest import ingest_file, ingest_files, remove
from rag.settings import DEFAULT_CORPUS, Settings, StoreSettings
from rag.store import Store, StoreError

from .conftest import HashEmbedding


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def snapshot(store: Store) -> dict[str, str]:
    return {p.id: p.content_hash for p in Catalog(store).papers().values()}


def test_ingest_is_idempotent_and_embeds_nothing_the_second_time(settings, embed):
    store = Store(settings, embed)
    first = ingest_file(store, DEFAULT_CORPUS)
    assert (first.papers, first.added, first.unchanged) == (71, 71, 0)
    assert store.count() == 71 and len(Catalog(store).papers()) == 71
    embedded = embed.embedded
    second = ingest_file(store, DEFAULT_CORPUS)
    assert (second.added, second.replaced, second.unchanged, second.chunks) == (0, 0, 71, 0)
    assert embed.embedded == embedded
    assert store.count() == 71


def test_small_batches_store_everything(tmp_path, embed):
    store = Store(Settings(data_dir=tmp_path, store=StoreSettings(default_corpus=None, ingest_batch=7)), embed)
    ingest_file(store, DEFAULT_CORPUS)
    assert {p.id for p in load_papers(DEFAULT_CORPUS)} == set(Catalog(store).papers())


def test_changed_paper_is_replaced_by_title_in_text_format(settings, embed, tmp_path):
    store = Store(settings, embed)
    ingest_file(store, DEFAULT_CORPUS)
    original = DEFAULT_CORPUS.read_text().splitlines()
    changed = list(original)
    changed[3] = original[3] + " We also release the code."  # the first paper's abstract
    path = tmp_path / "changed.txt"
    path.write_text("\n".join(changed))
    report = ingest_file(store, path)
    assert (report.replaced, report.added, report.unchanged) == (1, 0, 70)
    assert len(Catalog(store).papers()) == 71
    _, texts, _ = store.chunks()
    assert sum("We also release the code." in t for t in texts) == 1


def test_changed_paper_with_same_id_is_replaced_and_new_file_adds(settings, embed, tmp_path):
    store = Store(settings, embed)
    ingest_file(store, DEFAULT_CORPUS)
    a = jsonl(tmp_path / "a.jsonl", [{"id": "x1", "title": "Extra Paper", "abstract": "Old abstract about zebras."}])
    assert ingest_file(store, a).added == 1
    b = jsonl(tmp_path / "a.jsonl",
              [{"id": "x1", "title": "Extra Paper v2", "abstract": "New abstract about giraffes."}])
    report = ingest_file(store, b)
    assert (report.replaced, report.added) == (1, 0)
    assert Catalog(store).papers()["x1"].title == "Extra Paper v2"
    assert len(Catalog(store).papers()) == 72
    assert not any("zebras" in t for t in store.chunks()[1])


def test_bad_file_leaves_the_store_untouched(settings, embed, tmp_path):
    store = Store(settings, embed)
    ingest_file(store, DEFAULT_CORPUS)
    before = snapshot(store)
    good = jsonl(tmp_path / "good.jsonl", [{"title": "Fine", "abstract": "A fine abstract."}])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "One", "abstract": "ok"}\n{"title": "Two"}\n')
    with pytest.raises(CorpusError) as err:
        ingest_files(store, [good, bad])
    assert err.value.line == 2 and "bad.jsonl" in str(err.value)
    assert snapshot(store) == before  # the good file was not written either
    two = jsonl(tmp_path / "two.jsonl", [{"title": f"Paper {i}", "abstract": "About decoding."} for i in range(2)])
    with pytest.raises(CorpusError, match="holds more than 1 papers"):
        ingest_files(store, [good, two], max_papers=1)
    assert snapshot(store) == before  # a file over the limit is found before the first file is written


def test_store_remembers_its_embedding_model(settings, embed):
    ingest_file(Store(settings, embed), DEFAULT_CORPUS)

    class Other(HashEmbedding):
        def __init__(self) -> None:
            super().__init__()
            self.model_name = "another-model"

    with pytest.raises(StoreError, match="paperchat rebuild"):
        Store(settings, Other())


def test_store_persists_across_opens(settings, embed):
    ingest_file(Store(settings, embed), DEFAULT_CORPUS)
    assert len(Catalog(Store(settings, embed)).papers()) == 71


def test_damaged_store_says_how_to_rebuild(settings, embed):
    ingest_file(Store(settings, embed), DEFAULT_CORPUS)
    (settings.chroma_path / "chroma.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="paperchat rebuild"):
        Catalog(Store(settings, embed)).papers()


def test_folder_without_a_store_says_how_to_rebuild(settings, embed):
    settings.chroma_path.mkdir(parents=True)
    (settings.chroma_path / "stray.txt").write_text("x")
    with pytest.raises(StoreError, match="paperchat rebuild"):
        Store(settings, embed)


def test_store_from_before_title_keys_still_replaces_by_title(settings, embed, tmp_path):
    from rag.store import SCHEMA

    store = Store(settings, embed)
    ingest_file(store, DEFAULT_CORPUS)
    # Make it look like a store written by an older paperchat: no title_key, no schema mark.
    ids, _, metas = store.chunks()
    store.collection.update(ids=ids, metadatas=[{**m, "title_key": None} for m in metas])
    meta = {k: v for k, v in store.metadata().items() if not k.startswith("hnsw:") and k != SCHEMA}
    store.collection.modify(metadata=meta)
    original = DEFAULT_CORPUS.read_text().splitlines()
    original[3] += " We also release the code."
    path = tmp_path / "changed.txt"
    path.write_text("\n".join(original))
    report = ingest_file(Store(settings, embed), path)
    assert (report.replaced, report.added, report.unchanged) == (1, 0, 70)
    assert len(Catalog(store).papers()) == 71
    assert store.metadata()[SCHEMA] == 2


def test_paper_count_counts_papers_not_chunks(tmp_path, embed):
    store = Store(Settings(data_dir=tmp_path, store=StoreSettings(default_corpus=None, chunk_words=50)), embed)
    catalog = Catalog(store)
    long = " ".join(f"Sentence number {i} says something about decoding." for i in range(30))
    ingest_file(store, jsonl(tmp_path / "a.jsonl", [{"title": "Long", "abstract": long},
                                                    {"title": "Short", "abstract": "One sentence."}]))
    assert store.count() > 3 and catalog.paper_count() == 2 == len(catalog.papers())
    # The count is kept between writes, and a write by another process (another Store) renews it.
    ingest_file(Store(store.settings, embed), jsonl(tmp_path / "b.jsonl", [{"title": "Third", "abstract": "More."}]))
    assert catalog.paper_count() == 3
    remove(store, [p.id for p in catalog.papers().values() if p.title == "Third"])
    assert catalog.paper_count() == 2


def test_find_papers_searches_titles_in_chroma_literally(settings, embed, tmp_path):
    store = Store(settings, embed)
    catalog = Catalog(store)
    ingest_file(store, jsonl(tmp_path / "a.jsonl", [
        {"id": "p1", "title": "C++ Kernels (v2.0) [draft] ^$|#&-~", "abstract": "Fast attention kernels."},
        {"id": "p2", "title": "Über Decoding", "abstract": "Speculative decoding with C++ kernels."},
        {"id": "p3", "title": "Plain Paper", "abstract": "Nothing special."},
    ]))
    titles = lambda text: [p.title for p in catalog.find_papers(text)[0]]  # noqa: E731
    assert titles("c++ kernels (v2.0) [draft] ^$|#&-~") == ["C++ Kernels (v2.0) [draft] ^$|#&-~"]
    assert titles("c++") == ["C++ Kernels (v2.0) [draft] ^$|#&-~"]  # the abstract's "C++" is not the title
    assert titles("über") == ["Über Decoding"] and titles("p3") == ["Plain Paper"]
    assert titles(".*") == [] and titles("kernels\\") == []
    assert catalog.find_papers("", limit=2) == (catalog.find_papers("", limit=2)[0], 3)
    assert len(catalog.find_papers("", limit=2)[0]) == 2 and catalog.find_papers("e")[1] == 3


class CountingGets:
    """A collection that records the (limit, offset) of each ``get``."""

    def __init__(self, target: Any) -> None:
        self.target, self.gets = target, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)

    def get(self, **kwargs: Any) -> Any:
        self.gets.append((kwargs.get("limit"), kwargs.get("offset")))
        return self.target.get(**kwargs)


def test_iter_chunks_reads_every_chunk_lazily_a_page_at_a_time(tmp_path, embed):
    store = Store(Settings(data_dir=tmp_path, store=StoreSettings(default_corpus=None, chunk_words=50)), embed)
    long = " ".join(f"Sentence number {i} says something about decoding." for i in range(30))
    ingest_file(store, jsonl(tmp_path / "a.jsonl", [{"id": "long", "title": "Long", "abstract": long},
                                                    {"id": "short", "title": "Short", "abstract": "One sentence."}]))
    whole = store.collection.get(include=["documents", "metadatas"])  # one read, in the store's order
    n = len(whole["ids"])
    assert n == store.count() > 3
    store._collection = counting = CountingGets(store._collection)
    chunks = store.iter_chunks(page=2)
    assert counting.gets == []  # nothing is read before the first chunk is asked for
    first = next(chunks)
    assert counting.gets == [(2, 0)]
    rest = list(chunks)
    assert [first, *rest] == list(zip(whole["ids"], whole["documents"], whole["metadatas"]))
    assert counting.gets == [(2, offset) for offset in range(0, n + 1, 2)]  # until a short or empty page
    cid, text, meta = first
    assert cid == f"{meta['paper_id']}:{meta['chunk']}" and text.startswith(meta["title"] + "\n")
