"""The engine as llama-index objects: a retriever, a query engine, a chat engine and an LLM adapter.

They let paperchat be dropped into llama-index pipelines (``RetrieverQueryEngine``, routers, agent
tools, ``RetrieverEvaluator``) while the answers keep paperchat's checks: the query and chat engines
call :meth:`Engine.ask`, so abstentions, citations and quotes are the same as on the page.

>>> retriever = engine.as_retriever(similarity_top_k=5)
>>> response = engine.as_query_engine().query("What prefill speed does mllm-NPU reach?")
>>> response.metadata["citations"], [n.node.metadata["title"] for n in response.source_nodes]
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.base.response.schema import Response
from llama_index.core.callbacks import CallbackManager
from llama_index.core.chat_engine.types import AgentChatResponse, BaseChatEngine, StreamingAgentChatResponse
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.query_engine import CustomQueryEngine
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from pydantic import PrivateAttr

from .llm import LLM, Message
from .retrieve import Hit

if TYPE_CHECKING:
    from .answer import Answer, Engine


def token_counter() -> Callable[[str], list[int]]:
    """A local tokenizer for llama-index's prompt and chunk sizing (MiniLM's word pieces; close
    enough for sizing). Its default, tiktoken, downloads its vocabulary on first use: pass this as
    ``PromptHelper(tokenizer=...)`` / ``SentenceSplitter(tokenizer=...)`` when building llama-index
    components around paperchat offline."""
    from tokenizers import Tokenizer

    from .embedding import TOKENIZER_PATH

    tok = Tokenizer.from_file(str(TOKENIZER_PATH))
    tok.no_truncation()
    return lambda text: tok.encode(text, add_special_tokens=False).ids


def hit_node(hit: Hit) -> NodeWithScore:
    """A retrieved paper as llama-index's node: its passage, score and paper metadata."""
    metadata = {**hit.metadata, "paper_id": hit.paper_id, "title": hit.title, "url": hit.url or ""}
    node = TextNode(id_=f"{hit.paper_id}", text=hit.text, metadata=metadata,
                    # The node's text is the passage alone; title and url stay out of an LLM prompt
                    # built from it and out of an embedding of it (they are in the text already).
                    excluded_llm_metadata_keys=list(metadata), excluded_embed_metadata_keys=list(metadata))
    return NodeWithScore(node=node, score=hit.score)


def answer_metadata(answer: Answer) -> dict[str, Any]:
    """What a llama-index response carries of an answer besides its text."""
    return {
        "citations": answer.citation_dicts(),
        "abstained": answer.abstained,
        "abstain_reason": answer.abstain_reason,
        "written_by": answer.written_by,
        "standalone_question": answer.standalone_question,
        "timings": answer.timings,
    }


class PaperRetriever(BaseRetriever):
    """The engine's hybrid retrieval (dense + BM25 + title names, fused) as a ``BaseRetriever``;
    one node per paper, best first, ``score`` the fused score."""

    def __init__(self, engine: Engine, similarity_top_k: int | None = None) -> None:
        super().__init__(callback_manager=CallbackManager([]))
        self._engine = engine
        self.similarity_top_k = similarity_top_k

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [hit_node(h) for h in self._engine.retrieve(query_bundle.query_str, self.similarity_top_k)]


