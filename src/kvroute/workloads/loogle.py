"""LooGLE long-document QA (paper.md section 7).

Document ``d`` is cut to ``doc_lengths[d % len(doc_lengths)]`` tokens (1K/2K/4K/8K in
rotation; a document shorter than its target is kept whole). Each of its questions makes
one prompt ``"Input:\\n{doc}\\n\\nQuestion: {q}"``, built at the id level as
``encode("Input:\\n") + doc ids + encode("\\n\\nQuestion: ") + question ids`` (the fixed
strings go through the same tokenizer, so text and ids agree), hence all questions of a
document share the prefix up to the end of the document. The prompts are shuffled
globally (seeded) and arrive as a Poisson process at ``rate``. Requests: ``session`` =
document index, ``turn`` = question index within the document, ``rid`` = position in
arrival order; ``text`` is the prompt text. Requests are built on demand from the
documents and questions, so the stream never holds every prompt at once.

Defaults: 128 documents x 32 questions = 4,096 requests (the GSP size; the paper allows
up to 512 x 100). :func:`synthetic_loogle` draws uniform random ids (question lengths
uniform in ``question_tokens``) and renders them as pseudo-words. :func:`load_loogle`
reads LooGLE JSON or JSONL: objects with ``input`` (the document; ``context`` also
accepted) and ``qa_pairs``, a list of ``{"Q": ..., "A": ...}`` objects or a string
holding such a list (Python literal or JSON; ``"question"`` is accepted for ``"Q"``).
It takes the first ``documents`` documents that have questions, in file order, and the
first ``questions_per_doc`` questions of each.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from kvroute.errors import ConfigError
from kvroute.workloads.chat import read_json_records
from kvroute.workloads.request import OpenLoop, Request, poisson_arrivals
from kvroute.workloads.tokenizer import BuiltinTokenizer, Tokenizer, encode_prefix, pseudo_text

__all__ = ["LoogleConfig", "load_loogle", "synthetic_loogle"]

PREFIX = "Input:\n"
SEPARATOR = "\n\nQuestion: "


@dataclass(frozen=True)
class LoogleConfig:
    documents: int = 128
    questions_per_doc: int = 32
    doc_lengths: tuple[int, ...] = (1024, 2048, 4096, 8192)
    question_tokens: tuple[int, int] = (16, 64)  # synthetic: inclusive range
    output_len: int = 4
    rate: float = 12.0
    seed: int = 1
    vocab_size: int = 128_256

    def __post_init__(self) -> None:
        if self.documents < 1 or self.questions_per_doc < 1:
            raise ConfigError("documents and questions_per_doc must be >= 1")
        if not self.doc_lengths or min(self.doc_lengths) < 1:
            raise ConfigError(f"doc_lengths must be >= 1 token each, got {self.doc_lengths}")
        lo, hi = self.question_tokens
        if not 1 <= lo <= hi:
            raise ConfigError(f"question_tokens must be (lo, hi) with 1 <= lo <= hi, "
                              f"got {self.question_tokens}")
        if self.output_len < 1:
            raise ConfigError(f"output_len must be >= 1, got {self.output_len}")
        if not self.rate > 0:
            raise ConfigError(f"rate must be > 0 requests/s (or inf), got {self.rate}")
        if self.vocab_size < 2:
            raise ConfigError("vocab_size must be >= 2")

    def doc_length(self, doc: int) -> int:
        return self.doc_lengths[doc % len(self.doc_lengths)]


@dataclass(frozen=True)
class _Doc:
    ids: np.ndarray
    text: str
    questions: list[tuple[np.ndarray, str]]


def _stream(name: str, cfg: LoogleConfig, docs: list[_Doc], tok: Tokenizer,
            meta: dict[str, Any]) -> OpenLoop:
    prefix, sep = tok.encode(PREFIX), tok.encode(SEPARATOR)
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(2)[1])
    pairs = np.array([(d, q) for d, doc in enumerate(docs) for q in range(len(doc.questions))],
                     dtype=np.int64).reshape(-1, 2)
    pairs = pairs[rng.permutation(len(pairs))]
    arrivals = poisson_arrivals(len(pairs), cfg.rate, rng)

    def source() -> Iterator[Request]:
        for rid, ((d, q), t) in enumerate(zip(pairs.tolist(), arrivals.tolist(), strict=True)):
            doc = docs[d]
            q_ids, q_text = doc.questions[q]
            yield Request(rid, np.concatenate([prefix, doc.ids, sep, q_ids]), cfg.output_len,
                          arrival=t, session=d, turn=q,
                          text=f"{PREFIX}{doc.text}{SEPARATOR}{q_text}")

    tokens = sum(len(doc.questions) * (len(prefix) + len(doc.ids) + len(sep))
                 + sum(len(q) for q, _ in doc.questions) for doc in docs)
    return OpenLoop(name, source, len(pairs),
                    {"documents": len(docs), "prompt_tokens": tokens, "rate": cfg.rate,
                     "doc_lengths": cfg.doc_lengths, "tokenizer": tok.name, **meta})


def synthetic_loogle(config: LoogleConfig | None = None, name: str = "loogle") -> OpenLoop:
    """Random documents and questions in the paper's shape (seeded)."""
    cfg = config or LoogleConfig()
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(2)[0])
    lo, hi = cfg.question_tokens
    docs = []
    for d in range(cfg.documents):
        ids = rng.integers(0, cfg.vocab_size, size=cfg.doc_length(d), dtype=np.int64)
        questions = []
        for _ in range(cfg.questions_per_doc):
            q = rng.integers(0, cfg.vocab_size, size=int(rng.integers(lo, hi + 1)),
                             dtype=np.int64)
            questions.append((q, pseudo_text(q)))
        docs.append(_Doc(ids, pseudo_text(ids), questions))
    return _stream(name, cfg, docs, BuiltinTokenizer(cfg.vocab_size), {"source": "synthetic"})


