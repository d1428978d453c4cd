"""The chat web page (Gradio): streamed answers with their cited papers, and the collection itself."""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Gradio calls home at launch unless this is set before it is imported.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

from rag import (
    ABSTAIN_TEXT,
    Answer,
    CorpusError,
    EmbeddingError,
    EmbeddingModelError,
    Engine,
    LLMError,
    QuestionError,
    Settings,
    StoreError,
)
from rag.catalog import Catalog
from rag.llm import Message

log = logging.getLogger(__name__)

# Questions the default collection answers (checked by tests/test_integration.py).
EXAMPLES = [
    "What prefill speed does mllm-NPU reach?",
    "How does CacheBlend reuse KV caches?",
    "What context length does Qwen2.5-1M support?",
]
#: Shown in the answer bubble until the first words arrive.
WAITING_TEXT = "_Searching the papers…_"
#: Shown instead of queueing a question when the queue is full (PAPERCHAT_UI__QUEUE_SIZE).
BUSY_TEXT = ("The page is busy: {waiting} waiting, the most it keeps. Try again in a minute; "
             "your question is still in the box.")
#: Shown when a question is sent while this conversation's previous answer is still being written.
STILL_ANSWERING_TEXT = "The previous question is still being answered: wait for it, or press Stop."
#: Replaces a bubble whose answer was stopped before it began.
STOPPED_TEXT = "_Stopped._"
#: Follows a draft that was stopped: the checks and citations come only with a finished answer.
STOPPED_DRAFT_NOTE = "_Stopped: this draft was not checked against the papers._"
#: The abstention as the chat shows it: a heading a reader cannot mistake for an answer.
ABSTAIN_MARKDOWN = f"🚫 **Not in the collection.** {ABSTAIN_TEXT}"
#: The paper list shows at most this many rows; searching narrows it.
MAX_ROWS = 500
# Answers run up to ui_concurrency at a time: retrieval and the answers code writes (quotes, lists,
# abstentions) do not wait behind the model, while the embedded model itself writes one answer at a
# time (its lock, rag/llm.py). Uploads run one at a time in their own slot.
ANSWER_SLOT = "answer"
INGEST_SLOT = "ingest"

CSS = """
#sources.abstained { background: var(--background-fill-secondary); border-left: 4px solid #b45309;
  padding: 0.5em 1em; }
#sources .timing { color: var(--body-text-color-subdued); font-size: 0.85em; }
"""


def escape(text: str) -> str:
    """Model and abstract text is shown as text: no markup from it reaches the page.

    Brackets are escaped too, so ``[1]`` stays a citation marker instead of Markdown link syntax.
    """
    return html.escape(text).replace("[", "&#91;").replace("]", "&#93;")


def _link(title: str, url: str | None) -> str:
    if url and url.startswith(("https://", "http://")):
        return f'<a href="{html.escape(url, quote=True)}" target="_blank" rel="noopener">{escape(title)}</a>'
    return escape(title)


def _timing(answer: Answer) -> str:
    t = answer.timings
    return (f'<span class="timing">first words {t.get("first_token_s", 0):.1f} s · '
            f'complete {t.get("total_s", 0):.1f} s</span>')


def answer_markdown(answer: Answer) -> str:
    """The checked answer as the chat bubble shows it."""
    if answer.abstained:
        # A near miss names the paper it checked and what that paper does say.
        rest = answer.text.removeprefix(ABSTAIN_TEXT).strip()
        return ABSTAIN_MARKDOWN + (f" {escape(rest)}" if rest else "")
    return escape(answer.text)


def format_sources(answer: Answer) -> str:
    """The cited papers under an answer (number, title, supporting passage), or the abstention notice."""
    if answer.abstained:
        lines = ["**Not in the collection.** No paper in the collection supports an answer to this question."]
        if answer.sources:
            lines += ["", "Closest papers checked:"]
            lines += [f"- {_link(h.title, h.url)}" for h in answer.sources[:3]]
    else:
        lines = ["**Sources**", ""]
        for c in answer.citations:
            lines.append(f"**&#91;{c.n}&#93;** {_link(c.title, c.url)}  \n> {escape(c.quote)}")
            lines.append("")
    return "\n".join([*lines, "", _timing(answer)])


def error_message(error: Exception) -> str:
    """A readable chat message for a failure; the traceback goes to the server log only."""
    if isinstance(error, QuestionError):
        return f"⚠️ {escape(str(error))}"
    if isinstance(error, LLMError):
        return f"⚠️ The language model failed: {escape(str(error))}"
    if isinstance(error, StoreError):
        return f"⚠️ The paper store cannot be read: {escape(str(error))}"
    if isinstance(error, (EmbeddingError, EmbeddingModelError)):
        return f"⚠️ The embedding model failed: {escape(str(error))}"
    return f"⚠️ Something went wrong ({type(error).__name__}): {escape(str(error))}. The details are in the server log."


