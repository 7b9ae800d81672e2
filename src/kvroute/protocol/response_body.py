"""What an engine's response says: the router reads ``cached_tokens`` from it, the load
generator token usage and stream events; and the error body kvroute's servers write.

Contract:

* The router names the worker that answered in the :data:`WORKER_HEADER` response header.
* Errors: ``{"error": {"message": str, "type": str, "code": int}}`` (:func:`error_body`,
  OpenAI's shape, ``code`` the HTTP status), from the router and the emulated worker
  alike. :func:`error_message` reads one, or a bare ``{"error": "..."}``, from a body or
  an SSE event; an object with ``choices`` is not an error.
* Usage (:func:`usage_of`): the counts one response object or SSE chunk reports.
  ``prompt_tokens`` and ``completion_tokens`` from OpenAI's ``usage`` (the Responses
  API's ``input_tokens`` and ``output_tokens``), else SGLang's ``meta_info``;
  ``cached_tokens`` from ``usage.prompt_tokens_details.cached_tokens`` (or
  ``input_tokens_details``), else ``usage.cached_tokens``, else
  ``meta_info.cached_tokens``. A Responses API stream event reports them in its
  ``response`` object. A count is a JSON integer >= 0; anything else is absent (None).
* The Responses API's response id (:func:`response_id_of`): the ``id`` of a body whose
  ``object`` is ``"response"``; in a stream, that of the first event's ``response``
  (``response.created``), read by ``SSEScanner(response_id=True)``.
* :func:`counts_of` reads a whole response body: one object, or an SGLang batch (a
  list: each count summed over the items that report it, and no prompt count). The
  router reads ``cached_tokens`` with the ``prompt_tokens`` reported beside it (which
  let it put the count in its own units) and ``completion_tokens``. A body that holds
  each key it mentions exactly once, with an integer, is read without parsing it (JSON
  strings cannot hold an unescaped quote, so generated text never matches; a tenth of
  the parse's time on a short completion, less still on a long one); ``prompt_tokens``
  is read so only beside ``cached_tokens``.
* Reply text (:func:`reply_text`, ``SSEScanner(text=True).text``): the first answer's
  text: OpenAI's first choice (``message.content``, or ``text``; in a stream, the
  deltas of choice 0 joined), SGLang's ``text`` (a native stream's last event's: each
  holds the text so far). :func:`answer_text` reads it from the bytes without parsing
  them (the router's: a JSON parse of each of a stream's events cost it about 15 us a
  token, the pattern about 1.5), parsing only a body or stream with a second choice.
* SSE (:class:`SSELines`): a byte stream splits at ``\\n``; each line is stripped; a
  ``data:`` line gives its payload (stripped), other lines (blank separators, comments,
  ``event:``/``id:``) give nothing; the payload ``[DONE]`` (:data:`DONE`) ends a stream.
  With ``max_line``, a line longer than that is dropped instead of buffered.
  :class:`SSEScanner` is the router's: whether ``[DONE]`` came, and as its ``usage``
  the last ``cached_tokens`` seen (with the ``prompt_tokens`` of the same payload) and
  the last ``completion_tokens``, parsing only the last payload that holds each key, when
  it is read (a chunk that mentions no key and no ``[DONE]``, with no partial line before it,
  is not split into lines at all). :class:`UsageStripper` takes the usage
  events out of a stream whose client did not ask for them (the router asked for it,
  ``--stream-usage``).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["DONE", "WORKER_HEADER", "SSELines", "SSEScanner", "Usage", "UsageStripper",
           "answer_text", "counts_of", "error_body", "error_message", "reply_text",
           "response_id_of", "usage_of"]

DONE = b"[DONE]"
TEXT_LIMIT = 1 << 23  # bytes of a stream kept to read its reply's text (SSEScanner(text=True))
WORKER_HEADER = "X-Kvroute-Worker"


def error_body(message: str, kind: str, status: int) -> dict[str, Any]:
    """The JSON error body: ``kind`` is its ``type`` (``invalid_request_error``, ...)."""
    return {"error": {"message": message, "type": kind, "code": status}}


def error_message(obj: Any) -> str | None:
    """The message of an error body or SSE error event; None when ``obj`` is none."""
    if not isinstance(obj, dict) or not obj.get("error") or obj.get("choices"):
        return None
    err = obj["error"]
    return str(err.get("message", err) if isinstance(err, dict) else err)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None


def _count(x: Any) -> int | None:
    return x if type(x) is int and x >= 0 else None


def _first(*values: Any) -> int | None:
    for v in values:
        c = _count(v)
        if c is not None:
            return c
    return None


def _dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def usage_of(obj: Any) -> Usage:
    """The token counts ``obj`` (a parsed response or chunk) reports."""
    if not isinstance(obj, dict):
        return Usage()
    if "usage" not in obj and isinstance(obj.get("response"), dict):
        obj = obj["response"]  # a Responses API stream event
    usage, meta = _dict(obj.get("usage")), _dict(obj.get("meta_info"))
    details = _dict(usage.get("prompt_tokens_details") or usage.get("input_tokens_details"))
    return Usage(_first(usage.get("prompt_tokens"), usage.get("input_tokens"),
                        meta.get("prompt_tokens")),
                 _first(usage.get("completion_tokens"), usage.get("output_tokens"),
                        meta.get("completion_tokens")),
                 _first(details.get("cached_tokens"), usage.get("cached_tokens"),
                        meta.get("cached_tokens")))


def response_id_of(obj: Any) -> str | None:
    """The id of a Responses API response (a parsed body or stream event), else None."""
    if isinstance(obj, dict) and isinstance(obj.get("response"), dict):
        obj = obj["response"]
    if isinstance(obj, dict) and obj.get("object") == "response":
        rid = obj.get("id")
        return rid if isinstance(rid, str) and rid else None
    return None


_CACHED = b"cached_tokens"
_COMPLETION = b"completion_tokens"
_OUTPUT = b"output_tokens"  # the Responses API's completion_tokens


def reply_text(obj: Any) -> str | None:
    """The text of a whole response's first answer: OpenAI's first choice
    (``message.content``, or ``text``), SGLang's ``text`` (its first item's, for a
    batch); None when there is none."""
    if isinstance(obj, list):
        obj = obj[0] if obj else None
    if not isinstance(obj, dict):
        return None
    choices = obj.get("choices")
    if isinstance(choices, list):
        first = choices[0] if choices and isinstance(choices[0], dict) else {}
        message = first.get("message")
        text = message.get("content") if isinstance(message, dict) else first.get("text")
    else:
        text = obj.get("text")
    return text if isinstance(text, str) else None


def _stream_text(payloads: Iterable[bytes]) -> str | None:
    """The first answer's text from a stream's payloads: the first choice's deltas
    (``delta.content``, or ``text``) joined; SGLang's native stream gives the whole text
    so far in each event, so its last."""
    parts: list[str] = []
    whole = None
    for payload in payloads:
        try:
            obj = json.loads(payload)
        except ValueError:  # [DONE], a broken line; UnicodeDecodeError is one
            continue
        if not isinstance(obj, dict):
            continue
        choices = obj.get("choices")
        if isinstance(choices, list):
            for c in choices:
                if isinstance(c, dict) and c.get("index", 0) == 0:
                    delta = c.get("delta")
                    text = delta.get("content") if isinstance(delta, dict) else c.get("text")
                    if isinstance(text, str):
                        parts.append(text)
        elif isinstance(obj.get("text"), str) and obj.get("index", 0) == 0:
            whole = obj["text"]
    return "".join(parts) if parts else whole


# a JSON string under "content" or "text" (unrolled: no alternation per character), and a
# choice other than the first (n > 1)
_TEXT = re.compile(rb'"(?:content|text)": ?"([^"\\]*(?:\\.[^"\\]*)*)"')
_OTHER_CHOICE = re.compile(rb'"index": ?[1-9]')


def answer_text(raw: bytes, stream: bool = False) -> str | None:
    """:func:`reply_text` of a whole body, or the text of a stream's bytes, read
    without parsing them: the strings under ``content`` or ``text`` (OpenAI's: all of
    them, joined; SGLang's native body: the first, its stream: the last). A body or
    stream with a second choice, or an SGLang batch, is parsed instead."""
    if _OTHER_CHOICE.search(raw) or raw[:1] == b"[":
        if not stream:
            try:
                return reply_text(json.loads(raw))
            except ValueError:  # UnicodeDecodeError is one
                return None
        lines = SSELines()
        return _stream_text(lines.feed(raw) + lines.close())
    found = _TEXT.findall(raw)
    if not found:
        return None
    if b'"choices"' not in raw:
        found = [found[-1] if stream else found[0]]
    return "".join(json.loads(b'"' + v + b'"') if b"\\" in v else v.decode("utf-8", "replace")
                   for v in found)


def _key(name: bytes) -> re.Pattern[bytes]:
    return re.compile(rb'"' + name + rb'"\s*:\s*(\d+)')


_CACHED_KEY, _PROMPT_KEY, _COMPLETION_KEY = map(
    _key, (_CACHED, b"prompt_tokens", _COMPLETION))


def _once(body: bytes, name: bytes, key: re.Pattern[bytes]) -> int | None:
    """The integer under ``name`` in an object body that holds the key exactly once, read
    without parsing the body; None otherwise."""
    found = key.findall(body)
    if len(found) == 1 and body.count(b'"' + name + b'"') == 1 and body.lstrip()[:1] == b"{":
        return int(found[0])
    return None


def counts_of(body: bytes) -> Usage:
    """The ``cached_tokens`` (with the ``prompt_tokens`` beside it) and
    ``completion_tokens`` of a JSON response body (see the module docstring)."""
    names = [n for n in (_CACHED, _COMPLETION) if n in body]
    if not names and _OUTPUT not in body:
        return Usage()
    cached = _once(body, _CACHED, _CACHED_KEY) if _CACHED in names else None
    completion = _once(body, _COMPLETION, _COMPLETION_KEY) if _COMPLETION in names else None
    if (cached is not None or _CACHED not in names) \
            and (completion is not None or _COMPLETION not in names) and _OUTPUT not in body:
        prompt = None if cached is None else _once(body, b"prompt_tokens", _PROMPT_KEY)
        return Usage(prompt, completion, cached)
    try:
        obj = json.loads(body)
    except ValueError:  # UnicodeDecodeError is one
        return Usage()
    if isinstance(obj, list):  # SGLang batch
        items = [usage_of(o) for o in obj]
        return Usage(None, _sum(u.completion_tokens for u in items),
                     _sum(u.cached_tokens for u in items))
    return usage_of(obj)


def _sum(values: Iterable[int | None]) -> int | None:
    found = [v for v in values if v is not None]
    return sum(found) if found else None


def _payload(line: bytes) -> bytes | None:
    line = line.strip()
    return line[5:].strip() if line.startswith(b"data:") else None


class SSELines:
    """The payloads of an SSE byte stream's ``data:`` lines, as the bytes come in."""

    def __init__(self, max_line: int | None = None) -> None:
        self.max_line = max_line
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        lines = (self._buf + chunk).split(b"\n")
        self._buf = lines.pop()
        if self.max_line is not None and len(self._buf) > self.max_line:
            self._buf = b""  # a runaway line: stop buffering it
        return [p for p in map(_payload, lines) if p is not None]

    def skip(self, chunk: bytes) -> None:
        """Consume ``chunk`` without reading its complete lines (the caller knows none of
        them matters): only its unterminated tail is kept, as :meth:`feed` would."""
        if self._buf:
            chunk = self._buf + chunk
        self._buf = chunk[chunk.rfind(b"\n") + 1:]
        if self.max_line is not None and len(self._buf) > self.max_line:
            self._buf = b""

    def close(self) -> list[bytes]:
        """The payload of an unterminated last line, if any."""
        rest, self._buf = self._buf, b""
        p = _payload(rest)
        return [] if p is None else [p]


_EMPTY_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')


def _usage_event(line: bytes) -> bool:
    """Whether ``line`` is the ``data:`` line of a usage event: ``choices`` empty and
    ``usage`` an object (what ``stream_options.include_usage`` adds at a stream's end)."""
    p = _payload(line)
    if p is None or b'"usage"' not in p or not _EMPTY_CHOICES.search(p):
        return False
    try:
        obj = json.loads(p)
    except ValueError:  # UnicodeDecodeError is one
        return False
    return isinstance(obj, dict) and obj.get("choices") == [] \
        and isinstance(obj.get("usage"), dict)


class UsageStripper:
    """Takes out of an SSE byte stream the usage events (:func:`_usage_event`) and the
    blank line that ends each, passing everything else through byte for byte: complete
    lines at once, an unterminated last line when its end comes (or at :meth:`close`), so
    a usage event split across reads is still recognised."""

    def __init__(self) -> None:
        self._buf = b""
        self._blank = False  # the line after a dropped event's data line: its end

    def feed(self, chunk: bytes) -> bytes:
        data = self._buf + chunk if self._buf else chunk
        cut = data.rfind(b"\n") + 1
        self._buf, whole = data[cut:], data[:cut]
        if not self._blank and b'"usage"' not in whole:
            return whole
        out = []
        for line in whole.splitlines(keepends=True):
            if self._blank:
                self._blank = False
                if not line.strip():
                    continue
            if _usage_event(line):
                self._blank = True
                continue
            out.append(line)
        return b"".join(out)

    def close(self) -> bytes:
        """What is left: an unterminated last line, unless it is a usage event."""
        rest, self._buf = self._buf, b""
        return b"" if _usage_event(rest) else rest


class SSEScanner:
    """Reads an SSE stream as it passes by: ``done`` and ``usage`` (the last
    ``cached_tokens`` with its ``prompt_tokens``, and the last ``completion_tokens`` or
    ``output_tokens``); with ``response_id`` (a Responses API stream, whose lines are all
    read: the skip below looks only for the other APIs' keys), its response id too."""

    def __init__(self, response_id: bool = False, text: bool = False) -> None:
        self._lines = SSELines(max_line=1 << 20)
        # with ``text``, the stream's bytes, read at the end (:attr:`text`); None past
        # TEXT_LIMIT (a reply that long is not kept)
        self._kept: list[bytes] | None = [] if text else None
        self._kept_bytes = 0
        self.done = False
        self._responses = response_id  # a Responses API stream: every line is read
        self._want_id = response_id
        self.response_id: str | None = None
        # the last payload that holds each key, parsed when read (a native SGLang stream
        # reports the counts in every chunk; a key in quotes is never generated text)
        self._cached_in = b""
        self._completion_in = b""
        self._parsed: tuple[bytes | None, Usage] = (None, Usage())

    def feed(self, chunk: bytes) -> None:
        if self._kept is not None:
            self._kept_bytes += len(chunk)
            self._kept.append(chunk)
            if self._kept_bytes > TEXT_LIMIT:
                self._kept = None
        if not self._lines._buf and _CACHED not in chunk and _COMPLETION not in chunk \
                and DONE not in chunk and not self._responses:
            self._lines.skip(chunk)  # no line of it can matter: do not split it
            return
        for payload in self._lines.feed(chunk):
            self._payload(payload)

    def close(self) -> None:
        for payload in self._lines.close():
            self._payload(payload)

    def _payload(self, payload: bytes) -> None:
        if payload == DONE:
            self.done = True
            return
        if b'"cached_tokens"' in payload:
            self._cached_in = payload
        if b'"completion_tokens"' in payload or b'"output_tokens"' in payload:
            self._completion_in = payload
        if self._want_id and b'"response"' in payload:
            self._want_id = False  # the first event's only
            with contextlib.suppress(ValueError):
                self.response_id = response_id_of(json.loads(payload))

    def _usage(self, payload: bytes) -> Usage:
        """The payload's usage, parsed once (the counts are often in one event)."""
        if self._parsed[0] is not payload:
            try:
                usage = usage_of(json.loads(payload)) if payload else Usage()
            except ValueError:  # UnicodeDecodeError is one
                usage = Usage()
            self._parsed = (payload, usage)
        return self._parsed[1]

    @property
    def text(self) -> str | None:
        """With ``text``: the first answer's text (:func:`answer_text`), once the stream
        is read; None without it, or when the stream passed TEXT_LIMIT bytes."""
        return None if self._kept is None else answer_text(b"".join(self._kept), stream=True)

    @property
    def usage(self) -> Usage:
        cached = self._usage(self._cached_in)
        return Usage(cached.prompt_tokens, self._usage(self._completion_in).completion_tokens,
                     cached.cached_tokens)
