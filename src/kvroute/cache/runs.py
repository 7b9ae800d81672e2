"""Token sequences stored as runs of consecutive ids, and a radix tree over them.

Why: the hit-rate ceilings replay every prompt of a workload through two trees (the
infinite cache and the offline optimum's future trie) and need all prompts at once. As
int64 arrays a 100,000-request Mooncake trace (15K-token prompts) is 12 GB per copy. Its
prompts are chains of 512-token blocks whose ids are ``block * 512 + position``, and the
simulator's output ids count down by one (:func:`kvroute.workloads.request.output_ids`),
so a prompt is a handful of runs ``v, v+1, v+2, ...`` (or ``v, v-1, ...``) and a few
dozen integers hold it.

Contract of :class:`Runs`:

* It is an immutable sequence of integer token ids, stored as runs: run ``r`` holds the
  ids ``starts[r] + steps[r] * k`` for ``k`` in ``0 .. length - 1`` (steps +1 or -1).
  ``len`` counts tokens; ``r[i]`` and ``r.item(i)`` give one id; ``r[a:b]`` (step 1) is a
  :class:`Runs`; ``r.array()`` expands it. The split into runs is not canonical: two
  :class:`Runs` with equal ids compare equal through :meth:`common` whatever their runs.
* :meth:`Runs.of` encodes any 1-D integer array exactly; it is compact only when the ids
  come in runs (random ids give one run per token: keep those as arrays).

:class:`RunRadixCache` is :class:`kvroute.cache.radix.RadixCache` with :class:`Runs` as
its keys: the same tree code, the same eviction policies (``lru`` and ``optimal``, as the
ceilings use them), the same results token for token, in memory proportional to the
number of runs. It takes a :class:`Runs` or an array wherever the tree takes tokens.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Any, overload

import numpy as np

from kvroute.cache.radix import RadixCache, as_tokens

__all__ = ["RunRadixCache", "Runs"]


def _steps(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The steps between the ids of ``arr`` (``np.diff``) and where they are +-1."""
    d = np.diff(arr)
    return d, (d == 1) | (d == -1)


