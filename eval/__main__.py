"""Measure retrieval and answers on eval/questions.jsonl.

    python -m eval --retrieval-only      # hybrid vs dense vs BM25, in seconds
    python -m eval --limit 12            # answers too, on a sample across question types

Writes eval/results/latest.json and latest.md.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rag import Engine, Settings
from rag.corpus import load_papers

HERE = Path(__file__).parent
QUESTIONS = HERE / "questions.jsonl"
RESULTS = HERE / "results"


def load_questions(path: Path = QUESTIONS) -> list[dict[str, Any]]:
    """The questions, checked: gold titles exist and key facts occur verbatim in a gold abstract."""
    papers = {p.title: p for p in load_papers(Settings().default_corpus)}  # type: ignore[arg-type]
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        for title in row["gold"]:
            if title not in papers:
                raise SystemExit(f"{row['id']}: no paper titled {title!r}")
        for fact in row["key_facts"]:
            if not any(fact in papers[t].abstract for t in row["gold"]):
                raise SystemExit(f"{row['id']}: key fact {fact!r} is not in a gold abstract")
        if row["type"] == "unanswerable" and row["gold"]:
            raise SystemExit(f"{row['id']}: an unanswerable question has no gold paper")
    return rows


def normalise(text: str) -> str:
    """Fold the ways a figure is written: 2.2x / 2.2× / 2.2 times, 1,000 / 1000."""
    text = text.lower().replace("×", "x")
    text = re.sub(r"\s*times\b", "x", text)
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)
    return re.sub(r"\s+", " ", text)


def sample(rows: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """Up to ``limit`` questions, taken round-robin across types."""
    if not limit:
        return rows
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_type.setdefault(r["type"], []).append(r)
    out: list[dict[str, Any]] = []
    while len(out) < limit and any(by_type.values()):
        for kind in list(by_type):
            if by_type[kind] and len(out) < limit:
                out.append(by_type[kind].pop(0))
    return out


def retrieval_metrics(engine: Engine, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """hit@1, recall@5 and MRR of the gold papers, per retrieval mode."""
    s = engine.settings
    modes = {"hybrid": (s.dense_weight, s.bm25_weight), "dense": (1.0, 0.0), "bm25": (0.0, 1.0)}
    answerable = [r for r in rows if r["gold"]]
    out: dict[str, Any] = {}
    saved = (engine.settings.dense_weight, engine.settings.bm25_weight)
    for mode, (dw, bw) in modes.items():
        engine.settings.dense_weight, engine.settings.bm25_weight = dw, bw
        hit1, recall5, mrr, times = [], [], [], []
        for r in answerable:
            query = f"{r.get('history_question', '')} {r['question']}".strip()
            start = time.perf_counter()
            titles = [h.title for h in engine.retrieve(query, k=10)]
            times.append(time.perf_counter() - start)
            gold = set(r["gold"])
            hit1.append(float(titles[0] in gold))
            recall5.append(len(gold & set(titles[:5])) / len(gold))
            rank = next((i for i, t in enumerate(titles, 1) if t in gold), None)
            mrr.append(1.0 / rank if rank else 0.0)
        out[mode] = {"hit@1": statistics.mean(hit1), "recall@5": statistics.mean(recall5),
                     "mrr": statistics.mean(mrr), "retrieve_s_p50": statistics.median(times), "n": len(answerable)}
    engine.settings.dense_weight, engine.settings.bm25_weight = saved
    return out


def answer_metrics(engine: Engine, rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Ask every question (follow-ups after their first question) and score the answers."""
    per: list[dict[str, Any]] = []
    engine.ask("warm-up: what does mllm-NPU do?")
    for i, r in enumerate(rows, 1):
        history = []
        if r["type"] == "follow-up":
            first = engine.ask(r["history_question"])
            history = [{"role": "user", "content": r["history_question"]}, {"role": "assistant", "content": first.text}]
        a = engine.ask(r["question"], history=history)
        cited = {c.title for c in a.citations}
        gold = set(r["gold"])
        text = normalise(a.text)
        shown = normalise(a.text + " " + " ".join(c.quote for c in a.citations))
        facts = r["key_facts"]
        row = {
            "id": r["id"], "type": r["type"], "question": r["question"], "answer": a.text, "abstained": a.abstained,
            "cited": sorted(cited), "gold": r["gold"],
            "citation_precision": len(cited & gold) / len(cited) if cited else None,
            "citation_recall": len(cited & gold) / len(gold) if gold else None,
            "key_facts": sum(normalise(f) in text for f in facts) / len(facts) if facts else None,
            "key_facts_shown": sum(normalise(f) in shown for f in facts) / len(facts) if facts else None,
            "first_token_s": a.timings.get("first_token_s"), "total_s": a.timings.get("total_s"),
            "prompt_tokens": a.timings.get("prompt_tokens"),
        }
        per.append(row)
        print(f"[{i}/{len(rows)}] {r['type']:<12} {'ABSTAIN' if a.abstained else 'answer '} "
              f"{a.timings.get('total_s', 0):5.1f}s  {r['question'][:60]}", file=sys.stderr)

    def mean(key: str, kinds: set[str] | None = None) -> float | None:
        vals = [p[key] for p in per if p[key] is not None and (kinds is None or p["type"] in kinds)]
        return statistics.mean(vals) if vals else None

    def by_type(key: str) -> dict[str, float]:
        scores = {kind: mean(key, {kind}) for kind in sorted({p["type"] for p in per})}
        return {kind: v for kind, v in scores.items() if v is not None}

    answerable = [p for p in per if p["type"] != "unanswerable"]
    unanswerable = [p for p in per if p["type"] == "unanswerable"]
    timed = [p for p in per if not p["abstained"] or p["prompt_tokens"]]
    first = sorted(p["first_token_s"] for p in timed)
    total = sorted(p["total_s"] for p in timed)
    summary = {
        "n": len(per),
        "citation_precision": mean("citation_precision"),
        "citation_recall": mean("citation_recall"),
        "key_facts": by_type("key_facts"),
        "key_facts_shown": by_type("key_facts_shown"),
        "abstention_on_unanswerable": statistics.mean(p["abstained"] for p in unanswerable) if unanswerable else None,
        "answer_rate_on_answerable": statistics.mean(not p["abstained"] for p in answerable) if answerable else None,
        "first_token_s_p50": statistics.median(first) if first else None,
        "first_token_s_p90": first[int(0.9 * (len(first) - 1))] if first else None,
        "total_s_p50": statistics.median(total) if total else None,
        "total_s_p90": total[int(0.9 * (len(total) - 1))] if total else None,
    }
    return summary, per


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__.splitlines()[0])
    parser.add_argument("--retrieval-only", action="store_true", help="skip the answers (seconds, no LLM)")
    parser.add_argument("--limit", type=int, help="a sample of N questions across types")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for latest.json and latest.md")
    args = parser.parse_args(argv)
    rows = sample(load_questions(), args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(Settings(data_dir=Path(tmp)))
        report: dict[str, Any] = {"questions": len(rows), "retrieval": retrieval_metrics(engine, rows)}
        if not args.retrieval_only:
            report["answers"], report["per_question"] = answer_metrics(engine, rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(report, indent=2))
    lines = ["| retrieval | hit@1 | recall@5 | MRR | median s |", "| --- | --- | --- | --- | --- |"]
    for mode, m in report["retrieval"].items():
        lines.append(f"| {mode} | {m['hit@1']:.3f} | {m['recall@5']:.3f} | {m['mrr']:.3f} | {m['retrieve_s_p50']:.3f} |")
    if "answers" in report:
        lines += ["", "| answers | value |", "| --- | --- |"]
        for key, value in report["answers"].items():
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v:.2f}" for k, v in value.items())
            elif isinstance(value, float):
                value = f"{value:.3f}"
            lines.append(f"| {key} | {value} |")
    text = "\n".join(lines)
    (args.out / "latest.md").write_text(f"# paperchat eval ({len(rows)} questions)\n\n{text}\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
