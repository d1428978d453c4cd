"""Speed benchmark: ``paperchat bench`` (also ``python -m eval.bench``).

One run, with a warm process and after one warm-up question, measures on a fixed list of
questions from eval/questions.jsonl: first-token and total answer time (median, p90), prompt and
generated tokens, generation rate; the same for the plain llama-index baseline and the ratio;
retrieval time alone; cold start (process start to first answer, ``paperchat serve`` start to page
ready); ingestion of the 71 papers into an empty store and the re-ingest; peak memory (RSS).
Results go to eval/results/bench.json and bench.png; ``--json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rag import Engine, Settings
from rag.settings import DEFAULT_CORPUS, StoreSettings

from .suite import RESULTS, ask_row, load_questions, p90

#: The benchmark's questions: answerable ones of every kind, and two follow-ups.
BENCH_IDS = ["q001", "q003", "q007", "q008", "q013", "q019", "q026", "q027", "q029", "q035",
             "q041", "q050", "q051", "q053", "q080", "q085"]


def _p50(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def _p90(values: list[float]) -> float:
    return round(p90(values), 3)


def rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_questions() -> list[dict[str, Any]]:
    by_id = {r["id"]: r for r in load_questions()}
    return [by_id[i] for i in BENCH_IDS]


def time_answers(ask: Any, rows: list[dict[str, Any]], label: str) -> list[dict[str, float]]:
    """Ask each question (a follow-up after its first question, which is not timed)."""
    out = []
    for r in rows:
        reply = ask_row(ask, r)
        out.append({"id": r["id"], "first_token_s": reply.first_token_s, "total_s": reply.total_s,
                    "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                    "abstained": reply.abstained})
        print(f"{label:>11} {r['id']} first {reply.first_token_s:5.2f} s  total {reply.total_s:5.2f} s  "
              f"{int(reply.prompt_tokens)} prompt tokens  {r['question'][:50]}", file=sys.stderr, flush=True)
    return out


def summary(prefix: str, runs: list[dict[str, float]]) -> dict[str, float]:
    first = [r["first_token_s"] for r in runs]
    total = [r["total_s"] for r in runs]
    gen = [r["completion_tokens"] / (r["total_s"] - r["first_token_s"]) for r in runs
           if r["completion_tokens"] > 1 and r["total_s"] > r["first_token_s"]]
    # Answers written by code (which-papers lists) never wait for the model: shown apart as well.
    model = [r["first_token_s"] for r in runs if r["prompt_tokens"]]
    return {
        f"{prefix}first_token_s_p50": _p50(first), f"{prefix}first_token_s_p90": _p90(first),
        f"{prefix}model_answers": len(model),
        f"{prefix}model_first_token_s_p50": _p50(model) if model else 0.0,
        f"{prefix}model_first_token_s_p90": _p90(model) if model else 0.0,
        f"{prefix}total_s_p50": _p50(total), f"{prefix}total_s_p90": _p90(total),
        f"{prefix}prompt_tokens_p50": _p50([r["prompt_tokens"] for r in runs]),
        f"{prefix}completion_tokens_p50": _p50([r["completion_tokens"] for r in runs]),
        f"{prefix}generation_tokens_per_s": _p50(gen) if gen else 0.0,
    }


def cold_start(data_dir: Path) -> dict[str, float]:
    """Process start to first answer (``paperchat ask``) and to a ready page (``paperchat serve``)."""
    from .browser import running_app

    env = {**os.environ, "PAPERCHAT_DATA_DIR": str(data_dir)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rag.cli", "ask", "What prefill speed does mllm-NPU reach?"], env=env,
                   check=True, capture_output=True, timeout=600)
    ask_s = time.perf_counter() - start
    start = time.perf_counter()
    with running_app(data_dir):
        serve_s = time.perf_counter() - start
    return {"cold_first_answer_s": round(ask_s, 2), "cold_serve_ready_s": round(serve_s, 2)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--scale" in argv:  # the scale benchmark has its own options (eval/scale.py)
        from .scale import main as scale_main

        return scale_main([a for a in argv if a != "--scale"])
    if any(a in ("--load", "--soak") or a.startswith("--soak=") for a in argv):
        # concurrent sessions against the page / a long run of questions (eval/load.py, own options)
        from .load import main as load_main

        return load_main(argv)
    parser = argparse.ArgumentParser(prog="paperchat bench", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", action="store_true", help="the scale benchmark instead (see --scale --help)")
    parser.add_argument("--load", action="store_true",
                        help="the load test instead: concurrent sessions against the page (see --load --help)")
    parser.add_argument("--soak", type=int, nargs="?", metavar="N",
                        help="the soak test instead: N questions in a row through one engine (see eval/load.py)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the figures")
    parser.add_argument("--no-baseline", action="store_true", help="skip the llama-index baseline")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-start subprocess runs")
    parser.add_argument("--limit", type=int, help="only the first N benchmark questions (a quick check)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for bench.json and bench.png")
    args = parser.parse_args(argv)
    from .suite import baseline_asker, engine_asker

    rows = bench_questions()[: args.limit]
    figures: dict[str, Any] = {"questions": len(rows)}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), store=StoreSettings(default_corpus=None))
        engine = Engine(settings)
        start = time.perf_counter()
        engine.ingest([DEFAULT_CORPUS], progress=False)
        figures["ingest_s"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        engine.ingest([DEFAULT_CORPUS], progress=False)
        figures["reingest_s"] = round(time.perf_counter() - start, 3)
        figures["model"] = engine.llm.name
        engine.warm_up()
        # What `paperchat serve` does in the background at start; states stay on disk for later runs.
        start = time.perf_counter()
        figures["prefill_papers_computed"] = engine.prefiller.prefill_papers()
        figures["prefill_papers_s"] = round(time.perf_counter() - start, 1)
        retrieve = []
        for r in rows:
            start = time.perf_counter()
            engine.retrieve(r["question"])
            retrieve.append(time.perf_counter() - start)
        figures["retrieve_s_p50"], figures["retrieve_s_p90"] = _p50(retrieve), _p90(retrieve)
        ours = engine_asker(engine)
        ours("What does mllm-NPU do?", [])  # the warm-up question
        runs = {"paperchat": time_answers(ours, rows, "paperchat")}
        figures.update(summary("", runs["paperchat"]))
        if not args.no_baseline:
            base = baseline_asker(engine)
            base("What does mllm-NPU do?", [])
            runs["llama-index"] = time_answers(base, rows, "llama-index")
            figures.update(summary("baseline_", runs["llama-index"]))
            figures["first_token_speedup"] = round(
                figures["baseline_first_token_s_p50"] / figures["first_token_s_p50"], 2)
            figures["total_speedup"] = round(figures["baseline_total_s_p50"] / figures["total_s_p50"], 2)
        figures["rss_mb"] = round(rss_mb())
        del engine
        if not args.no_cold:
            figures.update(cold_start(Path(tmp)))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps({"figures": figures, "runs": runs}, indent=1))
    plot(runs, figures, args.out / "bench.png")
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>32}  {value}")
    return 0


def plot(runs: dict[str, list[dict[str, float]]], figures: dict[str, Any], path: Path) -> None:
    """First-token and total time per question, one bar group per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    for ax, key in zip(axes, ["first_token_s", "total_s"]):
        width = 0.8 / len(runs)
        for i, (name, rs) in enumerate(runs.items()):
            ax.bar([x + i * width for x in range(len(rs))], [r[key] for r in rs], width, label=name)
        ids = [r["id"] for r in next(iter(runs.values()))]
        ax.set_xticks([x + width * (len(runs) - 1) / 2 for x in range(len(ids))], ids, rotation=60, fontsize=7)
        ax.set_ylabel("seconds")
        ax.set_title(key.replace("_s", "").replace("_", " "))
    axes[0].legend()
    fig.suptitle(f"paperchat bench: {figures.get('model', '')}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
