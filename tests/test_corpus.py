from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.corpus import CorpusError, chunk_abstract, load_papers, paper_id
from rag.settings import DEFAULT_CORPUS
from rag.text import split_sentences

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
        {"id": "p1", "title": "A Paper", "abstract": ABSTRACT, "url": "https://x/1", "authors": ["A B", "C D"],
         "year": 2024},
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
    path = write(tmp_path, "dup.jsonl",
                 '{"id": "1", "title": "A", "abstract": "x"}\n{"id": "1", "title": "B", "abstract": "y"}\n')
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
    assert split_sentences("It is 2.5x faster. Then (a) works. Done") == [
        "It is 2.5x faster.", "Then (a) works.", "Done"]


BOM = "\ufeff"


def test_byte_order_mark_is_accepted_in_both_formats(tmp_path):
    row = json.dumps({"id": "p1", "title": "A Paper", "abstract": ABSTRACT})
    # Excel and Windows tools save UTF-8 with a byte-order mark; without care the first line is not JSON.
    assert [p.id for p in load_papers(write(tmp_path, "excel.jsonl", (BOM + row + "\r\n").encode()))] == ["p1"]
    # No telling extension: the format is sniffed past the mark.
    assert [p.id for p in load_papers(write(tmp_path, "export.data", (BOM + row + "\n").encode()))] == ["p1"]
    text = write(tmp_path, "c.txt", (f"{BOM}First Title\r\n{ABSTRACT}\r\n").encode())
    assert [p.title for p in load_papers(text)] == ["First Title"]  # the mark is not part of the title


# Rows as they are in arxiv-metadata-oai-snapshot.json (abstracts shortened; their line breaks and
# leading spaces, the titles' wrapped lines and the TeX in names are as in the snapshot).
ARXIV_ROWS = [
    {"id": "0704.0001", "submitter": "Pavel Nadolsky",
     "authors": "C. Bal\\'azs, E. L. Berger, P. M. Nadolsky, C.-P. Yuan",
     "title": "Calculation of prompt diphoton production cross sections at Tevatron and\n  LHC energies",
     "comments": "37 pages, 15 figures; published version", "journal-ref": "Phys.Rev.D76:013009,2007",
     "doi": "10.1103/PhysRevD.76.013009", "report-no": "ANL-HEP-PR-07-12", "categories": "hep-ph",
     "license": None,
     "abstract": "  A fully differential calculation in perturbative quantum chromodynamics is\npresented for "
                 "the production of massive photon pairs at hadron colliders. All\nnext-to-leading order "
                 "perturbative contributions from quark-antiquark,\ngluon-(anti)quark, and gluon-gluon "
                 "subprocesses are included.\n",
     "versions": [{"version": "v1", "created": "Mon, 2 Apr 2007 19:18:42 GMT"},
                  {"version": "v2", "created": "Tue, 24 Jul 2007 20:10:27 GMT"}],
     "update_date": "2008-11-13",
     "authors_parsed": [["Balázs", "C.", ""], ["Berger", "E. L.", ""], ["Nadolsky", "P. M.", ""],
                        ["Yuan", "C. -P.", ""]]},
    {"id": "hep-th/9711200", "submitter": "Juan Maldacena", "authors": "Juan M. Maldacena (Harvard University)",
     "title": "The Large N Limit of Superconformal Field Theories and Supergravity", "comments": "20 pages",
     "journal-ref": "Adv.Theor.Math.Phys.2:231-252,1998", "doi": "10.1023/A:1026654312961", "report-no": "HUTP-97/A097",
     "categories": "hep-th", "license": None,
     "abstract": "  We show that the large N limit of certain conformal field theories in various\ndimensions "
                 "include in their Hilbert space a sector describing supergravity on the\nproduct of "
                 "Anti-deSitter spacetimes, spheres and other compact manifolds.\n",
     "versions": [{"version": "v1", "created": "Thu, 27 Nov 1997 20:36:26 GMT"}],
     "update_date": "2015-06-26", "authors_parsed": [["Maldacena", "Juan M.", "", "Harvard University"]]},
    {"id": "2305.14314", "submitter": "Tim Dettmers",
     "authors": "Tim Dettmers, Artidoro Pagnoni, Ari Holtzman, Luke Zettlemoyer",
     "title": "QLoRA:   Efficient Finetuning of\n  Quantized LLMs", "comments": "Extended NeurIPS submission",
     "journal-ref": None, "doi": None, "report-no": None, "categories": "cs.LG",
     "license": "http://creativecommons.org/licenses/by/4.0/",
     "abstract": "  We present QLoRA, an efficient finetuning approach that reduces memory usage\nenough to "
                 "finetune a 65B parameter model on a single 48GB GPU.\n",
     "versions": [{"version": "v1", "created": "Tue, 23 May 2023 17:50:33 GMT"}],
     "update_date": "2023-05-24",
     "authors_parsed": [["Dettmers", "Tim", ""], ["Pagnoni", "Artidoro", ""], ["Holtzman", "Ari", ""],
                        ["Zettlemoyer", "Luke", ""]]},
]


def test_arxiv_snapshot_rows_ingest_as_they_are(tmp_path):
    path = write(tmp_path, "arxiv-metadata-oai-snapshot.json", "".join(json.dumps(r) + "\n" for r in ARXIV_ROWS))
    first, old, qlora = load_papers(path)
    assert [p.id for p in (first, old, qlora)] == ["0704.0001", "hep-th/9711200", "2305.14314"]
    assert first.url == "https://arxiv.org/abs/0704.0001" and old.url == "https://arxiv.org/abs/hep-th/9711200"
    assert first.title == "Calculation of prompt diphoton production cross sections at Tevatron and LHC energies"
    assert qlora.title == "QLoRA: Efficient Finetuning of Quantized LLMs"
    assert first.abstract.startswith("A fully differential calculation in perturbative quantum chromodynamics is "
                                     "presented for the production")
    assert "\n" not in first.abstract and "  " not in first.abstract and not first.abstract.endswith(" ")
    # Names from authors_parsed: no TeX accents, no affiliations.
    assert first.authors == ("C. Balázs", "E. L. Berger", "P. M. Nadolsky", "C. -P. Yuan")
    assert old.authors == ("Juan M. Maldacena",)
    # The year of the first version, not of the record's last update.
    assert (first.year, old.year, qlora.year) == (2007, 1997, 2023)


def test_arxiv_rows_keep_a_given_url_and_fall_back_to_the_authors_string(tmp_path):
    row = {**ARXIV_ROWS[2], "url": "https://openreview.net/forum?id=OUIFPHEgJU", "authors_parsed": None,
           "versions": []}
    paper = load_papers(write(tmp_path, "a.jsonl", json.dumps(row)))[0]
    assert paper.url == "https://openreview.net/forum?id=OUIFPHEgJU"
    assert paper.authors == ("Tim Dettmers", "Artidoro Pagnoni", "Ari Holtzman", "Luke Zettlemoyer")
    assert paper.year is None
