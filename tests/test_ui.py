from __future__ import annotations

import json
import threading

import httpx
import pytest

from eval.browser import free_port
from rag import ABSTAIN_TEXT, Answer, Hit, LLMError, Settings
from rag.catalog import Catalog
from rag.citations import Citation
from rag.settings import UISettings
from ui.app import (
    ABSTAIN_MARKDOWN,
    STOPPED_DRAFT_NOTE,
    STOPPED_TEXT,
    WAITING_TEXT,
    add_papers,
    answer_markdown,
    build,
    escape,
    format_sources,
    header_markdown,
    launch_options,
    paper_rows,
    respond,
    stopped_chat,
)

from .conftest import FakeLLM
from .test_answer import QUESTION, REPLY


def test_sources_are_listed_and_markup_stays_text():
    answer = Answer("q", "x [1].", [Citation(1, "p", "<b>Bold</b> [Title]", "<script>alert(1)</script>")], False, [],
                    {"first_token_s": 1.25, "total_s": 3.5})
    md = format_sources(answer)
    assert "&lt;b&gt;Bold&lt;/b&gt; &#91;Title&#93;" in md and "&lt;script&gt;" in md and "<script>" not in md
    assert md.startswith("**Sources**") and "**&#91;1&#93;**" in md
    assert "first words 1.2 s · complete 3.5 s" in md


def test_source_links_only_for_web_urls():
    def linked(url: str) -> str:
        return format_sources(Answer("q", "x [1].", [Citation(1, "p", "T", "quote", url)], False, []))

    assert '<a href="https://arxiv.org/abs/1" target="_blank" rel="noopener">T</a>' in linked("https://arxiv.org/abs/1")
    assert "href" not in linked("javascript:alert(1)")


def test_abstention_looks_different_and_names_the_papers_checked():
    hit = Hit("p1", "Closest <paper>", "text", 0.1)
    answer = Answer("q", ABSTAIN_TEXT, [], True, [hit], abstain_reason="retrieval")
    assert answer_markdown(answer) == ABSTAIN_MARKDOWN and ABSTAIN_TEXT in ABSTAIN_MARKDOWN
    near = Answer("q", ABSTAIN_TEXT + " The closest paper, \u201cA*\u201d, does not state it.", [], True, [hit],
                  abstain_reason="near-miss")
    assert answer_markdown(near) == ABSTAIN_MARKDOWN + " " + escape(
        "The closest paper, \u201cA*\u201d, does not state it.")
    md = format_sources(answer)
    assert md.startswith("**Not in the collection.**") and "Sources" not in md
    assert "- Closest &lt;paper&gt;" in md


def test_respond_streams_then_shows_the_checked_answer_and_keeps_the_conversation(make_engine):
    engine = make_engine(REPLY)
    updates = list(respond(engine, QUESTION, [], []))
    assert updates[0][0][-1] == {"role": "assistant", "content": WAITING_TEXT}
    streamed = [chat[-1]["content"] for chat, *_ in updates[1:-1]]
    assert len(streamed) > 3 and all(b.startswith(a) for a, b in zip(streamed, streamed[1:]))  # grows word by word
    chat, sources, turns, abstained = updates[-1]
    assert chat[0] == {"role": "user", "content": QUESTION}
    assert "&#91;1&#93;" in chat[-1]["content"] and "[1]" not in chat[-1]["content"] and not abstained
    assert "Empowering 1000 tokens/second" in sources
    # The engine's history holds the plain question and the checked answer, not the page's markup.
    assert turns == [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": chat[-1]["content"]
                                                             .replace("&#91;", "[").replace("&#93;", "]")}]


def test_follow_up_passes_the_conversation_to_the_engine(make_engine):
    engine = make_engine("mllm-NPU prefill speed", REPLY)
    turns = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "It is fast [1]."}]
    *_, (chat, sources, new_turns, _) = respond(engine, "How fast is it?", turns, [])
    assert "It is fast [1]." in engine.llm.calls[0][-1]["content"]  # the rewrite saw the history
    assert len(new_turns) == 4 and "Empowering 1000 tokens/second" in sources


def test_unanswerable_question_shows_the_abstention(make_engine):
    engine = make_engine()
    *_, (chat, sources, turns, abstained) = respond(engine, "Who won the 2018 football World Cup?", [], [])
    assert abstained and chat[-1]["content"] == ABSTAIN_MARKDOWN
    assert turns[-1] == {"role": "assistant", "content": ABSTAIN_TEXT}


def test_errors_are_shown_as_messages(make_engine):
    engine = make_engine()
    chat, _, turns, _ = list(respond(engine, "   ", [], []))[-1]
    assert chat[-1]["content"] == "⚠️ the question is empty" and turns == []

    class DownLLM:
        usage: dict[str, int] = {}

        def stream(self, messages, *, max_tokens, temperature):
            raise LLMError("cannot reach the LLM server at http://127.0.0.1:9/v1/")
            yield ""

    engine._llm = DownLLM()
    chat, sources, turns, _ = list(respond(engine, QUESTION, [], []))[-1]
    assert chat[-1]["content"] == "⚠️ The language model failed: cannot reach the LLM server at http://127.0.0.1:9/v1/"
    assert sources == "" and turns == []


