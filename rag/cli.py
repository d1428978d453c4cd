"""The ``paperchat`` command: ask, chat, ingest, papers, rebuild, serve."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from .answer import Answer, Engine, QuestionError
from .catalog import Catalog, count_papers
from .corpus import CorpusError
from .embedding import EmbeddingError, EmbeddingModelError
from .ingest import check_file
from .llm import LLMError, Message
from .settings import Settings
from .store import REBUILD_HINT, StoreError, open_client
from .weights import ModelFileError

EXIT_USAGE = 2
EXIT_FAILED = 1
#: A store, model or server that failed: a one-line error; in `chat`, the conversation goes on.
DEPENDENCY_ERRORS = (StoreError, LLMError, EmbeddingError, EmbeddingModelError, ModelFileError)


def format_answer(answer: Answer) -> str:
    """The answer and its cited papers, as plain text."""
    lines = [answer.text]
    if answer.citations:
        lines.append("")
        for c in answer.citations:
            lines.append(f"[{c.n}] {c.title}")
            lines.append(f"    \"{c.quote}\"")
    return "\n".join(lines)


def answer_json(answer: Answer) -> dict[str, Any]:
    """The answer as ``ask --json`` prints it."""
    return {
        "text": answer.text,
        "abstained": answer.abstained,
        "citations": answer.citation_dicts(),
        "timings": answer.timings,
    }


def package_version() -> str:
    """The installed paperchat's version."""
    try:
        return version("paperchat")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _ask(engine: Engine, question: str, history: list[Message], show_timings: bool) -> Answer:
    if sys.stdout.isatty():
        # Show the model's draft as it is written, then replace it by the checked answer.
        answer: Answer | None = None
        for item in engine.ask_stream(question, history):
            if isinstance(item, Answer):
                answer = item
            else:
                print(item, end="", flush=True)
        assert answer is not None
        print("\r\033[K", end="")
    else:
        # A file or a pipe gets the checked answer once, not the draft before it.
        answer = engine.ask(question, history)
    print(format_answer(answer))
    if show_timings:
        t = answer.timings
        print(f"\n(first words {t.get('first_token_s', 0):.2f} s, total {t.get('total_s', 0):.2f} s, "
              f"{int(t.get('prompt_tokens', 0))} prompt tokens, {int(t.get('completion_tokens', 0))} generated)")
    return answer


def cmd_ask(engine: Engine, args: argparse.Namespace) -> int:
    question = " ".join(args.question)
    if args.json:
        # ASCII escapes: the object reads the same whatever encoding stdout has.
        print(json.dumps(answer_json(engine.ask(question))))
    else:
        _ask(engine, question, [], args.timings)
    return 0


def cmd_chat(engine: Engine, args: argparse.Namespace) -> int:
    print(f"paperchat: {Catalog(engine.store).paper_count()} papers. Ask a question; an empty line or Ctrl-D quits.")
    history: list[Message] = []
    while True:
        try:
            question = input("\n> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not question:
            return 0
        try:
            answer = _ask(engine, question, history, args.timings)
        except (QuestionError, *DEPENDENCY_ERRORS) as e:
            print(f"error: {e}")
            continue
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer.text}]


