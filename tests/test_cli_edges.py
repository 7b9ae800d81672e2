"""The command line on bad or unusual input: one line naming the problem, never a
traceback, and no flag that silently does nothing."""

import pytest

from kvroute.cli import main
from kvroute.errors import ConfigError
from kvroute.sim.cluster import SimConfig
from kvroute.workloads.cache_streams import parse_capacities
from kvroute.workloads.mooncake import write_mooncake

SMALL_SIM = ["sim", "--groups", "2", "--prompts-per-group", "4", "--eviction", "lru",
             "--routing", "round_robin", "--no-ceilings"]


def _one_line_error(capsys, text):
    err = capsys.readouterr().err
    assert err.startswith("kvroute: error: ") and err.count("\n") == 1, err
    assert text in err, err


@pytest.mark.parametrize("text", ["inf%", "1e999%", "nan%", "0%", "abc", "-5"])
def test_capacities_that_are_not_finite_sizes_are_config_errors(text):
    with pytest.raises(ConfigError, match="capacity must be"):
        parse_capacities(text, 1000)


def test_cache_capacity_inf_percent_is_one_line(tmp_path, capsys):
    trace = tmp_path / "t.jsonl"
    write_mooncake(trace, [{"timestamp": 0, "input_length": 600, "output_length": 1,
                            "hash_ids": [1, 2]}])
    assert main(["cache", "--trace", str(trace), "--policies", "lru",
                 "--capacity", "inf%"]) == 2
    _one_line_error(capsys, "got 'inf%'")


def test_sim_index_without_a_name_is_one_line(capsys):
    assert main([*SMALL_SIM, "--index", ","]) == 2
    _one_line_error(capsys, "--index takes approx, exact or both, got ','")


def test_event_delay_nan_is_refused():
    """NaN would hold every cache event back forever (the run then 'never finishes')."""
    with pytest.raises(ConfigError, match="event delay"):
        SimConfig(event_delay=float("nan"))


def test_plot_without_a_suffix_reports_the_file_it_wrote(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main([*SMALL_SIM, "--plot", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig.png").is_file()
    assert f"wrote {tmp_path / 'fig.png'}" in capsys.readouterr().out


def test_a_tokenizer_without_a_dataset_is_refused(tmp_path, capsys):
    """--tokenizer only tokenizes a --dataset; alone it used to be silently ignored."""
    assert main([*SMALL_SIM[:1], "--workload", "sharegpt", "--tokenizer",
                 str(tmp_path / "tokenizer.json")]) == 2
    _one_line_error(capsys, "a tokenizer applies to a dataset file (--dataset)")
