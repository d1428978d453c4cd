from __future__ import annotations

import io
import json
import sys
from importlib.metadata import version

import pytest

from rag import CorpusError, Engine, Settings, cli
from rag.answer import Answer
from rag.citations import Citation
from rag.cli import build_parser, format_answer, main, rebuild, stored_papers
from rag.settings import DEFAULT_CORPUS, StoreSettings

from .conftest import FakeLLM
from .test_answer import QUESTION, REPLY


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
    monkeypatch.setenv("PAPERCHAT_ANSWER__SOURCES", "many")
    assert main(["papers"]) == 1
    assert "answer.sources" in capsys.readouterr().err


def test_empty_question_is_a_usage_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PAPERCHAT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PAPERCHAT_STORE__DEFAULT_CORPUS", "")
    assert main(["ask", "   "]) == 2
    assert "the question is empty" in capsys.readouterr().err


def test_serving_on_the_network_without_a_login_is_refused(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PAPERCHAT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PAPERCHAT_UI__HOST", "0.0.0.0")
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


@pytest.fixture
def use_engine(monkeypatch, tmp_path):
    """Make main() use the given engine (fakes, not the real models), and record its answers."""

    def use(engine: Engine) -> list[Answer]:
        monkeypatch.setenv("PAPERCHAT_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setattr(cli, "Engine", lambda settings: engine)
        answers: list[Answer] = []
        ask_stream = engine.ask_stream

        def recording(*args, **kwargs):
            for item in ask_stream(*args, **kwargs):
                if isinstance(item, Answer):
                    answers.append(item)
                yield item

        monkeypatch.setattr(engine, "ask_stream", recording)
        return answers

    return use


def test_version_is_printed_without_building_an_engine(monkeypatch, capsys):
    def no_engine(*args, **kwargs):
        raise AssertionError("--version built an engine")

    monkeypatch.setattr(cli, "Engine", no_engine)
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"paperchat {version('paperchat')}\n"


def test_ask_json_prints_one_object_and_no_draft(make_engine, use_engine, monkeypatch, capsys):
    answers = use_engine(make_engine(REPLY))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # even on a terminal: no streamed draft
    assert main(["ask", "--json", QUESTION]) == 0
    out = capsys.readouterr().out
    printed = json.loads(out)  # the whole of stdout is the one object
    (answer,) = answers
    assert set(printed) == {"text", "abstained", "citations", "timings"}
    assert printed["text"] == answer.text and printed["abstained"] is False
    assert printed["citations"] == [{"n": c.n, "paper_id": c.paper_id, "title": c.title, "url": c.url,
                                     "quote": c.quote} for c in answer.citations]
    assert printed["citations"][0]["title"].startswith("Empowering 1000 tokens/second")
    assert printed["timings"]["total_s"] > 0


def test_ask_json_abstention(make_engine, use_engine, capsys):
    use_engine(make_engine())
    assert main(["ask", "--json", "Who won the 2018 football World Cup?"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["abstained"] is True and printed["citations"] == []


def test_ask_into_a_file_prints_the_answer_once(make_engine, use_engine, capsys):
    answers = use_engine(make_engine(REPLY))
    assert main(["ask", QUESTION]) == 0  # captured stdout is not a terminal
    (answer,) = answers
    assert capsys.readouterr().out == format_answer(answer) + "\n"


def test_ask_on_a_terminal_streams_the_draft_then_the_checked_answer(make_engine, use_engine, monkeypatch, capsys):
    answers = use_engine(make_engine(REPLY))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["ask", QUESTION]) == 0
    (answer,) = answers
    draft, _, shown = capsys.readouterr().out.partition("\r\033[K")
    assert draft == REPLY and shown == format_answer(answer) + "\n"


def test_chat_into_a_file_prints_each_answer_once(make_engine, use_engine, monkeypatch, capsys):
    answers = use_engine(make_engine(REPLY))
    monkeypatch.setattr(sys, "stdin", io.StringIO(QUESTION + "\n"))
    assert main(["chat"]) == 0
    (answer,) = answers
    header, shown, end = capsys.readouterr().out.split("\n> ")  # the prompts end up in the file too
    assert header.startswith("paperchat: 71 papers.") and shown == format_answer(answer) + "\n" and end == "\n"


@pytest.fixture
def built_store(tmp_path, embed, monkeypatch):
    """A store of the default collection and one more paper (72), as a finished earlier run leaves it."""
    settings = Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache",
                        store=StoreSettings(default_corpus=DEFAULT_CORPUS))
    engine = Engine(settings, llm=FakeLLM(), embed_model=embed)
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"title": "Zyxwv Decoding", "abstract": "Zyxwv decodes tokens in parallel."}) + "\n")
    engine.ingest([extra], progress=False)
    engine.store.client.close()  # as when that run ended: rebuild opens the store itself
    monkeypatch.setattr(cli, "Engine", lambda s: Engine(s, llm=FakeLLM(), embed_model=embed))
    return settings