def respond(
    engine: Engine, message: str, turns: list[Message], chat: list[dict[str, Any]]
) -> Iterator[tuple[list[dict[str, Any]], str, list[Message], bool]]:
    """Stream one answer into the chat, then replace it by the checked answer with its sources.

    ``turns`` is the conversation as the engine sees it (plain questions and checked answers);
    ``chat`` is what the page shows. Yields (chat, sources Markdown, turns, abstained).
    """
    asked = [*chat, {"role": "user", "content": escape(message)}]

    def shown(content: str) -> list[dict[str, Any]]:
        return [*asked, {"role": "assistant", "content": content}]  # a new list per update

    yield shown(WAITING_TEXT), "", turns, False
    text = ""
    try:
        for item in engine.ask_stream(message, turns):
            if isinstance(item, Answer):
                turns = [*turns, {"role": "user", "content": message}, {"role": "assistant", "content": item.text}]
                yield shown(answer_markdown(item)), format_sources(item), turns, item.abstained
                return
            text += item
            yield shown(escape(text)), "", turns, False
    except Exception as e:  # the page shows a readable message, never a stack trace
        if not isinstance(e, QuestionError):
            log.exception("answering %r failed", message)
        yield shown(error_message(e)), "", turns, False


def _message_text(message: dict[str, Any]) -> str:
    """A chat message's text, as set here (a string) or as the page sends it back (text parts)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content or [] if isinstance(part, dict))


def stopped_chat(chat: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat after Stop: the last answer bubble says it was stopped."""
    if not chat or chat[-1].get("role") != "assistant":
        return chat
    draft = _message_text(chat[-1])
    text = STOPPED_TEXT if draft in ("", WAITING_TEXT) else f"{draft}\n\n{STOPPED_DRAFT_NOTE}"
    return [*chat[:-1], {"role": "assistant", "content": text}]


def queue_length(page: gr.Blocks) -> int | None:
    """Questions waiting in the page's queue (None before the queue is set up)."""
    queue = getattr(page, "_queue", None)  # Gradio's own queue; it has no public length
    try:
        return len(queue) if queue is not None else None
    except TypeError:
        return None


def header_markdown(catalog: Catalog) -> str:
    """Title and one line about the collection."""
    n = catalog.paper_count()
    return (f"# paperchat\nAsk about the **{n} papers** in the collection. Every claim cites its paper; "
            "a question the papers do not answer gets a plain “not in the collection”.")


def paper_rows(catalog: Catalog, query: str = "") -> tuple[list[list[str]], str]:
    """Rows (title, source file, id) of the papers whose title contains ``query`` (or whose id it is),
    and a count line."""
    q = query.strip()
    found, matched = catalog.find_papers(q, MAX_ROWS)
    rows = [[p.title, p.source, p.id] for p in found]
    total = catalog.paper_count() if q else matched
    shown = f"{matched} of {total} papers" + (f" match “{escape(q)}”" if q else "")
    if matched > MAX_ROWS:
        shown += f"; the first {MAX_ROWS} are listed, search to narrow"
    return rows, shown


def add_papers(engine: Engine, file: str | None, progress: Any = None) -> str:
    """Ingest an uploaded collection file; returns the message for the page."""
    if not file:
        return "⚠️ Choose a file first (JSONL, or title and abstract lines)."
    name = Path(file).name
    s = engine.settings
    if Path(file).stat().st_size > s.ui.max_upload_mb << 20:
        return f"⚠️ Nothing was added: {escape(name)} is larger than {s.ui.max_upload_mb} MB; use paperchat ingest."

    written = [0]  # papers gone through, for a failure half way

    def on_progress(done: int, total: int) -> None:
        written[0] = done
        if progress is not None:
            progress((done, total), desc=f"Adding {name}", unit="papers")

    try:
        # The whole file is checked (and counted) before anything is stored.
        (report,) = engine.ingest([file], progress=False, on_progress=on_progress, max_papers=s.ui.max_upload_papers)
    except CorpusError as e:
        if e.line is None and "holds more than" in e.message:
            return (f"⚠️ Nothing was added: {escape(name)} {escape(e.message)}, the most the page takes; "
                    "use paperchat ingest.")
        # The upload's temporary path means nothing to the user: name the file they chose.
        where = f"{name}:{e.line}" if e.line else name
        return f"⚠️ Nothing was added; the collection is unchanged. {escape(where)}: {escape(e.message)}"
    except Exception as e:
        log.exception("ingesting %s failed", name)
        if written[0]:  # a full disk or a lost server half way: what was written stays, whole
            engine.prefiller.in_background()
            return (f"⚠️ Adding {escape(name)} stopped after {written[0]} papers (those are in the collection; "
                    f"adding the file again adds the rest): {escape(str(e))}")
        return f"⚠️ Nothing was added: {escape(str(e))}"
    if report.added or report.replaced:
        engine.prefiller.in_background()
    return (f"✅ {escape(name)}: {report.papers} papers read, {report.added} added, {report.replaced} replaced, "
            f"{report.unchanged} already in the collection.")


