"""What a question asks for: its language, kind and what it wants."""

from __future__ import annotations

import pytest

from rag.intent import intent, language, spell_out


@pytest.mark.parametrize(("question", "lang"), [
    ("How much faster is prefill with mllm-NPU?", "en"),
    ("cachblend ttft speedup?", "en"),
    ("Wie viel schneller ist der Prefill mit mllm-NPU?", "de"),
    ("distserve wieviele requests mehr als andere systeme?", "de"),
    ("Quelle est la vitesse de préremplissage de mllm-NPU ?", "fr"),
    ("¿Cuánto acelera LazyLLM el prefill?", "es"),
    ("Qual é o ganho do Sarathi-Serve no Falcon-180B?", "pt"),
    ("Di quanto PreTTR riduce la latenza nel ranking di documenti web?", "it"),
    ("Di et al. results on llama 7b?", "en"),  # authors, not Italian
    # Typed without accents, or short: still not English.
    ("cuanto reduce fast forward los flops??", "es"),
    ("Combien de paires image-texte ont servi à entraîner FLIP ?", "fr"),
    ("Auf welchen GPUs wurde CacheBlend evaluiert?", "de"),
    ("quanto è più veloce FastFit in inferenza rispetto a SetFit?", "it"),
    # English, with words other languages share ("in", "per", "e", "le").
    ("what speedup in prefill does lserve get in the paper?", "en"),
    ("tokens per second in mllm-NPU?", "en"),
    ("e.g. speedup in prefill?", "en"),
    ("Le et al. speedup in prefill", "en"),
    ("mllm-NPU 的预填充速度是多少？", "zh"),
    ("mllm-NPUのプリフィル速度はどれくらいですか？", "ja"),
])
def test_language_of_a_question(question, lang):
    assert language(question) == lang


@pytest.mark.parametrize(("question", "named", "kind", "wants"), [
    ("cacheblend ttft speedup?", 1, "fact", "figure"),
    ("How does CacheBlend reuse KV caches?", 1, "fact", "other"),
    ("how does it compare with vLLM in numbers?", 0, "fact", "figure"),  # figures, not an explanation
    ("How does BatchLLM compare with vLLM?", 1, "fact", "other"),
    ("How much energy does it save?", 0, "fact", "figure"),
    ("which system offloads prefill to a phone NPU?", 0, "fact", "name"),
    ("any papers on speculative decoding?", 0, "list", "other"),
    ("recommend something about quantization", 0, "list", "other"),
    ("recommend work on speculative decoding", 0, "list", "other"),
    ("cacheblend vs turborag, which cuts TTFT more?", 2, "compare", "figure"),
    ("cacheblend vs turborag", 1, "compare", "other"),  # two sides, even when one is not found by name
    ("is cacheblend faster?", 1, "fact", "figure"),  # one paper named: nothing to set side by side
    ("what's compacter's average SuperGLUE score?", 1, "fact", "figure"),  # a score is a figure
    # The description's words for quantities do not decide: the question asks for a name.
    ("pruning at init by per-layer compression ratios - name of the scheme?", 0, "fact", "name"),
    ("a method that cuts memory 2x by sharing the kv cache, what's it called?", 0, "fact", "name"),
    ("how much memory does it save, and what's the method's name?", 0, "fact", "figure"),
    ("any trick that makes decoding quasilinear instead of quadratic in context length?", 0, "fact", "name"),
    ("for conv models, is there a method that cuts generation latency?", 0, "fact", "name"),
    ("is there a paper that offloads prefill to a phone npu? how much faster is it?", 0, "fact", "figure"),
    ("is there any accuracy loss with flatquant?", 1, "fact", "figure"),  # about a named paper
    ("whats it called, the method that packs prompts?", 0, "fact", "name"),
    ("what is the new decoding method called?", 0, "fact", "name"),
    ("what's the method for fast generation from convolutional models?", 0, "fact", "name"),
    ("Which article proposes repeating the context in the prompt?", 0, "fact", "name"),
    ("what decoding speeds does it reach?", 1, "fact", "figure"),
    ("what's the model size?", 0, "fact", "figure"),  # a quantity of the thing, not which one
    ("what\u2019s the method's speedup?", 0, "fact", "figure"),
    ("what speeds up the prefill in TurboRAG?", 1, "fact", "other"),  # the verb
])
def test_what_a_question_asks_for(question, named, kind, wants):
    got = intent(question, named)
    assert (got.kind, got.wants) == (kind, wants)


def test_which_system_wants_a_name_even_when_it_mentions_a_quantity_word():
    assert intent("Which system reduces memory use for KV caches?").wants == "name"
    assert intent("Which system, and by how much does it reduce memory?").wants == "figure"
    assert intent("does it say how it works?").kind == "fact"  # "works" is not a list of papers


