"""``OutputLengths``: how many tokens a request will generate, learned online from the
completions of earlier requests that began the same way.

Chat clients seldom send the output length: ``max_tokens`` is missing, or a cap the output
mostly ends far below. What a router can still see is the prompt, and requests that begin
alike (the same application's system prompt, the same conversation) tend to have outputs
alike: on the Mooncake trace, among the requests whose first block recurs, the block
explains 89% of the variance of the log output length, and a running mean per first
block, online, cuts the squared error of a global one by 45% (docs/routing-results.md,
"Clients that send no `max_tokens`, or a cap").

Keys: a prompt's first ``L`` units for each ``L`` in ``LEVELS`` it is long enough for
(64, 512 and 4096: an application's opening words, a template, a conversation so far),
each read as 16 of its units at a stride of ``L / 16`` and hashed (a fingerprint: two
prompts that differ only between the sampled units share a key, which misjudges only how
alike they are; two fingerprints' 64-bit hashes collide with odds of about 2^-64). Per
key, and over all requests, sums decayed by ``forget`` per sample of that key:

* of ``output / max_tokens`` over the completions that sent ``max_tokens``;
* of ``output`` over the completions that sent none.

``predict(fingerprint, max_tokens)`` reads the longest key with a sample of the kind the
request is, else the global sums: with ``max_tokens``, ``max_tokens`` times the mean
ratio (1 before any sample, so a client that sends each request's exact output, as
benchmark clients do, is read exactly: every ratio is 1); without, the mean output, or
None before any sample. The caller takes a request's :meth:`fingerprint` (its sampled
units, 48 at most) when it routes it and hands it to ``predict`` and, at its completion,
``update``; the keys are hashed from it only where they are read: while every output reported with
``max_tokens`` was exactly ``max_tokens`` (:attr:`exact`), a request with ``max_tokens``
needs none (its ratio is 1 whatever its key; the global sums count it), so benchmark
clients cost no key. At most ``max_keys`` keys are kept (the oldest first go). Mechanism
only: no clock, no randomness.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

__all__ = ["LEVELS", "OutputLengths"]

LEVELS = (64, 512, 4096)
_SAMPLES = 16
# the positions a fingerprint reads: 16 per level, at a stride of level / 16; per number
# of levels a prompt reaches
_POSITIONS = np.concatenate([np.arange(0, n, n // _SAMPLES) for n in LEVELS])
_READ = [_POSITIONS[:_SAMPLES * k] for k in range(len(LEVELS) + 1)]


class OutputLengths:
    def __init__(self, forget: float, max_keys: int = 1 << 16) -> None:
        self.forget = forget
        self.max_keys = max_keys
        # key -> [ratio sum, ratio count, output sum, output count]; "" is the global one
        self._sums: dict[object, list[float]] = {"": [0.0, 0.0, 0.0, 0.0]}
        self.exact = True  # every output reported with max_tokens was exactly max_tokens

    @staticmethod
    def fingerprint(units: np.ndarray) -> np.ndarray:
        """The units a request's keys are made of: 16 per level its prompt reaches."""
        out: np.ndarray = units[_READ[bisect_right(LEVELS, len(units))]]
        return out

    @staticmethod
    def keys(fingerprint: np.ndarray) -> list[object]:
        """The keys of a :meth:`fingerprint`, longest first."""
        return [hash((LEVELS[i], fingerprint[_SAMPLES * i:_SAMPLES * (i + 1)].tobytes()))
                for i in reversed(range(len(fingerprint) // _SAMPLES))]

    def _skip_keys(self, max_tokens: int | None) -> bool:
        """While :attr:`exact`, a request with ``max_tokens`` needs no key: its ratio is
        1 whatever its key, and the global sums count it."""
        return max_tokens is not None and self.exact

    def predict(self, fingerprint: np.ndarray, max_tokens: int | None) -> float | None:
        """Expected output tokens of a request (None: no estimate yet)."""
        if max_tokens is not None and self.exact:  # no key needed (_skip_keys)
            return float(max_tokens)
        at = 0 if max_tokens is not None else 2
        sums = self._sums
        for key in [*self.keys(fingerprint), ""]:
            s = sums.get(key)
            if s is not None and s[at + 1] > 0:
                mean = s[at] / s[at + 1]
                return mean if max_tokens is None else max_tokens * mean
        return None if max_tokens is None else float(max_tokens)

    def update(self, fingerprint: np.ndarray, max_tokens: int | None, output: int) -> None:
        """A completion generated ``output`` tokens (it was sent ``max_tokens``)."""
        at = 0 if max_tokens is not None else 2
        value = output / max_tokens if max_tokens else float(output)
        if max_tokens is not None and output != max_tokens:
            self.exact = False
        f, sums = self.forget, self._sums
        keys = [] if self._skip_keys(max_tokens) else self.keys(fingerprint)
        for key in [*keys, ""]:
            s = sums.get(key)
            if s is None:
                if len(sums) > self.max_keys:
                    del sums[next(k for k in sums if k != "")]  # the oldest key
                s = sums[key] = [0.0, 0.0, 0.0, 0.0]
            s[at] = f * s[at] + value
            s[at + 1] = f * s[at + 1] + 1.0