def build(engine: Engine) -> gr.Blocks:
    """The page, bound to an engine."""
    catalog = Catalog(engine.store)  # one for the page: its paper count is kept until a write
    with gr.Blocks(title="paperchat") as page:
        header = gr.Markdown(header_markdown(catalog), elem_id="header")
        turns = gr.State([])  # the conversation as the engine sees it
        pending = gr.State("")  # the question between accept() and answer()
        answering = gr.State(False)  # from accept() until answer() finished: still True after Stop
        room = gr.State(True)  # whether check_room() let the question through
        with gr.Tab("Chat"):
            with gr.Row():
                with gr.Column(scale=3):
                    chatbot = gr.Chatbot(height=520, sanitize_html=True, label="Chat", elem_id="chat",
                                         buttons=["copy"])
                    with gr.Row():
                        box = gr.Textbox(placeholder="Ask a question about the papers and press Enter…",
                                         show_label=False, autofocus=True, scale=5, elem_id="question",
                                         max_length=engine.settings.answer.max_question_chars)
                        ask = gr.Button("Ask", variant="primary", scale=1, min_width=80, elem_id="ask")
                        stop = gr.Button("Stop", variant="stop", scale=1, min_width=80, elem_id="stop")
                    notice = gr.Markdown(elem_id="notice")  # why a question was not taken (busy)
                    with gr.Row():
                        gr.Examples(EXAMPLES, inputs=box, label="Try")
                        clear = gr.Button("Clear conversation", size="sm", scale=0, elem_id="clear")
                with gr.Column(scale=2):
                    sources = gr.Markdown("_The papers an answer cites appear here, with the passage behind "
                                          "each claim._", elem_id="sources")
        with gr.Tab("Papers", elem_id="papers-tab"):
            rows, count = paper_rows(catalog)
            with gr.Row():
                search = gr.Textbox(placeholder="Search titles…", show_label=False, scale=4, elem_id="search")
                count_md = gr.Markdown(count, elem_id="paper-count")
            table = gr.Dataframe(value=rows, headers=["Title", "From file", "Id"], interactive=False,
                                 wrap=True, max_height=480, elem_id="paper-list")
            gr.Markdown("**Add papers**: a JSONL file (`title`, `abstract`, optional `id`, `url`, `authors`, "
                        "`year` per line; rows of the arXiv metadata snapshot work as they are) or a text file of "
                        "title and abstract lines. The whole file is checked before anything is stored.")
            upload = gr.File(label="Collection file", file_types=[".jsonl", ".json", ".txt"], elem_id="upload")
            add = gr.Button("Add to the collection", elem_id="add")
            status = gr.Markdown(elem_id="ingest-status")

        def check_room(busy: bool) -> tuple[str, bool]:
            # A full queue would refuse the answer and leave its bubble waiting forever, and two
            # answers streaming into one conversation would overwrite each other: such a question
            # is not taken, and stays in the box. The reason is written on the page: Gradio shows
            # an error raised by an unqueued event as a bare "Error" badge, without its text.
            if busy:
                return STILL_ANSWERING_TEXT, False
            waiting = queue_length(page)
            if waiting is not None and waiting >= engine.settings.ui.queue_size:
                count = "1 question is" if waiting == 1 else f"{waiting} questions are"
                return BUSY_TEXT.format(waiting=count), False
            return "", True

        def stop_unless_room(ok: bool) -> None:
            if not ok:  # ends the chain before accept(); check_room() said why
                raise gr.Error("no room for the question", visible=False)

        def accept(message: str, chat: list[dict[str, Any]]) -> tuple[Any, ...]:
            # Not queued: the question shows at once, also while it waits for another user's answer
            # (the bubble then shows its place in the queue).
            shown = [*(chat or []), {"role": "user", "content": escape(message)},
                     {"role": "assistant", "content": WAITING_TEXT}]
            return shown, "", message, True

        def answer(message: str, state: list[Message], chat: list[dict[str, Any]]) -> Iterator[tuple[Any, ...]]:
            before = (chat or [])[:-2]  # respond() adds the question and the answer bubble itself
            # Stop makes Gradio close this generator at a yield. The generators below it (respond,
            # the engine's answer, the model's stream) have no other owner, so they close with it
            # and the model's lock is released for the next question in the queue.
            # One step behind, so the last update (the checked answer) is the one that says "finished";
            # an API client's result is that last update (the draft shows one delta later).
            last: tuple[Any, ...] | None = None
            for shown, src, new_state, abstained in respond(engine, message, state or [], before):
                if last is not None:
                    yield *last, True
                last = (shown, gr.update(value=src, elem_classes=["abstained"] if abstained else []), new_state)
            if last is not None:
                yield *last, False

        def after_answer(chat: list[dict[str, Any]], unfinished: bool) -> tuple[Any, ...]:
            # Runs after every answer, finished or stopped; only a stopped one is still unfinished.
            return (stopped_chat(chat or []), False) if unfinished else (gr.skip(), gr.skip())

        answers: list[Any] = []
        for trigger in (box.submit, ask.click):
            answered = trigger(check_room, answering, [notice, room], queue=False).then(
                stop_unless_room, room, None, queue=False).success(
                accept, [box, chatbot], [chatbot, box, pending, answering], queue=False).success(
                answer, [pending, turns, chatbot], [chatbot, sources, turns, answering],
                concurrency_id=ANSWER_SLOT, concurrency_limit=engine.settings.ui.concurrency)
            answered.then(after_answer, [chatbot, answering], [chatbot, answering], queue=False)
            answers.append(answered)
        # Cancels a running answer (or one still waiting in the queue); see answer() for the model.
        stop.click(None, None, None, cancels=answers, queue=False)

        def reset() -> tuple[Any, ...]:
            return [], gr.update(value="", elem_classes=[]), []

        # The chat's own trash icon clears the shown messages; the engine's history goes with them.
        clear.click(reset, None, [chatbot, sources, turns], queue=False)
        chatbot.clear(reset, None, [chatbot, sources, turns], queue=False)

        def list_papers(query: str) -> tuple[list[list[str]], str]:
            return paper_rows(catalog, query)

        search.change(list_papers, search, [table, count_md], show_progress="hidden")

        def on_load() -> tuple[Any, ...]:
            # Read per visit, not once at build: a visitor after an upload sees the new count.
            rows, count = paper_rows(catalog)
            return header_markdown(catalog), rows, count

        page.load(on_load, None, [header, table, count_md], show_progress="hidden")

        def add_file(file: str | None, query: str, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:
            message = add_papers(engine, file, progress)
            rows, count = paper_rows(catalog, query)
            return message, rows, count, header_markdown(catalog), None  # None: the file box is ready again

        add.click(add_file, [upload, search], [status, table, count_md, header, upload],
                  concurrency_id=INGEST_SLOT, concurrency_limit=1)
    return page


LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def check_exposure(settings: Settings, allow_without_login: bool = False) -> None:
    """Refuse to serve beyond this machine without a login, unless the user says they mean it."""
    if settings.ui.host not in LOCAL_HOSTS and not settings.ui.username and not allow_without_login:
        raise ValueError(
            f"refusing to serve on {settings.ui.host} without a login: anyone on the network could use it. Set "
            "PAPERCHAT_UI__USERNAME and PAPERCHAT_UI__PASSWORD, or pass --no-login-on-network if you mean it"
        )


def launch_options(settings: Settings) -> dict[str, Any]:
    """Arguments for ``Blocks.launch``: address, optional login, and nothing that calls out."""
    auth = None
    if settings.ui.username and settings.ui.password:
        auth = (settings.ui.username, settings.ui.password.get_secret_value())
    return {"server_name": settings.ui.host, "server_port": settings.ui.port, "auth": auth, "show_error": False,
            "max_file_size": f"{settings.ui.max_upload_mb}mb",
            "css": CSS, "footer_links": [], "ssr_mode": False, "share": False}


def serve(engine: Engine, open_browser: bool = True, allow_without_login: bool = False) -> None:
    """Serve the page on the configured host and port; answers run ``ui.concurrency`` at a time, others queue."""
    check_exposure(engine.settings, allow_without_login)
    engine.warm_up()
    engine.prefiller.in_background()  # saved prompt states: first words in ~1 s (see rag.prefill)
    page = build(engine)
    page.queue(max_size=engine.settings.ui.queue_size, default_concurrency_limit=1)
    page.launch(inbrowser=open_browser, **launch_options(engine.settings))
