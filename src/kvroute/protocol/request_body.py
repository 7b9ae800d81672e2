"""What a client's request says. The router and the emulated worker read it with these
functions; the load generator's bodies (:func:`kvroute.bench.client.http_request`) are
read back by them in the tests.

Contract:

* Routes (:data:`APIS`, :data:`PATHS`): ``completions`` is ``POST /v1/completions``,
  ``chat`` is ``POST /v1/chat/completions``, ``generate`` is SGLang's ``POST /generate``,
  ``responses`` is OpenAI's Responses API, ``POST /v1/responses``.
* The body is a JSON object (:func:`json_body`). Whatever breaks this contract raises
  :class:`BadRequest`, which the router and the worker both answer with a 400 and the
  error body of :mod:`kvroute.protocol.response_body`.
* Prompts (:func:`prompts_of`), one or more (a batch):

  - ``completions``: ``prompt``: a string, token ids, or a list of strings and lists of
    token ids (a batch);
  - ``generate``: ``text`` (a string or a list of strings), else ``input_ids`` (token ids
    or a list of lists of them);
  - ``chat``: ``messages``, a non-empty list of objects with a string ``role``: one prompt.
  - ``responses``: ``input`` (a non-empty string, or a non-empty list of objects) read as
    chat messages (:func:`responses_messages`), after ``instructions`` as a system
    message: one prompt.

  A string must be non-empty, a list non-empty, and a token id an integer in
  ``[0, 2**63)`` (not a boolean). Negative ids are refused because the simulator's
  generated ids are negative (:func:`kvroute.workloads.request.output_ids`): a client's
  could collide with them.
* A batch: the router validates every prompt and keys its decision on the first
  (:meth:`PromptEncoder.units`); the emulated worker serves every prompt of it.
* Units (:class:`PromptEncoder`): token ids are used as given (int64); text goes through
  the tokenizer, or without one becomes its characters (code points, :func:`chars`:
  uint8 for ASCII text, else uint32; units compare by value whatever their dtype), as
  SGLang's router does; chat messages are rendered by the model's own chat template
  when there is one, else by the Llama-3-like
  :func:`~kvroute.workloads.tokenizer.apply_chat_template`, then encoded; without a
  tokenizer they become the characters of :func:`chat_text`. A template's refusal is a
  BadRequest (but for the ``responses`` route: :meth:`PromptEncoder.units`).
* Replies (:meth:`PromptEncoder.reply_units`): the units a reply's text adds after the
  request's, as a continuation's prompt holds them (a chat's next turn, an agent's next
  call), for a policy whose index records replies.
* ``max_tokens`` (:func:`max_tokens_of`): ``completions``: ``max_tokens``; ``chat``:
  ``max_tokens``, else ``max_completion_tokens``; ``generate``:
  ``sampling_params.max_new_tokens``; ``responses``: ``max_output_tokens``. Absent or
  null: None (the engine's default); otherwise an integer >= 1. ``sampling_params``, when
  given, is an object. The minimum (:func:`min_tokens_of`): ``min_tokens``, or
  ``sampling_params.min_new_tokens``; 0 or absent: None.
* ``stream`` and ``stream_options.include_usage`` are read as truthy values
  (:func:`streamed`, :func:`include_usage`); :func:`ask_usage` adds the second to a body
  that has no ``stream_options`` (the router's ``--stream-usage``).
* ``previous_response_id`` (:func:`previous_response_of`, Responses API): a non-empty
  string, or None when absent or null: the engine that stored that response must serve
  the request.
* The LoRA adapter (:func:`adapter_of`): of the names the router was told are adapters,
  the one in ``model`` (OpenAI APIs) or SGLang's ``lora_path`` (``generate``, one name);
  None for anything else (the base model).
* Session: the ``X-Session-ID`` header (:data:`SESSION_HEADER`), hashed to a 63-bit
  non-negative int (:func:`session_key`); absent or empty: None.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from kvroute.errors import ConfigError
from kvroute.workloads.tokenizer import Tokenizer, apply_chat_template

if TYPE_CHECKING:
    from kvroute.workloads.chat_template import ChatTemplate

__all__ = [
    "APIS",
    "PATHS",
    "RANK_HEADER",
    "SESSION_HEADER",
    "BadRequest",
    "Messages",
    "Prompt",
    "PromptEncoder",
    "adapter_of",
    "ask_usage",
    "chars",
    "chat_text",
    "include_usage",
    "json_body",
    "last_member",
    "max_tokens_of",
    "min_tokens_of",
    "previous_response_of",
    "prompts_of",
    "responses_messages",
    "session_key",
    "streamed",
]

APIS = ("completions", "chat", "generate", "responses")
PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions",
         "generate": "/generate", "responses": "/v1/responses"}
SESSION_HEADER = "X-Session-ID"
# the data-parallel rank a request is for, as vLLM's OpenAI server reads it (any case)
RANK_HEADER = "X-data-parallel-rank"

Messages = list[dict[str, Any]]
Prompt = str | np.ndarray | Messages  # text, token ids (1-D int64) or chat messages

_MAX_ID = 1 << 63
_UTF32 = np.dtype("<u4")


class BadRequest(Exception):
    """The client's request breaks the protocol: a 400 (``invalid_request_error``)."""


