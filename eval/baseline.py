"""The plain llama-index baseline: VectorStoreIndex + CitationQueryEngine over the same store,
with the same LLM and embedding as the engine.

Everything llama-index would otherwise take from its global ``Settings`` (an OpenAI LLM, the
tiktoken tokenizer, which downloads its vocabulary) is passed explicitly.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from llama_index.core import PromptTemplate, VectorStoreIndex
from llama_index.core.base.response.schema import StreamingResponse
from llama_index.core.callbacks import CallbackManager
from llama_index.core.indices.prompt_helper import PromptHelper
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.query_engine import CitationQueryEngine
from llama_index.core.query_engine.citation_query_engine import CITATION_QA_TEMPLATE, CITATION_REFINE_TEMPLATE
from llama_index.core.response_synthesizers import ResponseMode, get_response_synthesizer

from rag import Engine
from rag.llamaindex import LlamaIndexLLM, token_counter

_MARKER = re.compile(r"\[(\d+)\]")
# llama-index's condense prompt (CondenseQuestionChatEngine), written out so no global default is used.
CONDENSE_PROMPT = PromptTemplate(
    "Given a conversation (between Human and Assistant) and a follow up message from Human, rewrite the "
    "message to be a standalone question that captures all relevant context from the conversation.\n\n"
    "<Chat History>\n{chat_history}\n\n<Follow Up Message>\n{question}\n\n<Standalone question>\n"
)


@dataclass
class BaselineAnswer:
    text: str
    cited_titles: list[str]
    abstained: bool  # no citation at all: the baseline has no abstention of its own
    first_token_s: float
    total_s: float


class CitationBaseline:
    """llama-index's CitationQueryEngine over the engine's Chroma collection."""

    def __init__(self, engine: Engine, top_k: int | None = None) -> None:
        s = engine.settings
        tokenizer = token_counter()
        # Completion mode, as before the adapter moved to rag/: one user message per prompt.
        self.llm = LlamaIndexLLM(engine.llm, context_window=s.llm.n_ctx, num_output=s.answer.max_tokens,
                                 chat_model=False)
        index = VectorStoreIndex.from_vector_store(engine.store.vector_store, embed_model=engine.embed_model)
        synthesizer = get_response_synthesizer(
            llm=self.llm,
            prompt_helper=PromptHelper(context_window=s.llm.n_ctx, num_output=s.answer.max_tokens, tokenizer=tokenizer),
            text_qa_template=CITATION_QA_TEMPLATE,
            refine_template=CITATION_REFINE_TEMPLATE,
            response_mode=ResponseMode.COMPACT,
            streaming=True,
        )
        self.query_engine = CitationQueryEngine(
            retriever=index.as_retriever(similarity_top_k=top_k or s.answer.sources),
            llm=self.llm,
            response_synthesizer=synthesizer,
            text_splitter=SentenceSplitter(chunk_size=512, chunk_overlap=20, tokenizer=tokenizer),
            callback_manager=CallbackManager([]),
        )

    def condense(self, question: str, history: list[dict[str, str]]) -> str:
        """llama-index's condense-question step (CondenseQuestionChatEngine's prompt)."""
        lines = "\n".join(f"{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in history)
        return self.llm.complete(CONDENSE_PROMPT.format(chat_history=lines, question=question)).text.strip() or question

    def ask(self, question: str, history: list[dict[str, str]] | None = None) -> BaselineAnswer:
        start = time.perf_counter()
        query = self.condense(question, history) if history else question
        response = self.query_engine.query(query)
        assert isinstance(response, StreamingResponse)  # the synthesizer streams (streaming=True above)
        text, first = "", None
        for delta in response.response_gen:
            if first is None and delta.strip():
                first = time.perf_counter() - start
            text += delta
        total = time.perf_counter() - start
        sources = response.source_nodes
        cited: list[str] = []
        for n in dict.fromkeys(int(m) for m in _MARKER.findall(text)):
            if 1 <= n <= len(sources):
                title = sources[n - 1].node.metadata.get("title", "")
                if title and title not in cited:
                    cited.append(title)
        return BaselineAnswer(text.strip(), cited, not cited, first if first is not None else total, total)