def answering(monkeypatch, reply: str, terminal: bool) -> None:
    stdin = io.StringIO(reply)
    stdin.isatty = lambda: terminal  # type: ignore[method-assign]
    monkeypatch.setattr(sys, "stdin", stdin)


def test_rebuild_asks_first_and_no_keeps_the_store(built_store, monkeypatch, capsys):
    answering(monkeypatch, "n\n", terminal=True)
    assert rebuild(built_store, []) == 1
    err = capsys.readouterr().err
    assert f"Delete the store at {built_store.chroma_path} (72 papers) and build it again? [y/N]" in err
    assert "nothing was deleted" in err
    assert stored_papers(built_store) == "72 papers"
    answering(monkeypatch, "", terminal=True)  # Ctrl-D: no
    assert rebuild(built_store, []) == 1 and stored_papers(built_store) == "72 papers"


def test_rebuild_after_yes_deletes_and_builds_again(built_store, monkeypatch, capsys):
    answering(monkeypatch, "y\n", terminal=True)
    assert rebuild(built_store, []) == 0
    assert "rebuilt" in capsys.readouterr().out
    assert stored_papers(built_store) == "71 papers"  # the extra paper went with the old store


def test_rebuild_without_a_terminal_needs_yes(built_store, embed, monkeypatch, capsys):
    engines: list[Engine] = []
    monkeypatch.setattr(cli, "Engine", lambda s: engines.append(Engine(s, llm=FakeLLM(), embed_model=embed))
                        or engines[-1])
    monkeypatch.setenv("PAPERCHAT_DATA_DIR", str(built_store.data_dir))
    monkeypatch.setenv("PAPERCHAT_CACHE_DIR", str(built_store.cache_dir))
    answering(monkeypatch, "y\n", terminal=False)  # a "y" in a pipe is not consent
    assert main(["rebuild"]) == 2
    err = capsys.readouterr().err
    assert f"rebuild deletes the store at {built_store.chroma_path}" in err and "pass --yes" in err
    assert stored_papers(built_store) == "72 papers"
    for flag in ("--yes", "-y"):
        answering(monkeypatch, "", terminal=False)
        assert main(["rebuild", flag]) == 0
        assert stored_papers(built_store) == "71 papers"
        engines[-1].store.client.close()  # each rebuild is its own process


def test_rebuild_of_a_damaged_store_still_asks(tmp_path, monkeypatch, capsys):
    settings = Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache",
                        store=StoreSettings(default_corpus=None))
    settings.chroma_path.mkdir(parents=True)  # no chroma.sqlite3 in it
    answering(monkeypatch, "no\n", terminal=True)
    assert rebuild(settings, []) == 1
    assert "(unreadable: " in capsys.readouterr().err and settings.chroma_path.exists()


def test_rebuild_checks_its_files_before_deleting_anything(built_store, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "A title without an abstract"}\n')
    answering(monkeypatch, "y\n", terminal=True)
    with pytest.raises(CorpusError):
        rebuild(built_store, [str(bad)], yes=True)
    assert stored_papers(built_store) == "72 papers"
    monkeypatch.setenv("PAPERCHAT_DATA_DIR", str(built_store.data_dir))
    monkeypatch.setenv("PAPERCHAT_CACHE_DIR", str(built_store.cache_dir))
    assert main(["rebuild", "--yes", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err and stored_papers(built_store) == "72 papers"
