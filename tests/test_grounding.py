"""Checks on what an answer contains."""

from __future__ import annotations

from rag.grounding import (
    Scored,
    answers,
    asked_terms,
    carries,
    figure_coverage,
    figures,
    focus_terms,
    holds_asked,
    is_echo,
    of_sibling,
    set_aside,
    states_asked_kind,
)

LAZY = "LazyLLM accelerates the prefilling stage of LLama 2 7B by 2.34x while maintaining accuracy."


def test_figures_are_read_alike():
    assert figures("1,000 tokens/sec and 2.34x") == {"1000", "2.34"}
    # The items of an enumeration are not figures: "two stages: 1) prefilling, 2) decoding" answers no "how much".
    assert figures("two stages: 1) a prefilling stage and 2) a decoding stage") == set()
    assert figures("(1) we prune by 2.3x (Table 2)") == {"2.3"} and figures("1)") == set()


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


def test_the_words_for_a_figures_kind_are_not_what_a_figure_question_asks():
    # "cut" says the figure is a reduction; the abstract says "reduces": only memory and
    # inference say what the figure is about.
    question = "how much does SLoPe cut memory at inference?"
    sentence = "SLoPe reduces memory usage at inference by up to 0.77x."
    focus = focus_terms(question, "SLoPe", wants="figure")
    assert focus == focus_terms("memory inference")
    assert figure_coverage(focus, sentence, None) == 1.0
    assert figure_coverage(focus_terms(question, "SLoPe"), sentence, None) < 1.0  # "cut" is not in it
    assert figure_coverage(focus, "SLoPe speeds up training by 1.14x.", None) == 0.0
    # "how much better", "the max speedup": the figure's kind, not a word the sentence must hold.
    assert asked_terms("whats the max speedup on web ranking?") == frozenset()
    assert focus_terms("how much better was ttft?", wants="figure") == focus_terms("ttft")


def test_what_a_question_sets_aside_is_not_what_it_asks():
    question = "how much does LazyLLM speed up the decoding stage, not the prefill?"
    assert set_aside(question) == focus_terms("prefill")
    assert "prefil" not in focus_terms(question, "LazyLLM", wants="figure")
    assert set_aside("what does it use rather than full fine-tuning?") == focus_terms("full fine-tuning")
    # A plain negation is part of the question: "does it not need retraining?" asks about retraining.
    assert set_aside("does it not need retraining?") == frozenset()


def test_a_figure_beside_what_a_question_sets_aside_does_not_answer_it():
    # "the prefilling stage ... by 2.34x" shares "stage" with the question, but it is a figure of
    # the prefill, which the question excludes.
    question = "how much does LazyLLM speed up the decoding stage, not the prefill?"
    focus = focus_terms(question, "LazyLLM", wants="figure")
    sentence = "LazyLLM accelerates the prefilling stage of the LLama 2 7B model by 2.34x."
    assert figure_coverage(focus, sentence, None) > 0.0
    assert figure_coverage(focus, sentence, None, set_aside(question)) == 0.0
    decoding = "LazyLLM speeds up the decoding stage by 1.5x."
    assert figure_coverage(focus, decoding, None, set_aside(question)) == 1.0


def test_answers_strict_when_the_paper_is_named_lenient_when_described():
    near = Scored(LAZY, coverage=0.5, similarity=0.6, has_figure=True, figure_coverage=0.2)
    assert not answers(near, "figure", anchored=True)  # named paper, asked detail absent: a near miss
    assert answers(near, "figure", anchored=False)  # a described paper: its figure sentence answers
    # ... unless the sentence shares neither words nor meaning with the question (another paper's).
    unrelated = Scored("We examine 80 pruning schedules.", coverage=0.0, similarity=0.3, has_figure=True)
    assert not answers(unrelated, "figure", anchored=False)
    no_figure = Scored("LazyLLM prunes tokens.", 1.0, 0.9, has_figure=False)
    assert not answers(no_figure, "figure", anchored=False) and answers(no_figure, "other")


