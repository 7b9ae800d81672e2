"""Multi-turn chat, the ShareGPT / UltraChat workloads of the paper (paper.md section 7).

Client ``i`` is one conversation and keeps its first ``turns[i % len(turns)]`` user
turns (2/4/6/8 by default). Every user turn is exactly ``user_tokens`` ids; every reply is
``output_len`` ids fixed in advance (seeded) and stored as the request's
``output_tokens``. Prompts are built at the id level with the Llama-3-like template of
:mod:`kvroute.workloads.tokenizer`: turn ``k``'s prompt is BOS, then for each earlier turn
``j`` the user message ``j`` and the assistant message holding reply ``j``, then user
message ``k`` and the assistant header. Hence the invariant the caches rely on: turn
``k+1``'s prompt starts with turn ``k``'s prompt followed by turn ``k``'s output ids.

``messages`` holds the chat form (role/content strings) of each request, for drivers
that talk to a real server; synthetic content is rendered as pseudo-words ("w17 w4 ...").
``text`` is left ``None`` (``apply_chat_template(messages)`` gives it).

Modes: ``closed`` (the authors' driver: ``concurrency`` clients, 128 by default, each
sending its session's turns one after another) or ``open`` (Poisson arrivals at
``rate``, turn-major: every client's turn 0 in a shuffled client order, then every
turn 1, ..., so a client's turn ``k`` never arrives before its turn ``k-1``; in open mode
a turn may arrive before the previous reply is done, and still carries it as history).
Request ids number the turns session by session, the same in both modes.

Loaders read ShareGPT-format JSON or JSONL: objects with ``conversations`` (``from``:
human/user, gpt/assistant/..., system; ``value``), ``messages`` (``role``, ``content``)
or UltraChat's raw ``data`` (a list of strings, user first, alternating). System
messages and the file's assistant replies are dropped (replies are the generated ids).
Clients are the first conversations, in file order, with at least
``max(min_user_turns, max(turns))`` user turns. User turns longer than ``user_tokens``
are truncated; shorter ones are extended with seeded random ids.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from kvroute.errors import ConfigError
from kvroute.workloads.request import (
    ClosedLoop,
    OpenLoop,
    Request,
    Workload,
    poisson_arrivals,
)
from kvroute.workloads.tokenizer import (
    BuiltinTokenizer,
    Tokenizer,
    chat_prompt_ids,
    encode_prefix,
    pseudo_text,
    render_ids,
)

__all__ = ["ChatConfig", "load_sharegpt", "read_json_records", "synthetic_chat"]

Mode = Literal["closed", "open"]
MODES: tuple[Mode, ...] = ("closed", "open")
USER_ROLES = frozenset({"human", "user"})
ASSISTANT_ROLES = frozenset({"gpt", "assistant", "chatgpt", "bing", "bard", "model"})


@dataclass(frozen=True)
class ChatConfig:
    clients: int = 128
    turns: tuple[int, ...] = (2, 4, 6, 8)  # user turns kept by client i: turns[i % len]
    user_tokens: int = 1024
    output_len: int = 4
    min_user_turns: int = 8  # loaders: conversations with fewer user turns are skipped
    mode: Mode = "closed"
    concurrency: int | None = None  # closed loop; None: one per client
    think_time: float = 0.0  # closed loop, seconds
    rate: float = 12.0  # open loop, requests/s
    seed: int = 1
    vocab_size: int = 128_256

    def __post_init__(self) -> None:
        if self.clients < 1:
            raise ConfigError(f"clients must be >= 1, got {self.clients}")
        if not self.turns or min(self.turns) < 1:
            raise ConfigError(f"turns must be >= 1 each, got {self.turns}")
        if self.user_tokens < 1 or self.output_len < 1:
            raise ConfigError("user_tokens and output_len must be >= 1")
        if self.min_user_turns < 1:
            raise ConfigError(f"min_user_turns must be >= 1, got {self.min_user_turns}")
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {self.concurrency}")
        if not self.think_time >= 0:
            raise ConfigError(f"think_time must be >= 0 s, got {self.think_time}")
        if not self.rate > 0:
            raise ConfigError(f"rate must be > 0 requests/s (or inf), got {self.rate}")
        if self.vocab_size < 2:
            raise ConfigError("vocab_size must be >= 2")

    def turns_of(self, client: int) -> int:
        return self.turns[client % len(self.turns)]


@dataclass(frozen=True)
class _Turn:
    user_ids: np.ndarray
    user_text: str
    reply_ids: np.ndarray
    reply_text: str


def _rngs(seed: int, name: str) -> tuple[np.random.Generator, np.random.Generator]:
    """(content, order) generators for ``seed`` and workload ``name``: names differ by seed."""
    tag = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "little")
    content, order = np.random.SeedSequence([seed, tag]).spawn(2)
    return np.random.default_rng(content), np.random.default_rng(order)


def _build(name: str, cfg: ChatConfig, clients: list[list[_Turn]],
           order_rng: np.random.Generator, meta: dict[str, Any]) -> Workload:
    sessions: list[list[Request]] = []
    rid = 0
    for c, turns in enumerate(clients):
        session: list[Request] = []
        history: list[tuple[str, np.ndarray]] = []
        messages: list[dict[str, str]] = []
        for k, t in enumerate(turns):
            history.append(("user", t.user_ids))
            messages.append({"role": "user", "content": t.user_text})
            session.append(Request(rid, chat_prompt_ids(history), cfg.output_len, session=c,
                                   turn=k, output_tokens=t.reply_ids,
                                   messages=[dict(m) for m in messages]))
            history.append(("assistant", t.reply_ids))
            messages.append({"role": "assistant", "content": t.reply_text})
            rid += 1
        sessions.append(session)
    meta = {"clients": len(clients), "turns": cfg.turns, "user_tokens": cfg.user_tokens,
            "output_len": cfg.output_len, "mode": cfg.mode, **meta}
    if cfg.mode == "closed":
        return ClosedLoop(name, sessions, cfg.concurrency or len(sessions), cfg.think_time,
                          meta)
    ordered: list[Request] = []
    for k in range(max(len(s) for s in sessions)):
        ordered += [sessions[c][k] for c in order_rng.permutation(len(sessions))
                    if k < len(sessions[c])]
    for r, t in zip(ordered, poisson_arrivals(len(ordered), cfg.rate, order_rng), strict=True):
        r.arrival = float(t)
    return OpenLoop.of(name, ordered, rate=cfg.rate, **meta)


def _reply(cfg: ChatConfig, rng: np.random.Generator, tok: Tokenizer | None) -> tuple[
        np.ndarray, str]:
    ids = rng.integers(0, cfg.vocab_size, size=cfg.output_len, dtype=np.int64)
    return ids, render_ids(tok, ids)


def synthetic_chat(config: ChatConfig | None = None, name: str = "sharegpt") -> Workload:
    """Random user turns in the paper's shape; ``name`` ("sharegpt", "ultrachat", ...)
    names the workload and is mixed into the seed, so named variants differ."""
    cfg = config or ChatConfig()
    rng, order_rng = _rngs(cfg.seed, name)
    clients: list[list[_Turn]] = []
    for c in range(cfg.clients):
        turns = []
        for _ in range(cfg.turns_of(c)):
            user = rng.integers(0, cfg.vocab_size, size=cfg.user_tokens, dtype=np.int64)
            reply, reply_text = _reply(cfg, rng, None)
            turns.append(_Turn(user, pseudo_text(user), reply, reply_text))
        clients.append(turns)
    return _build(name, cfg, clients, order_rng, {"source": "synthetic"})


def read_json_records(path: str | os.PathLike[str], what: str) -> list[tuple[str, Any]]:
    """The records of a JSON list or a JSONL file, each with where it is (``path:line`` or
    ``path[index]``) for error messages; every failure is a :class:`ConfigError`."""
    p = os.fspath(path)
    try:
        with open(p, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError as e:
        raise ConfigError(f"{p}: {what} file not found") from e
    except IsADirectoryError as e:
        raise ConfigError(f"{p}: is a directory, expected a {what} JSON or JSONL file") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise ConfigError(f"{p}: cannot read {what} file ({e.strerror})") from e
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p}:{e.lineno}: bad JSON ({e.msg})") from e
        return [(f"{p}[{i}]", rec) for i, rec in enumerate(data)]
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append((f"{p}:{n}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise ConfigError(f"{p}:{n}: bad JSON line ({e.msg}); expected a JSON list "
                                  f"or one JSON object per line") from e
    if not records:
        raise ConfigError(f"{p}: empty {what} file")
    return records


def _user_turns(where: str, rec: Any) -> list[str]:
    """The user messages of one ShareGPT / messages / UltraChat record."""
    if not isinstance(rec, dict):
        raise ConfigError(f"{where}: expected an object, got {type(rec).__name__}")
    if "conversations" in rec:
        key, role_key, text_key = "conversations", "from", "value"
    elif "messages" in rec:
        key, role_key, text_key = "messages", "role", "content"
    elif "data" in rec:
        data = rec["data"]
        if not isinstance(data, list) or not all(isinstance(s, str) for s in data):
            raise ConfigError(f"{where}: 'data' must be a list of strings")
        return data[::2]
    else:
        raise ConfigError(f"{where}: expected a 'conversations' (ShareGPT) or 'messages' "
                          f"list, found keys {sorted(rec)[:8]}")
    turns = rec[key]
    if not isinstance(turns, list):
        raise ConfigError(f"{where}: '{key}' must be a list")
    out = []
    for i, m in enumerate(turns):
        if not isinstance(m, dict) or not isinstance(m.get(role_key), str) \
                or not isinstance(m.get(text_key), str):
            raise ConfigError(f"{where}: {key}[{i}] must be an object with string "
                              f"'{role_key}' and '{text_key}'")
        if m[role_key].lower() in USER_ROLES:
            out.append(m[text_key])
    return out


def load_sharegpt(path: str | os.PathLike[str], config: ChatConfig | None = None,
                  tokenizer: Tokenizer | None = None, name: str = "sharegpt") -> Workload:
    """Chat sessions from a ShareGPT-format file (also ``messages`` and UltraChat ``data``)."""
    cfg = config or ChatConfig()
    tok = tokenizer or BuiltinTokenizer(cfg.vocab_size)
    need = max(cfg.min_user_turns, max(cfg.turns))
    records = read_json_records(path, "conversation")
    chosen: list[list[str]] = []
    for where, rec in records:
        users = _user_turns(where, rec)
        if len(users) >= need:
            chosen.append(users)
            if len(chosen) == cfg.clients:
                break
    if len(chosen) < cfg.clients:
        raise ConfigError(f"{os.fspath(path)}: only {len(chosen)} of {len(records)} "
                          f"conversations have >= {need} user turns, {cfg.clients} clients "
                          f"needed; lower clients or min_user_turns")
    rng, order_rng = _rngs(cfg.seed, name)
    clients: list[list[_Turn]] = []
    for c, users in enumerate(chosen):
        turns = []
        for text in users[:cfg.turns_of(c)]:
            ids, cut = encode_prefix(tok, text, cfg.user_tokens)
            if len(ids) < cfg.user_tokens:
                pad = rng.integers(0, cfg.vocab_size, size=cfg.user_tokens - len(ids),
                                   dtype=np.int64)
                ids = np.concatenate([ids, pad])
                cut = f"{cut} {render_ids(tok, pad)}" if cut else render_ids(tok, pad)
            reply, reply_text = _reply(cfg, rng, tok)
            turns.append(_Turn(ids, cut, reply, reply_text))
        clients.append(turns)
    return _build(name, cfg, clients, order_rng,
                  {"source": os.fspath(path), "tokenizer": tok.name})