def test_paper_list_search(make_engine):
    catalog = Catalog(make_engine().store)
    rows, count = paper_rows(catalog)
    assert len(rows) == 71 and count == "71 of 71 papers"
    assert rows == sorted(rows, key=lambda r: r[0].casefold()) and rows[0][1] == "trending-papers.txt"
    rows, count = paper_rows(catalog, "  cacheblend ")
    assert [r[0][:10] for r in rows] == ["CacheBlend"] and count == "1 of 71 papers match “cacheblend”"
    assert paper_rows(catalog, "no such paper")[0] == []
    assert "**71 papers**" in header_markdown(catalog)


def test_adding_a_file_reports_progress_and_bad_files_change_nothing(make_engine, tmp_path):
    engine = make_engine()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "New", "abstract": "About decoding."}\n{"title": "broken"\n')
    message = add_papers(engine, str(bad))
    assert message.startswith("⚠️ Nothing was added; the collection is unchanged. bad.jsonl:2: not valid JSON")
    assert len(Catalog(engine.store).papers()) == 71
    assert add_papers(engine, None).startswith("⚠️ Choose a file")

    good = tmp_path / "new.txt"
    good.write_text("A New Paper on Decoding\nWe draft a tree of tokens and verify it in one pass, which decodes "
                    "twice as fast as plain autoregressive decoding on the same model.\n")
    calls: list[tuple[tuple[int, int], str]] = []
    message = add_papers(engine, str(good), lambda done, desc, unit: calls.append((done, desc)))
    assert message == "✅ new.txt: 1 papers read, 1 added, 0 replaced, 0 already in the collection."
    assert calls == [((1, 1), "Adding new.txt")]
    assert len(Catalog(engine.store).papers()) == 72


def test_page_builds_with_its_parts(make_engine):
    page = build(make_engine())
    ids = {getattr(block, "elem_id", None) for block in page.blocks.values()}
    assert {"header", "chat", "sources", "question", "ask", "clear", "search", "paper-list", "upload", "add"} <= ids


def test_login_from_settings_guards_the_page(make_engine):
    with pytest.raises(ValueError, match="set both PAPERCHAT_UI__USERNAME and PAPERCHAT_UI__PASSWORD"):
        Settings(ui=UISettings(username="ann"))
    engine = make_engine(ui=UISettings(username="ann", password="s3cret", port=free_port()))
    options = launch_options(engine.settings)
    assert options["auth"] == ("ann", "s3cret") and options["server_name"] == "127.0.0.1"
    page = build(engine)
    page.queue(max_size=2)
    page.launch(prevent_thread_lock=True, quiet=True, **options)
    try:
        url = f"http://127.0.0.1:{engine.settings.ui.port}"
        assert httpx.get(f"{url}/config").status_code == 401
        assert httpx.post(f"{url}/login", data={"username": "ann", "password": "wrong"}).status_code == 400
        with httpx.Client() as client:
            assert client.post(f"{url}/login", data={"username": "ann", "password": "s3cret"}).status_code == 200
            assert client.get(f"{url}/config").status_code == 200
    finally:
        page.close()


def test_uploads_are_bounded_in_size_and_papers(make_engine, tmp_path):
    engine = make_engine(ui=UISettings(max_upload_papers=1, max_upload_mb=1))
    two = tmp_path / "two.jsonl"
    two.write_text("".join(json.dumps({"title": f"Paper {i}", "abstract": "About decoding."}) + "\n" for i in range(2)))
    assert "two.jsonl holds more than 1 papers, the most the page takes" in add_papers(engine, str(two))
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * (1 << 20) + b"x")
    assert "larger than 1 MB" in add_papers(engine, str(big))
    assert len(Catalog(engine.store).papers()) == 71
    assert launch_options(engine.settings)["max_file_size"] == "1mb"


class OneAtATimeLLM(FakeLLM):
    """Holds a lock while it streams, as LlamaCppLLM does: an abandoned stream would block the next question."""

    def __init__(self, *replies: str) -> None:
        super().__init__(*replies)
        self.lock = threading.Lock()

    def stream(self, messages, *, max_tokens, temperature):
        if not self.lock.acquire(timeout=5):
            raise AssertionError("the model is still held by a stopped answer")
        try:
            yield from super().stream(messages, max_tokens=max_tokens, temperature=temperature)
        finally:
            self.lock.release()


def page_fn(page, name: str):
    """The function the built page runs for an event (as Gradio calls it)."""
    (fn,) = {f.fn for f in page.fns.values() if f.name == name}
    return fn


