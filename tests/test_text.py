"""Text analysis shared by every stage: tokens, sentences, names matched by token."""

from __future__ import annotations

from rag.corpus import stored_body, stored_text
from rag.text import (
    capitalised_names,
    content_terms,
    mentions,
    paper_names,
    split_answer,
    split_sentences,
    squash,
    tokenize,
)

NPU = "Empowering 1000 tokens/second on-device LLM prefilling with mllm-NPU"
CACHEBLEND = "CacheBlend: Fast Large Language Model Serving for RAG with Cached Knowledge Fusion"


def test_tokens_and_content_terms():
    assert tokenize(["NPUs and GPUs"]) == [["npu", "gpu"]]
    assert "2.2" in content_terms("a 2.2x speedup")
    assert "fast" in content_terms("22.4x faster")  # comparatives fold, so "how fast" finds it


def test_sentences_of_an_abstract_and_of_an_answer():
    assert split_sentences("It is 2.5x faster. Then (a) works. Done") == [
        "It is 2.5x faster.", "Then (a) works.", "Done"]
    # An answer keeps a marker written after the full stop with its sentence, and a line is a sentence.
    assert split_answer("It is small [2]. It is fast. [1]\n- a list item") == [
        "It is small [2].", "It is fast. [1]", "- a list item"]


def test_stored_text_is_the_title_line_then_the_chunk():
    text = stored_text("CacheBlend: Fast Serving", "We blend caches. It is fast.")
    assert text.splitlines()[0] == "CacheBlend: Fast Serving"
    assert stored_body(text) == "We blend caches. It is fast."
    assert stored_body("no title line") == "no title line"


def test_names_match_as_people_type_them():
    assert squash("Llama-2") == squash("llama 2") == squash("LLaMA2")
    assert "mllmnpu" in paper_names(NPU) and "cacheblend" in paper_names(CACHEBLEND)
    assert mentions("how fast is mlm-npu prefil", paper_names(NPU))  # one letter missing
    assert mentions("cachblend ttft speedup?", paper_names(CACHEBLEND))  # a typo
    assert mentions("what does Cache Blend do", paper_names(CACHEBLEND))  # two words
    assert not mentions("how do caches blend into storage?", {"cacheblend"} - {"cacheblend"})
    assert not mentions("does the input stage matter", {"npu"})  # a token, not a substring


def test_a_typo_is_forgiven_only_in_a_lower_case_word_the_collection_does_not_use():
    minference = {"minference"}
    assert not mentions("by how much does it increase inference throughput?", minference, known=lambda w: True)
    assert mentions("minfrence prefill speedup?", minference, known=lambda w: False)
    assert not mentions("How does Mixtral route tokens?", {"mistral"})  # a capitalised name is exact
    assert not mentions("flashattention-3 fp8 tflops?", {"flashattention"})  # a version is no typo


def test_a_text_names_something_by_token_not_by_substring():
    from rag.text import names_in

    assert not names_in("We process the input stage first.", "NPU")
    assert not names_in("Fast storage for caches.", "RAG")
    assert names_in("Results on Llama 2 and Mistral.", "Llama-2")
    assert names_in("mllm-NPU reaches 1,000 tokens/s on the NPU.", "NPU")
    assert names_in("Accelerating Production LLMs", "LLM") and names_in("LLM serving", "LLMs")


def test_a_paper_is_named_by_its_own_names_not_by_the_names_of_what_it_uses():
    from rag.text import own_names

    title = "CacheBlend: Fast Large Language Model Serving for RAG with Cached Knowledge Fusion"
    assert own_names(title, "We present CacheBlend, which reuses KV caches for RAG.") == {"CacheBlend"}
    title = "FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness"
    abstract = ("We propose FlashAttention, an IO-aware exact attention algorithm that uses tiling to reduce "
                "reads/writes between GPU high bandwidth memory (HBM) and on-chip SRAM.")
    assert own_names(title, abstract) == {"FlashAttention"}  # not HBM, nor IO-Awareness
    # A hyphenated name the abstract repeats is the paper's own; one it does not use is a phrase.
    title = "Taming Throughput-Latency Tradeoff in LLM Inference with Sarathi-Serve"
    assert "Sarathi-Serve" in own_names(title, "We introduce Sarathi-Serve. Sarathi-Serve is fast.")
    assert own_names("PELA: Learning Parameter-Efficient Models with Low-Rank Approximation",
                     "We factorize a model into a low-rank one.") == {"PELA"}
    # A name introduced with its acronym, and an acronym of something used.
    abstract = "We propose Web Rephrase Augmented Pre-training (WRAP), and compare with Low-Rank Adaptation (LoRA)."
    assert own_names("Rephrasing the Web", abstract) == {"WRAP"}
    assert own_names("Fast Serving", "We present X, a system for retrieval-augmented generation (RAG).") == set()
    # A coined word a title starts with is its name when the abstract uses it; a method's is not.
    assert own_names("Self-Infilling Code Generation", "We use self-infilling. Self-infilling helps.") == {
        "Self-Infilling"}
    assert own_names("Meta-Learning to Improve Pre-Training", "We meta-learn the weights.") == set()
    # A name the collection uses as a word ("SPEED") is not a name.
    giants = "We propose SPEED, a framework that aligns small models."
    assert own_names("Little Giants", giants) == {"SPEED"}
    assert own_names("Little Giants", giants, common=lambda w: w == "speed") == set()
    # ... unless typed as written: the capitals are the name.
    assert capitalised_names("Little Giants", giants, lambda w: w == "speed") == {"SPEED"}
    assert capitalised_names("YOCO", "We propose YOCO, a decoder.", lambda w: w == "speed") == set()
    # An acronym of the title's head; "our proposed X".
    assert own_names("You Only Cache Once: Decoder-Decoder Architectures",
                     "We introduce a decoder-decoder architecture, YOCO, which caches once.") == {"YOCO"}
    assert "YOCO" not in own_names("Only Once: Caching", "We compare with YOCO.")  # not its head's letters
    assert "LongGen" in own_names("A Little Goes a Long Way", "This leads to our proposed LongGen, which is fast.")
    assert own_names("FooServe: fast serving", "Unlike the previously proposed FlashAttention-2 kernel, models "
                     "developed by OpenAI (GPT-4) are slow.") == {"FooServe"}


