"""The load and soak harness (eval/load.py): its pure parts, with fakes; no model, no page."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from eval import load


def test_users_are_parsed_and_bounded_by_the_papers():
    assert load.parse_users("1,4, 8,16") == [1, 4, 8, 16]
    for bad in ("", "0", "17", "a,b", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            load.parse_users(bad)


def test_a_session_asks_about_its_paper_then_the_pronoun_follow_up():
    assert load.session_questions("ZipVL", 2) == ["What does ZipVL do?", "How much faster is it?"]
    more = load.session_questions("ZipVL", 6)
    assert len(more) == 6 and more[2:5] == load.MORE_QUESTIONS and more[5] == load.MORE_QUESTIONS[0]


def test_the_session_papers_are_distinct_papers_of_the_default_collection():
    from rag.corpus import load_papers
    from rag.settings import DEFAULT_CORPUS

    assert len(load.PAPERS) == 16 and len(set(load.PAPERS.values())) == 16
    assert load.check_papers([p.title for p in load_papers(DEFAULT_CORPUS)]) == []
    problems = load.check_papers(["CacheBlend: something else", "More on CacheBlend"], {"CacheBlend": "CacheBlend: x"})
    assert any("no paper titled" in p for p in problems) and any("also in" in p for p in problems)


def test_follow_up_outcome_reads_the_sources_panel():
    own, other = load.PAPERS["FlatQuant"], load.PAPERS["ZipVL"]
    titles = list(load.PAPERS.values())
    panel = f"**Sources**\n\n**&#91;1&#93;** {own}  \n> It is 2.3x faster."
    assert load.paper_outcome(load.sources_text(panel), own, titles) == "own"
    assert load.paper_outcome(f"**&#91;1&#93;** {other}", own, titles) == "other"
    assert load.paper_outcome("**&#91;1&#93;** Qwen2.5-1M Technical Report", own, titles) == "none"
    abstained = f"**Not in the collection.** No paper ...\n\nClosest papers checked:\n- {own}"
    assert load.paper_outcome(abstained, own, titles) == "abstained-own"
    assert load.paper_outcome(abstained.replace(own, f"{other}\n- {own}"), own, titles) == "abstained"
    assert load.paper_outcome("**Not in the collection.** No paper ...", own, titles) == "abstained"
    # A gr.update() arrives as a dict; titles are HTML-escaped in the panel.
    assert load.sources_text({"value": "A &amp; B", "__type__": "update"}) == "A & B"
    assert load.sources_text(None) == ""


def test_message_text_takes_strings_and_text_parts():
    assert load.message_text({"role": "assistant", "content": "hi"}) == "hi"
    assert load.message_text({"role": "assistant", "content": [{"type": "text", "text": "a"}, {"text": "b"}]}) == "ab"
    assert load.message_text(None) == ""


def _requests():
    return [
        {"session": "A", "turn": 0, "ok": True, "wait_s": 1.0, "outcome": "own"},
        {"session": "A", "turn": 1, "ok": True, "wait_s": 3.0, "outcome": "own"},
        {"session": "B", "turn": 0, "ok": True, "wait_s": 2.0, "outcome": "own"},
        {"session": "B", "turn": 1, "ok": True, "wait_s": 4.0, "outcome": "other"},
        {"session": "C", "turn": 0, "ok": False, "error": "QueueError: Queue is full. Please try again."},
        {"session": "C", "turn": 1, "ok": False, "skipped": "QueueError: Queue is full. Please try again."},
    ]


def test_load_summary_counts_answers_waits_errors_and_follow_ups():
    s = load.load_summary(3, _requests(), wall_s=30.0, rss={"start_kb": 1024 * 900, "peak_kb": 1024 * 1000,
                                                            "end_kb": 1024 * 950}, log_errors=1)
    assert s["answers"] == 4 and s["requests"] == 6
    assert s["answers_per_min"] == 8.0
    assert s["wait_s_p50"] == 2.5 and s["wait_s_p90"] == 3.0 and s["wait_s_max"] == 4.0
    assert s["errors"] == 1 and s["queue_full"] == 1 and s["skipped_after_error"] == 1
    assert s["follow_ups_own"] == 1 and s["follow_ups"] == 2 and s["follow_up_outcomes"] == {"other": 1, "own": 1}
    assert s["first_on_own_paper"] == 2 and s["first_answers"] == 2
    assert (s["rss_mb_start"], s["rss_mb_peak"], s["rss_mb_end"]) == (900, 1000, 950)
    assert s["server_log_errors"] == 1
    json.dumps(s)  # the report is JSON


def test_load_summary_with_nothing_answered():
    s = load.load_summary(1, [{"session": "A", "turn": 0, "ok": False, "error": "ConnectionError: refused"}], 5.0, {})
    assert s["answers"] == 0 and s["wait_s_p50"] is None and s["errors"] == 1 and s["answers_per_min"] == 0.0


def test_load_markdown_has_a_row_per_n_and_lists_errors():
    rows = [load.load_summary(n, _requests(), 30.0, {}) for n in (1, 4)]
    text = load.load_markdown(rows)
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + 2  # header, rule, two rows
    assert "| 4 | 4/6 |" in text and "1 of 2 (1 other)" in text and "1 (1)" in text
    assert "Queue is full" in text


def test_server_log_errors_counts_tracebacks_and_error_lines():
    text = "INFO ok\nTraceback (most recent call last):\n  x\n2025 ERROR ui.app answering failed\nERROR: boom\n"
    assert load.server_log_errors(text) == 3


def test_rss_poller_keeps_samples_and_the_peak():
    values = iter([100, 300, 200] + [150] * 1000)
    with load.RssPoller(1, interval=0.01, read=lambda pid: next(values)) as poller:
        while len(poller.samples) < 3:
            pass
    assert poller.peak_kb == 300 and len(poller.samples) >= 4
    assert load.rss_kb() > 0 and load.rss_kb(2**22 + 12345) == 0  # this process; a pid that is not there


SUITE_ROWS = [
    {"id": "q1", "type": "factoid", "question": "F1?"},
    {"id": "q2", "type": "factoid", "question": "F2?"},
    {"id": "q3", "type": "follow-up", "question": "And it?", "history_question": "What is X?"},
]
CHAT_ROWS = [
    {"id": "c1", "style": "casual", "lang": "en", "question": "x?"},
    {"id": "c2", "style": "non-english", "lang": "de", "question": "Was?"},
    {"id": "c3", "style": "followup-pronoun", "lang": "en", "question": "how fast is it?", "history": ["a?", "b?"]},
]


def test_the_soak_mix_alternates_files_and_types_and_keeps_earlier_questions():
    convs = load.conversations(SUITE_ROWS, CHAT_ROWS)
    assert [c["id"] for c in convs] == ["q1", "c1", "q3", "c3", "q2"]  # round-robin types, no German
    assert convs[2]["questions"] == ["What is X?", "And it?"]
    assert convs[3]["questions"] == ["a?", "b?", "how fast is it?"]
    steps = list(load.soak_steps(convs, 12))
    assert len(steps) == 12
    assert [q for _, _, q in steps[:5]] == ["F1?", "x?", "What is X?", "And it?", "a?"]
    assert steps[8][2] == "F1?"  # cycled after the 8 questions of one pass
    assert list(load.soak_steps([], 5)) == []


def test_the_soak_mix_of_the_real_question_files_is_english_and_mixed():
    from eval.chat import load_chat_questions
    from eval.suite import load_questions

    convs = load.conversations(load_questions(), load_chat_questions())
    kinds = {c["kind"] for c in convs}
    assert {"factoid", "follow-up", "casual", "followup-pronoun", "list", "absent"} <= kinds
    assert "non-english" not in kinds
    assert any(len(c["questions"]) > 1 for c in convs)


def test_run_soak_keeps_history_counts_errors_and_goes_on():
    calls = []

    def ask(question, history):
        calls.append((question, history))
        if question == "b?":
            raise RuntimeError("model fell over")
        return SimpleNamespace(text=f"answer to {question}", abstained=question == "x?",
                               timings={"first_token_s": 0.1})

    rss = iter(range(1000, 2000, 10))
    convs = load.conversations(SUITE_ROWS, CHAT_ROWS)
    records = load.run_soak(ask, convs, 9, rss=lambda: next(rss), fds=lambda: 7)
    assert len(records) == 9 and [r["i"] for r in records] == list(range(9))
    by_q = {q: h for q, h in calls}
    assert by_q["F1?"] == [] and by_q["What is X?"] == []
    assert by_q["And it?"] == [{"role": "user", "content": "What is X?"},
                               {"role": "assistant", "content": "answer to What is X?"}]
    # The error is recorded; the conversation goes on with an empty answer.
    assert by_q["how fast is it?"][-1] == {"role": "assistant", "content": ""}
    errors = [r for r in records if r["error"]]
    assert len(errors) == 1 and errors[0]["question"] == "b?" and "model fell over" in errors[0]["error"]
    assert records[1]["abstained"] is True and records[0]["first_token_s"] == 0.1
    assert records[-1]["rss_kb"] == 1080 and records[-1]["open_files"] == 7


def _records(n, rss_step_kb=0, error_at=()):
    return [{"i": i, "id": f"q{i}", "kind": "factoid", "turn": 0, "question": "?",
             "latency_s": 1.0 if i < n // 2 else 2.0, "rss_kb": 100 * 1024 + i * rss_step_kb, "open_files": 9,
             "error": "RuntimeError: boom" if i in error_at else "", "abstained": False} for i in range(n)]


def test_soak_summary_at_full_size_compares_after_warm_up_with_the_end():
    s = load.soak_summary(_records(1000, rss_step_kb=1024, error_at={10, 500}))
    assert s["questions"] == 1000 and s["warm_up_questions"] == 50 and s["latency_window"] == 100
    assert s["rss_mb_after_warm_up"] == 149.0 and s["rss_mb_end"] == 1099.0 and s["rss_mb_growth"] == 950.0
    assert s["rss_mb_growth_per_100_questions"] == pytest.approx(100.0)
    assert s["latency_s_p50_first"] == 1.0 and s["latency_s_p50_last"] == 2.0
    assert s["errors"] == 2 and s["error_kinds"] == {"RuntimeError": 2} and len(s["first_errors"]) == 2


def test_soak_summary_of_a_tiny_run_uses_windows_that_do_not_overlap():
    s = load.soak_summary(_records(20))
    assert s["warm_up_questions"] == 10 and s["latency_window"] == 10
    assert s["latency_s_p50_first"] == 1.0 and s["latency_s_p50_last"] == 2.0
    assert s["rss_mb_growth"] == 0.0 and s["errors"] == 0
    assert load.soak_summary([]) == {"questions": 0, "errors": 0}
    one = load.soak_summary(_records(1))
    assert one["questions"] == 1 and one["rss_mb_growth"] == 0.0
    assert "soak: 20 questions, 0 errors" in load.soak_text(s)


def test_growth_per_100_is_a_fitted_slope():
    assert load.growth_per_100([0, 1, 2, 3], [5, 6, 7, 8]) == pytest.approx(100.0)
    assert load.growth_per_100([1], [5]) == 0.0
    assert load.growth_per_100([2, 2], [1, 3]) == 0.0


def test_soak_plot_writes_a_png(tmp_path: Path):
    records = _records(30, rss_step_kb=512, error_at={5})
    path = tmp_path / "soak.png"
    load.soak_plot(records, load.soak_summary(records), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_line_picks_the_parts(monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr(load, "load_main", lambda args: ran.append(("load", args.users)))
    monkeypatch.setattr(load, "soak_main", lambda args: ran.append(("soak", args.soak)))
    load.main(["--users", "1,2", "--out", str(tmp_path)])
    load.main(["--soak", "20"])
    load.main(["--load", "--soak"])
    load.main([])
    assert ran == [("load", [1, 2]), ("soak", 20), ("load", [1, 4, 8, 16]), ("soak", 1000),
                   ("load", [1, 4, 8, 16]), ("soak", 1000)]
    with pytest.raises(SystemExit):
        load.main(["--users", "1", "--questions-per-session", "1"])
    with pytest.raises(SystemExit):
        load.main(["--soak", "0"])


def test_bench_hands_load_and_soak_to_eval_load(monkeypatch):
    from eval import bench

    seen = []
    monkeypatch.setattr(load, "main", lambda argv: seen.append(argv) or 0)
    assert bench.main(["--load", "--users", "1,2"]) == 0
    assert bench.main(["--soak", "20", "--out", "x"]) == 0
    assert bench.main(["--soak=5"]) == 0
    assert seen == [["--load", "--users", "1,2"], ["--soak", "20", "--out", "x"], ["--soak=5"]]
