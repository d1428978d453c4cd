"""Many users at once, and many questions in a row: ``python -m eval.load`` (also ``paperchat bench --load``
/ ``paperchat bench --soak``).

    python -m eval.load                      # both parts at full size (for a quiet machine)
    python -m eval.load --users 1,4,8,16     # load only: N concurrent chat sessions against the page
    python -m eval.load --soak 1000          # soak only: 1000 questions through one engine, in-process
    python -m eval.load --load --soak 1000   # both, sizes chosen

Load: for each N in ``--users`` the page (``paperchat serve``) is started once, in a subprocess, and N
gradio_client sessions ask at the same moment, each about its own paper ("What does CacheBlend do?") and
then a follow-up with a pronoun ("How much faster is it?"), through the page's own API (``/accept`` then
``/answer``, as tests/test_load.py). Per N: answers/min (answers / wall time), p50 and p90 wait (submit of
``/answer`` to its final result), errors (exceptions such as "queue full", and the page's ⚠️ messages),
follow-ups whose sources name the session's own paper (k of n) and the server's RSS (start / peak / end,
polled every 0.5 s). Writes OUT/load.json and OUT/load.md.

Soak: ``--soak N`` questions in a row through one ``rag.Engine`` (default settings, warmed as
``paperchat serve`` warms it), cycling through a mix of question types from eval/questions.jsonl and the
English rows of eval/questions-chat.jsonl; follow-ups are asked after their earlier questions, with those
answers as history (as the evals do), and every call counts as one question. Per question: latency, RSS,
open files, errors (counted; the run goes on). Writes OUT/soak.json and OUT/soak.png.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .suite import RESULTS, p90

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

DEFAULT_USERS = (1, 4, 8, 16)
DEFAULT_SOAK = 1000
#: One paper per session, named by a word that occurs in that title only (checked by check_papers).
PAPERS = {
    "CacheBlend": "CacheBlend: Fast Large Language Model Serving for RAG with Cached Knowledge Fusion",
    "TurboRAG": "TurboRAG: Accelerating Retrieval-Augmented Generation with Precomputed KV Caches for Chunked Text",
    "LazyLLM": "LazyLLM: Dynamic Token Pruning for Efficient Long Context LLM Inference",
    "DistServe": "DistServe: Disaggregating Prefill and Decoding for Goodput-optimized Large Language Model Serving",
    "ZipVL": "ZipVL: Efficient Large Vision-Language Models with Dynamic Token Sparsification and KV Cache "
             "Compression",
    "LServe": "LServe: Efficient Long-sequence LLM Serving with Unified Sparse Attention",
    "SwiftKV": "SwiftKV: Fast Prefill-Optimized Inference with Knowledge-Preserving Model Transformation",
    "FastKV": "FastKV: KV Cache Compression for Fast Long-Context Processing with Token-Selective Propagation",
    "MInference": "MInference 1.0: Accelerating Pre-filling for Long-Context LLMs via Dynamic Sparse Attention",
    "CritiPrefill": "CritiPrefill: A Segment-wise Criticality-based Approach for Prefilling Acceleration in LLMs",
    "MagicDec": "MagicDec: Breaking the Latency-Throughput Tradeoff for Long Context Generation with "
                "Speculative Decoding",
    "KV-Runahead": "KV-Runahead: Scalable Causal LLM Inference by Parallel Key-Value Cache Generation",
    "BatchLLM": "BatchLLM: Optimizing Large Batched LLM Inference with Global Prefix Sharing and "
                "Throughput-oriented Token Batching",
    "DroidSpeak": "DroidSpeak: Enhancing Cross-LLM Communication",
    "FlatQuant": "FlatQuant: Flatness Matters for LLM Quantization",
    "Prepacking": "Prepacking: A Simple Method for Fast Prefilling and Increased Throughput in Large Language "
                  "Models",
}
FIRST_QUESTION = "What does {name} do?"
FOLLOW_UP = "How much faster is it?"
#: Asked after the follow-up when --questions-per-session is above 2 (cycled).
MORE_QUESTIONS = ["What context length do the Qwen2.5-1M models extend to?",
                  "What prefill speed does mllm-NPU reach?", "Which method packs prompts of different lengths "
                  "together to speed up prefilling?"]
WARM_QUESTION = "What does mllm-NPU do?"  # not about any session's paper
REQUEST_TIMEOUT_S = 900.0
RSS_POLL_S = 0.5
ERROR_MARK = "⚠️"  # ui.app.error_message's prefix
ABSTAIN_MARK = "Not in the collection"


# ----- small pure helpers ------------------------------------------------------------------------
def parse_users(text: str) -> list[int]:
    """``"1,4,8"`` -> [1, 4, 8]: positive, at most one session per paper."""
    try:
        users = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--users wants numbers separated by commas, not {text!r}") from None
    if not users or any(not 1 <= n <= len(PAPERS) for n in users):
        raise argparse.ArgumentTypeError(f"--users wants numbers from 1 to {len(PAPERS)}, not {text!r}")
    return users


def session_questions(name: str, per_session: int) -> list[str]:
    """A session's questions: its paper, the pronoun follow-up, then other questions (cycled)."""
    questions = [FIRST_QUESTION.format(name=name), FOLLOW_UP]
    questions += [MORE_QUESTIONS[i % len(MORE_QUESTIONS)] for i in range(max(0, per_session - 2))]
    return questions[:per_session]


