from __future__ import annotations

import json

import pytest

from eval.__main__ import load_questions, main, normalise, sample


def test_question_set_is_valid_and_mixed():
    rows = load_questions()  # raises on a missing title or a key fact not in a gold abstract
    kinds = {r["type"] for r in rows}
    assert kinds == {"factoid", "paraphrase", "multi", "unanswerable", "follow-up"}
    assert len({r["id"] for r in rows}) == len(rows)
    assert len(sample(rows, 10)) == 10 and {r["type"] for r in sample(rows, 10)} == kinds


def test_figures_are_compared_tolerantly():
    assert normalise("2.2x") in normalise("a 2.2 times speedup")
    assert normalise("2.2×") == normalise("2.2x")
    assert normalise("1,000 tokens/sec") in normalise("1000 tokens/sec")


@pytest.mark.integration
def test_retrieval_only_eval_runs(tmp_path):
    assert main(["--retrieval-only", "--limit", "6", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "latest.json").read_text())
    assert set(report["retrieval"]) == {"hybrid", "dense", "bm25"}
    assert 0 <= report["retrieval"]["hybrid"]["recall@5"] <= 1
    assert (tmp_path / "latest.md").read_text().startswith("# paperchat eval")