def _run_starts(d: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Where :meth:`Runs.of`'s runs start, from :func:`_steps` of a non-empty array."""
    # token i (>= 1) starts a run unless it steps by +-1 from token i-1 by the same
    # step as the run it would join (tokens i-2, i-1 stepped that way or i-1 started it)
    brk = ~unit
    if len(d) > 1:
        brk[1:] |= unit[:-1] & (d[1:] != d[:-1])
    return np.concatenate(([0], np.flatnonzero(brk) + 1))


class Runs(Sequence[int]):
    """An immutable token sequence held as runs of ids that step by +1 or -1."""

    __slots__ = ("ends", "starts", "steps")

    def __init__(self, starts: tuple[int, ...], steps: tuple[int, ...],
                 ends: tuple[int, ...]) -> None:
        self.starts = starts  # first id of each run
        self.steps = steps  # +1 or -1
        self.ends = ends  # cumulative token count at the end of each run

    @classmethod
    def of(cls, tokens: Sequence[int] | np.ndarray | Runs) -> Runs:
        """Encode a token sequence (a :class:`Runs` is returned as is)."""
        if isinstance(tokens, Runs):
            return tokens
        arr = as_tokens(tokens)
        if len(arr) == 0:
            return _EMPTY_RUNS
        d, unit = _steps(arr)
        return cls._encode(arr, _run_starts(d, unit), d)

    @classmethod
    def compact(cls, tokens: Sequence[int] | np.ndarray | Runs, ratio: float) -> Runs | None:
        """``Runs.of(tokens)`` if its runs hold at least ``ratio`` tokens each on average,
        else None (found before the runs are built: random ids cost no encoding)."""
        if isinstance(tokens, Runs):
            return tokens if len(tokens) >= ratio * tokens.runs else None
        arr = as_tokens(tokens)
        if len(arr) == 0:
            return _EMPTY_RUNS
        d, unit = _steps(arr)
        if len(arr) < ratio * (1 + len(d) - np.count_nonzero(unit)):
            return None  # each step other than +-1 starts a run: too many already
        first = _run_starts(d, unit)
        return cls._encode(arr, first, d) if len(arr) >= ratio * len(first) else None

    @classmethod
    def _encode(cls, arr: np.ndarray, first: np.ndarray, d: np.ndarray) -> Runs:
        n = len(arr)
        ends = np.append(first[1:], n)
        steps = np.where(ends - first > 1, d[np.minimum(first, n - 2)] if n > 1 else 1, 1)
        return cls(tuple(arr[first].tolist()), tuple(steps.tolist()), tuple(ends.tolist()))

    # ------------------------------------------------------------------ sequence protocol
    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    @property
    def runs(self) -> int:
        return len(self.ends)

    def _value(self, r: int, i: int) -> int:
        """The id at token position ``i``, which lies in run ``r``."""
        begin = self.ends[r - 1] if r else 0
        return self.starts[r] + self.steps[r] * (i - begin)

    def item(self, i: int) -> int:
        if not 0 <= i < len(self):
            raise IndexError(f"token {i} out of range for {len(self)} tokens")
        return self._value(bisect_right(self.ends, i), i)

    @overload
    def __getitem__(self, key: int) -> int: ...

    @overload
    def __getitem__(self, key: slice) -> Runs: ...

    def __getitem__(self, key: int | slice) -> int | Runs:
        if not isinstance(key, slice):
            i = int(key)
            return self.item(i + len(self) if i < 0 else i)
        a, b, step = key.indices(len(self))
        if step != 1:
            raise ValueError("Runs slices take step 1 only")
        if b <= a:
            return _EMPTY_RUNS
        if a == 0 and b == len(self):
            return self
        ends = self.ends
        i, j = bisect_right(ends, a), bisect_left(ends, b)
        new_ends = (*(e - a for e in ends[i:j]), b - a)
        starts = (self._value(i, a), *self.starts[i + 1:j + 1])
        return Runs(starts, self.steps[i:j + 1], new_ends)

    def copy(self) -> Runs:
        return self  # immutable

    def array(self) -> np.ndarray:
        """The ids as a 1-D int64 array."""
        out = np.empty(len(self), dtype=np.int64)
        begin = 0
        for v, s, e in zip(self.starts, self.steps, self.ends, strict=True):
            out[begin:e] = v + s * np.arange(e - begin, dtype=np.int64)
            begin = e
        return out

    def common(self, other: Runs, pos: int = 0) -> int:
        """Length of the common prefix of ``self`` and ``other[pos:]``."""
        n = min(len(self), len(other) - pos)
        if n <= 0:
            return 0
        a_ends, a_starts, a_steps = self.ends, self.starts, self.steps
        b_ends, b_starts, b_steps = other.ends, other.starts, other.steps
        i, j = 0, bisect_right(b_ends, pos)
        m = 0
        while m < n:
            a_begin = a_ends[i - 1] if i else 0
            b_begin = b_ends[j - 1] if j else 0
            q = pos + m
            if (a_starts[i] + a_steps[i] * (m - a_begin)
                    != b_starts[j] + b_steps[j] * (q - b_begin)):
                break
            ra, rb = a_ends[i] - m, b_ends[j] - q
            m += min(ra, rb) if a_steps[i] == b_steps[j] else 1
            if m >= a_ends[i]:
                i += 1
            if pos + m >= b_ends[j]:
                j += 1
        return min(m, n)

    def __repr__(self) -> str:
        return f"Runs({len(self)} tokens in {self.runs} runs)"


_EMPTY_RUNS = Runs((), (), ())


def _runs(tokens: Any) -> Runs:
    return tokens if isinstance(tokens, Runs) else Runs.of(tokens)


class RunRadixCache(RadixCache):
    """A :class:`RadixCache` whose keys are :class:`Runs` (see the module docstring).

    No events: ``subscribe`` is not supported (the ceilings do not listen)."""

    def subscribe(self, listener: Any) -> None:
        raise NotImplementedError("RunRadixCache sends no events")

    def page_aligned(self, tokens: Any) -> Any:
        runs = _runs(tokens)
        p = self.page_size
        n = len(runs)
        return runs[: n - n % p] if p > 1 and n % p else runs

    def child_key(self, tokens: Any, pos: int) -> object:
        if self.page_size == 1:
            return tokens.item(pos)
        return tokens[pos:pos + self.page_size].array().tobytes()

    def common_length(self, key: Any, tokens: Any, pos: int) -> int:
        m = int(key.common(tokens, pos))
        if self.page_size > 1:
            m -= m % self.page_size
        return m

    def path_of(self, node: Any) -> Any:
        if self._settle is not None:
            self._settle(node)
        parts = []
        while node.parent is not None:
            parts.append(node.key)
            node = node.parent
        if not parts:
            return _EMPTY_RUNS
        starts: tuple[int, ...] = ()
        steps: tuple[int, ...] = ()
        ends: tuple[int, ...] = ()
        total = 0
        for key in reversed(parts):
            starts += key.starts
            steps += key.steps
            ends += tuple(e + total for e in key.ends)
            total += len(key)
        return Runs(starts, steps, ends)
