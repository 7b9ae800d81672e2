"""What an engine's Prometheus ``/metrics`` page says about its load and its cache.

* :func:`samples` sums the samples of the wanted metric families over their label sets
  (a ``_total`` suffix and ``_created`` samples are ignored). Lines of other families are
  dropped before the page reaches ``prometheus_client``'s parser, so a large vLLM page
  (hundreds of histogram buckets) costs little.
* :func:`engine_load` reads the load gauges: SGLang's names when the page has them, else
  vLLM's (kvroute's emulated worker exports both; they are never added together):

  ============  ===========================  =======================================
  field         SGLang                       vLLM
  ============  ===========================  =======================================
  running       ``sglang:num_running_reqs``  ``vllm:num_requests_running``
  waiting       ``sglang:num_queue_reqs``    ``vllm:num_requests_waiting``
  kv_usage      ``sglang:token_usage``       ``vllm:kv_cache_usage_perc`` (V1), else
                                             ``vllm:gpu_cache_usage_perc`` (fraction)
  kv_capacity   ``sglang:max_total_num_      ``num_gpu_blocks`` x ``block_size`` labels
                tokens``                     of ``vllm:cache_config_info``
  max_running   ``sglang:max_running_        none (0: ``kvroute serve --max-running``
                requests``                   says it)
  max_loras     none (0: ``kvroute serve     the ``max_lora`` label of
                --max-loras`` says it)       ``vllm:lora_requests_info`` (0: no LoRA)
  ============  ===========================  =======================================

  With several series (data-parallel ranks) counts are summed and usage is averaged.
  The names come from :mod:`kvroute.protocol.metric_names`.
* ``engine_load(text, rank=R, ranks=N)``: the load of rank R of a data-parallel engine
  whose N ranks the router routes to (``URL@R`` workers): the series labelled
  ``engine="R"`` (vLLM labels every engine series so) or ``dp_rank="R"``, read as
  above. A page whose series carry neither label has the engine's totals only: counts
  and the pool are then divided by N (each rank's share; usage as read).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

from kvroute.protocol.metric_names import ENGINES, SGLANG, VLLM

__all__ = ["EngineLoad", "engine_load", "samples"]

_SGLANG = (SGLANG.running, SGLANG.waiting, SGLANG.kv_usage[0], SGLANG.kv_capacity,
           SGLANG.max_running)
_VLLM = (VLLM.running, VLLM.waiting, *VLLM.kv_usage)
_VLLM_CONFIG = VLLM.kv_capacity
_WANTED = frozenset((*_SGLANG, *_VLLM, _VLLM_CONFIG, VLLM.lora_info))


def _family(line: str) -> str:
    return line.split("{", 1)[0].split(" ", 1)[0].removesuffix("_total")


def _parse(text: str, names: frozenset[str]) -> Iterable[tuple[str, dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    kept = "\n".join(line for line in text.splitlines()
                     if line and line[0] != "#" and _family(line) in names)
    for family in text_string_to_metric_families(kept + "\n"):
        for s in family.samples:
            if not s.name.endswith("_created"):
                yield s.name.removesuffix("_total"), s.labels, float(s.value)


def samples(text: str, names: Iterable[str]) -> dict[str, list[float]]:
    """Each wanted family's sample values (one per label set); ValueError if unparsable."""
    out: dict[str, list[float]] = {}
    for name, _, value in _parse(text, frozenset(names)):
        out.setdefault(name, []).append(value)
    return out


@dataclass(frozen=True)
class EngineLoad:
    running: int
    waiting: int
    kv_usage: float  # fraction of the KV pool in use
    kv_capacity: int  # tokens; 0 when the page does not say
    max_running: int = 0  # the cap on running requests; 0 when the page does not say
    max_loras: int = 0  # the cap on LoRA adapters running at once; 0 when it does not say


_RANK_LABELS = tuple(e.rank_label for e in ENGINES)


def engine_load(text: str, rank: int | None = None, ranks: int = 1) -> EngineLoad | None:
    """The load an engine reports (of its rank ``rank`` out of the ``ranks`` the router
    knows: the module doc), or None when the page has neither SGLang's nor vLLM's
    gauges. Raises ValueError when the page cannot be parsed or a load gauge reads NaN,
    an infinity or a negative number."""
    rows = list(_parse(text, _WANTED))
    share = 1
    if rank is not None:
        mine = [r for r in rows if any(r[1].get(k) == str(rank) for k in _RANK_LABELS)]
        if mine:
            rows = mine
        elif not any(k in r[1] for r in rows for k in _RANK_LABELS):
            share = max(1, ranks)  # totals only: each rank's share
        else:
            rows = []  # the page labels its ranks, and this one is not there
    got: dict[str, list[float]] = {}
    vllm_capacity = loras = 0
    for name, labels, value in rows:
        if name == _VLLM_CONFIG:
            with contextlib.suppress(ValueError):
                vllm_capacity += (int(labels.get("num_gpu_blocks", 0))
                                  * int(labels.get("block_size", 0)))
        elif name == VLLM.lora_info:  # its value is a time; the label says the cap
            with contextlib.suppress(ValueError):
                loras = max(loras, int(labels.get("max_lora", 0)))
        elif not 0.0 <= value < math.inf:  # a count or a share: NaN, inf or < 0 is no load
            raise ValueError(f"{name} reads {value}")
        else:
            got.setdefault(name, []).append(value)
    cap = 0
    if SGLANG.running in got:
        running, waiting, usage = _SGLANG[:3]
        capacity = int(sum(got.get(SGLANG.kv_capacity, [])))
        cap = int(sum(got.get(_SGLANG[4], [])))
    elif VLLM.running in got:
        running, waiting = _VLLM[:2]
        usage = _VLLM[2] if _VLLM[2] in got else _VLLM[3]
        capacity = vllm_capacity
    else:
        return None
    use = got.get(usage, [])
    return EngineLoad(running=int(sum(got.get(running, [])) / share),
                      waiting=int(sum(got.get(waiting, [])) / share),
                      kv_usage=sum(use) / len(use) if use else 0.0,
                      kv_capacity=capacity // share, max_running=cap // share,
                      max_loras=loras)
