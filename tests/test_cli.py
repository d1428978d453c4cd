from __future__ import annotations

import pytest

from rag.cli import build_parser, format_answer, main
from rag.answer import Answer
from rag.citations import Citation


@pytest.mark.parametrize("command", [[], ["ask"], ["chat"], ["ingest"], ["papers"], ["rebuild"], ["serve"]])
def test_help_on_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: paperchat" in capsys.readouterr().out


def test_format_answer_lists_cited_papers():
    answer = Answer("q", "It is fast [1].", [Citation(1, "p", "A Paper", "It is 2x fast.")], False, [])
    assert format_answer(answer) == 'It is fast [1].\n\n[1] A Paper\n    "It is 2x fast."'


def test_bad_settings_are_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("PAPERCHAT_TOP_K", "many")
    assert main(["papers"]) == 1
    assert "top_k" in capsys.readouterr().err


def test_empty_question_is_a_usage_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PAPERCHAT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PAPERCHAT_DEFAULT_CORPUS", "")
    assert main(["ask", "   "]) == 2
    assert "the question is empty" in capsys.readouterr().err


def test_serving_on_the_network_without_a_login_is_refused(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PAPERCHAT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PAPERCHAT_HOST", "0.0.0.0")
    assert main(["serve", "--no-browser"]) == 1
    assert "refusing to serve on 0.0.0.0 without a login" in capsys.readouterr().err
    assert not (tmp_path / "chroma").exists()  # refused before anything was built


def test_eval_and_bench_commands_reach_their_parsers(capsys):
    for command in (["eval", "--help"], ["bench", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(command)
        assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: paperchat eval" in out and "usage: paperchat bench" in out


def test_ingest_command_reports_and_leaves_a_saved_keyword_index(make_engine, tmp_path, capsys):
    import argparse
    import json

    from rag.cli import cmd_ingest
    from rag.retrieve import KeywordIndex

    engine = make_engine()
    path = tmp_path / "new.jsonl"
    path.write_text(json.dumps({"title": "Zyxwv Decoding", "abstract": "Zyxwv decodes tokens in parallel."}) + "\n")
    assert cmd_ingest(engine, argparse.Namespace(files=[str(path)], quiet=True)) == 0
    out = capsys.readouterr().out
    assert "1 papers: 1 added" in out and "the store now holds 72 papers" in out
    saved = KeywordIndex.load(engine.settings.keyword_path, engine.store.stamp())  # current: the next start loads it
    assert saved is not None and len(saved) == 72