def check_papers(titles: list[str], papers: dict[str, str] = PAPERS) -> list[str]:
    """Problems with the session papers in a collection: missing titles, names in other titles too."""
    problems = [f"{name}: no paper titled {title!r}" for name, title in papers.items() if title not in titles]
    for name, title in papers.items():
        others = [t for t in titles if t != title and name.lower() in t.lower()]
        if others:
            problems.append(f"{name}: also in {others[0]!r}")
    return problems


def message_text(message: Any) -> str:
    """A chat message's text, whether its content is a string or a list of text parts."""
    if not isinstance(message, dict):
        return str(message or "")
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("value") or "")
    return "".join(str(p.get("text") or "") for p in content or [] if isinstance(p, dict))


def sources_text(sources: Any) -> str:
    """The sources panel's Markdown (a gr.update() arrives as a dict with its value), unescaped."""
    if isinstance(sources, dict):
        sources = sources.get("value", "")
    return html.unescape(str(sources or ""))


def paper_outcome(sources: str, own_title: str, other_titles: list[str]) -> str:
    """Whose paper a follow-up's sources name: "own", "other" (another session's paper and not the
    own one) or "none" (no session's paper); for an abstention "abstained-own" when the own paper is
    the first session paper among the closest papers checked (the conversation was followed, the
    detail not found), else "abstained"."""
    if ABSTAIN_MARK in sources:
        found = sorted((sources.find(t), t) for t in {own_title, *other_titles} if t in sources)
        return "abstained-own" if found and found[0][1] == own_title else "abstained"
    if own_title in sources:
        return "own"
    if any(t in sources for t in other_titles if t != own_title):
        return "other"
    return "none"


def is_queue_full(error: str) -> bool:
    low = error.lower()
    return "queue" in low and "full" in low


def load_summary(users: int, requests: list[dict[str, Any]], wall_s: float, rss: dict[str, int],
                 log_errors: int = 0) -> dict[str, Any]:
    """One N's figures from its requests (dicts with ``ok``, ``wait_s``, ``turn``, ``error``, ``outcome``)."""
    answered = [r for r in requests if r.get("ok")]
    waits = [r["wait_s"] for r in answered]
    errors = [r for r in requests if r.get("error")]
    follow = [r for r in requests if r.get("turn") == 1 and (r.get("ok") or r.get("error"))]
    outcomes = Counter(r.get("outcome", "error") for r in follow)
    first = [r for r in requests if r.get("turn") == 0 and r.get("ok")]
    return {
        "users": users,
        "requests": len(requests),
        "answers": len(answered),
        "wall_s": round(wall_s, 2),
        "answers_per_min": round(60 * len(answered) / wall_s, 2) if wall_s > 0 else 0.0,
        "wait_s_p50": round(statistics.median(waits), 2) if waits else None,
        "wait_s_p90": round(p90(waits), 2) if waits else None,
        "wait_s_max": round(max(waits), 2) if waits else None,
        "errors": len(errors),
        "skipped_after_error": sum(bool(r.get("skipped")) for r in requests),
        "queue_full": sum(is_queue_full(r["error"]) for r in errors),
        "error_messages": sorted({r["error"][:200] for r in errors}),
        "server_log_errors": log_errors,
        "first_on_own_paper": sum(r.get("outcome") == "own" for r in first),
        "first_answers": len(first),
        "follow_ups_own": outcomes.get("own", 0),
        "follow_ups": len(follow),
        "follow_up_outcomes": dict(sorted(outcomes.items())),
        "rss_mb_start": round(rss.get("start_kb", 0) / 1024),
        "rss_mb_peak": round(rss.get("peak_kb", 0) / 1024),
        "rss_mb_end": round(rss.get("end_kb", 0) / 1024),
    }