def test_the_sides_of_a_comparison():
    from rag.intent import sides

    assert sides("WRAP vs one-epoch training: pretraining speedups?") == [
        "WRAP", "one-epoch training: pretraining speedups"]
    assert sides("compare flatquant with qqq") == ["flatquant", "qqq"]
    assert sides("How much faster is TurboRAG compared to conventional RAG?") == []
    assert intent("difference between SARATHI and Sarathi-Serve?", 1).kind == "compare"
    assert intent("a paper that shrinks the KV cache in prefill vs decoding?", 0).kind == "fact"


@pytest.mark.parametrize(("question", "clause"), [
    # A description, then what is asked: after a question mark, a colon, a dash or a comma.
    ("is there a paper that offloads prefill to a phone npu? how much faster?", "how much faster?"),
    ("the method that packs prompts to avoid padding: what speedup on llama-2 70b?", "what speedup on llama-2 70b?"),
    ("system that chunks prompts - how much faster?", "how much faster?"),
    ("the paper that packs prompts, which also helps - by how much on gpt-3?", "by how much on gpt-3?"),
    ("a hybrid with 1/3 full attention layers, what prefill speedup?", "what prefill speedup?"),
    # One clause, or later clauses that do not ask: the whole question.
    ("how much faster is prefill with mllm-npu?", "how much faster is prefill with mllm-npu?"),
    ("cacheblend, ttft speedup?", "cacheblend, ttft speedup?"),
    ("which one, the yoco or swiftkv?", "which one, the yoco or swiftkv?"),
    # A question that opens by asking keeps all its clauses; a relative clause after a comma is not one.
    ("how much faster is prefill on the phone, and is it lossless?", None),
    ("how much does it cut time to first token, which matters for RAG?", None),
    ("the method that packs prompts, when prompts vary in length?", None),
])
def test_the_clause_that_asks(question, clause):
    from rag.intent import asked_clause

    assert asked_clause(question) == (clause or question)


@pytest.mark.parametrize(("question", "parts"), [
    # Two things asked: after a question mark, or "and" / "+" / "n" before a question word.
    ("is fastfit pip installable? and how much faster does it train?",
     ["is fastfit pip installable?", "how much faster does it train?"]),
    ("mosaic bert - what glue score did they get n how long did pretraining take",
     ["mosaic bert - what glue score did they get", "how long did pretraining take"]),
    ("how much faster on web docs + how much storage does it save?",
     ["how much faster on web docs", "how much storage does it save?"]),
    ("how many extra ops does it add per layer, and what's the parameter overhead?",
     ["how many extra ops does it add per layer", "what's the parameter overhead?"]),
    ("which hardware did they use, and by how much did it beat the state of the art?",
     ["which hardware did they use", "by how much did it beat the state of the art?"]),
    # One thing asked: "and" between words, a relative clause, a later part that asks nothing.
    ("how much faster are prefill and decode?", None),
    ("how much does it cut time to first token, which matters for RAG?", None),
    ("what speedup on llama-2 70b? thanks", None),
])
def test_the_parts_that_ask(question, parts):
    from rag.intent import asking_clauses

    assert asking_clauses(question) == (parts or [question])


@pytest.mark.parametrize(("question", "spelt"), [
    ("distserve: more reqs vs sota?", "distserve: more requests vs state of the art?"),
    ("zipvl gpu mem savings w/ 4bit?", "zipvl gpu memory savings with 4bit?"),
    ("tbh how fast is lserve rn pls?", "how fast is lserve ?"),  # chat filler says nothing asked
    ("can u compare U-Net and Flat-Quant", "can you compare U-Net and Flat-Quant"),  # not inside a name
    ("How fast is LServe?", "How fast is LServe?"),
    ("IMO results?", "IMO results?"),  # filler only in lower case
    ("thanks!", "thanks!"),  # nothing but filler: as typed
    ("thx! whats the avg speedup", "what's the average speedup"),
])
def test_shorthand_is_spelt_out(question, spelt):
    assert spell_out(question) == spelt


@pytest.mark.parametrize(("question", "last"), [
    ("A paper clusters keys ahead of time. How big a speedup did they get?", "How big a speedup did they get?"),
    ("paper that trains N:M-pruned LLMs from scratch - inference speedup on OPT-66B?", "inference speedup on OPT-66B?"),
    ("which work groups keys into clusters? how much smaller is the KV budget?", "how much smaller is the KV budget?"),
    # One sentence, whatever its commas, hyphens and abbreviations: nothing.
    ("the method that packs prompts, how much faster is it on llama-2?", ""),
    ("medusa vs. hydra speedup?", ""),
    ("the paper on compression (e.g. quantization) how much faster?", ""),
    ("how much faster is prefill?", ""),
])
def test_the_last_sentence_of_a_question(question, last):
    from rag.intent import last_sentence

    assert last_sentence(question) == last
