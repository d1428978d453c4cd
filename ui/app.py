"""The chat web page (Gradio): streamed answers with their cited papers."""

from __future__ import annotations

import html
import os
from collections.abc import Iterator
from typing import Any

# Gradio calls home at launch unless this is set before it is imported.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

from rag import Answer, Engine, QuestionError

EXAMPLES = [
    "What prefill speed does mllm-NPU reach?",
    "How does CacheBlend reuse KV caches?",
    "What context length does Qwen2.5-1M support?",
]


def _escape(text: str) -> str:
    """Model and abstract text is shown as text: no markup from it reaches the page."""
    return html.escape(text).replace("[", "&#91;").replace("]", "&#93;")


def format_sources(answer: Answer) -> str:
    """The cited papers under an answer, or the abstention notice, as Markdown."""
    if answer.abstained:
        return "**Not in the collection.** No paper retrieved for this question supports an answer."
    lines = ["**Sources**", ""]
    for c in answer.citations:
        title = _escape(c.title)
        lines.append(f"**&#91;{c.n}&#93;** {title}  \n> {_escape(c.quote)}")
    return "\n".join(lines)


def message_text(content: Any) -> str:
    """Plain text of a chat message as Gradio hands it back (a string or a list of parts)."""
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return html.unescape(str(content))


def respond(engine: Engine, message: str, history: list[dict[str, Any]]) -> Iterator[tuple[list[dict[str, Any]], str]]:
    """Stream one answer into the chat, then show it checked, with its sources."""
    past = [{"role": m["role"], "content": message_text(m["content"])}
            for m in history if m.get("role") in ("user", "assistant")]
    chat = [*history, {"role": "user", "content": message}, {"role": "assistant", "content": "…"}]
    yield chat, ""
    text = ""
    try:
        for item in engine.ask_stream(message, past):
            if isinstance(item, Answer):
                chat[-1] = {"role": "assistant", "content": _escape(item.text)}
                yield chat, format_sources(item)
                return
            text += item
            chat[-1] = {"role": "assistant", "content": _escape(text)}
            yield chat, ""
    except QuestionError as e:
        chat[-1] = {"role": "assistant", "content": f"⚠️ {_escape(str(e))}"}
        yield chat, ""
    except Exception as e:  # noqa: BLE001 - the page shows a readable message, never a stack trace
        chat[-1] = {"role": "assistant", "content": f"⚠️ Something went wrong: {_escape(str(e))}"}
        yield chat, ""


def build(engine: Engine) -> gr.Blocks:
    """The page, bound to an engine."""
    n = len(engine.store.papers())
    with gr.Blocks(title="paperchat") as page:
        gr.Markdown(f"# paperchat\nAsk about the {n} papers in the collection. Every claim is cited; "
                    "questions the papers do not answer get a plain “not in the collection”.")
        chatbot = gr.Chatbot(height=420, sanitize_html=True, label="Chat")
        sources = gr.Markdown()
        box = gr.Textbox(placeholder="Ask a question about the papers…", show_label=False, autofocus=True)
        with gr.Row():
            clear = gr.Button("Clear conversation")
        gr.Examples(EXAMPLES, inputs=box)

        def submit(message: str, history: list[dict[str, Any]]) -> Iterator[tuple[Any, str, str]]:
            for chat, src in respond(engine, message, history or []):
                yield chat, src, ""

        box.submit(submit, [box, chatbot], [chatbot, sources, box], concurrency_limit=1)
        clear.click(lambda: ([], ""), None, [chatbot, sources])
    return page


def serve(engine: Engine, open_browser: bool = False) -> None:
    """Serve the page on the configured host and port; one model request runs at a time."""
    engine.warm_up()
    page = build(engine)
    page.queue(max_size=32, default_concurrency_limit=1)
    page.launch(server_name=engine.settings.host, server_port=engine.settings.port, inbrowser=open_browser,
                show_error=False)