def _cell(v: Any) -> str:
    return "–" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def load_markdown(rows: list[dict[str, Any]], model: str = "") -> str:
    """The load table: one row per number of concurrent sessions."""
    lines = ["# paperchat load: concurrent chat sessions against the page", ""]
    if model:
        lines += [model, ""]
    lines += ["| users | answers | wall s | answers/min | wait p50 s | wait p90 s | errors (queue full) | "
              "follow-ups on own paper | server RSS MB start / peak / end |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        other = {k: v for k, v in r["follow_up_outcomes"].items() if k != "own"}
        detail = f" ({', '.join(f'{v} {k}' for k, v in other.items())})" if other else ""
        lines.append(f"| {r['users']} | {r['answers']}/{r['requests']} | {_cell(r['wall_s'])} | "
                     f"{_cell(r['answers_per_min'])} | {_cell(r['wait_s_p50'])} | {_cell(r['wait_s_p90'])} | "
                     f"{r['errors']} ({r['queue_full']}) | {r['follow_ups_own']} of {r['follow_ups']}{detail} | "
                     f"{r['rss_mb_start']} / {r['rss_mb_peak']} / {r['rss_mb_end']} |")
    errors = sorted({m for r in rows for m in r["error_messages"]})
    if errors:
        lines += ["", "Errors:", *[f"- {m}" for m in errors]]
    lines += ["", "Wait: from submitting `/answer` to its final result (the question waits in the page's queue "
              "while the one model answers another session). Answers/min: answers over the wall time from the "
              "sessions' common start to the last answer."]
    return "\n".join(lines) + "\n"


# ----- memory ------------------------------------------------------------------------------------
def rss_kb(pid: int | str = "self") -> int:
    """Resident memory of a process now (VmRSS), in kB; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmRSS")), 0)
    except OSError:
        return 0


def open_files(pid: int | str = "self") -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class RssPoller:
    """Samples a process's RSS every ``interval`` seconds in a thread; ``peak_kb`` is the largest."""

    def __init__(self, pid: int | str, interval: float = RSS_POLL_S, read: Callable[[int | str], int] = rss_kb):
        self.pid, self.interval, self.read = pid, interval, read
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-poller", daemon=True)
        self._t0 = time.monotonic()

    def _run(self) -> None:
        while True:
            self.samples.append((round(time.monotonic() - self._t0, 2), self.read(self.pid)))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.samples.append((round(time.monotonic() - self._t0, 2), self.read(self.pid)))

    @property
    def peak_kb(self) -> int:
        return max((kb for _, kb in self.samples), default=0)


# ----- load --------------------------------------------------------------------------------------
def ask_page(client: Any, question: str, chat: list, timeout: float) -> tuple[list, str, str, float]:
    """One question through the page's API: returns (chat, answer text, sources text, wait s)."""
    chat, _ = client.predict(question, chat, api_name="/accept")
    start = time.monotonic()
    job = client.submit(chat, api_name="/answer")
    chat, sources = job.result(timeout=timeout)
    wait = time.monotonic() - start
    answer = message_text(chat[-1]) if chat else ""
    return chat, answer, sources_text(sources), wait


def run_session(url: str, name: str, questions: list[str], timeout: float, start: threading.Barrier,
                out: list[dict[str, Any]], lock: threading.Lock) -> None:
    """One user: its questions in order, in one conversation. After an error the session stops (a
    follow-up without its first answer would measure nothing); the questions not asked are recorded."""
    from gradio_client import Client

    own = PAPERS[name]
    client = None
    try:
        client = Client(url, analytics_enabled=False, verbose=False)
    except Exception as e:  # noqa: BLE001 - counted as an error of every request of the session
        failure = f"connect: {type(e).__name__}: {e}"
    else:
        failure = ""
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass
    chat: list = []
    try:
        for turn, question in enumerate(questions):
            rec: dict[str, Any] = {"session": name, "turn": turn, "question": question, "ok": False}
            if failure:
                rec["error" if turn == 0 else "skipped"] = failure
            else:
                t0 = time.monotonic()
                try:
                    chat, answer, sources, wait = ask_page(client, question, chat, timeout)
                    rec.update(wait_s=round(wait, 3), total_s=round(time.monotonic() - t0, 3), answer=answer[:500],
                               sources=sources[:1500], at_s=round(time.monotonic(), 3))
                    if ERROR_MARK in answer:
                        rec["error"] = f"page: {answer[:200]}"
                        failure = rec["error"]
                    else:
                        rec["ok"] = True
                        rec["outcome"] = paper_outcome(sources, own, list(PAPERS.values())) if turn <= 1 else ""
                except Exception as e:  # noqa: BLE001 - counted and reported, never hidden
                    rec.update(error=f"{type(e).__name__}: {e}", total_s=round(time.monotonic() - t0, 3))
                    failure = rec["error"]
            with lock:
                out.append(rec)
    finally:
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass


def server_log_errors(text: str) -> int:
    """Tracebacks and ERROR lines in a piece of the server's log."""
    return sum(1 for line in text.splitlines() if line.startswith("Traceback") or " ERROR " in line
               or line.startswith("ERROR"))


def run_load(users: int, data_dir: Path, env: dict[str, str], per_session: int, timeout: float = REQUEST_TIMEOUT_S,
             warm: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]], list[tuple[float, int]]]:
    """Start the page, run ``users`` concurrent sessions, stop it; returns (summary, requests, RSS samples)."""
    from .browser import running_app

    log = data_dir / "serve.log"
    log_start = log.stat().st_size if log.exists() else 0
    t = time.monotonic()
    with running_app(data_dir, env=env) as app:
        ready_s = time.monotonic() - t
        if warm:  # the first answer also loads what the start left cold: not part of the measure
            from gradio_client import Client

            client = Client(app.url, analytics_enabled=False, verbose=False)
            try:
                ask_page(client, WARM_QUESTION, [], timeout)
            finally:
                client.close()
        rss_start = rss_kb(app.pid)
        requests: list[dict[str, Any]] = []
        lock = threading.Lock()
        names = list(PAPERS)[:users]
        barrier = threading.Barrier(users + 1)
        threads = [threading.Thread(target=run_session, name=f"session-{n}", daemon=True,
                                    args=(app.url, n, session_questions(n, per_session), timeout, barrier, requests,
                                          lock)) for n in names]
        with RssPoller(app.pid) as poller:
            for th in threads:
                th.start()
            try:
                barrier.wait(timeout=300)  # every client connected: all sessions ask at once
            except threading.BrokenBarrierError:
                print("load: not every session connected within 300 s; going on", file=sys.stderr, flush=True)
            start = time.monotonic()
            for th in threads:
                th.join(timeout=timeout * per_session + 60)
            wall = time.monotonic() - start
            stuck = [th.name for th in threads if th.is_alive()]
        rss_end = rss_kb(app.pid)
    with lock:
        requests = list(requests)
    for rec in requests:
        if "at_s" in rec:
            rec["at_s"] = round(rec["at_s"] - start, 3)
    if stuck:
        requests += [{"session": n.removeprefix("session-"), "turn": -1, "ok": False,
                      "error": "session still running at the deadline"} for n in stuck]
    log_text = log.read_text(errors="replace")[log_start:] if log.exists() else ""
    rss = {"start_kb": rss_start, "peak_kb": max(poller.peak_kb, rss_start, rss_end), "end_kb": rss_end}
    summary = load_summary(users, requests, wall, rss, server_log_errors(log_text))
    summary["page_ready_s"] = round(ready_s, 1)
    return summary, requests, poller.samples


