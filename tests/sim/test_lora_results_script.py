"""``benchmarks/lora_results.py``'s row, on rows computed by hand."""

import pytest

from tests.benchmark_scripts import load


def _row(routing: str, load: float, e2e: float, ttft: float, p99: float) -> dict:
    return {"workload": "mooncake", "order": "", "load": load, "routing": routing,
            "e2e_mean": e2e, "ttft_mean": ttft, "ttft_p99": p99}


def test_a_row_scores_learned_against_the_best_other_and_the_blind_ones() -> None:
    """Two cells. At 0.5 `llmd_lora` is best on E2E (10 s) and `dynamo` the best blind
    one (20 s); `learned` 8 s: first, 10/8 = 1.25x over the best, 2.5x over the blind
    ones. At 0.8 `learned` 12 s against `llmd_lora`'s 10 s: 10/12, blind 15/12. Geometric
    means: sqrt(1.25 * 10/12), sqrt(2.5 * 1.25); `llmd_lora` over the blind ones
    sqrt(2 * 1.5)."""
    module = load("lora_results")
    mine = [_row("learned", 0.5, 8, 1, 2), _row("learned", 0.8, 12, 1, 2)]
    others = [_row("llmd_lora", 0.5, 10, 1, 2), _row("dynamo", 0.5, 20, 2, 4),
              _row("llmd_lora", 0.8, 10, 2, 4), _row("dynamo", 0.8, 15, 1, 2)]
    text = module.row("case", [(mine, others)])
    cells = [c.strip() for c in text.strip("|").split("|")]
    e2e, ttft, p99 = (float(x.rstrip("x")) for x in cells[1].split(" / "))
    assert e2e == pytest.approx((1.25 * 10 / 12) ** 0.5, abs=1e-3)
    assert ttft == pytest.approx(1.0) and p99 == pytest.approx(1.0)
    assert cells[2] == "1 of 2"
    assert float(cells[3].split(" / ")[0].rstrip("x")) == pytest.approx(
        (2.5 * 1.25) ** 0.5, abs=1e-2)
    assert float(cells[4].rstrip("x")) == pytest.approx((2 * 1.5) ** 0.5, abs=1e-3)


def test_the_cache_key_follows_the_sources_not_their_place(tmp_path) -> None:
    """Two copies of the same sources share runs; a changed file gets new ones."""
    module = load("lora_results")
    for name in ("a", "b"):
        (tmp_path / name / "pkg").mkdir(parents=True)
        (tmp_path / name / "pkg" / "x.py").write_text("X = 1\n")
    a, b = (module.source_digest(str(tmp_path / n)) for n in ("a", "b"))
    assert a == b
    (tmp_path / "b" / "pkg" / "x.py").write_text("X = 2\n")
    assert module.source_digest(str(tmp_path / "b")) != a