def test_the_words_before_a_leading_colon_name_the_subject():
    from rag.text import question_names

    assert "zero-infinity" in question_names("zero-infinity: how big a model can you train on nvme?")
    # Only one hyphenated or numbered word: a comparison's head has names of its own.
    assert "prodiff vs matcha-tts" not in question_names("prodiff vs matcha-tts: how does each make TTS fast?")
    assert "so" not in question_names("so what is the ratio: 2x or 3x?")
    assert question_names("quick question: how fast is cacheblend?") == []  # ordinary words


def test_a_name_slot_is_where_a_question_puts_a_name_in_any_case():
    from rag.text import name_slots

    assert name_slots("how many decoding heads does medusa use?") == ["medusa"]
    assert name_slots("how does mooncake's kvcache-centric arch do?") == ["mooncake"]
    # Not the first word: "Tldr", "Summarise", "Waht" open questions as often as a name does.
    assert name_slots("Summarise CacheBlend's results") == ["CacheBlend"]
    assert name_slots("tensorrt-llm vs. vllm on h100?") == ["tensorrt-llm", "vllm"]
    # Lower case elsewhere is no slot; "does it", "does the" are the caller's to drop as words.
    assert name_slots("how much energy savngs on a phone?") == []


def test_an_acronym_the_abstract_defines_reads_as_its_long_form():
    from rag.text import acronyms, spell_acronyms

    defined = acronyms("It lowers the time-to-first-token (TTFT) and time per output token (TPOT) on a "
                       "Neural Processing Unit (NPU) of large language models (LLMs).")
    assert defined == {"TTFT": "time-to-first-token", "TPOT": "time per output token", "NPU": "Neural Processing Unit",
                       "LLM": "large language models"}
    assert acronyms("we test it (see below) on GLUE (SOTA)") == {}  # no long form spells them
    # A hyphenated word gives one letter, or one per part.
    assert acronyms("we propose Web Rephrase Augmented Pre-training (WRAP)") == {
        "WRAP": "Web Rephrase Augmented Pre-training"}
    assert acronyms("continual Pre-Training (PT) of models") == {"PT": "Pre-Training"}
    assert spell_acronyms("TurboRAG reduces TTFT by 9.4x.", defined) == (
        "TurboRAG reduces TTFT (time-to-first-token) by 9.4x.")
    assert spell_acronyms("It cuts the time-to-first-token by 2x.", defined) == (
        "It cuts the time-to-first-token (TTFT) by 2x.")
    assert spell_acronyms("It is fast.", defined) == "It is fast."
    # Whole words only, and an acronym of one letter spells nothing.
    assert spell_acronyms("mllm-NPU is fast.", defined) == "mllm-NPU is fast."
    assert spell_acronyms("The monkey values.", {"KV": "key value"}) == "The monkey values."
    assert acronyms("one accelerator (A100).") == {}


def test_a_figure_of_an_acronym_answers_the_long_form(make_engine):
    # The question says "time to first token"; the figure's sentence says only "TTFT".
    engine = make_engine()
    turbo = next(h for h in engine.retrieve("TurboRAG time to first token") if h.title.startswith("TurboRAG"))
    ranked = engine.evidence.rank_sentences("how much does TurboRAG cut time to first token?", [turbo], "figure")
    figure = next(sc for sc, _ in ranked if "9.4x" in sc.text)
    assert "time-to-first-token" not in figure.text and figure.coverage == 1.0 and figure.figure_coverage == 1.0


def test_names_keep_their_dots_and_lose_another_scripts_particles():
    from rag.text import name_forms

    found = name_forms("¿cuántos tokens saca SwiftKV con llama-3.1-70b en 4 H100?")
    assert found == ["llama-3.1-70b", "SwiftKV", "H100"]
    assert name_forms("DiffFit이 ImageNet 512x512에서 얻은 FID는 얼마야?")[:2] == ["DiffFit", "ImageNet"]
    assert "Qwen2.5-1M" in name_forms("bei Qwen2.5-1M mit 1M Tokens")
    # A count typed onto a name is not part of it; a name with a count inside is one name.
    assert "a100" in name_forms("sarathi-serve gain on 8xa100?") and "H100" in name_forms("on 4\u00d7H100")
    assert "8x7B" in name_forms("Mixtral 8x7B") and "speedup" not in name_forms("a 2xspeedup")