def load_main(args: argparse.Namespace) -> dict[str, Any]:
    from rag.corpus import load_papers
    from rag.settings import DEFAULT_CORPUS

    problems = check_papers([p.title for p in load_papers(DEFAULT_CORPUS)])
    if problems:
        raise SystemExit("eval.load: the session papers do not match the default collection:\n" + "\n".join(problems))
    env = {"PAPERCHAT_LLM__PREFILL_PAPERS": str(args.prefill_papers)}
    if args.queue_size:
        env["PAPERCHAT_UI__QUEUE_SIZE"] = str(args.queue_size)
    rows, runs = [], {}
    with _data_dir(args.data_dir) as data_dir:
        for n in args.users:
            print(f"load: {n} concurrent session(s), {args.questions_per_session} questions each ...",
                  file=sys.stderr, flush=True)
            summary, requests, samples = run_load(n, data_dir, env, args.questions_per_session, args.timeout,
                                                  warm=not args.no_warm)
            rows.append(summary)
            runs[str(n)] = {"requests": requests, "rss_samples": samples}
            print(f"load: {n} users: {summary['answers']}/{summary['requests']} answered in {summary['wall_s']} s, "
                  f"wait p50 {summary['wait_s_p50']} s p90 {summary['wait_s_p90']} s, {summary['errors']} errors, "
                  f"follow-ups on own paper {summary['follow_ups_own']} of {summary['follow_ups']}",
                  file=sys.stderr, flush=True)
    report = {"settings": {"users": args.users, "questions_per_session": args.questions_per_session,
                           "env": env, "warm_question": None if args.no_warm else WARM_QUESTION,
                           "papers": dict(list(PAPERS.items())[:max(args.users)])},
              "summary": rows, "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "load.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    text = load_markdown(rows)
    (args.out / "load.md").write_text(text)
    print(text)
    return report


@contextmanager
def _data_dir(given: Path | None) -> Iterator[Path]:
    if given:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="paperchat-load-") as tmp:
        yield Path(tmp)


