"""Checks on what an answer contains."""

from __future__ import annotations

from rag.grounding import Scored, answers, carries, figure_coverage, figures, focus_terms, is_echo

LAZY = "LazyLLM accelerates the prefilling stage of LLama 2 7B by 2.34x while maintaining accuracy."


def test_figures_are_read_alike():
    assert figures("1,000 tokens/sec and 2.34x") == {"1000", "2.34"}


def test_an_echo_of_the_question_is_not_an_answer():
    question = "sarathi-serve speedup vs fp16 and int8"
    assert is_echo("Sarathi-Serve speedup vs FP16 and INT8 [1].", question)
    assert not is_echo("Sarathi-Serve improves serving capacity by 2.6x on Mistral-7B [1].", question)
    assert not is_echo("It piggybacks decodes onto chunked prefills to avoid pipeline bubbles.", question)


def test_an_answer_carries_what_was_asked():
    assert carries("It is 2.34x faster.", "figure", "how much faster on llama 2 7b?")
    assert not carries("It is faster on Llama 2 7B.", "figure", "how much faster on llama 2 7b?")
    assert carries("DistServe does this.", "name") and not carries("a system does this.", "name")


def test_a_figure_answers_only_when_its_clause_is_about_what_was_asked():
    focus = focus_terms("how much does LazyLLM speed up decoding?", "LazyLLM: Dynamic Token Pruning")
    prefill = figure_coverage(focus, LAZY, None)
    decoding = figure_coverage(focus, "LazyLLM speeds up decoding by 1.5x, and it prunes tokens.", None)
    assert decoding > prefill and decoding >= 0.5 > prefill
    assert figure_coverage(focus, "LazyLLM prunes tokens during decoding.", None) == 0.0  # no figure


def test_answers_strict_when_the_paper_is_named_lenient_when_described():
    near = Scored(LAZY, coverage=0.5, similarity=0.6, has_figure=True, figure_coverage=0.2)
    assert not answers(near, "figure", anchored=True)  # named paper, asked detail absent: a near miss
    assert answers(near, "figure", anchored=False)  # a described paper: its figure sentence answers
    no_figure = Scored("LazyLLM prunes tokens.", 1.0, 0.9, has_figure=False)
    assert not answers(no_figure, "figure", anchored=False) and answers(no_figure, "other")


def test_digits_inside_names_are_not_figures():
    assert figures("We evaluate Llama-2 7B on A100 GPUs with FP16 and W4A8") == {"7"}
    assert not carries("It runs on A100 GPUs with FP16 [1].", "figure", "how much faster?")
    assert figures("speeds up pre-training by $\\sim$3x") == figures("by sim3x") == {"3"}
