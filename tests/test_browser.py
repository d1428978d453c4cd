"""The chat page end to end: `paperchat serve` with the real models, driven by headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest

from eval.browser import (
    BOT_MESSAGES,
    CHROMIUM,
    WAITING_TEXT,
    ask,
    chromium,
    clear,
    free_port,
    open_page,
    running_app,
    serving,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    # CI sets PAPERCHAT_REQUIRE_BROWSER=1, so there a missing browser fails instead of skipping.
    pytest.mark.skipif(shutil.which(CHROMIUM) is None and not os.environ.get("PAPERCHAT_REQUIRE_BROWSER"),
                       reason=f"no Chromium at {CHROMIUM} (apt install chromium)"),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    # A few saved prompt states are computed in the background (all 71 take ~3 min on 2 cores).
    with running_app(tmp_path_factory.mktemp("served"), env={"PAPERCHAT_LLM__PREFILL_PAPERS": "8"}) as served:
        yield served.url


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def page(app, browser):
    page, outside = open_page(browser, app)
    yield page
    assert outside == [], f"the page fetched from other hosts: {outside}"
    page.close()


def test_question_streams_a_cited_answer_then_follow_up_and_clear(page):
    assert "71 papers" in page.inner_text("#header")
    turn = ask(page, "How does CacheBlend reuse KV caches?")
    print(f"\nbrowser: first words {turn.first_words_s:.2f} s, complete answer {turn.complete_s:.2f} s")
    assert "[1]" in turn.answer
    assert "[1] CacheBlend: Fast Large Language Model Serving for RAG with Cached Knowledge Fusion" in turn.sources
    assert turn.first_words_s <= turn.complete_s

    follow = ask(page, "By how much does it reduce the time to first token?")
    print(f"browser follow-up: first words {follow.first_words_s:.2f} s, complete {follow.complete_s:.2f} s")
    assert "Not in the collection" not in follow.answer, follow.answer
    assert "CacheBlend" in follow.sources.split("\n\n")[1], follow.sources  # the first cited paper

    clear(page)
    assert page.inner_text("#sources").strip() == ""


def test_unanswerable_question_shows_the_abstention(page):
    turn = ask(page, "What is the capital of France?")
    assert turn.answer.startswith("🚫 Not in the collection.")
    assert "Sources" not in turn.sources and "No paper in the collection supports" in turn.sources
    assert "abstained" in page.get_attribute("#sources", "class")


def test_markup_in_a_question_is_shown_as_text(page):
    ask(page, "<img src=x onerror=\"document.title='pwned'\"> What is the capital of France?")
    assert page.title() == "paperchat"
    assert page.locator("#chat img[src=x]").count() == 0
    assert "<img src=x" in page.locator("#chat [data-testid='user']").last.inner_text()


def test_two_users_at_once_are_both_answered(app, browser):
    pages = [open_page(browser, app)[0] for _ in range(2)]
    # The first answer must last long enough to be overlapped: saved prompt states answer the
    # Qwen2.5-1M question in ~1 s, CacheBlend's answer is long (~4 s).
    questions = ["How does CacheBlend reuse KV caches?", "What prefill speed does mllm-NPU reach?"]
    turns: dict[int, str] = {}
    errors: list[BaseException] = []

    # Playwright's sync API is single-threaded: submit both, then wait for each in turn. The second
    # is sent once the first is being answered; sent together, either could reach the page first.
    for i, (p, q) in enumerate(zip(pages, questions)):
        p.fill("#question textarea", q)
        p.press("#question textarea", "Enter")
        if i == 0:
            p.wait_for_function(f"""() => {{ const b = document.querySelectorAll("{BOT_MESSAGES}");
                return b.length && b[0].innerText.trim() && !b[0].innerText.includes("{WAITING_TEXT}"); }}""",
                                polling=50, timeout=60_000)
    # The second user sees their question at once, while the first is answered (the page works on
    # up to PAPERCHAT_UI__CONCURRENCY questions at once; the model writes one answer at a time).
    pages[1].wait_for_function(
        f"() => document.querySelector('#chat').innerText.includes({questions[1]!r})", polling=50, timeout=30_000)
    for i, p in enumerate(pages):
        try:
            p.wait_for_function("() => document.querySelector('#sources').innerText.includes('complete')",
                                polling=100, timeout=300_000)
            turns[i] = p.inner_text("#sources")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
    assert not errors and len(turns) == 2
    assert "CacheBlend: Fast Large Language Model Serving" in turns[0] and "Empowering 1000 tokens/second" in turns[1]
    for p in pages:
        p.close()


def test_papers_tab_lists_searches_and_adds_files(page, tmp_path):
    page.click("button[role=tab]:has-text('Papers')")
    assert page.inner_text("#paper-count").startswith("71 of 71 papers")
    page.fill("#search textarea", "CacheBlend")
    page.wait_for_function("() => document.querySelector('#paper-count').innerText.startsWith('1 of 71')")
    assert "CacheBlend: Fast Large Language Model Serving" in page.inner_text("#paper-list")

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "A new paper", "abstract": "About speculative decoding."}\n{"title": "broken"\n')
    page.set_input_files("#upload input[type=file]", str(bad))
    page.click("#add")
    page.wait_for_function("() => document.querySelector('#ingest-status').innerText.includes('Nothing was added')",
                           timeout=60_000)
    assert "bad.jsonl:2: not valid JSON" in page.inner_text("#ingest-status")
    assert "71 papers" in page.inner_text("#header")

    good = tmp_path / "new.jsonl"
    hostile = {"id": "hostile", "title": "HostileNet <img src=x onerror=\"document.title='pwned'\">",
               "abstract": "HostileNet <script>document.title='pwned'</script> drafts tokens "
                           "<img src=y onerror=\"document.title='pwned'\"> 4.2x faster than plain decoding."}
    good.write_text(json.dumps({"id": "tree-spec", "title": "TreeSpec: Tree Speculation for Browsers",
                                "abstract": "TreeSpec drafts a token tree and verifies it in one pass, 3.1x faster."})
                    + "\n" + json.dumps(hostile) + "\n")
    page.set_input_files("#upload input[type=file]", str(good))
    page.fill("#search textarea", "")
    page.click("#add")
    page.wait_for_function("() => document.querySelector('#ingest-status').innerText.includes('2 added')",
                           timeout=120_000)
    assert "73 papers" in page.inner_text("#header")
    page.wait_for_function("() => document.querySelector('#paper-count').innerText.startsWith('73 of 73')")
    page.fill("#search textarea", "treespec")  # the table only renders the rows in view
    page.wait_for_function("() => document.querySelector('#paper-count').innerText.startsWith('1 of 73')")
    assert "TreeSpec: Tree Speculation for Browsers" in page.inner_text("#paper-list")

    # Markup planted in a paper stays text wherever the page shows it: list, answer, sources.
    page.fill("#search textarea", "hostilenet")
    page.wait_for_function("() => document.querySelector('#paper-count').innerText.startsWith('1 of 73')")
    page.click("button[role=tab]:has-text('Chat')")
    turn = ask(page, "How much faster does HostileNet draft tokens?")
    assert "HostileNet <img src=x" in turn.sources, turn.sources
    assert page.title() == "paperchat"
    assert page.locator("#sources img, #chat img, #paper-list img").count() == 0


def test_a_full_queue_says_busy_with_the_count_and_keeps_the_question(browser, tmp_path):
    """One answer at a time and room for one waiting (PAPERCHAT_UI__CONCURRENCY=1, QUEUE_SIZE=1);
    the model is a llama.cpp server held with SIGSTOP, so the first answer stays running."""
    from tests.conftest import llama_server_cmd
    from tests.test_faults import MODEL_QUESTION

    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    env = {"PAPERCHAT_LLM__BASE_URL": url, "PAPERCHAT_LLM__MODEL": "qwen-0.5b", "PAPERCHAT_LLM__TIMEOUT_S": "300",
           "PAPERCHAT_UI__CONCURRENCY": "1", "PAPERCHAT_UI__QUEUE_SIZE": "1", "PAPERCHAT_LLM__PREFILL_PAPERS": "0"}
    with serving(llama_server_cmd(port), f"{url}/models", tmp_path / "llama.log", timeout=120) as server, \
            running_app(tmp_path / "served", env=env) as served:
        tabs = [open_page(browser, served.url)[0] for _ in range(3)]
        os.kill(server.pid, signal.SIGSTOP)
        try:
            # The first tab's answer runs (and waits for the stopped model); the second waits in the queue.
            for tab, question in zip(tabs, [MODEL_QUESTION, "How does CacheBlend reuse KV caches?"]):
                tab.fill("#question textarea", question)
                tab.press("#question textarea", "Enter")
                tab.wait_for_function(f"() => document.querySelector('#chat').innerText.includes({question!r})",
                                      polling=50, timeout=30_000)
                tab.wait_for_timeout(1000)  # the answer event reaches the queue after the question shows
            third = tabs[2]
            third.fill("#question textarea", "What prefill speed does mllm-NPU reach?")
            third.press("#question textarea", "Enter")
            third.wait_for_function("() => document.body.innerText.includes('The page is busy')",
                                    polling=50, timeout=30_000)
            assert "busy: 1 question is waiting" in third.inner_text("body")
            assert third.input_value("#question textarea") == "What prefill speed does mllm-NPU reach?"
            assert third.locator(BOT_MESSAGES).count() == 0  # no bubble left waiting forever
        finally:
            os.kill(server.pid, signal.SIGCONT)
        # The model continues: both accepted questions are answered, no restart.
        for tab in tabs[:2]:
            tab.wait_for_function("() => document.querySelector('#sources').innerText.includes('complete')",
                                  polling=100, timeout=300_000)
        assert "CacheBlend" in tabs[1].inner_text("#sources")
        for tab in tabs:
            tab.close()
