"""Hostile and random input: parsers, questions, and sequences of ingests against a model of the store."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from rag import Answer, Engine, QuestionError
from rag.catalog import Catalog
from rag.corpus import CorpusError, load_papers, title_key
from rag.ingest import ingest_file, remove
from rag.settings import DEFAULT_CORPUS, Settings, StoreSettings
from rag.store import Store

from .conftest import FakeLLM, HashEmbedding


@pytest.fixture(scope="module")
def fuzz_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    folder = tmp_path_factory.mktemp("fuzz-engine")
    s = Settings(data_dir=folder / "data", cache_dir=folder / "cache",
                 store=StoreSettings(default_corpus=DEFAULT_CORPUS))
    return Engine(s, llm=FakeLLM(), embed_model=HashEmbedding())


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.binary(max_size=2000), st.sampled_from(["c.txt", "c.jsonl"]))
def test_any_bytes_parse_or_raise_the_documented_error(tmp_path_factory, data, name):
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(data)
    try:
        papers = load_papers(path)
    except CorpusError as e:
        assert str(e).startswith(str(path))  # the error names the file
        return
    for p in papers:
        assert p.title.strip() and p.abstract.strip() and p.id


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=1500), st.sampled_from(["c.txt", "c.jsonl"]))
def test_a_bad_file_never_writes_part_of_itself(fuzz_engine, tmp_path_factory, data, name):
    store = fuzz_engine.store
    catalog = Catalog(store)
    before = {p.id: p.content_hash for p in catalog.papers().values()}
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(b"Valid Title Of A Paper\nA valid abstract about caching prefill states for speed.\n" + data)
    try:
        ingest_file(store, path)
    except CorpusError:
        assert {p.id: p.content_hash for p in catalog.papers().values()} == before
    else:
        for pid in [p.id for p in load_papers(path)]:
            assert pid in catalog.papers()
        remove(store, [p.id for p in load_papers(path) if p.id not in before])  # back to the collection


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=30),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=3), max_leaves=6)


@FUZZ
@given(st.lists(st.dictionaries(st.sampled_from(["title", "abstract", "id", "url", "authors", "year", "x"]),
                                json_values, max_size=6), max_size=5))
def test_any_json_objects_parse_or_raise_the_documented_error(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("fuzz") / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    try:
        load_papers(path)
    except CorpusError as e:
        assert str(e).startswith(str(path))


@FUZZ
@given(question=st.text(max_size=300), reply=st.text(max_size=300))
def test_any_question_and_model_reply_give_an_answer_or_a_question_error(fuzz_engine, question, reply):
    engine = fuzz_engine
    engine._llm = FakeLLM(reply, reply)
    try:
        answer = engine.ask(question)
    except QuestionError:
        return
    assert isinstance(answer, Answer)
    n_sources = len(answer.citations)
    for c in answer.citations:
        assert 1 <= c.n <= n_sources and f"[{c.n}]" in answer.text  # every listed citation is used
    assert answer.abstained == (not answer.citations)


# ----- ingest against a model of the store ----------------------------------------------------------
WORDS = ["cache", "prefill", "decode", "token", "batch", "sparse", "quantize", "prune", "attention", "GPU"]


class IngestMachine(RuleBasedStateMachine):
    """Random ingests of new, re-sent and changed papers; the store must always equal the model."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        settings = Settings(data_dir=self.dir / "data", store=StoreSettings(default_corpus=None, ingest_batch=3))
        self.store = Store(settings, HashEmbedding())
        self.expected: dict[str, str] = {}  # title key -> abstract
        self.files = 0

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def _ingest(self, papers: list[tuple[str, str]]) -> None:
        self.files += 1
        path = self.dir / f"f{self.files}.txt"
        path.write_text("".join(f"{t}\n{a}\n\n" for t, a in papers))
        ingest_file(self.store, path)
        for title, abstract in papers:
            self.expected[title_key(title)] = abstract

    @rule(data=st.data(), n=st.integers(1, 4))
    def new_papers(self, data: st.DataObject, n: int) -> None:
        papers = []
        for _ in range(n):
            words = data.draw(st.lists(st.sampled_from(WORDS), min_size=2, max_size=4))
            title = f"Paper {len(self.expected) + len(papers)}: {' '.join(words).title()}"
            abstract = data.draw(st.lists(st.sampled_from(WORDS), min_size=12, max_size=30)).__str__()
            papers.append((title, f"We study {abstract.replace(chr(39), '')} in depth and report results."))
        self._ingest(papers)

    @rule(data=st.data())
    def resend_or_change(self, data: st.DataObject) -> None:
        if not self.expected:
            return
        stored = {title_key(p.title): p.title for p in Catalog(self.store).papers().values()}
        key = data.draw(st.sampled_from(sorted(self.expected)))
        changed = data.draw(st.booleans())
        abstract = self.expected[key] + (" We add a new result on sparse decoding." if changed else "")
        self._ingest([(stored[key], abstract)])

    @invariant()
    def store_equals_the_model(self) -> None:
        papers = Catalog(self.store).papers()
        assert len(papers) == len(self.expected)
        ids, texts, metas = self.store.chunks()
        assert len(ids) == len(set(ids)) == self.store.count()  # no duplicate chunks
        by_key = {title_key(m["title"]): t.partition("\n")[2] for t, m in zip(texts, metas)}
        assert by_key == {k: " ".join(v.split()) for k, v in self.expected.items()}


IngestMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=8, deadline=None)
test_ingest_sequences_match_a_model_of_the_store = IngestMachine.TestCase
