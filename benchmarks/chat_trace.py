"""An invented chat trace in the Alibaba Bailian format, to check routers on multi-turn
chat with long replies read the way a real Bailian trace is (16-token blocks, chat ids,
seconds), without having one: nothing here is measured on a real trace.

    PYTHONPATH=src python benchmarks/chat_trace.py --out chat.jsonl [-n 3000] [--seed 1]

The shape (invented): ``-n`` conversations start as a Poisson process over an hour; half
of them begin with one of four shared system prompts (300-1,200 tokens, the first twice
as often as the next); each has 1 + Geometric(0.45) turns (at most 12); a user turn is
lognormal around 150 tokens (10-3,000), a reply around 300 (20-1,500); the next turn comes
a lognormal think time around 30 s (2-600 s) after the reply, which is taken to take 30 ms
a token. Each request's prompt is the conversation so far (system prompt, then every turn
and reply), its ``hash_ids`` the chained hashes of its 16-token blocks (equal content
before a block, equal id), numbered in order of first use; its ``output_length`` the
reply's tokens. Replayed with ``--load``, the conversations' starts are compressed and
their turns keep their pace (docs/simulator.md): at load 0.95 on 4 simulated L40 workers
(8.6 requests/s) the default 3,000 conversations start within about 13 minutes, and the
longest run on for minutes after.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

BLOCK = 16


def _len(rng: np.random.Generator, median: float, low: int, high: int) -> int:
    return int(np.clip(rng.lognormal(np.log(median), 0.8), low, high))


def conversations(n: int, seed: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    systems = [("sys", k, _len(rng, 600, 300, 1200)) for k in range(4)]
    ids: dict[tuple[int, tuple[object, ...]], int] = {}
    out: list[dict[str, object]] = []
    starts = np.sort(rng.uniform(0, 3600, n))
    chat = 0
    for c, start in enumerate(starts):
        stream: list[tuple[object, ...]] = []  # (source, k, i): one entry per token
        if rng.random() < 0.5:
            src = systems[min(3, int(rng.geometric(0.5)) - 1)]
            stream += [(src[0], src[1], i) for i in range(src[2])]
        t, parent = float(start), -1
        for turn in range(1, min(12, int(rng.geometric(0.45))) + 1):
            user = _len(rng, 150, 10, 3000)
            stream += [("user", c, turn, i) for i in range(user)]
            reply = _len(rng, 300, 20, 1500)
            blocks, prev = [], -1
            for b in range(0, len(stream), BLOCK):
                key = (prev, tuple(stream[b:b + BLOCK]))
                prev = ids.setdefault(key, len(ids))
                blocks.append(prev)
            out.append({"chat_id": chat, "parent_chat_id": parent, "timestamp": round(t, 3),
                        "input_length": len(stream), "output_length": reply, "type": "text",
                        "turn": turn, "hash_ids": blocks})
            stream += [("reply", c, turn, i) for i in range(reply)]
            parent, chat = chat, chat + 1
            t += reply * 0.03 + float(np.clip(rng.lognormal(np.log(30), 1.0), 2, 600))
    out.sort(key=lambda r: r["timestamp"])  # type: ignore[arg-type,return-value]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("-n", type=int, default=3000, help="conversations")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rows = conversations(args.n, args.seed)
    with open(args.out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    print(f"wrote {len(rows):,} requests of {args.n:,} conversations to {args.out}")


if __name__ == "__main__":
    main()
