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


@pytest.mark.parametrize("argv", [["cache", "--workload", "gsp", "--capacity", "-5%"],
                                  ["compare", "--loads", "-0.5,0.8"]])
def test_a_value_with_a_leading_minus_gets_its_own_check(argv, capsys):
    """argparse read '-5%' as an unknown option and said 'expected one argument'."""
    assert main(argv) == 2
    _one_line_error(capsys, f"got '{argv[-1]}'" if argv[0] == "cache" else "-0.5")


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


SMALL_COMPARE = ["compare", "--evictions", "lru", "--routings", "round_robin", "--workloads",
                 "gsp", "-o", "gsp.groups=2", "-o", "gsp.prompts_per_group=4", "--jobs", "1",
                 "--no-ceilings"]


@pytest.mark.parametrize(("extra", "text"), [
    (["-o", "gsp.output_len=abc"], "option output_len must be an integer, got 'abc'"),
    (["-o", "gsp.rate=abc"], "option rate must be a number, got 'abc'"),
    (["-o", "gsp.rate=nan"], "rate must be > 0"),
    (["-o", "gsp.lengths=512"], "option lengths must be a list of integers"),
    (["-o", "gsp.order=grouped"], "-o gsp.order: the grid sets gsp's arrival order from "
                                  "--orders"),
    (["-o", "sharegpt.clients=8"], "-o sharegpt.clients: sharegpt is not among the grid's "
                                   "workloads (gsp); add it with --workloads"),
    (["-o", "mooncake.limit=5"], "add it with --trace FILE"),
    (["--loads", "0.5", "-o", "gsp.load=0.3"], "give one or the other"),
    (["--baseline", "lru+nope"], "--baseline lru+nope: not a pair of the grid"),
    (["--focus", "rlt+round_robin"], "--focus rlt+round_robin: not a pair of the grid"),
    (["--jobs", "-1"], "--jobs must be >= 1"),
])
def test_compare_options_it_would_choke_on_or_ignore_are_one_line(capsys, extra, text):
    """Each was a TypeError traceback (a wrongly typed -o value) or silently did nothing."""
    assert main([*SMALL_COMPARE, *extra]) == 2
    _one_line_error(capsys, text)


def test_compare_with_a_missing_trace_says_so_before_announcing_the_grid(tmp_path, capsys):
    assert main([*SMALL_COMPARE, "--trace", str(tmp_path / "none.jsonl")]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "none.jsonl: trace file not found" in out.err


@pytest.mark.parametrize("flag", ["--request-timeout", "--metrics-interval",
                                  "--health-interval", "--drain-timeout", "--cooldown"])
def test_serve_refuses_nan_times_before_listening(capsys, flag):
    """NaN passed every `< 0` check and the router started with it (a NaN timeout)."""
    import socket

    pytest.importorskip("aiohttp")
    with socket.socket() as busy:  # should a check let NaN through: no server starts
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        assert main(["serve", "--worker-urls", "http://127.0.0.1:1", "--port", port, flag,
                     "nan"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvroute: error: ") and "cannot listen" not in err, err


def test_worker_kv_events_on_a_bad_address_is_one_line(capsys):
    """A malformed ZMQ address was a zmq.ZMQError traceback out of the app's startup."""
    pytest.importorskip("zmq")
    pytest.importorskip("aiohttp")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    assert main(["worker", "--emulate", "--port", port, "--kv-events-endpoint",
                 "bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvroute: error: cannot publish KV events on bogus: "), err
    assert err.count("\n") == 1


def test_cache_workers_below_one_is_one_line(capsys):
    """--workers 0 reported an 'optimum pooled over 0 caches' of hit rate 0."""
    assert main(["cache", "--groups", "2", "--prompts-per-group", "4", "--policies", "lru",
                 "--workers", "0"]) == 2
    _one_line_error(capsys, "workers must be an integer >= 1, got 0")


def test_a_load_over_no_workers_names_the_workers():
    """`bench --load 0.5 --workers 0` said 'rate must be > 0', a flag it was not given."""
    from kvroute.sim.load import build_at_load
    from kvroute.sim.step_profiles import load_profile

    with pytest.raises(ConfigError, match=r"a load needs workers .* > 0, got 0"):
        build_at_load("gsp", 1, 0.5, load_profile("l40-llama3-8b"), 0, 8192,
                      groups=2, prompts_per_group=4)


def test_up_on_a_host_it_cannot_use_says_so():
    """A host that does not resolve made `up` try every port up to 65535, then report
    'no free ports'."""
    from kvroute.cli.up import _free_ports

    with pytest.raises(ConfigError, match=r"--host 0\.0\.0\.0\.0: cannot listen there"):
        _free_ports("0.0.0.0.0", 20000, 2)


def test_an_empty_output_path_is_named_as_such(capsys):
    """`--json ''` said ':  is a directory'."""
    assert main([*SMALL_SIM, "--json", ""]) == 2
    _one_line_error(capsys, "--json: an empty path; give a file name")


def test_adapters_with_the_exact_index_are_refused_before_any_work(capsys):
    """The combination is checked before the workload is built (before, sim printed the
    arrivals line first)."""
    assert main([*SMALL_SIM, "--adapters", "2", "--index", "exact"]) == 2
    out = capsys.readouterr()
    assert "arrivals" not in out.out
    assert out.err.startswith("kvroute: error: ") and "approximate index" in out.err
