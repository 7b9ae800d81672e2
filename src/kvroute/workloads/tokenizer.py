"""Tokenizers for the text workloads, and the chat template they share.

Contract:

* A :class:`Tokenizer` has a ``name`` and ``encode(text) -> np.ndarray`` (1-D int64, no
  special tokens). The workloads only need the ids to be deterministic: equal text gives
  equal ids, so shared prefixes of text are shared prefixes of ids.
* :class:`BuiltinTokenizer` needs nothing installed. It is an *approximation* of a real
  BPE tokenizer: a regex splits the text into words, single punctuation characters and
  whitespace runs, and each piece maps to ``blake2b(piece) mod vocab_size`` (stable across
  processes and machines, unlike Python's salted ``hash``). It gives about one token per
  word-ish piece, so counts are near a real tokenizer's for English prose but not equal.
* :class:`HFTokenizer` wraps a Hugging Face ``tokenizer.json`` (the optional
  ``tokenizers`` package) for exact counts; :func:`load_tokenizer` picks one.
* The chat template is a fixed Llama-3-like one, as text (:func:`apply_chat_template`)
  and as ids (:func:`chat_prompt_ids`, which uses the Llama-3 ids of the special and role
  tokens): ``<|begin_of_text|>``, then per message
  ``<|start_header_id|>role<|end_header_id|>\\n\\ncontent<|eot_id|>``, then the assistant
  header. The workloads build prompts at the id level from these pieces, so a turn's
  prompt followed by its reply is exactly a prefix of the next turn's prompt.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kvroute.errors import ConfigError

__all__ = ["ASSISTANT_HEADER_IDS", "BOS_ID", "EOT_ID", "BuiltinTokenizer", "HFTokenizer",
           "Tokenizer", "apply_chat_template", "chat_prompt_ids", "encode_prefix",
           "header_ids", "load_tokenizer", "pseudo_text", "render_ids"]

# Llama-3 ids of the template's special tokens and role names.
BOS_ID = 128000  # <|begin_of_text|>
START_HEADER_ID = 128006  # <|start_header_id|>
END_HEADER_ID = 128007  # <|end_header_id|>
EOT_ID = 128009  # <|eot_id|>
NEWLINES_ID = 271  # "\n\n"
ROLE_IDS = {"system": 9125, "user": 882, "assistant": 78191}

_PIECE = re.compile(r"\w+|\s+|[^\w\s]")


@runtime_checkable
class Tokenizer(Protocol):
    """Text to token ids (no special tokens added)."""

    @property
    def name(self) -> str: ...

    def encode(self, text: str) -> np.ndarray: ...


class BuiltinTokenizer:
    """Deterministic dependency-free approximation: one id per word, punctuation char or
    whitespace run, ``blake2b(piece) mod vocab_size``."""

    def __init__(self, vocab_size: int = 128_256) -> None:
        if vocab_size < 2:
            raise ConfigError(f"vocab_size must be >= 2, got {vocab_size}")
        self.vocab_size = vocab_size
        self._ids: dict[str, int] = {}

    @property
    def name(self) -> str:
        return f"builtin-{self.vocab_size}"

    def _id(self, piece: str) -> int:
        tid = self._ids.get(piece)
        if tid is None:
            digest = hashlib.blake2b(piece.encode("utf-8", "surrogatepass"), digest_size=8)
            tid = int.from_bytes(digest.digest(), "little") % self.vocab_size
            if len(self._ids) < 1_000_000:  # bounded memo
                self._ids[piece] = tid
        return tid

    def encode(self, text: str) -> np.ndarray:
        return np.array([self._id(p) for p in _PIECE.findall(text)], dtype=np.int64)

    def encode_prefix(self, text: str, n: int) -> tuple[np.ndarray, int]:
        """The first ``n`` ids of ``text`` and the character offset where they end."""
        ids: list[int] = []
        end = 0
        if n > 0:
            for m in _PIECE.finditer(text):
                ids.append(self._id(m.group()))
                end = m.end()
                if len(ids) >= n:
                    break
        return np.array(ids, dtype=np.int64), end


class HFTokenizer:
    """A Hugging Face ``tokenizer.json`` (needs ``pip install 'kvroute[tokenizers]'``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            import tokenizers
        except ImportError as e:
            raise ConfigError("a tokenizer file needs the Hugging Face tokenizers package: "
                              "pip install 'kvroute[tokenizers]'") from e
        self.path = os.fspath(path)
        if os.path.isdir(self.path):
            raise ConfigError(f"{self.path}: is a directory; pass the tokenizer.json file "
                              "(a model's folder holds one)")
        if not os.path.isfile(self.path):
            raise ConfigError(f"{self.path}: tokenizer file not found")
        try:
            self._tok: Any = tokenizers.Tokenizer.from_file(self.path)
        except Exception as e:  # the Rust side raises plain Exception subclasses
            raise ConfigError(f"{self.path}: not a readable tokenizer.json ({e})") from e

    @property
    def name(self) -> str:
        return os.path.basename(os.path.dirname(os.path.abspath(self.path))) or self.path

    def encode(self, text: str) -> np.ndarray:
        return np.array(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def encode_prefix(self, text: str, n: int) -> tuple[np.ndarray, int]:
        """The first ``n`` ids of ``text`` and the character offset where they end."""
        enc = self._tok.encode(text, add_special_tokens=False)
        ids = np.array(enc.ids[:max(n, 0)], dtype=np.int64)
        end = int(enc.offsets[len(ids) - 1][1]) if len(ids) else 0
        return ids, end

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return str(self._tok.decode([int(i) for i in ids], skip_special_tokens=False))


def load_tokenizer(path: str | os.PathLike[str] | None = None,
                   vocab_size: int = 128_256) -> Tokenizer:
    """``None``: the builtin approximation; else a Hugging Face ``tokenizer.json``."""
    if path is None:
        return BuiltinTokenizer(vocab_size)
    return HFTokenizer(path)


def encode_prefix(tok: Tokenizer, text: str, n: int) -> tuple[np.ndarray, str]:
    """At most ``n`` ids of ``text`` and the text they cover (the whole text when the
    tokenizer cannot tell offsets)."""
    fn = getattr(tok, "encode_prefix", None)
    if fn is not None:
        ids, end = fn(text, n)
        return ids, text if len(ids) < n else text[:end]
    return tok.encode(text)[:n], text


def pseudo_text(ids: Sequence[int] | np.ndarray) -> str:
    """A deterministic textual stand-in for ids that have no text: ``"w17 w4 ..."``."""
    return " ".join(f"w{i}" for i in np.asarray(ids).tolist())


def render_ids(tok: Tokenizer | None, ids: Sequence[int] | np.ndarray) -> str:
    """Text for ``ids``: the tokenizer's ``decode`` when it has one, else :func:`pseudo_text`."""
    decode = getattr(tok, "decode", None)
    return str(decode(ids)) if decode is not None else pseudo_text(ids)


def header_ids(role: str) -> np.ndarray:
    """Ids of ``<|start_header_id|>role<|end_header_id|>\\n\\n``."""
    if role not in ROLE_IDS:
        raise ConfigError(f"unknown chat role {role!r} (expected one of {', '.join(ROLE_IDS)})")
    return np.array([START_HEADER_ID, ROLE_IDS[role], END_HEADER_ID, NEWLINES_ID],
                    dtype=np.int64)


ASSISTANT_HEADER_IDS = header_ids("assistant")


def chat_prompt_ids(messages: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """The template as ids: BOS, each (role, content ids) message, the assistant header."""
    parts = [np.array([BOS_ID], dtype=np.int64)]
    eot = np.array([EOT_ID], dtype=np.int64)
    for role, content in messages:
        parts += [header_ids(role), np.asarray(content, dtype=np.int64), eot]
    parts.append(ASSISTANT_HEADER_IDS)
    return np.concatenate(parts)


def apply_chat_template(messages: list[dict[str, str]]) -> str:
    """The template as text (same structure as :func:`chat_prompt_ids`)."""
    out = ["<|begin_of_text|>"]
    for i, m in enumerate(messages):
        try:
            role, content = m["role"], m["content"]
        except (KeyError, TypeError) as e:
            raise ConfigError(f"message {i}: needs 'role' and 'content'") from e
        out.append(f"<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>")
    out.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(out)