def json_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest("the request body is not valid JSON") from e
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def _ids(value: list[Any]) -> np.ndarray | None:
    """Token ids from a non-empty list of them, else None."""
    if value and all(type(t) is int and 0 <= t < _MAX_ID for t in value):
        return np.asarray(value, dtype=np.int64)
    return None


def _batch(value: Any, field: str, text: bool, ids: bool) -> list[Prompt]:
    """The prompts of ``field``: one (a string or token ids) or a list of them."""
    kinds = {(True, True): "a string, token ids (ints >= 0) or a list of strings and "
                           "lists of token ids",
             (True, False): "a string or a list of strings",
             (False, True): "token ids (ints >= 0) or a list of lists of token ids"}
    wrong = f"'{field}' must be {kinds[text, ids]}"
    if isinstance(value, str):
        if not text:
            raise BadRequest(wrong)
        if not value:
            raise BadRequest(f"'{field}' is empty")
        return [value]
    if not isinstance(value, list):
        raise BadRequest(wrong)
    if not value:
        raise BadRequest(f"'{field}' is empty")
    if ids:
        one = _ids(value)
        if one is not None:
            return [one]
    out: list[Prompt] = []
    for item in value:
        if text and isinstance(item, str) and item:
            out.append(item)
        elif ids and isinstance(item, list) and (arr := _ids(item)) is not None:
            out.append(arr)
        elif item == "" or item == []:
            raise BadRequest(f"'{field}' holds an empty prompt")
        else:
            raise BadRequest(wrong)
    return out


def _messages(body: dict[str, Any]) -> Messages:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest(f"message {i}: must be an object with a string 'role'")
    return messages


def _part_text(part: Any) -> str:
    """A content part's text (``input_text``, ``output_text``, ...), else its type in
    brackets (an image, a file: what the router can key on)."""
    if isinstance(part, str):
        return part
    if isinstance(part, dict):
        text = part.get("text")
        return text if isinstance(text, str) else f"[{part.get('type', 'part')}]"
    raise BadRequest("a content part must be an object or a string")


def responses_messages(body: dict[str, Any]) -> Messages:
    """A Responses API request as chat messages: ``instructions`` as the system message,
    then ``input``: a string is one user message; each item of a list with a ``role`` is a
    message (its ``content`` a string or a list of parts, joined by their text); other
    items (``function_call``, ``function_call_output``, ``reasoning``, ...) are the
    assistant's or a tool's message holding their compact JSON."""
    items = body.get("input")
    if isinstance(items, str):
        if not items:
            raise BadRequest("'input' is empty")
        items = [{"role": "user", "content": items}]
    elif not isinstance(items, list) or not items:
        raise BadRequest("'input' must be a non-empty string or a non-empty list")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise BadRequest("'instructions' must be a string")
    out: Messages = [{"role": "system", "content": instructions}] if instructions else []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"input item {i}: must be an object")
        role, content = item.get("role"), item.get("content")
        if isinstance(role, str):
            if isinstance(content, list):
                content = "".join(map(_part_text, content))
            elif not isinstance(content, str):
                raise BadRequest(f"input item {i}: 'content' must be a string or a list")
            out.append({"role": role, "content": content})
        else:
            out.append({"role": "tool" if item.get("type") == "function_call_output"
                        else "assistant",
                        "content": json.dumps(item, separators=(",", ":"), ensure_ascii=False)})
    return out