def test_digits_inside_names_are_not_figures():
    assert figures("We evaluate Llama-2 7B on A100 GPUs with FP16 and W4A8") == {"7"}
    assert not carries("It runs on A100 GPUs with FP16 [1].", "figure", "how much faster?")
    assert figures("speeds up pre-training by $\\sim$3x") == figures("by sim3x") == {"3"}


def test_what_a_question_asks_about_is_the_phrase_after_its_question_word():
    assert asked_terms("what prefill chunk size did Sarathi use?") == {"prefil", "chunk"}
    assert asked_terms("whats the acceptance rate of the draft?") == {"accept"}  # "rate" is the figure's kind
    assert asked_terms("how many gpus and what interconnect?") == {"gpus"}
    # "kind of" says that a kind is asked, not what: the noun after it is.
    assert asked_terms("What kind of task did they validate it on?") == {"task"}
    assert asked_terms("which type of optimizer did they use?") == {"optim"}
    assert asked_terms("What context length does Qwen2.5-1M support?", "Qwen2.5-1M Technical Report") == {
        "context", "length"}
    # No phrase, or only the subject and figure kinds: nothing to hold.
    assert asked_terms("how much does LazyLLM speed up decoding?") == frozenset()
    assert asked_terms("What speedup does Medusa report?") == frozenset()
    assert asked_terms("What is CacheBlend?", "CacheBlend: Fast LLM Serving") == frozenset()
    assert asked_terms("is there a paper on KV cache reuse?") == frozenset()


def test_a_sentence_without_what_was_asked_does_not_answer():
    asked = asked_terms("what batch size does the report recommend for resnet?")
    assert not holds_asked(asked, "We optimize task weighting hyperparameters and improve AUROC by 3.9%.")
    assert holds_asked(asked, "A batch of 512 images works best for ResNet-56.")
    # Stems that extend each other match; the paper's own title words are no evidence.
    assert holds_asked(asked_terms("how many gpus did they use?"), "It runs on 8 GPUs.")
    # The paper's name is not asked; another word of its title may be ("what chunk size ...").
    layout = asked_terms("what is the KV-Runahead layout?", "KV-Runahead")
    assert not holds_asked(layout, "It is fast.") and holds_asked(layout, "Its layout is fast.")
    # For a figure, what was asked must be what the figure is about.
    rate = asked_terms("whats the acceptance rate of the draft?")
    long = "It improves key metrics of acceptance rate, block efficiency and up to 3x memory bound speed up."
    assert holds_asked(rate, long) and not holds_asked(rate, long, "figure")
    assert holds_asked(rate, "The acceptance rate reaches 71% on code.", "figure")
    # A kind of thing after the question word asks for a name, checked elsewhere.
    assert asked_terms("which closed model does the 14B beat?") == frozenset()


def test_a_percentage_question_is_answered_by_a_percentage():
    question = "what percentage of tokens does CacheBlend recompute per layer?"
    assert not states_asked_kind(question, "CacheBlend reduces TTFT by 2.2-3.3X.")
    assert states_asked_kind(question, "CacheBlend recomputes 15% of the tokens.")
    assert states_asked_kind("compacter what % of params trained", "training only 0.047% of parameters")
    assert not states_asked_kind("whats the percentage of tokens recomputed?", "It is 2.2x faster.")
    assert states_asked_kind("whats the percentage of tokens recomputed?", "It recomputes 15\\% of them.")
    # A percentage in a description is not what is asked.
    described = "an encoder with a 30% masking ratio - how fast does it train?"
    assert states_asked_kind(described, "It trains in 1.13 hours.")