def _questions(where: str, qa: Any) -> list[str]:
    """The question strings of one record's ``qa_pairs``."""
    if isinstance(qa, str):
        s = qa.strip()
        if s.lower() in ("", "none", "null", "[]"):
            return []
        try:
            qa = ast.literal_eval(s)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            try:
                qa = json.loads(s)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{where}: 'qa_pairs' is a string but not a list literal "
                                  f"or JSON ({e.msg})") from e
    if qa is None:
        return []
    if not isinstance(qa, list):
        raise ConfigError(f"{where}: 'qa_pairs' must be a list, got {type(qa).__name__}")
    out = []
    for i, pair in enumerate(qa):
        q = pair.get("Q", pair.get("question")) if isinstance(pair, dict) else None
        if not isinstance(q, str):
            raise ConfigError(f"{where}: qa_pairs[{i}] must be an object with a string "
                              f"'Q' (or 'question')")
        out.append(q)
    return out


def load_loogle(path: str | os.PathLike[str], config: LoogleConfig | None = None,
                tokenizer: Tokenizer | None = None, name: str = "loogle") -> OpenLoop:
    """Documents and questions from a LooGLE-format JSON or JSONL file."""
    cfg = config or LoogleConfig()
    tok = tokenizer or BuiltinTokenizer(cfg.vocab_size)
    docs: list[_Doc] = []
    for where, rec in read_json_records(path, "LooGLE"):
        if not isinstance(rec, dict):
            raise ConfigError(f"{where}: expected an object, got {type(rec).__name__}")
        text = rec.get("input", rec.get("context"))
        if not isinstance(text, str) or "qa_pairs" not in rec:
            raise ConfigError(f"{where}: expected a string 'input' (the document) and "
                              f"'qa_pairs', found keys {sorted(rec)[:8]}")
        questions = _questions(where, rec["qa_pairs"])[:cfg.questions_per_doc]
        if not questions:
            continue
        ids, cut = encode_prefix(tok, text, cfg.doc_length(len(docs)))
        if len(ids) == 0:
            continue
        docs.append(_Doc(ids, cut, [(tok.encode(q), q) for q in questions]))
        if len(docs) == cfg.documents:
            break
    if not docs:
        raise ConfigError(f"{os.fspath(path)}: no document with a non-empty 'input' "
                          f"and at least one question")
    return _stream(name, cfg, docs, tok, {"source": os.fspath(path)})
