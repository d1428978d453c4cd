"""The engine as llama-index objects: retriever, query engine, chat engine, LLM adapter."""

from __future__ import annotations

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.callbacks import CallbackManager
from llama_index.core.indices.prompt_helper import PromptHelper
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.response_synthesizers import ResponseMode, get_response_synthesizer
from llama_index.core.schema import NodeWithScore

from rag import ABSTAIN_TEXT
from rag.llamaindex import LlamaIndexLLM, token_counter
from tests.conftest import FakeLLM

NPU_QUESTION = "What prefill speed does mllm-NPU reach?"
NPU_ANSWER = "mllm-NPU reaches more than 1,000 tokens/second prefilling for a billion-sized model [1]."


def test_retriever_is_a_llama_index_retriever_with_paper_nodes(make_engine):
    engine = make_engine()
    retriever = engine.as_retriever(similarity_top_k=3)
    assert isinstance(retriever, BaseRetriever)
    nodes = retriever.retrieve(NPU_QUESTION)
    hits = engine.retrieve(NPU_QUESTION, 3)
    assert len(nodes) == 3 and all(isinstance(n, NodeWithScore) for n in nodes)
    # The same papers, order and scores as the engine's own retrieval.
    assert [n.node.node_id for n in nodes] == [h.paper_id for h in hits]
    assert [n.score for n in nodes] == [h.score for h in hits]
    top = nodes[0].node.metadata
    assert top["paper_id"] == hits[0].paper_id and top["title"] == hits[0].title and "url" in top
    assert "mllm-NPU" in top["title"]


def test_retriever_drops_into_a_retriever_query_engine(make_engine):
    """llama-index's own RetrieverQueryEngine over paperchat's retriever and LLM adapter, offline
    (a local tokenizer instead of tiktoken)."""
    fake = FakeLLM("It reaches 1,000 tokens/second [1].")
    engine = make_engine()
    llm = LlamaIndexLLM(fake)
    synthesizer = get_response_synthesizer(
        llm=llm, response_mode=ResponseMode.COMPACT, callback_manager=CallbackManager([]),
        prompt_helper=PromptHelper(context_window=4096, num_output=160, tokenizer=token_counter()))
    query_engine = RetrieverQueryEngine(engine.as_retriever(similarity_top_k=2), response_synthesizer=synthesizer)
    response = query_engine.query(NPU_QUESTION)
    assert response.response == "It reaches 1,000 tokens/second [1]."
    assert len(response.source_nodes) == 2 and "mllm-NPU" in response.source_nodes[0].node.metadata["title"]
    # The model saw the retrieved passage through llama-index's prompt.
    prompt = fake.calls[0][-1]["content"]
    assert response.source_nodes[0].node.get_content() in prompt and NPU_QUESTION in prompt


def test_query_engine_response_carries_citations_and_sources(make_engine):
    engine = make_engine(NPU_ANSWER)
    response = engine.as_query_engine().query(NPU_QUESTION)
    assert "1,000 tokens/second" in response.response
    meta = response.metadata
    assert meta["abstained"] is False
    assert meta["citations"] and "mllm-NPU" in meta["citations"][0]["title"]
    assert set(meta["citations"][0]) == {"n", "paper_id", "title", "url", "quote"}
    assert meta["citations"][0]["paper_id"] in {n.node.node_id for n in response.source_nodes}


def test_query_engine_abstains_in_metadata(make_engine):
    engine = make_engine()  # no reply queued: the engine must abstain before the model
    response = engine.as_query_engine().query("What is the recipe for a sourdough starter?")
    assert response.metadata["abstained"] is True
    assert response.response.startswith(ABSTAIN_TEXT) and response.metadata["citations"] == []


def test_chat_engine_keeps_the_conversation_for_follow_ups(make_engine):
    engine = make_engine(NPU_ANSWER, "It is 22.4x faster on average [1].")
    chat = engine.as_chat_engine()
    first = chat.chat(NPU_QUESTION)
    assert "1,000" in first.response and first.metadata["citations"]
    second = chat.chat("how much faster than the baselines?")
    # The follow-up was read against the first turn: the same paper is cited.
    assert second.metadata["citations"][0]["paper_id"] == first.metadata["citations"][0]["paper_id"]
    assert [m.role for m in chat.chat_history] == [MessageRole.USER, MessageRole.ASSISTANT] * 2
    chat.reset()
    assert chat.chat_history == []


def test_stream_chat_streams_then_ends_on_the_checked_answer(make_engine):
    engine = make_engine(NPU_ANSWER)
    chat = engine.as_chat_engine()
    response = chat.stream_chat(NPU_QUESTION)
    deltas = list(response.response_gen)
    assert len(deltas) > 3 and "1,000" in "".join(deltas)
    assert response.answer is not None and response.response == response.answer.text
    assert response.metadata["citations"] and response.source_nodes
    assert chat.chat_history[-1].content == response.answer.text


def test_stream_chat_with_given_history(make_engine):
    engine = make_engine("It is 22.4x faster on average [1].")
    history = [ChatMessage(role=MessageRole.USER, content=NPU_QUESTION),
               ChatMessage(role=MessageRole.ASSISTANT, content=NPU_ANSWER)]
    response = engine.as_chat_engine().stream_chat("and how much faster than baselines?", chat_history=history)
    "".join(response.response_gen)
    assert "mllm-NPU" in response.metadata["citations"][0]["title"]


def test_llm_adapter_sends_chat_messages_with_roles():
    fake = FakeLLM("hello there", "streamed reply")
    llm = LlamaIndexLLM(fake)
    reply = llm.chat([ChatMessage(role=MessageRole.SYSTEM, content="be brief"),
                      ChatMessage(role=MessageRole.USER, content="hi")])
    assert reply.message.content == "hello there"
    assert fake.calls[0] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert "".join(r.delta or "" for r in llm.stream_complete("say it")) == "streamed reply"
    assert fake.calls[1] == [{"role": "user", "content": "say it"}]


def test_async_chat_and_async_stream(make_engine):
    import asyncio

    engine = make_engine(NPU_ANSWER, NPU_ANSWER)
    chat = engine.as_chat_engine()

    async def run() -> tuple[str, str, dict]:
        first = await chat.achat(NPU_QUESTION)
        streamed = await chat.astream_chat(NPU_QUESTION)
        text = "".join([t async for t in streamed.async_response_gen()])
        return first.response, text, streamed.metadata

    first, text, meta = asyncio.run(run())
    assert "1,000" in first and "1,000" in text and meta["citations"]
