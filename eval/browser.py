"""Drive the chat page in a real headless browser: the end-to-end test and the page timings.

``python -m eval.browser`` starts ``paperchat serve`` on a free port (store in a temporary folder
unless ``--data-dir``), asks questions through Chromium as a user would (type, press Enter) and
reports the time from Enter to the first streamed words and to the complete answer with its sources.
Chromium is Debian's (``apt install chromium``), driven by the ``playwright`` package; no browser
is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("PAPERCHAT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WAITING_TEXT = "Searching the papers…"  # ui.app.WAITING_TEXT as rendered
QUESTIONS = [
    "How does CacheBlend reuse KV caches?",
    "What prefill speed does mllm-NPU reach?",
    "What context length does Qwen2.5-1M support?",
    "Which method packs prompts of different lengths together to speed up prefilling?",
    "What is the capital of France?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServedApp:
    url: str
    pid: int


@contextmanager
def serving(cmd: list[str], ready_url: str, log: Path, timeout: float = 600,
            env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """Run a server process until the block ends (its output to ``log``); wait until ``ready_url`` answers."""
    with log.open("a") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{' '.join(cmd[:4])} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
                try:
                    urllib.request.urlopen(ready_url, timeout=2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{ready_url} did not answer in {timeout:.0f} s") from None
                    time.sleep(0.3)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def running_app(data_dir: Path, env: dict[str, str] | None = None, timeout: float = 600) -> Iterator[ServedApp]:
    """Run ``paperchat serve`` in a subprocess on a free port; yield its URL and pid, stop it afterwards.

    The first start on an empty ``data_dir`` ingests the default collection and loads the model.
    """
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "PAPERCHAT_DATA_DIR": str(data_dir), "PAPERCHAT_UI__PORT": str(port), **(env or {})}
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "rag.cli", "serve", "--no-browser"]
    with serving(cmd, url, data_dir / "serve.log", timeout, full_env) as proc:
        yield ServedApp(url, proc.pid)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (playwright ``Browser``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Turn:
    """One question asked in the page, as the user saw it."""

    question: str
    answer: str  # the final text of the answer bubble
    sources: str  # the text of the sources panel
    first_words_s: float  # Enter → first streamed words in the answer bubble
    complete_s: float  # Enter → the checked answer and its sources shown


def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    """A new page at ``url`` and the list it appends every request for another host to."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside: list[str] = []
    host = url.split("/")[2]
    page.on("request", lambda r: outside.append(r.url)
            if r.url.split("/")[2:3] != [host] and not r.url.startswith(("data:", "blob:")) else None)
    page.goto(url, wait_until="domcontentloaded")  # Gradio keeps connections open: no "networkidle"
    page.wait_for_selector("#question textarea", timeout=60_000)
    return page, outside


BOT_MESSAGES = "#chat [data-testid='bot']"


def ask(page: Any, question: str, timeout_s: float = 300) -> Turn:
    """Type a question, press Enter, and wait for the streamed answer and then its sources."""
    n_before = page.locator(BOT_MESSAGES).count()
    previous_sources = page.inner_text("#sources")
    page.fill("#question textarea", question)
    start = time.perf_counter()
    page.press("#question textarea", "Enter")
    timeout = timeout_s * 1000
    # Polled in the page: the first text in the new answer bubble that is not the waiting line.
    page.wait_for_function(
        """([sel, n, waiting]) => { const b = document.querySelectorAll(sel);
             return b.length > n && b[n].innerText.trim() && !b[n].innerText.includes(waiting); }""",
        arg=[BOT_MESSAGES, n_before, WAITING_TEXT], polling=50, timeout=timeout)
    first = time.perf_counter() - start
    page.wait_for_function(
        """([prev]) => { const s = document.querySelector('#sources').innerText;
             return s.includes('complete') && s !== prev; }""",
        arg=[previous_sources], polling=50, timeout=timeout)
    complete = time.perf_counter() - start
    return Turn(question, page.locator(BOT_MESSAGES).nth(n_before).inner_text(), page.inner_text("#sources"),
                first, complete)


def clear(page: Any) -> None:
    """Press *Clear conversation* and wait until the chat is empty."""
    page.click("#clear")
    page.wait_for_function(f"() => document.querySelectorAll(\"{BOT_MESSAGES}\").length === 0", timeout=10_000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.browser", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="store to serve (default: a fresh temporary one)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds over the questions (default 3)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "browser.json")
    parser.add_argument("--screenshot", type=Path, help="save a screenshot of the first answer here (PNG)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp)
        # The saved prompt states `serve` computes in the background at its first start: computed
        # here first, so the timings are those of a page that has been running for a few minutes.
        from rag import Engine, Settings

        engine = Engine(Settings(data_dir=data_dir))
        engine.warm_up()
        engine.prefiller.prefill_papers()
        del engine
        with running_app(data_dir) as app, chromium() as browser:
            page, outside = open_page(browser, app.url)
            ask(page, QUESTIONS[0])  # warm: the first answer also fills llama.cpp's prompt cache
            if args.screenshot:
                page.screenshot(path=str(args.screenshot))
            turns: list[Turn] = []
            for r in range(args.repeat):
                for q in QUESTIONS:
                    clear(page)
                    turn = ask(page, q)
                    turns.append(turn)
                    print(f"round {r + 1}: first words {turn.first_words_s:5.2f} s, complete {turn.complete_s:5.2f} s"
                          f"  {q}", flush=True)
    answered = [t for t in turns if "Not in the collection" not in t.answer]
    summary = {
        "questions": len(turns),
        "answered": len(answered),
        "first_words_median_s": round(statistics.median(t.first_words_s for t in answered), 2),
        "complete_median_s": round(statistics.median(t.complete_s for t in answered), 2),
        "abstention_complete_median_s": round(statistics.median(
            [t.complete_s for t in turns if t not in answered] or [0.0]), 2),
        "requests_to_other_hosts": outside,
    }
    print(json.dumps(summary, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "turns": [asdict(t) for t in turns]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