def test_a_figure_asked_for_a_setting_is_a_figure_of_that_setting():
    from rag.grounding import keeps_settings

    question = "What speedup does KV-Runahead give for Llama 13B?"
    assert not keeps_settings(question, "It offers 1.4x and 1.6x speedups for Llama 7B and Falcon 7B.")
    assert keeps_settings(question, "It gives a 1.5x speedup for Llama 13B.")
    # Digits inside a name set it too; a setting in other units is the same setting.
    assert keeps_settings("sarathi-serve gain for falcon 180b on 8 gpus?", "up to 6.9x for Falcon-180B on 8 A100 GPUs")
    assert keeps_settings("speedup at 128k context?", "At 131,072 tokens it is 3x faster.")
    assert not keeps_settings("speedup at 128k context?", "At 32K tokens it is 3x faster.")
    assert not keeps_settings("accuracy at 4-bit?", "Its 8-bit weights lose 1%.")
    # Values asked about, years and the subject's own numbers are not settings.
    assert keeps_settings("is it really 2x faster?", "It is 2.1x faster.")
    assert keeps_settings("does it get over 1000 tokens/s?", "It reaches 1,100 tokens per second.")
    assert keeps_settings("the 2024 paper, how much faster?", "It is 2x faster.")
    assert keeps_settings("how fast is qwen 2.5 1m?", "It is 3x faster.", "Qwen2.5-1M Technical Report")
    # A batch size is written before its number.
    assert not keeps_settings("and the speedup at batch size 64?", "It is 2x faster at batch size 32.")
    assert keeps_settings("the speedup for a batch of 32?", "At batch size 32 it is 2x faster.")


def test_a_speedup_question_is_answered_by_a_ratio():
    from rag.grounding import states_asked_kind

    assert states_asked_kind("speedup number?", "It gives a 2.3x speedup.")
    assert states_asked_kind("how much faster is it?", "It improves TTFT by 2.00times and throughput by 40%.")
    assert not states_asked_kind("speedup number?", "Prompts may hold up to 10 million tokens.")
    assert states_asked_kind("what prefill speed?", "It reaches 1,000 tokens/sec.")  # a speed, not a speedup
    assert states_asked_kind("how much faster?", "It is 2.3\u00d7 faster.")
    assert states_asked_kind("speedup?", "a tenfold cut")
    # "How does it speed up RAG?" asks how, not how much.
    assert states_asked_kind("how does it speed up RAG?", "It reuses KV caches.", "other")


def test_a_sentence_names_something_new_by_a_names_form_not_by_a_figure_or_a_common_acronym():
    from rag.grounding import names_new

    share = {"LLM": 0.6, "KV": 0.3}.get

    def new(sentence: str) -> bool:
        return names_new(sentence, "what hardware did they use?", {"accellm"}, lambda n: share(n, 0.0))

    assert new("Simulated evaluations on Nvidia H100 GPU show AcceLLM surpasses others.")
    assert new("We conduct all experiments on the Pythia 410M language model.")  # a capitalised word
    assert not new("AcceLLM cuts latency by 30% on 7B models.")  # its own name, figures
    assert not new("It runs 4-bit weights at 2.00times the speed with 128K-token prompts.")  # figures with units
    assert not new("We design an LLM-based scheduler for the KV cache.")  # names most of the collection uses


def test_a_duration_or_a_cost_is_answered_by_a_figure_in_that_unit():
    from rag.grounding import states_asked_kind

    swiftkv = "It reaches 560 TFlops/GPU, which is 16K tokens/s for Llama-3.1-70B on 4x H100 GPUs."
    assert not states_asked_kind("how many GPU hours did the distillation take?", swiftkv)
    assert states_asked_kind("how many GPU hours did the distillation take?", "It takes 3 GPU-hours.")
    assert states_asked_kind("how long does prefill take at 1M tokens?", "It takes 30 minutes on an A100.")
    assert not states_asked_kind("how long did calibrating take?", "It drops less than 1% accuracy.")
    assert states_asked_kind("how much did it cost to pretrain?", "It costs roughly $20 on 8 GPUs.")
    assert states_asked_kind("how much $ to pretrain it?", "It takes 1.13 hours at a cost of $20.")
    assert not states_asked_kind("what did the large version cost?", "It scores 79.6 in 1.13 hours.")
    # Neither a length nor a cut in cost asks for a unit.
    assert states_asked_kind("how long a context does it reach?", "It extends to 1M tokens.")
    assert states_asked_kind("how much does it reduce the cost?", "It cuts cost by 40%.")
    assert not states_asked_kind("how much did the training cost?", "It trains 2x faster.")
    assert states_asked_kind("How much does it cut the memory cost of the KV cache?", "It cuts it by 62.5%.")
    assert states_asked_kind("What does the KV cache cost in memory?", "It needs 62.5% less.")
    assert states_asked_kind("How does HiP reduce the time complexity to $O(T \\log T)$?", "It is O(T log T).")
    assert states_asked_kind("how many GPU hours did training take?", "Training took 2.4M GPU hours.")
    assert states_asked_kind("how many days did it take?", "It took two weeks.")
    assert not states_asked_kind("how many GPU hours did training take?", "It uses 1000s of GPUs.")
    assert states_asked_kind("how long a context can it take?", "It takes 1M tokens.")  # a length
    assert states_asked_kind("how much time of attention is temporal?", "It takes 68% of the time.")


