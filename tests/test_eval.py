from __future__ import annotations

import json
from collections import Counter

import pytest

from eval.baseline import CitationBaseline
from eval.suite import (
    QuestionSetError,
    Reply,
    engine_asker,
    load_questions,
    main,
    markdown,
    normalise,
    plot,
    run_answers,
    sample,
    score,
    summarise,
    uncovered,
)

from .test_answer import QUESTION, REPLY

NPU_TITLE = "Empowering 1000 tokens/second on-device LLM prefilling with mllm-NPU"


def test_question_set_is_valid_mixed_and_covers_every_paper():
    rows = load_questions()  # raises on a missing title or a key fact not in a gold abstract
    counts = Counter(r["type"] for r in rows)
    assert len(rows) >= 80
    assert counts["factoid"] >= 25 and counts["paraphrase"] >= 20 and counts["multi"] >= 15
    assert counts["unanswerable"] >= 15 and counts["follow-up"] >= 10
    assert uncovered(rows) == []
    assert len(sample(rows, 10)) == 10 and {r["type"] for r in sample(rows, 10)} == set(counts)


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ({"gold": ["No Such Paper"], "key_facts": []}, "no paper titled 'No Such Paper'"),
        ({"gold": [NPU_TITLE], "key_facts": ["99x"]}, "key fact '99x' is not in a gold abstract"),
        ({"type": "unanswerable", "gold": [NPU_TITLE], "key_facts": []}, "only they, have no gold paper"),
        ({"type": "follow-up", "gold": [NPU_TITLE], "key_facts": []}, "have a history_question"),
        ({"type": "opinion", "gold": [], "key_facts": []}, "needs a question and a type"),
    ],
)
def test_checker_rejects_bad_rows(tmp_path, row, error):
    good = {"id": "x1", "type": "factoid", "question": "q?", "gold": [NPU_TITLE], "key_facts": ["22.4x"]}
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "x2", **row}) + "\n")
    with pytest.raises(QuestionSetError, match=error):
        load_questions(path)
    assert main(["--check", "--questions", str(path)]) == 2


def test_figures_are_compared_tolerantly():
    assert normalise("2.2x") in normalise("a 2.2 times speedup")
    assert normalise("2.2×") == normalise("2.2x")
    assert normalise("1,000 tokens/sec") in normalise("1000 tokens/sec")
    assert normalise("87\\% reduction") == normalise("87% reduction")


def test_scores_of_one_answer():
    row = {"id": "q", "type": "multi", "question": "?", "gold": ["A", "B"], "key_facts": ["2.2x", "30%"]}
    s = score(row, Reply("A is 2.2 times faster [1].", ["A", "C"], False, 1.0, 2.0))
    assert s["citation_precision"] == 0.5 and s["citation_recall"] == 0.5 and s["key_facts"] == 0.5
    s = score({**row, "type": "unanswerable", "gold": [], "key_facts": []}, Reply("x", [], True, 0.01, 0.01))
    assert s["citation_precision"] is None and s["citation_recall"] is None and s["abstained"]


