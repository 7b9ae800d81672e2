"""benchmarks/eviction_results.py: the per-cell verdict against issue 13's cluster target
(learned's mean TTFT no worse than rlt's; better where the hit rate is below the pooled
optimum; cells where every eviction gives the same row are not judged)."""

import pytest

from tests.benchmark_scripts import load


@pytest.fixture(scope="module")
def er():
    return load("eviction_results")


def row(ev, hit, ttft, opt=0.5, wl="gsp", load=0.8, routing="learned"):
    return {"workload": wl, "order": "random", "load": load, "routing": routing,
            "eviction": ev, "hit_rate": hit, "ttft_mean": ttft, "ceiling_optimal": opt}


def cells(learned, rlt, opt=0.5):
    return {"lru": row("lru", 0.1, 9.0, opt), "block_lru": row("block_lru", 0.2, 8.0, opt),
            "rlt": row("rlt", rlt[0], rlt[1], opt),
            "learned": row("learned", learned[0], learned[1], opt)}


def test_below_the_optimum_learned_must_be_faster(er):
    assert er.cluster_verdict(cells((0.4, 0.9), (0.3, 1.0)))[0] is True
    assert er.cluster_verdict(cells((0.4, 1.0), (0.3, 1.0)))[0] is False  # a tie is not better
    assert er.cluster_verdict(cells((0.4, 1.1), (0.3, 1.0)))[0] is False


def test_at_the_optimum_a_tie_is_enough(er):
    at = er.AT_OPTIMUM
    assert er.cluster_verdict(cells((0.5, 1.0), (0.5 * at, 1.0)))[0] is True
    assert er.cluster_verdict(cells((0.5, 1.01), (0.5 * at, 1.0)))[0] is False


def test_equal_rows_are_not_judged_and_the_table_counts_them(er):
    same = [row(ev, 0.7, 0.2, opt=0.8, wl="loogle") for ev in er.CLUSTER_EVICTIONS.split(",")]
    assert er.cluster_verdict({r["eviction"]: r for r in same})[0] is None
    judged = list(cells((0.4, 0.9), (0.3, 1.0)).values())
    lines, met, n, equal = er.cluster_table(same + judged)
    assert (met, n, equal) == (1, 1, 1)
    assert len(lines) == 4 and "equal rows" in lines[3] and "| met |" in lines[2]


def test_spread_table_ratios_per_window(er):
    def rows(learned, rlt, lru):
        return [{"routing": "learned", "load": 0.8, "eviction": ev, "ttft_mean": t}
                for ev, t in (("learned", learned), ("rlt", rlt), ("lru", lru))]

    lines, every = er.spread_table({0: rows(2.0, 1.0, 1.0), 10: rows(1.0, 2.0, 4.0)})
    assert every == [2.0, 0.5]
    assert len(lines) == 3  # header, rule, one cell
    assert "1.000 (0.500, 2.000)" in lines[2]  # learned / rlt: geo-mean of 2 and 1/2
    assert "1.414 (1.000, 2.000)" in lines[2]  # lru / rlt
    assert "0: 2.000, 10: 0.500" in lines[2]


def test_mean_rows_average_each_cell_over_traces(er):
    rows = [row("rlt", 0.2, 1.0, opt=0.4, wl="agentic"),
            row("rlt", 0.4, 3.0, opt=0.6, wl="agentic"),
            row("rlt", 0.5, 5.0, wl="conversation")]
    means = {r["workload"]: r for r in er.mean_rows(rows)}
    assert means["agentic"]["hit_rate"] == pytest.approx(0.3)
    assert means["agentic"]["ttft_mean"] == pytest.approx(2.0)
    assert means["agentic"]["ceiling_optimal"] == pytest.approx(0.5)
    assert means["conversation"]["ttft_mean"] == 5.0 and len(means) == 2
