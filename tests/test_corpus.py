from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.corpus import CorpusError, chunk_abstract, load_papers, paper_id, split_sentences
from rag.settings import DEFAULT_CORPUS

ABSTRACT = "We study a thing. " * 12


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_default_corpus_has_71_clean_papers():
    papers = load_papers(DEFAULT_CORPUS)
    assert len(papers) == 71
    assert papers[0].title == "Empowering 1000 tokens/second on-device LLM prefilling with mllm-NPU"
    assert papers[1].title == "Qwen2.5-1M Technical Report"
    assert papers[-1].title == "ESPN: Memory-Efficient Multi-Vector Information Retrieval"
    for p in papers:
        assert not p.title.startswith(("Subscribe", "Get trending"))
        assert len(p.title) < 200 < len(p.abstract)
    assert len({p.id for p in papers}) == 71


def test_ids_are_stable_and_content_based():
    a, b = load_papers(DEFAULT_CORPUS), load_papers(DEFAULT_CORPUS)
    assert [p.id for p in a] == [p.id for p in b]
    assert a[0].id == paper_id(a[0].title, a[0].abstract)
    assert paper_id("T", "abstract one") != paper_id("T", "abstract two")


def test_jsonl_with_optional_fields(tmp_path):
    rows = [
        {"id": "p1", "title": "A Paper", "abstract": ABSTRACT, "url": "https://x/1", "authors": ["A B", "C D"], "year": 2024},
        {"title": "Another Paper", "abstract": ABSTRACT + "More.", "authors": "E F, G H", "year": "2023"},
    ]
    path = write(tmp_path, "c.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    papers = load_papers(path)
    assert [p.id for p in papers][0] == "p1"
    assert papers[0].authors == ("A B", "C D") and papers[0].year == 2024 and papers[0].url == "https://x/1"
    assert papers[1].authors == ("E F", "G H") and papers[1].year == 2023
    assert papers[1].id == paper_id("Another Paper", ABSTRACT + "More.")


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ('{"title": "A", "abstract": "x"}\n{"title": "B", "abstract": ', 2, "not valid JSON"),
        ('{"title": "A", "abstract": "x"}\n\n{"title": "B"}\n', 3, "missing field 'abstract'"),
        ('{"title": 5, "abstract": "x"}\n', 1, "'title' must be a string"),
        ('["a", "b"]\n', 1, "expected a JSON object"),
        ('{"title": "A", "abstract": "  "}\n', 1, "the abstract is empty"),
        ('{"title": "A", "abstract": "x", "year": "soon"}\n', 1, "'year' must be an integer"),
        ('{"title": "A", "abstract": "x", "authors": [1]}\n', 1, "'authors' must be a list of strings"),
    ],
)
def test_jsonl_errors_name_file_line_and_problem(tmp_path, content, line, message):
    path = write(tmp_path, "bad.jsonl", content)
    with pytest.raises(CorpusError) as err:
        load_papers(path)
    assert err.value.line == line
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_same_id_for_two_different_papers_is_an_error(tmp_path):
    path = write(tmp_path, "dup.jsonl", '{"id": "1", "title": "A", "abstract": "x"}\n{"id": "1", "title": "B", "abstract": "y"}\n')
    with pytest.raises(CorpusError, match="used by two different papers"):
        load_papers(path)


def test_text_format_errors(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        load_papers(tmp_path / "missing.txt")
    with pytest.raises(CorpusError, match="holds no papers"):
        load_papers(write(tmp_path, "empty.txt", "\n\n"))
    with pytest.raises(CorpusError, match="not UTF-8"):
        load_papers(write(tmp_path, "latin.txt", b"Title\n" + "caf\xe9 ".encode("latin-1") * 50))
    dangling = write(tmp_path, "dangling.txt", f"A Title\n{ABSTRACT}\nA title without abstract")
    with pytest.raises(CorpusError) as err:
        load_papers(dangling)
    assert err.value.line == 3 and "without an abstract" in str(err.value)
    with pytest.raises(CorpusError, match="is a directory"):
        load_papers(tmp_path)


def test_text_format_without_junk_and_with_blank_lines(tmp_path):
    path = write(tmp_path, "c.txt", f"First Title\n{ABSTRACT}\n\nSecond Title\r\n{ABSTRACT} Second.\n")
    assert [p.title for p in load_papers(path)] == ["First Title", "Second Title"]


def test_control_characters_and_whitespace_are_cleaned(tmp_path):
    path = write(tmp_path, "c.jsonl", json.dumps({"title": "A\x00  Title\t", "abstract": "Some\x07 text  here."}))
    paper = load_papers(path)[0]
    assert paper.title == "A Title" and paper.abstract == "Some text here."


def test_long_abstracts_are_chunked_by_sentence():
    sentences = [f"Sentence number {i} has exactly eight words here." for i in range(40)]
    chunks = chunk_abstract(" ".join(sentences), max_words=50)
    assert len(chunks) > 1
    assert all(len(c.split()) <= 50 for c in chunks)
    assert " ".join(chunks) == " ".join(sentences)
    assert chunk_abstract("Short one. Two.", max_words=50) == ["Short one. Two."]
    assert split_sentences("It is 2.5x faster. Then (a) works. Done") == ["It is 2.5x faster.", "Then (a) works.", "Done"]