def test_which_specific_thing_and_what_the_kind_only_is_said_of():
    from rag.grounding import asks_specific, only_indefinite

    assert asks_specific("which specific base model did they fine-tune?")
    assert asks_specific("Which GPU exactly runs the benchmark?")
    assert asks_specific("what exact learning rate worked best?")
    assert not asks_specific("which model did they fine-tune?")
    assert not asks_specific("how does it handle specific prompts?")
    # What a thing is or does, and a figure, are not "which one".
    assert not asks_specific("What exactly does DroidSpeak reuse?")
    assert not asks_specific("What is the exact prefill speedup of mllm-NPU?")
    optimizer = asked_terms("which optimizer came out on top?")
    assert only_indefinite(optimizer, "We evaluate baselines built with various optimizers.")
    assert not only_indefinite(optimizer, "The AdamW optimizer came out on top of various optimizers.")
    assert not only_indefinite(optimizer, "It beats SGD by 2 points.")  # holds none of the asked words
    dataset = asked_terms("which dataset do they pretrain on?")
    assert only_indefinite(dataset, "We pretrain on several curated datasets.")
    assert not only_indefinite(asked_terms("what architecture does YOCO use?"),
                               "We introduce a decoder-decoder architecture, YOCO, which caches once.")
    assert not only_indefinite(dataset, "We pretrain on the C4 dataset.")


def test_a_figure_of_a_sibling_is_not_a_figure_of_what_was_asked():
    siblings = {"decod": frozenset({"prefil"}), "prefil": frozenset({"decod"}),
                "train": frozenset({"infer"}), "infer": frozenset({"train"})}
    assert of_sibling("by how much does LazyLLM speed up the decoding stage?", LAZY, siblings, "LazyLLM")
    assert not of_sibling("by how much does LazyLLM speed up the prefill stage?", LAZY, siblings, "LazyLLM")
    # Written with a hyphen, in the question or the sentence, it is the same word.
    assert of_sibling("how much faster is decoding?", "It cuts pre-filling latency by 10x.", siblings)
    # A word inside a hyphenated one, or one the question rules out, is not what it asks about.
    assert not of_sibling("How much faster is the encoder-decoder model?", "It speeds up prefill by 2x.", siblings)
    assert not of_sibling("how much does it raise throughput without any training?",
                          "It increases the inference throughput by 2.8-5X.", siblings)
    assert not of_sibling("how much does this training-free method cut latency?",
                          "It reduces inference latency by up to 10x.", siblings)
    assert not of_sibling("how much faster is pre-filling?", "It cuts prefilling latency by 10x.", siblings)
    # A sibling the question sets aside is not asked: its figure is not the answer.
    assert of_sibling("how much faster is decoding, not the prefill?", LAZY, siblings, "LazyLLM")
    # A sentence about both, or a question about both, is about what was asked.
    both = "Prefill and decoding speeds of 121 token/s and 14 token/s."
    assert not of_sibling("what decoding speed does it reach?", both, siblings)
    assert not of_sibling("how fast are prefill and decoding?", LAZY, siblings)
    # Words that are nobody's siblings decide nothing.
    assert not of_sibling("how much memory does it save?", LAZY, siblings)
    assert of_sibling("what training speedup?", "Inference is 2x faster.", siblings)
    assert not of_sibling("what training speedup?", "Inference is 2x faster.", {})