def cmd_ingest(engine: Engine, args: argparse.Namespace) -> int:
    for report in engine.ingest(args.files, progress=not args.quiet):
        print(report)
    # Index the keywords now and save them, so the next start loads them instead.
    if not args.quiet:
        print("updating the keyword index (about 25 s per 100,000 papers)...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    engine.retriever.keyword_index()
    print(f"keyword index ready in {time.perf_counter() - start:.1f} s")
    print(f"the store now holds {Catalog(engine.store).paper_count()} papers")
    return 0


def cmd_papers(engine: Engine, args: argparse.Namespace) -> int:
    papers = sorted(Catalog(engine.store).papers().values(), key=lambda p: p.title.casefold())
    for p in papers:
        if not args.grep or args.grep.casefold() in p.title.casefold():
            print(f"{p.id}  {p.title}")
    return 0


def cmd_serve(engine: Engine, args: argparse.Namespace) -> int:
    from ui.app import serve

    serve(engine, open_browser=not args.no_browser, allow_without_login=args.no_login_on_network)
    return 0


COMMANDS = {"ask": cmd_ask, "chat": cmd_chat, "ingest": cmd_ingest, "papers": cmd_papers, "serve": cmd_serve}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paperchat",
        description="Cited answers over a collection of paper abstracts. Settings come from "
        "PAPERCHAT_* environment variables (see the README).",
    )
    parser.add_argument("--version", action="version", version=f"paperchat {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ask", help="answer one question and list the cited papers")
    p.add_argument("question", nargs="+", help="the question (quote it)")
    p.add_argument("--timings", action="store_true", help="print first-token and total time")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (text, abstained, citations, timings) and nothing else")
    p = sub.add_parser("chat", help="a conversation in the terminal (follow-up questions work)")
    p.add_argument("--timings", action="store_true", help="print first-token and total time")
    p = sub.add_parser("ingest", help="add collection files (JSONL or title/abstract text) to the store")
    p.add_argument("files", nargs="+", help="collection files; all are checked before any is written")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = sub.add_parser("papers", help="list the papers in the store")
    p.add_argument("--grep", help="only titles containing this text")
    p = sub.add_parser("rebuild", help="delete the store and ingest the default collection and FILES again")
    p.add_argument("files", nargs="*", help="collection files to ingest after the default one")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask before deleting the store")
    # Listed for --help; main() hands "eval" and "bench" with their options to eval/ before parsing.
    sub.add_parser("eval", help="measure retrieval and answers on the question set (see: paperchat eval --help)")
    sub.add_parser("bench", help="measure speed and memory (see: paperchat bench --help)")
    p = sub.add_parser("serve", help="start the chat web page and open it in a browser")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--no-login-on-network", action="store_true",
                   help="serve on a non-local PAPERCHAT_UI__HOST without a login (anyone who can reach it can use it)")
    return parser


def stored_papers(settings: Settings) -> str:
    """"N papers" in the embedded store, counted without loading a model (a damaged store, the
    usual reason to rebuild, is described instead of failing)."""
    try:
        client = open_client(settings)
    except StoreError as e:
        return f"unreadable: {str(e).removesuffix(': ' + REBUILD_HINT)}"
    try:
        collection = client.get_collection(settings.store.collection, embedding_function=None)
        return f"{count_papers(collection)} papers"
    except Exception as e:  # noqa: BLE001 - chromadb raises its own and plain errors for a broken store
        return f"unreadable: {e}"
    finally:
        # Stop this client's Chroma system, or the rebuilt store would reuse it on deleted files.
        client.close()


def confirm_delete(settings: Settings) -> bool:
    """Ask on the terminal before deleting the store; False means keep it."""
    print(f"Delete the store at {settings.chroma_path} ({stored_papers(settings)}) and build it again? [y/N] ",
          end="", file=sys.stderr, flush=True)
    try:
        reply = sys.stdin.readline()
    except KeyboardInterrupt:
        print(file=sys.stderr)
        reply = ""
    return reply.strip().lower() in {"y", "yes"}


def rebuild(settings: Settings, files: Sequence[str], yes: bool = False) -> int:
    """Delete the embedded store and build it again, once the user agreed (``yes`` or on the terminal)."""
    if settings.store.url:
        print("error: rebuild works on the embedded store; with a Chroma server, delete the collection there",
              file=sys.stderr)
        return EXIT_FAILED
    for path in files:  # a bad file is found before anything is deleted (CorpusError: exit 2)
        check_file(Path(path))
    if settings.chroma_path.exists() and not yes:
        if not sys.stdin.isatty():
            # Nobody can answer the question: never delete without consent.
            print(f"error: rebuild deletes the store at {settings.chroma_path} and cannot ask first (stdin is "
                  "not a terminal); pass --yes to confirm", file=sys.stderr)
            return EXIT_USAGE
        if not confirm_delete(settings):
            print("nothing was deleted", file=sys.stderr)
            return EXIT_FAILED
    shutil.rmtree(settings.chroma_path, ignore_errors=True)
    shutil.rmtree(settings.keyword_path, ignore_errors=True)
    engine = Engine(settings)  # ingests the default collection into the empty store
    for report in engine.ingest(files, progress=True):
        print(report)
    print(f"rebuilt {settings.chroma_path}: {Catalog(engine.store).paper_count()} papers")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["eval"]:
        from eval.suite import main as eval_main

        return eval_main(argv[1:])
    if argv[:1] == ["bench"]:
        from eval.bench import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
        if args.command == "rebuild":
            return rebuild(settings, args.files, args.yes)
        if args.command == "serve":
            from ui.app import check_exposure

            check_exposure(settings, args.no_login_on_network)  # before the slow start
        engine = Engine(settings)
        return COMMANDS[args.command](engine, args)
    except (QuestionError, CorpusError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (*DEPENDENCY_ERRORS, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
