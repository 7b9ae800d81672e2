"""The records of ``learned`` routing (:mod:`kvroute.routing.learned`): the terms of a
decision per worker (:class:`Costs`, in the module doc's names) and what it keeps of each
request it routed until the request completes (:class:`OpenRequest`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["Costs", "OpenRequest"]


class Costs(NamedTuple):
    """Per worker, the decision's terms (the module doc's names)."""

    cost: list[float]
    own: list[float]  # the request's own predicted E2E
    ttft: list[float]  # its predicted TTFT
    unc: list[float]  # its uncached units
    ahead: list[float]  # uncached units queued ahead of it
    room: list[float]  # seconds it would wait for room in the KV pool or a slot, where that binds
    ctx: list[float]  # prompt units in flight with it, / 1e5 (the decode model's context)
    seen: list[int]  # requests on each worker (in_flight_w in the module doc)
    age: list[int]  # age bucket of its prefix (-1: none recorded)
    out: float | None  # its expected output tokens (None: no estimate)
    fingerprint: np.ndarray  # its OutputLengths.fingerprint


@dataclass(slots=True)
class OpenRequest:
    worker: int
    units: int  # L
    uncached: float  # u_w predicted
    matched: int  # index's matched units on the chosen worker
    age: int  # age bucket of its prefix on the chosen worker (-1: no record)
    x_ttft: tuple[float, float, float]  # the TTFT model's features
    ahead: float  # uncached units estimated ahead of it
    x_dec: tuple[float, float, float]  # the decode model's
    out: int | None  # max_tokens sent
    fingerprint: np.ndarray  # OutputLengths.fingerprint of its prompt
    pred_out: float | None  # O expected (None: no estimate)
    pred_ttft: float
    pred_e2e: float
    sent: float  # view.now when routed
    need: float  # units of the pool it needs (held while it decodes)
    room: float  # the wait for room its TTFT was predicted with (0: none)
    home_common: float  # sent home: the units all workers were known to hold; else -1