class PaperQueryEngine(CustomQueryEngine):
    """Questions answered by :meth:`Engine.ask`: the ``Response`` holds the checked answer, the
    papers given to the model as ``source_nodes``, and the citations and abstention in ``metadata``."""

    _engine: Any = PrivateAttr()

    def __init__(self, engine: Engine, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._engine = engine

    def custom_query(self, query_str: str) -> Response:
        answer = self._engine.ask(query_str)
        return Response(response=answer.text, source_nodes=[hit_node(h) for h in answer.sources],
                        metadata=answer_metadata(answer))

    async def acustom_query(self, query_str: str) -> Response:
        return await asyncio.to_thread(self.custom_query, query_str)


def _to_history(messages: Sequence[ChatMessage]) -> list[Message]:
    return [{"role": "user" if m.role == MessageRole.USER else "assistant", "content": m.content or ""}
            for m in messages if m.role in (MessageRole.USER, MessageRole.ASSISTANT)]


class PaperChatEngine(BaseChatEngine):
    """A conversation with the engine: follow-ups ("and for decoding?") are read against the
    history it keeps. ``chat`` and ``stream_chat`` return llama-index's chat responses, with the
    citations and abstention in ``metadata``."""

    def __init__(self, engine: Engine, chat_history: Sequence[ChatMessage] | None = None) -> None:
        self._engine = engine
        self._history: list[ChatMessage] = list(chat_history or [])

    @property
    def chat_history(self) -> list[ChatMessage]:
        return list(self._history)

    def reset(self) -> None:
        self._history = []

    def _remember(self, message: str, answer: Answer) -> None:
        self._history += [ChatMessage(role=MessageRole.USER, content=message),
                          ChatMessage(role=MessageRole.ASSISTANT, content=answer.text)]

    def chat(self, message: str, chat_history: list[ChatMessage] | None = None) -> AgentChatResponse:
        if chat_history is not None:
            self._history = list(chat_history)
        answer = self._engine.ask(message, _to_history(self._history))
        self._remember(message, answer)
        return AgentChatResponse(response=answer.text, source_nodes=[hit_node(h) for h in answer.sources],
                                 metadata=answer_metadata(answer))

    def stream_chat(self, message: str, chat_history: list[ChatMessage] | None = None) -> CheckedStreamingResponse:
        """Streams the model's draft through ``response_gen``; once it ends, ``response`` is the
        checked answer (an abstention, or a quote that replaced a failed draft, can differ from the
        draft) and ``source_nodes``, ``metadata`` and ``answer`` are filled in."""
        if chat_history is not None:
            self._history = list(chat_history)
        history = _to_history(self._history)
        result = CheckedStreamingResponse(is_writing_to_memory=False)

        def deltas() -> ChatResponseGen:
            text = ""
            for item in self._engine.ask_stream(message, history):
                if isinstance(item, str):
                    text += item
                    yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=item)
                    continue
                self._remember(message, item)
                result.answer = item
                result.source_nodes = [hit_node(h) for h in item.sources]
                result.metadata = answer_metadata(item)

        result.chat_stream = deltas()
        return result

    async def achat(self, message: str, chat_history: list[ChatMessage] | None = None) -> AgentChatResponse:
        return await asyncio.to_thread(self.chat, message, chat_history)

    async def astream_chat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> StreamingAgentChatResponse:
        # The model is bound to one thread at a time; the async variant streams the finished answer.
        response = await self.achat(message, chat_history)
        done = ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=response.response),
                            delta=response.response)

        def sync_one() -> ChatResponseGen:  # a generator, as chat_stream is typed
            yield done

        async def one() -> ChatResponseAsyncGen:
            yield done

        return CheckedStreamingResponse(response=response.response, source_nodes=response.source_nodes,
                                        chat_stream=sync_one(), achat_stream=one(), is_writing_to_memory=False,
                                        metadata=response.metadata)


@dataclass
class CheckedStreamingResponse(StreamingAgentChatResponse):
    """llama-index's streaming chat response, ending on paperchat's checked answer."""

    answer: Answer | None = None
    metadata: dict[str, Any] | None = None

    @property
    def response_gen(self) -> Generator[str, None, None]:
        yield from super().response_gen
        if self.answer is not None:
            self.response = self.answer.text


class LlamaIndexLLM(CustomLLM):
    """A paperchat LLM backend behind llama-index's LLM interface (chat and completion), so
    llama-index components use the same model with no global default (OpenAI) involved."""

    context_window: int = 4096
    num_output: int = 160
    model_name: str = "paperchat-llm"
    temperature: float = 0.0
    #: llama-index sends chat models message lists and others one formatted prompt; both reach
    #: the backend as chat messages.
    chat_model: bool = True
    _inner: Any = PrivateAttr()

    def __init__(self, inner: LLM, **kwargs: Any) -> None:
        super().__init__(callback_manager=CallbackManager([]), **kwargs)
        self._inner = inner

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=self.context_window, num_output=self.num_output,
                           model_name=self.model_name, is_chat_model=self.chat_model)

    def _deltas(self, messages: list[Message]) -> Iterator[str]:
        return self._inner.stream(messages, max_tokens=self.num_output, temperature=self.temperature)

    @staticmethod
    def _messages(messages: Sequence[ChatMessage]) -> list[Message]:
        return [{"role": str(m.role.value), "content": m.content or ""} for m in messages]

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        text = "".join(self._deltas(self._messages(messages)))
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        def gen() -> ChatResponseGen:
            text = ""
            for delta in self._deltas(self._messages(messages)):
                text += delta
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta)

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="".join(self._deltas([{"role": "user", "content": prompt}])))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> CompletionResponseGen:
            text = ""
            for delta in self._deltas([{"role": "user", "content": prompt}]):
                text += delta
                yield CompletionResponse(text=text, delta=delta)

        return gen()


class LlamaIndexViews:
    """The engine's ``as_retriever`` / ``as_query_engine`` / ``as_chat_engine`` /
    ``as_llama_index_llm`` (a base class of :class:`rag.Engine`)."""

    def as_retriever(self, similarity_top_k: int | None = None) -> PaperRetriever:
        """This engine's retrieval as a llama-index ``BaseRetriever`` returning ``NodeWithScore``."""
        return PaperRetriever(cast("Engine", self), similarity_top_k)

    def as_query_engine(self) -> PaperQueryEngine:
        """A llama-index query engine answering with :meth:`Engine.ask` (citations in ``metadata``)."""
        return PaperQueryEngine(cast("Engine", self))

    def as_chat_engine(self) -> PaperChatEngine:
        """A llama-index chat engine (``chat``, ``stream_chat``) that reads follow-ups in context."""
        return PaperChatEngine(cast("Engine", self))

    def as_llama_index_llm(self) -> LlamaIndexLLM:
        """This engine's LLM behind llama-index's LLM interface."""
        engine = cast("Engine", self)
        s = engine.settings
        return LlamaIndexLLM(engine.llm, context_window=s.llm.n_ctx, num_output=s.answer.max_tokens)