# ----- soak --------------------------------------------------------------------------------------
def conversations(suite_rows: list[dict[str, Any]], chat_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The soak's mix: each row as a conversation (earlier questions, then the question), taken
    round-robin across question types within each file and alternating between the files; non-English
    chat rows are left out."""

    def round_robin(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault(r.get(key, ""), []).append(r)
        out = []
        while any(groups.values()):
            for g in groups.values():
                if g:
                    out.append(g.pop(0))
        return out

    a = [{"id": r["id"], "kind": r["type"],
          "questions": [*([r["history_question"]] if r.get("history_question") else []), r["question"]]}
         for r in round_robin(suite_rows, "type")]
    b = [{"id": r["id"], "kind": r["style"], "questions": [*r.get("history", []), r["question"]]}
         for r in round_robin([r for r in chat_rows if r.get("lang", "en") == "en"], "style")]
    mixed = []
    for i in range(max(len(a), len(b))):
        mixed += [x[i] for x in (a, b) if i < len(x)]
    return mixed


def soak_steps(convs: list[dict[str, Any]], n: int) -> Iterator[tuple[dict[str, Any], int, str]]:
    """The first ``n`` questions of the mix, cycled: (conversation, turn within it, question)."""
    if not convs:
        return
    done = 0
    while True:
        for conv in convs:
            for turn, q in enumerate(conv["questions"]):
                if done >= n:
                    return
                yield conv, turn, q
                done += 1


def run_soak(ask: Callable[[str, list[dict[str, str]]], Any], convs: list[dict[str, Any]], n: int,
             rss: Callable[[], int] = rss_kb, fds: Callable[[], int] = open_files,
             progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Ask ``n`` questions in a row; a follow-up gets its conversation's earlier questions and answers as
    history. An exception is recorded (``error``) and the run goes on (the conversation with an empty answer)."""
    records: list[dict[str, Any]] = []
    history: list[dict[str, str]] = []
    for i, (conv, turn, question) in enumerate(soak_steps(convs, n)):
        if turn == 0:
            history = []
        rec: dict[str, Any] = {"i": i, "id": conv["id"], "kind": conv["kind"], "turn": turn, "question": question}
        start = time.perf_counter()
        text = ""
        try:
            answer = ask(question, list(history))
            rec["latency_s"] = round(time.perf_counter() - start, 4)
            text = getattr(answer, "text", "") or ""
            rec["abstained"] = bool(getattr(answer, "abstained", False))
            timings = getattr(answer, "timings", {}) or {}
            rec["first_token_s"] = round(float(timings.get("first_token_s", 0.0)), 4)
            rec["error"] = ""
        except Exception as e:  # noqa: BLE001 - counted and reported; the soak goes on
            rec["latency_s"] = round(time.perf_counter() - start, 4)
            rec["error"] = f"{type(e).__name__}: {e}"[:300]
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": text}]
        rec["rss_kb"] = rss()
        rec["open_files"] = fds()
        records.append(rec)
        if progress:
            progress(rec)
    return records


def growth_per_100(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs, times 100 (e.g. MB per 100 questions); 0 for fewer than 2 points."""
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else 100 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var


def soak_summary(records: list[dict[str, Any]], warm: int = 50, window: int = 100) -> dict[str, Any]:
    """RSS after the warm-up (the first ``warm`` questions) vs at the end, growth, latency median of the
    first and last ``window`` questions, errors. With fewer questions than ``2 * window`` the windows
    shrink to half the run each (and the warm-up to half the run), so they never overlap."""
    n = len(records)
    if not n:
        return {"questions": 0, "errors": 0}
    warm = max(1, min(warm, n // 2 or 1))
    window = max(1, min(window, n // 2 or 1))
    mb = [r["rss_kb"] / 1024 for r in records]
    lat = [r["latency_s"] for r in records]
    errors = [r for r in records if r.get("error")]
    after = list(range(warm - 1, n))
    first, last = lat[:window], lat[-window:]
    return {
        "questions": n,
        "warm_up_questions": warm,
        "rss_mb_first": round(mb[0], 1),
        "rss_mb_after_warm_up": round(mb[warm - 1], 1),
        "rss_mb_end": round(mb[-1], 1),
        "rss_mb_peak": round(max(mb), 1),
        "rss_mb_growth": round(mb[-1] - mb[warm - 1], 1),
        "rss_mb_growth_per_100_questions": round(growth_per_100([float(i) for i in after], [mb[i] for i in after]), 2),
        "open_files_after_warm_up": records[warm - 1].get("open_files"),
        "open_files_end": records[-1].get("open_files"),
        "latency_window": window,
        "latency_s_p50_first": round(statistics.median(first), 3),
        "latency_s_p50_last": round(statistics.median(last), 3),
        "latency_s_p50": round(statistics.median(lat), 3),
        "latency_s_p90": round(p90(lat), 3),
        "latency_s_max": round(max(lat), 3),
        "errors": len(errors),
        "error_kinds": dict(Counter(r["error"].split(":")[0] for r in errors)),
        "first_errors": [f"#{r['i']} {r['id']}: {r['error']}" for r in errors[:10]],
        "abstained": sum(bool(r.get("abstained")) for r in records),
    }


def soak_plot(records: list[dict[str, Any]], summary: dict[str, Any], path: Path, title: str = "") -> None:
    """Two panels over the question index: RSS (MB), and latency (s) with a running median; errors in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = [r["i"] for r in records]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    top.plot(idx, [r["rss_kb"] / 1024 for r in records], lw=1.2)
    top.set_ylabel("RSS (MB)")
    warm = summary.get("warm_up_questions")
    lat = [r["latency_s"] for r in records]
    bottom.plot(idx, lat, ".", ms=3, alpha=0.5, label="question")
    k = max(1, min(25, len(lat) // 10 or 1))
    running = [statistics.median(lat[max(0, i - k + 1): i + 1]) for i in range(len(lat))]
    bottom.plot(idx, running, lw=1.5, label=f"running median ({k})")
    errs = [r for r in records if r.get("error")]
    if errs:
        bottom.plot([r["i"] for r in errs], [r["latency_s"] for r in errs], "rx", ms=7, label=f"error ({len(errs)})")
    if warm:
        for ax in (top, bottom):
            ax.axvline(warm - 1, color="grey", ls=":", lw=1, label=f"after warm-up ({warm})")
    bottom.set_ylabel("latency (s)")
    bottom.set_xlabel("question")
    bottom.legend(loc="upper right", fontsize=8)
    fig.suptitle(title or f"paperchat soak: {summary.get('questions', len(records))} questions, "
                 f"RSS {summary.get('rss_mb_after_warm_up')} -> {summary.get('rss_mb_end')} MB, "
                 f"{summary.get('errors', 0)} errors")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def soak_text(summary: dict[str, Any]) -> str:
    s = summary
    lines = [f"soak: {s['questions']} questions, {s['errors']} errors, {s.get('abstained', 0)} abstentions",
             f"  RSS after warm-up ({s['warm_up_questions']} questions) {s['rss_mb_after_warm_up']} MB, end "
             f"{s['rss_mb_end']} MB, growth {s['rss_mb_growth']:+} MB ({s['rss_mb_growth_per_100_questions']:+} MB per "
             f"100 questions, fitted), peak {s['rss_mb_peak']} MB; open files {s['open_files_after_warm_up']} -> "
             f"{s['open_files_end']}",
             f"  latency median first {s['latency_window']}: {s['latency_s_p50_first']} s, last "
             f"{s['latency_window']}: {s['latency_s_p50_last']} s; overall p50 {s['latency_s_p50']} s, p90 "
             f"{s['latency_s_p90']} s, max {s['latency_s_max']} s"]
    lines += [f"  error {e}" for e in s.get("first_errors", [])]
    return "\n".join(lines)


def soak_main(args: argparse.Namespace) -> dict[str, Any]:
    from rag import Engine, Settings

    from .chat import load_chat_questions
    from .suite import load_questions, warm_like_serve

    convs = conversations(load_questions(), load_chat_questions())
    with _data_dir(args.data_dir) as data_dir:
        start = time.perf_counter()
        engine = Engine(Settings(data_dir=data_dir))
        model = warm_like_serve(engine)
        warm_s = time.perf_counter() - start
        print(f"soak: engine ready in {warm_s:.1f} s ({model}); {args.soak} questions from {len(convs)} "
              "conversations ...", file=sys.stderr, flush=True)

        def progress(rec: dict[str, Any]) -> None:
            if rec["error"] or (rec["i"] + 1) % args.progress_every == 0:
                print(f"soak [{rec['i'] + 1}/{args.soak}] {rec['latency_s']:6.2f} s  RSS {rec['rss_kb'] // 1024} MB  "
                      f"{rec['kind']:<17} {('ERROR ' + rec['error']) if rec['error'] else rec['question'][:50]}",
                      file=sys.stderr, flush=True)

        records = run_soak(lambda q, h: engine.ask(q, history=h), convs, args.soak, progress=progress)
    summary = soak_summary(records)
    summary.update(model=model, engine_ready_s=round(warm_s, 1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps({"summary": summary, "records": records}, indent=1,
                                                   ensure_ascii=False))
    soak_plot(records, summary, args.out / "soak.png")
    print(soak_text(summary))
    return summary


# ----- command line ------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.load", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Without --load, --users or --soak both parts run at their default sizes.")
    p.add_argument("--load", action="store_true", help="run the load part (implied by --users)")
    p.add_argument("--users", type=parse_users, help="numbers of concurrent sessions, comma-separated "
                   f"(default {','.join(map(str, DEFAULT_USERS))})")
    p.add_argument("--questions-per-session", type=int, default=2, metavar="K",
                   help="questions per session: its paper, the follow-up, then others (default 2)")
    p.add_argument("--prefill-papers", type=int, default=0, metavar="N",
                   help="PAPERCHAT_LLM__PREFILL_PAPERS for the page (default 0: no background prefill while measuring)")
    p.add_argument("--queue-size", type=int, metavar="N",
                   help="PAPERCHAT_UI__QUEUE_SIZE for the page (default: its own)")
    p.add_argument("--no-warm", action="store_true", help="no warm-up question before the sessions start")
    p.add_argument("--timeout", type=float, default=REQUEST_TIMEOUT_S, help="seconds one answer may take")
    p.add_argument("--soak", type=int, nargs="?", const=DEFAULT_SOAK, metavar="N",
                   help=f"run the soak part with N questions (default {DEFAULT_SOAK})")
    p.add_argument("--progress-every", type=int, default=50, metavar="N", help="soak progress line every N questions")
    p.add_argument("--data-dir", type=Path, help="store to use (default: a fresh temporary one, ingested at start)")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"folder for load.* and soak.* (default {RESULTS})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.questions_per_session < 2:
        parser().error("--questions-per-session must be at least 2 (the paper and its follow-up)")
    if args.soak is not None and args.soak < 1:
        parser().error("--soak wants a positive number of questions")
    run_load_part = args.load or args.users is not None
    run_soak_part = args.soak is not None
    if not run_load_part and not run_soak_part:
        run_load_part = run_soak_part = True
        args.soak = DEFAULT_SOAK
    if run_load_part and args.users is None:
        args.users = list(DEFAULT_USERS)
    if run_load_part:
        load_main(args)
    if run_soak_part:
        soak_main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