def previous_response_of(body: dict[str, Any]) -> str | None:
    """A Responses API request's ``previous_response_id`` (see the module docstring)."""
    value = body.get("previous_response_id")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise BadRequest("'previous_response_id' must be a non-empty string")
    return value


def adapter_of(route: str, body: dict[str, Any], adapters: frozenset[str]) -> str | None:
    """The LoRA adapter a request asks for, among ``adapters`` (see the module doc)."""
    name = body.get("lora_path" if route == "generate" else "model")
    return name if isinstance(name, str) and name in adapters else None


def prompts_of(route: str, body: dict[str, Any]) -> list[Prompt]:
    """The prompts of a request body on ``route`` (see the module docstring)."""
    if route == "chat":
        return [_messages(body)]
    if route == "responses":
        return [responses_messages(body)]
    if route == "generate":
        if body.get("text") is not None:
            return _batch(body["text"], "text", text=True, ids=False)
        if body.get("input_ids") is not None:
            return _batch(body["input_ids"], "input_ids", text=False, ids=True)
        raise BadRequest("/generate needs 'text' or 'input_ids'")
    if route == "completions":
        if body.get("prompt") is None:
            raise BadRequest("'prompt' is required")
        return _batch(body["prompt"], "prompt", text=True, ids=True)
    raise ValueError(f"unknown route {route!r}; one of: {', '.join(APIS)}")


def chars(text: str) -> np.ndarray:
    """The code points of ``text`` (1-D, read-only): uint8 when it is ASCII, else uint32,
    a view of its encoding (no conversion, one or four bytes a unit)."""
    if text.isascii():  # O(1): CPython knows; the encoding is a copy of its bytes
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=_UTF32)


def chat_text(messages: Messages) -> str:
    """Chat messages as one text to key on without a tokenizer: per message, its role, a
    newline and its content when the message is just a string ``role`` and ``content``,
    else the message's compact JSON; messages joined by a blank line. A conversation's
    text is a prefix of its continuation's. (A copy of the content, not an escaping
    pass: compact JSON cost the router 40 us a request on 20K-character prompts.)"""
    return "\n\n".join(
        f"{m['role']}\n{m['content']}"
        if len(m) == 2 and type(m.get("content")) is str and "role" in m
        else json.dumps(m, separators=(",", ":"), ensure_ascii=False)
        for m in messages)