def test_stop_cancels_the_answer_and_frees_the_model_for_the_next_question(make_engine):
    engine = make_engine()
    engine._llm = llm = OneAtATimeLLM(REPLY, REPLY)
    page = build(engine)
    answers = {i for i, f in page.fns.items() if f.name == "answer"}
    (stop,) = [f for f in page.fns.values() if f.cancels]
    assert len(answers) == 2 and set(stop.cancels) == answers  # Enter and the Ask button
    assert "stop" in {getattr(block, "elem_id", None) for block in page.blocks.values()}

    answer = page_fn(page, "answer")
    updates = answer(QUESTION, [], [])
    for chat, *_ in updates:
        if chat[-1]["content"] != WAITING_TEXT:
            break  # the model is writing the draft
    assert llm.lock.locked()
    updates.close()  # what Gradio does on Stop
    assert not llm.lock.locked()

    *drafts, (chat, sources, turns, unfinished) = answer(QUESTION, [], [])  # the next question is answered
    assert "Empowering 1000 tokens/second" in sources["value"] and len(turns) == 2
    assert unfinished is False  # finished: the page leaves this answer as it is
    assert drafts and all(update[3] is True for update in drafts)  # a Stop before the end marks it stopped


def test_a_stopped_answer_says_so():
    draft = [{"role": "user", "content": [{"type": "text", "text": "Q?"}]},
             {"role": "assistant", "content": [{"type": "text", "text": "mllm-NPU reaches"}]}]
    assert stopped_chat(draft) == [draft[0], {"role": "assistant",
                                              "content": "mllm-NPU reaches\n\n" + STOPPED_DRAFT_NOTE}]
    waiting = [draft[0], {"role": "assistant", "content": WAITING_TEXT}]  # stopped while queued
    assert stopped_chat(waiting)[-1] == {"role": "assistant", "content": STOPPED_TEXT}
    assert stopped_chat([]) == [] and stopped_chat(draft[:1]) == draft[:1]


def test_header_and_paper_count_are_read_on_each_page_load(make_engine, tmp_path):
    engine = make_engine()
    page = build(engine)
    (load,) = [f for f in page.fns.values() if f.name == "on_load"]
    assert [event for _, event in load.targets] == ["load"]
    on_load = load.fn
    header, rows, count = on_load()
    assert "**71 papers**" in header and count == "71 of 71 papers" and len(rows) == 71
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({"title": "Zyxwv Decoding", "abstract": "Zyxwv decodes tokens in parallel."}) + "\n")
    assert add_papers(engine, str(new)).startswith("✅")  # one visitor uploads
    header, rows, count = on_load()  # the next visitor's page
    assert "**72 papers**" in header and count == "72 of 72 papers" and "Zyxwv Decoding" in [r[0] for r in rows]


def test_answers_run_side_by_side_and_uploads_one_at_a_time(make_engine):
    engine = make_engine(ui=UISettings(concurrency=3))
    page = build(engine)
    answers = [f for f in page.fns.values() if f.name == "answer"]
    (upload,) = [f for f in page.fns.values() if f.name == "add_file"]
    assert {(f.concurrency_id, f.concurrency_limit) for f in answers} == {("answer", 3)}
    assert (upload.concurrency_id, upload.concurrency_limit) == ("ingest", 1)


def test_an_answer_written_by_code_does_not_wait_for_the_model(make_engine):
    engine = make_engine(ui=UISettings(concurrency=2))
    engine._llm = llm = OneAtATimeLLM(REPLY)
    answer = page_fn(build(engine), "answer")
    writing = answer(QUESTION, [], [])
    for chat, *_ in writing:
        if chat[-1]["content"] != WAITING_TEXT:
            break  # the model is writing this answer and holds its lock
    assert llm.lock.locked()
    # Meanwhile another visitor's list question is answered by code, without the model.
    *_, (chat, sources, turns, unfinished) = answer("Which papers reuse KV caches?", [], [])
    assert llm.lock.locked() and unfinished is False
    assert sources["value"].count("**&#91;") >= 2  # several cited papers, listed by code
    writing.close()


def test_a_full_queue_says_busy_instead_of_waiting_forever(make_engine, monkeypatch):
    import gradio as gr

    from ui import app

    engine = make_engine(ui=UISettings(queue_size=2))
    page = build(engine)
    check_room, accept = page_fn(page, "check_room"), page_fn(page, "accept")
    monkeypatch.setattr(app, "queue_length", lambda page: 2)
    notice, ok = check_room(False)
    assert notice.startswith("The page is busy: 2 questions are waiting") and ok is False
    monkeypatch.setattr(app, "queue_length", lambda page: 1)
    assert check_room(False) == ("", True)
    notice, ok = check_room(True)  # this tab's previous answer is still running
    assert "still being answered" in notice and ok is False
    # A question not taken ends the chain before accept() (the notice says why)...
    with pytest.raises(gr.Error):
        page_fn(page, "stop_unless_room")(False)
    page_fn(page, "stop_unless_room")(True)
    chat, box, pending, answering = accept(QUESTION, [])
    assert chat[-1]["content"] == WAITING_TEXT and pending == QUESTION and answering is True
    # ... and accept() and the answer only run after the step before succeeded.
    follow = [f for f in page.fns.values() if f.name in ("accept", "answer")]
    assert len(follow) == 4 and all(f.trigger_only_on_success for f in follow)