def test_answer_run_report_and_plot_with_fakes(make_engine, tmp_path):
    engine = make_engine(REPLY, REPLY)
    rows = [{"id": "a", "type": "factoid", "question": QUESTION, "gold": [NPU_TITLE],
             "key_facts": ["1,000 tokens/sec"]},
            {"id": "b", "type": "unanswerable", "question": "Who won the 2018 football World Cup?", "gold": [],
             "key_facts": []}]
    per = run_answers("paperchat", engine_asker(engine), rows)
    summary = summarise(per)
    assert summary["citation_precision"] == 1.0 and summary["key_facts"] == {"factoid": 1.0}
    assert summary["abstention_on_unanswerable"] == 1.0 and summary["answer_rate_on_answerable"] == 1.0
    report = {"questions": 2, "model": "fake",
              "retrieval": {"hybrid": {"hit@1": 1.0, "recall@5": 0.9, "mrr": 1.0, "retrieve_s_p50": 0.01}},
              "answers": {"paperchat": summary, "llama-index": {**summary, "citation_precision": 0.5}}}
    md = markdown(report)
    assert "| citation_precision | 1.000 | 0.500 | 2.00x |" in md
    assert "| recall@5 | ≥ 0.95 | 0.900 | no, short by 0.050 |" in md
    assert "| citation_precision | ≥ 0.90 | 1.000 | yes |" in md
    plot(report, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_llama_index_baseline_runs_on_the_same_store_and_llm(make_engine):
    engine = make_engine("mllm-NPU reaches 1,000 tokens/sec prefilling [1].")
    answer = CitationBaseline(engine).ask(QUESTION)
    prompt = engine.llm.calls[0][0]["content"]
    assert "Source 1:" in prompt and QUESTION in prompt  # llama-index's citation prompt, our LLM
    assert answer.cited_titles and not answer.abstained
    assert answer.text.endswith("[1].") and answer.total_s >= answer.first_token_s


@pytest.mark.integration
def test_retrieval_only_eval_runs(tmp_path):
    assert main(["--retrieval-only", "--limit", "6", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "latest.json").read_text())
    assert set(report["retrieval"]) == {"hybrid", "dense", "bm25"}
    assert 0 <= report["retrieval"]["hybrid"]["recall@5"] <= 1
    assert (tmp_path / "latest.md").read_text().startswith("# paperchat eval")


@pytest.mark.integration
def test_bench_runs_and_reports_its_figures(tmp_path, capsys):
    from eval.bench import main as bench_main

    assert bench_main(["--limit", "2", "--no-baseline", "--no-cold", "--json", "--out", str(tmp_path)]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("first_token_s_p50", "total_s_p50", "retrieve_s_p50", "ingest_s", "reingest_s", "rss_mb"):
        assert figures[key] > 0, key
    assert figures["reingest_s"] < figures["ingest_s"]
    assert (tmp_path / "bench.png").exists() and (tmp_path / "bench.json").exists()


@pytest.mark.integration
def test_scale_bench_runs_and_reports_its_figures(tmp_path):
    from eval.scale import main as scale_main

    assert scale_main(["--sizes", "150,300", "--real-max", "150", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "scale.json").read_text())
    small, big = report["rows"]
    assert (small["embedding"], big["embedding"]) == ("minilm", "mean-vectors")
    for key in ("papers_per_s", "ingest_heap_mb", "store_mb", "bm25_mb", "retrieve_s_p50", "rss_mb"):
        assert small[key] > 0 and big[key] > 0, key
    assert big["bm25_load_s"] < big["bm25_build_s"]  # the saved index is loaded, not rebuilt
    assert set(report["extrapolated"]["retrieve_s_p50"]) == {"1000000", "10000000"}
    assert (tmp_path / "scale.png").exists()


# ----- chat-style questions (eval/chat.py) ------------------------------------------------------
#: The test split is frozen: nothing is tuned on it, and this hash changes if a row does.
TEST_SPLIT_SHA256 = "96cec046fda4523e5b30c8af3d48d3b9b73c455cae92f09c8ea8fbf827db2ea0"
#: The same for the fresh split (written later, by another helper, run before and after one change set).
FRESH_SPLIT_SHA256 = "0ab8ebb2925894a5923ef930341d93ed52482ac1cbce2df23a197b049ff817e0"
#: And for fresh2 (150 questions, written in session 9 by a third helper).
FRESH2_SPLIT_SHA256 = "8854475ecd5dea648b5136a8095bb050bec029cc2ae89e18be15d8be3ebefe54"
#: And for fresh3 (150 questions, written at the start of session 10 by a fourth helper).
FRESH3_SPLIT_SHA256 = "8c47996d9a04d61d211af54298ad3ba19c3735cbf183503307b17770bd40648e"
#: And for fresh4 (150 questions, written at the start of session 11 by two more helpers).
FRESH4_SPLIT_SHA256 = "01d948b6951c916c4920fc34ec3fadc737bee5478c2c4fd89184896692878007"
#: And for fresh5 (150 questions, written at the start of session 12 by two more helpers).
FRESH5_SPLIT_SHA256 = "4b9d0d12c08c902d70b746b23bcf2e0da98ae72273118c3184e4a67122af7522"
#: And for fresh6 (150 questions, written at the start of session 13 by two more helpers).
FRESH6_SPLIT_SHA256 = "52d28f30d8952971f67d635b68118c0698ec4cfd22079fe5da82c5d31f7dfe85"
#: And for fresh7 (150 questions, written at the start of session 14 by two more helpers).
FRESH7_SPLIT_SHA256 = "d799916eea3d384c9b261b572659ebdcf46082a802601ff25fe297924b8ec712"
#: And for fresh8 (150 questions, written at the start of session 15 by two more helpers).
FRESH8_SPLIT_SHA256 = "2e1a4d2e3e00fdb342b0e7594a024914da7527ac3891c4951e880d57a0b954b9"
#: And for fresh9 (150 questions, written at the start of session 16 by two more helpers).
FRESH9_SPLIT_SHA256 = "70271743c60663c4f755b36394f94f2afa966a8412fba687e52771f15e154cad"
#: And for fresh10 (150 questions, written at the start of session 17 by two more helpers).
FRESH10_SPLIT_SHA256 = "abddcc523c67d9472bd5610071bf717cb9ca6e430af6c6d61adffed709117208"
#: And for fresh11 (150 questions, written at the start of session 18 by two more helpers).
FRESH11_SPLIT_SHA256 = "dddd852bda542c16fb4da312603dc1335dc0c7ce7f808be922b0db3deed13e41"
#: And for fresh12 (150 questions, written at the start of session 19 by two more helpers).
FRESH12_SPLIT_SHA256 = "a439f05723ccb3207df6b54f41dbc8ebda875202e44c61c1841f4f4f7c354107"
#: And for fresh13 (150 questions, written at the start of session 20 by two more helpers).
FRESH13_SPLIT_SHA256 = "f6fec3067b2c49a86b1a2b697f72f100efd614d239e75e303897c09e6fcba0e5"


def test_chat_question_set_is_valid_split_and_frozen():
    import hashlib

    from eval.chat import FROZEN, RETIRED, SPLITS, STYLES, load_chat_questions

    rows = load_chat_questions()  # raises on a missing title or a key fact not in a gold abstract
    assert len(rows) >= 200
    counts = Counter((r["style"], r["split"]) for r in rows)
    # Every style on both sides, the first 308 split about in half; the later dev rows (D-*, E-*, J-*, N-*, R-*,
    # S-*, V-*, Y-*, O-*, AB-*, AE-*, AH-*, AK-*, AL-*, AM-*, AN-*) are extra.
    halves = Counter((r["style"], r["split"]) for r in rows
                     if not r["id"].startswith(("D-", "E-", "J-", "N-", "R-", "S-", "V-", "Y-", "O-", "AB-",
                                                "AE-", "AH-", "AK-", "AL-", "AM-", "AN-")))
    for style in STYLES:
        assert counts[style, "dev"] >= 8 and abs(halves[style, "dev"] - halves[style, "test"]) <= 2, style
    assert len({r["lang"] for r in rows if r["style"] == "non-english"}) >= 4
    for split, digest in (("test", TEST_SPLIT_SHA256), ("fresh", FRESH_SPLIT_SHA256),
                          ("fresh2", FRESH2_SPLIT_SHA256), ("fresh3", FRESH3_SPLIT_SHA256),
                          ("fresh4", FRESH4_SPLIT_SHA256), ("fresh5", FRESH5_SPLIT_SHA256),
                          ("fresh6", FRESH6_SPLIT_SHA256), ("fresh7", FRESH7_SPLIT_SHA256),
                          ("fresh8", FRESH8_SPLIT_SHA256), ("fresh9", FRESH9_SPLIT_SHA256),
                          ("fresh10", FRESH10_SPLIT_SHA256), ("fresh11", FRESH11_SPLIT_SHA256),
                          ("fresh12", FRESH12_SPLIT_SHA256), ("fresh13", FRESH13_SPLIT_SHA256)):
        frozen = [json.dumps(r, sort_keys=True, ensure_ascii=False) for r in rows if r["split"] == split]
        assert hashlib.sha256("\n".join(frozen).encode()).hexdigest() == digest, split
    # Every split is dev, retired (chosen on, as dev is) or frozen (decides), and only one of them.
    assert sorted(("dev", *RETIRED, *FROZEN)) == sorted(SPLITS) and not set(RETIRED) & set(FROZEN)
    for split in ("fresh", "fresh2", "fresh3", "fresh4", "fresh5", "fresh6", "fresh7", "fresh8", "fresh9",
                  "fresh10", "fresh11", "fresh12", "fresh13"):
        fresh = Counter(r["style"] for r in rows if r["split"] == split)
        assert all(fresh[style] >= 8 for style in STYLES), (split, fresh)


def test_chat_scores_report_both_splits_and_the_gap(make_engine):
    from eval.chat import markdown, score_chat, summarise_chat

    engine = make_engine(REPLY)
    row = {"id": "a", "style": "casual", "question": QUESTION, "gold": [NPU_TITLE], "key_facts": ["22.4x"]}
    good = score_chat(row, engine.ask(QUESTION))
    assert good["recall@5"] == 1.0 and good["citation_precision"] == 1.0 and not good["abstained"]
    miss = score_chat({**row, "id": "b", "style": "near-miss", "gold": [], "key_facts": []},
                      engine.ask("Which license is mllm-NPU released under?"))
    assert miss["abstained"] and miss["citation_precision"] is None and miss["recall@5"] is None
    dev = summarise_chat([good, miss])
    test = summarise_chat([{**good, "key_facts": 0.0}, miss])
    assert dev["all"]["answered"] == 1.0 and dev["all"]["abstained"] == 1.0
    md = markdown({"model": "fake", "splits": {"dev": dev, "test": test}})
    assert "| key_facts gap |" in md
    line = next(x for x in md.splitlines() if x.startswith("| all (2/2)"))
    assert line.split(" | ")[-3] == f"{good['key_facts'] - 0.0:+.2f}"  # key facts gap, dev - test
    assert "| answered | ≥ 0.90 | 1.00 | yes |" in md
    fresh = markdown({"model": "fake", "splits": {"fresh7": test}})
    assert "| target (fresh7 split) |" in fresh and "| all (2) |" in fresh and "gap" not in fresh
    # A retired split (chosen on from session 14, as dev is) is not held to the targets.
    assert "target" not in markdown({"model": "fake", "splits": {"fresh": test}})
