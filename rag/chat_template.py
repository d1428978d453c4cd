"""Chat templates: how a GGUF model wants a conversation written as one prompt.

The template comes from the GGUF's own metadata (``tokenizer.chat_template``, a Jinja template as
Hugging Face writes them), or from the ``llm.chat_format`` setting: one of :data:`BUILT_IN` (for GGUF
files that carry none) or a path to a Jinja file. Stop strings and the prompt start used for saved
model states are derived from the template itself, so no model family is special-cased.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from .llm import LLMError

Message = dict[str, str]

# Written in the Hugging Face chat-template dialect (messages, add_generation_prompt, bos_token).
# ChatML (Qwen, SmolLM, many others): the system prompt is a turn of its own.
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Gemma has no system role: the system prompt opens the first user turn; the assistant is "model".
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set head = messages[0]['content'] + '\n\n' %}"
    "{% set turns = messages[1:] %}{% else %}{% set head = '' %}{% set turns = messages %}{% endif %}"
    "{% for m in turns %}{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\n'"
    " + (head if loop.first else '') + m['content'] + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n'"
    " + m['content'] + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Mistral instruct: the system prompt is put before the first user message.
MISTRAL = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set head = messages[0]['content'] + '\n\n' %}"
    "{% set turns = messages[1:] %}{% else %}{% set head = '' %}{% set turns = messages %}{% endif %}"
    "{% for m in turns %}{% if m['role'] == 'user' %}{{ '[INST] ' + (head if loop.first else '') + m['content']"
    " + ' [/INST]' }}{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}"
)
BUILT_IN = {"chatml": CHATML, "gemma": GEMMA, "llama-3": LLAMA3, "mistral": MISTRAL}

# A marker no prompt contains, to find where a message's text ends inside the rendered prompt.
_MARK = "\u2063\u2063paperchat-mark\u2063\u2063"


class ChatTemplate:
    """A Jinja chat template with the model's BOS and EOS token texts."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "", name: str = "",
                 extra_stops: tuple[str, ...] = ()) -> None:
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise jinja2.TemplateError(message)

        # Templates come from model files: render them sandboxed, as transformers does.
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.globals.update(raise_exception=raise_exception,
                           strftime_now=lambda fmt: datetime.now().strftime(fmt))
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as e:
            raise LLMError(f"the chat template {name or ''} is not a valid Jinja template: {e}") from e
        self.name = name
        self.bos_token, self.eos_token = bos_token, eos_token
        # Some templates refuse a system turn (Mistral v0.1/v0.2, Gemma 1/2 raise on it): then the
        # system prompt opens the first user turn, as those models were trained to read it.
        self.fold_system = False
        try:
            self.render([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
        except LLMError:
            self.fold_system = True
        self.stop = list(dict.fromkeys([*self._stop_strings(), *(t for t in extra_stops if t)]))

    def render(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        """The prompt for ``messages``, ending with an open assistant turn."""
        import jinja2

        if self.fold_system and len(messages) > 1 and messages[0]["role"] == "system" and messages[1]["role"] == "user":
            first = {**messages[1], "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}
            messages = [first, *messages[2:]]
        try:
            return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token, eos_token=self.eos_token)
        except jinja2.TemplateError as e:
            raise LLMError(f"the chat template {self.name} cannot write this conversation: {e}") from e

    def prefix(self, messages: list[Message]) -> str | None:
        """The start of the prompt of a conversation whose last message is not finished yet (its
        text continues), or None if this template does not keep the text as written."""
        *done, last = messages
        text = self.render([*done, {**last, "content": last["content"] + _MARK}], add_generation_prompt=False)
        head, found, _ = text.partition(_MARK)
        return head if found else None

    def _stop_strings(self) -> list[str]:
        """What ends an assistant turn: the text the template writes right after an assistant
        message (``<|im_end|>``, ``<end_of_turn>``, ``<|eot_id|>``...), and the EOS and BOS texts."""
        stops: list[str] = []
        try:
            text = self.render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok" + _MARK}],
                               add_generation_prompt=False)
        except LLMError:
            text = ""
        after = text.partition(_MARK)[2].strip()
        if after:
            stops.append(after.splitlines()[0].strip())
        # And where a new user turn starts ("<|im_start|>user"): a model that opens one without
        # closing its own would otherwise write a made-up question.
        try:
            text = self.render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok" + _MARK},
                                {"role": "user", "content": "again" + _MARK}], add_generation_prompt=False)
        except LLMError:
            text = ""
        turn = text.partition(_MARK)[2].partition("again")[0]
        turn = turn.removeprefix(stops[0] if stops else "").strip()
        if turn:
            stops.append(turn.splitlines()[0].strip())
        stops += [t for t in (self.eos_token, self.bos_token) if t]
        return list(dict.fromkeys(stops))


def chat_template(metadata: dict[str, str], token_text: Any, chat_format: str | None, model: str) -> ChatTemplate:
    """The template for a GGUF model: ``chat_format`` when given (a built-in name or a Jinja file),
    else the one in the file's metadata. ``token_text(id)`` gives a token's text (for BOS and EOS)."""
    def token(key: str) -> str:
        value = metadata.get(key)
        return token_text(int(value)) if value not in (None, "", "-1") else ""

    bos_text, eos = token("tokenizer.ggml.bos_token_id"), token("tokenizer.ggml.eos_token_id")
    # A model that does not start with BOS (Qwen) still must not write it: it stops generation.
    bos = bos_text if metadata.get("tokenizer.ggml.add_bos_token") != "false" else ""
    extra = (bos_text,)
    if chat_format:
        if chat_format in BUILT_IN:
            return ChatTemplate(BUILT_IN[chat_format], bos, eos, chat_format, extra)
        path = Path(chat_format).expanduser()
        if not path.is_file():
            raise LLMError(f"chat_format {chat_format!r} is neither a built-in format ({', '.join(BUILT_IN)}) "
                           "nor a Jinja template file")
        return ChatTemplate(path.read_text(encoding="utf-8"), bos, eos, str(path), extra)
    source = metadata.get("tokenizer.chat_template")
    if not source:
        raise LLMError(f"{model} carries no chat template: set PAPERCHAT_LLM__CHAT_FORMAT to one of "
                       f"{', '.join(BUILT_IN)} or to a Jinja template file")
    return ChatTemplate(source, bos, eos, f"of {model}", extra)
