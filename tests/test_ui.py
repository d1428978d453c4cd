from __future__ import annotations

from rag import ABSTAIN_TEXT, Answer
from rag.citations import Citation
from ui.app import format_sources, message_text, respond

from .test_answer import QUESTION, REPLY


def test_sources_are_listed_and_markup_stays_text():
    answer = Answer("q", "x [1].", [Citation(1, "p", "<b>Bold</b> [Title]", "<script>alert(1)</script>")], False, [])
    md = format_sources(answer)
    assert "&lt;b&gt;Bold&lt;/b&gt;" in md and "&lt;script&gt;" in md and "<script>" not in md
    assert "&#91;1&#93;" in md


def test_abstention_looks_different():
    answer = Answer("q", ABSTAIN_TEXT, [], True, [], abstain_reason="model")
    assert format_sources(answer).startswith("**Not in the collection.**")


def test_gradio_history_parts_become_text():
    assert message_text([{"type": "text", "text": "It is fast &#91;1&#93;."}]) == "It is fast [1]."
    assert message_text("plain") == "plain"


def test_respond_streams_then_shows_sources(make_engine):
    engine = make_engine(REPLY)
    updates = list(respond(engine, QUESTION, []))
    assert len(updates) > 3
    chat, sources = updates[-1]
    assert chat[0] == {"role": "user", "content": QUESTION}
    assert chat[-1]["content"].endswith("&#91;1&#93;.")
    assert "Empowering 1000 tokens/second" in sources


def test_errors_are_shown_as_messages(make_engine):
    engine = make_engine()
    chat, _ = list(respond(engine, "   ", []))[-1]
    assert chat[-1]["content"] == "⚠️ the question is empty"