class PromptEncoder:
    """Prompts to units (token ids, or characters without a tokenizer)."""

    def __init__(self, tokenizer: Tokenizer | None = None,
                 chat_template: ChatTemplate | None = None) -> None:
        self.tokenizer = tokenizer
        self.chat_template = chat_template  # None: the Llama-3-like one

    def encode(self, prompt: Prompt) -> np.ndarray:
        if isinstance(prompt, np.ndarray):
            return prompt
        tok = self.tokenizer
        if isinstance(prompt, str):
            return tok.encode(prompt) if tok is not None else chars(prompt)
        if tok is None:
            return chars(chat_text(prompt))
        try:
            text = (self.chat_template.render(prompt) if self.chat_template is not None
                    else apply_chat_template(prompt))
        except ConfigError as e:
            raise BadRequest(str(e)) from e
        return tok.encode(text)

    def units(self, route: str, body: dict[str, Any]) -> np.ndarray:
        """The routing units of a request: its first prompt's (all of them validated). A
        Responses API request whose messages the chat template refuses (they are this
        module's reading of its items, not what the engine renders) is keyed on their
        :func:`chat_text` instead."""
        prompt = prompts_of(route, body)[0]
        if route != "responses":
            return self.encode(prompt)
        try:
            return self.encode(prompt)
        except BadRequest:
            text = chat_text(prompt)  # type: ignore[arg-type]  # messages
            return self.tokenizer.encode(text) if self.tokenizer is not None else chars(text)

    def reply_units(self, route: str, body: dict[str, Any]) -> Callable[[str], np.ndarray] | None:
        """How a reply's text continues this request's routing units, as the next prompt
        of a conversation or an agent's loop holds it: the units to append, from the
        text. Chat: the reply as the assistant's message (without a tokenizer, the
        characters :func:`chat_text` gives it after the others; with one, its tokens after
        the template's generation prompt, which ends where the reply begins); a text
        prompt: the reply's text after it; token ids: its tokens (a tokenizer is needed).
        None where no continuation is known: the Responses API (a continuation names the
        stored response instead), token ids without a tokenizer."""
        tok = self.tokenizer
        if route == "responses":
            return None
        if route == "chat":
            if tok is None:
                return lambda text: chars("\n\nassistant\n" + text)
            return tok.encode
        first = prompts_of(route, body)[0]
        if tok is not None:
            return tok.encode
        return None if isinstance(first, np.ndarray) else chars


def _count(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise BadRequest(f"'{field}' must be an integer, got {value!r}")
    if value < 1:
        raise BadRequest(f"'{field}' must be >= 1, got {value}")
    return value


def max_tokens_of(route: str, body: dict[str, Any]) -> int | None:
    """How many tokens the request asks for; None when it leaves it to the engine."""
    if route == "generate":
        params = body.get("sampling_params")
        if params is None:
            return None
        if not isinstance(params, dict):
            raise BadRequest("'sampling_params' must be an object")
        return _count(params.get("max_new_tokens"), "sampling_params.max_new_tokens")
    if route == "responses":
        return _count(body.get("max_output_tokens"), "max_output_tokens")
    value, field = body.get("max_tokens"), "max_tokens"
    if value is None and route == "chat":
        value, field = body.get("max_completion_tokens"), "max_completion_tokens"
    return _count(value, field)


def min_tokens_of(route: str, body: dict[str, Any]) -> int | None:
    """The fewest tokens the request asks for (vLLM's ``min_tokens``, SGLang's
    ``sampling_params.min_new_tokens``); None when it sets none, or 0."""
    if route == "generate":
        params = body.get("sampling_params")
        value = params.get("min_new_tokens") if isinstance(params, dict) else None
        field = "sampling_params.min_new_tokens"
    else:
        value, field = body.get("min_tokens"), "min_tokens"
    return None if value == 0 and type(value) is int else _count(value, field)


def streamed(body: dict[str, Any]) -> bool:
    return bool(body.get("stream"))


def include_usage(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and bool(opts.get("include_usage"))


def ask_usage(raw: bytes) -> bytes:
    """``raw``, the bytes of a JSON object without a ``stream_options`` member, with
    ``"stream_options": {"include_usage": true}`` put first: the engine then ends the
    stream with a usage event (its cached tokens among them). The rest of the body is
    left byte for byte."""
    i = raw.index(b"{") + 1
    empty = raw[i:].lstrip().startswith(b"}")
    return raw[:i] + b'"stream_options":{"include_usage":true}' + (b"" if empty else b",") \
        + raw[i:]


def last_member(raw: bytes, name: str, value: int) -> bytes:
    """``raw``, the bytes of a JSON object, with ``"name": value`` added as its last member
    (a JSON reader keeps the last of repeated names, so it overrides one the client sent);
    the rest left byte for byte."""
    body = raw.rstrip()
    i = len(body) - 1  # the closing brace
    empty = body[:i].rstrip().endswith(b"{")
    return body[:i] + (b"" if empty else b",") + json.dumps({name: value})[1:-1].encode() \
        + body[i:]


def session_key(value: str | None) -> int | None:
    """The session of a request from its ``X-Session-ID`` header value."""
    if not value:
        return None
    digest = hashlib.blake2b(value.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
