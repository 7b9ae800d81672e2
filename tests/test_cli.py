"""The kvroute command line: the cache replay job and its errors."""

import json

import numpy as np
import pytest

from kvroute.cli import main
from kvroute.workloads.mooncake import write_mooncake


def test_cache_command_writes_a_table_and_json(tmp_path, capsys):
    """`kvroute cache` replays GSP through each policy; optimal is the top hit rate."""
    out = tmp_path / "r.json"
    rc = main(["cache", "--groups", "6", "--prompts-per-group", "6", "--capacity", "6000",
               "--json", str(out)])
    assert rc == 0
    assert "rlt_faithful" in capsys.readouterr().out
    data = json.loads(out.read_text())
    (run,) = data["results"]
    rates = {r["policy"]: r["hit_rate"] for r in run["policies"]}
    assert set(rates) == {"lru", "block_lru", "lfu", "slru", "sae", "rlt", "rlt_faithful",
                          "learned", "optimal"}
    assert max(rates.values()) == rates["optimal"] <= run["ceilings"]["infinite"]
    assert run["capacity"] == 6000 and data["stream"]["name"] == "gsp"


def _trace(path, n=40):
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        shared = [0, 1, 2] if i % 2 else [5, 6]
        own = (100 + i * 10 + np.arange(rng.integers(1, 4))).tolist()
        ids = shared + own
        records.append({"timestamp": i * 10, "input_length": len(ids) * 512 - 7,
                        "output_length": 3, "hash_ids": ids})
    write_mooncake(path, records)
    return records


@pytest.mark.parametrize("unit", ["block", "token"])
def test_cache_replays_a_trace_at_percent_capacities(tmp_path, unit):
    """--trace with --unit, capacities as N% of the unique units, several at once."""
    trace, out = tmp_path / "t.jsonl", tmp_path / "r.json"
    records = _trace(trace)
    rc = main(["cache", "--trace", str(trace), "--unit", unit, "--capacity", "10%,50%,8",
               "--policies", "lru", "rlt", "learned", "optimal", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    unique = data["stream"]["unique_units"]
    own = sum(len(r["hash_ids"]) - (3 if i % 2 else 2) for i, r in enumerate(records))
    if unit == "block":  # [0], [0 1], [0 1 2], [5], [5 6] and every request's own ids
        assert unique == 5 + own
    else:  # the same blocks in tokens; each prompt's last block is 7 tokens short
        assert unique == (5 + own) * 512 - 7 * len(records)
    caps = [r["capacity"] for r in data["results"]]
    assert caps == [round(unique * 0.1), round(unique * 0.5), 8]
    for run in data["results"]:
        rates = {r["policy"]: r["hit_rate"] for r in run["policies"]}
        assert max(rates.values()) == rates["optimal"] <= run["ceilings"]["infinite"]
    # the policies comma-separated, as the other commands take lists: the same runs
    out2 = tmp_path / "r2.json"
    assert main(["cache", "--trace", str(trace), "--unit", unit, "--capacity", "10%,50%,8",
                 "--policies", "lru,rlt", "learned,optimal", "--json", str(out2)]) == 0
    again = json.loads(out2.read_text())["results"]
    assert [[r["hit_rate"] for r in g["policies"]] for g in again] == \
        [[r["hit_rate"] for r in g["policies"]] for g in data["results"]]


def test_cache_plot_checked_before_the_work(tmp_path, monkeypatch, capsys):
    """Without matplotlib, --plot fails at once with one line (no replay is run)."""
    import kvroute.cache.plot as plot
    from kvroute.errors import KvrouteError

    def missing():
        raise KvrouteError("plots need matplotlib: pip install 'kvroute[plot]'")

    monkeypatch.setattr(plot, "load_pyplot", missing)
    monkeypatch.setattr("kvroute.cli.cache.replay_grid",
                        lambda *a, **k: pytest.fail("the replay ran before the check"))
    assert main(["cache", "--plot", str(tmp_path / "p.png")]) == 2
    assert "matplotlib" in capsys.readouterr().err


def test_cache_plot_and_adversarial(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "p.png"
    assert main(["cache", "--workload", "adversarial", "--policies", "lru", "rlt",
                 "--plot", str(png)]) == 0
    assert png.stat().st_size > 0


def test_bad_arguments_exit_2_with_a_message(capsys):
    """User errors print one line naming the problem, no traceback."""
    assert main(["cache", "--policies", "fifo"]) == 2
    assert "unknown eviction policy fifo" in capsys.readouterr().err
    assert main(["cache", "--capacity", "-1"]) == 2
    assert "capacity" in capsys.readouterr().err


def test_sim_command_table_json_plot(tmp_path, capsys):
    """`kvroute sim` runs each policy pair, prints a table with the ceilings, writes JSON
    (summary, per-request columns, load) and a plot."""
    out, png = tmp_path / "s.json", tmp_path / "s.png"
    rc = main(["sim", "--groups", "8", "--prompts-per-group", "4", "--eviction", "lru,rlt",
               "--routing", "round_robin,random", "--json", str(out), "--plot", str(png)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "ceilings: infinite cache" in text and "round_robin" in text
    runs = json.loads(out.read_text())["runs"]
    assert [(r["config"]["eviction"], r["config"]["routing"]) for r in runs] == [
        ("lru", "round_robin"), ("lru", "random"), ("rlt", "round_robin"), ("rlt", "random")]
    for run in runs:
        s = run["summary"]
        assert s["requests"] == 32 == len(run["requests"]["rid"])
        assert 0 <= s["hit_rate"] <= s["ceiling_infinite"] + 1e-9
        assert s["e2e_s"]["p99"] >= s["e2e_s"]["p50"] > 0
    assert png.stat().st_size > 10_000


def test_sim_other_workloads_and_errors(tmp_path, capsys):
    """Chat, LooGLE and a Mooncake trace run; misuse gets a one-line error, exit 2."""
    import numpy as np

    from kvroute.workloads.mooncake import MooncakeRecord, write_mooncake

    assert main(["sim", "--workload", "sharegpt", "--clients", "8", "--no-ceilings"]) == 0
    assert main(["sim", "--workload", "loogle", "--documents", "4", "--questions-per-doc",
                 "3", "--eviction", "rlt"]) == 0
    trace = tmp_path / "t.jsonl"
    write_mooncake(trace, [MooncakeRecord(1000 * i, 700, 3, np.array([0, 1 + i]))
                           for i in range(5)])
    assert main(["sim", "--workload", "mooncake", "--trace", str(trace)]) == 0
    capsys.readouterr()
    assert main(["sim", "--trace", str(trace), "--no-ceilings"]) == 0  # --trace: mooncake
    assert "t (5 requests)" in capsys.readouterr().out
    assert main(["sim", "--workload", "mooncake"]) == 2
    assert "--trace" in capsys.readouterr().err
    assert main(["sim", "--routing", "nope"]) == 2
    assert "unknown routing policy nope" in capsys.readouterr().err
    assert main(["sim", "--profile", "tpu-v9"]) == 2
    assert "l40-llama3-8b" in capsys.readouterr().err
    assert main(["sim", "--workers", "2", "--speeds", "1,0.5,0.5"]) == 2
    assert "one speed per worker" in capsys.readouterr().err
    assert main(["sim", "--groups", "4", "--prompts-per-group", "2", "--workers", "2",
                 "--speeds", "1,0.5", "--load", "0.5", "--no-ceilings"]) == 0
    assert "on 2 workers at speeds 1, 0.5" in capsys.readouterr().out
    assert main(["sim", "--groups", "4", "--prompts-per-group", "2", "--routing", "learned",
                 "--max-tokens", "none", "--no-cached-report", "--stream-share", "0.25",
                 "--no-ceilings", "--json", str(tmp_path / "n.json")]) == 0
    assert "no max_tokens sent; no cached-token reports; 25% streamed" \
        in capsys.readouterr().out
    config = json.loads((tmp_path / "n.json").read_text())["runs"][0]["config"]
    assert (config["max_tokens"], config["report_cached"], config["stream_share"]) \
        == ("none", False, 0.25)


def test_seeds_and_loads_are_checked(capsys):
    """A bad seed or load is a one-line error before any work starts, never a traceback."""
    for argv, err in [(["compare", "--seeds", "1,x"], "--seeds: a seed is an integer >= 0, "
                                                      "got 'x'"),
                      (["compare", "--seeds", "-1"], "--seeds: a seed is an integer >= 0"),
                      (["compare", "--loads", "0.5,0"], "--loads: load must be a number > 0"),
                      (["compare", "--loads", "nan"], "--loads: load must be a number > 0")]:
        assert main(argv) == 2
        assert err in capsys.readouterr().err
    for command in ("sim", "cache", "bench", "serve", "up", "worker"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--seed", "-1"])
        assert exc.value.code == 2
        assert "argument --seed: a seed is an integer >= 0, got '-1'" in capsys.readouterr().err


def test_output_paths_are_checked_before_the_work(tmp_path, capsys):
    """Where results go is checked before a run: a wrong path is a one-line error, not a
    traceback after the work; missing folders are created."""
    small = ["--groups", "2", "--prompts-per-group", "2", "--no-ceilings"]
    doc = tmp_path / "doc.md"
    doc.write_text("no markers\n")
    (tmp_path / "file").write_text("x")
    for argv, err in [(["sim", "--json", str(tmp_path), *small], "is a directory"),
                      (["sim", "--plot", str(tmp_path / "f.txt"), *small],
                       "--plot: matplotlib cannot write .txt files"),
                      (["cache", "--workload", "gsp", "--json", str(tmp_path)],
                       "is a directory"),
                      (["compare", "--out", str(tmp_path / "file")],
                       "--out: " + str(tmp_path / "file") + " exists and is not a directory"),
                      (["compare", "--update-doc", str(doc)], "<!-- BEGIN results -->"),
                      (["compare", "--routers", "--update-doc", str(doc)],
                       "<!-- BEGIN routers -->")]:
        assert main(argv) == 2
        assert err in capsys.readouterr().err
    import numpy as np

    from kvroute.workloads.mooncake import MooncakeRecord, write_mooncake

    trace = tmp_path / "t.jsonl"  # its last request needs more than a pool of 4,096 tokens
    write_mooncake(trace, [MooncakeRecord(1000 * i, 512 * (1 + 9 * (i == 3)), 4,
                                          np.arange(1 + 9 * (i == 3)) + 10 * i)
                           for i in range(4)])
    assert main(["compare", "--workloads", "mooncake", "--trace", str(trace), "--capacity", "4096",
                 "--jobs", "1", "--no-ceilings"]) == 2
    assert "mooncake: request 3 needs 5,124 KV tokens, more than a worker's pool of 4,096" \
        in capsys.readouterr().err
    # sim refuses it before the first run too, not when the run reaches it
    assert main(["sim", "--trace", str(trace), "--capacity", "4096", "--no-ceilings"]) == 2
    err = capsys.readouterr().err
    assert "request 3 needs 5,124 KV tokens, more than a worker's pool of 4,096; raise " \
        "--capacity" in err and "Traceback" not in err
    nested = tmp_path / "a" / "b" / "runs.json"
    assert main(["sim", "--json", str(nested), *small]) == 0
    assert json.loads(nested.read_text())["runs"]


def test_compare_interrupted_keeps_what_finished(tmp_path, capsys, monkeypatch):
    """Ctrl-C during `kvroute compare`: the finished runs are tabled and written to --out,
    the doc is left alone, exit 130."""
    import kvroute.cli.compare as compare
    from kvroute.sim.grid import GridInterrupted

    real = compare.run_grid

    def interrupted(grid, *args, **kwargs):
        runs, ceilings = real(grid, 1, ceilings=False)
        raise GridInterrupted(runs[:1], ceilings, len(runs))

    monkeypatch.setattr(compare, "run_grid", interrupted)
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- BEGIN results -->\nold\n<!-- END results -->\n")
    assert main(["compare", "--workloads", "gsp", "-o", "gsp.groups=2", "-o",
                 "gsp.prompts_per_group=2", "--routings", "round_robin,lbgr", "--evictions",
                 "lru", "--baseline", "lru+round_robin", "--no-plot", "--out",
                 str(tmp_path / "out"), "--update-doc", str(doc)]) == 130
    text = capsys.readouterr().out
    assert "interrupted after 1 of 2 runs" in text and "round_robin" in text
    rows = json.loads((tmp_path / "out" / "runs.json").read_text())["rows"]
    assert [(r["routing"], r["seeds"]) for r in rows] == [("round_robin", 1)]
    assert "old" in doc.read_text()


def test_sim_interrupted_keeps_what_finished(tmp_path, capsys, monkeypatch):
    """Ctrl-C during `kvroute sim`: the finished runs are printed and written, exit 130."""
    import kvroute.cli.sim as sim

    real, calls = sim.simulate, []

    def second_interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sim, "simulate", second_interrupted)
    out = tmp_path / "runs.json"
    assert main(["sim", "--groups", "2", "--prompts-per-group", "2", "--routing",
                 "round_robin,lbgr,learned", "--json", str(out)]) == 130
    assert "interrupted after 1 of 3 runs" in capsys.readouterr().out
    assert [r["config"]["routing"] for r in json.loads(out.read_text())["runs"]] == \
        ["round_robin"]


def test_compare_command_grid_table_json_doc(tmp_path, capsys):
    """`kvroute compare` runs the grid, prints ratios to the baseline, writes JSON, plots and
    replaces a marked section of a doc."""
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- BEGIN small -->\nold\n<!-- END small -->\nend\n")
    rc = main(["compare", "--workloads", "gsp", "-o", "gsp.groups=6", "-o",
               "gsp.prompts_per_group=4", "--routings", "round_robin,lbgr", "--evictions",
               "lru", "--baseline", "lru+round_robin", "--jobs", "1", "--out",
               str(tmp_path / "out"), "--update-doc", str(doc), "--section", "small"])
    assert rc == 0
    assert "ratios vs lru+round_robin" in capsys.readouterr().out
    data = json.loads((tmp_path / "out" / "runs.json").read_text())
    assert {r["routing"] for r in data["runs"]} == {"round_robin", "lbgr"}
    base = next(r for r in data["rows"] if r["routing"] == "round_robin")
    assert base["x_e2e"] == 1.0
    assert (tmp_path / "out" / "e2e_mean.png").exists()
    text = doc.read_text()
    assert "old" not in text and "| workload |" in text and text.endswith("end\n")
    assert main(["compare", "--routings", "nope"]) == 2
    assert "unknown routing policy nope" in capsys.readouterr().err
    assert main(["compare", "-o", "gsp.colour=3"]) == 2
    assert "unknown option(s) colour" in capsys.readouterr().err


def test_compare_with_the_exact_index(tmp_path):
    """`compare --index exact` routes every run on the workers' cache events (the run's
    description says so), and the exact index changes what the router believes."""
    grid = ["compare", "--workloads", "gsp", "-o", "gsp.groups=8", "-o",
            "gsp.prompts_per_group=8", "-o", "gsp.rate=40", "--routings", "lbgr",
            "--evictions", "lru", "--capacity", "10000", "--jobs", "1", "--no-ceilings",
            "--no-plot"]
    rows = {}
    for index in ("approx", "exact"):
        out = tmp_path / index
        assert main([*grid, "--index", index, "--out", str(out)]) == 0
        data = json.loads((out / "runs.json").read_text())
        assert data["grid"]["sim"]["index"] == index
        rows[index] = data["rows"][0]
    assert rows["approx"]["hit_rate"] != rows["exact"]["hit_rate"]


def test_progress_without_a_terminal_prints_a_line_every_few_seconds() -> None:
    """Piped output gets a plain progress line at most every every_s seconds."""
    import io

    from rich.console import Console

    from kvroute.cli.console import LineProgress

    now = [0.0]
    out = io.StringIO()
    progress = LineProgress(Console(file=out, width=200), 5.0, clock=lambda: now[0])
    with progress:
        task = progress.add_task("gsp", total=512)
        for k in range(1, 13):
            now[0] = k
            progress.update(task, advance=10)
    assert out.getvalue().splitlines() == ["gsp: 50/512 after 5 s", "gsp: 100/512 after 10 s"]


def test_checks_come_before_the_work(monkeypatch, capsys):
    """A plot without matplotlib, or a bad bench size for `up`, is refused before anything
    is simulated or started."""
    import builtins

    import kvroute.cli.sim as sim_cli

    def no_simulation(*args, **kwargs):
        raise AssertionError("simulated before checking its flags")

    monkeypatch.setattr(sim_cli, "simulate", no_simulation)
    real_import = builtins.__import__

    def without_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_matplotlib)
    assert main(["sim", "--groups", "2", "--plot", "x.png"]) == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err
    monkeypatch.setattr(builtins, "__import__", real_import)
    assert main(["up", "--bench", "--bench-requests", "-5"]) == 2
    assert "--bench-requests must be >= 1" in capsys.readouterr().err
    assert main(["up", "--eviction", "optimal"]) == 2
    assert "needs the future" in capsys.readouterr().err
    assert main(["up", "--workers", "2", "--speeds", "1"]) == 2
    assert "one speed per worker" in capsys.readouterr().err
    assert main(["up", "--workers", "2", "--speeds", "1,-1"]) == 2
    assert "finite number > 0, got -1.0" in capsys.readouterr().err


def test_worker_on_a_busy_port_is_one_line(capsys):
    """`kvroute worker` on a port in use says so in one line and exits 2."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["worker", "--emulate", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kvroute: error: cannot listen on 127.0.0.1:{port}")
    assert err.count("\n") == 1


def test_help_states_each_default_once(capsys):
    """No option's help says its default twice, and switches do not claim one."""
    import re

    import pytest

    for cmd in ("sim", "compare", "up", "serve", "worker", "bench", "cache"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: None)" not in text and "(default: True)" not in text, cmd
        assert not re.search(r"default[^()]*\)\s*\(default", text), cmd


def test_compare_routers_preset_ranks_loads_and_doc(tmp_path, capsys):
    """`compare --routers` (scaled down): a load dimension, ranks and advantages in the doc,
    the load-ratio plot; `sim --load` prints the rate it chose."""
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- BEGIN routers -->\n<!-- END routers -->\n"
                   "<!-- BEGIN routers-focus -->\n<!-- END routers-focus -->\n"
                   "<!-- BEGIN routers-ranks -->\n<!-- END routers-ranks -->\n")
    rc = main(["compare", "--routers", "--workloads", "gsp", "--orders", "random",
               "-o", "gsp.groups=4", "-o", "gsp.prompts_per_group=4", "--loads", "0.5,0.9",
               "--seeds", "1", "--routings", "cache_aware_v2,learned,oracle", "--jobs", "1",
               "--no-ceilings", "--out", str(tmp_path / "out"), "--update-doc", str(doc)])
    assert rc == 0
    rows = json.loads((tmp_path / "out" / "runs.json").read_text())["rows"]
    assert sorted({r["load"] for r in rows}) == [0.5, 0.9] and len(rows) == 6
    text = doc.read_text()
    assert "| learned |" in text and "oracle (reference)" in text and "gsp/random @0.9" in text
    assert (tmp_path / "out" / "load_ratios_gsp_random.png").exists()
    capsys.readouterr()
    assert main(["sim", "--workload", "gsp", "--groups", "2", "--prompts-per-group", "2",
                 "--load", "0.5", "--routing", "learned", "--no-ceilings"]) == 0
    assert "load 0.5: " in capsys.readouterr().out


def test_compare_plots_keep_loads_apart(tmp_path):
    """With several loads, every (workload, load) gets its own bar group, CDF and heatmap
    column: no load's rows overwrite another's."""
    out = tmp_path / "out"
    rc = main(["compare", "--workloads", "gsp", "-o", "gsp.groups=4", "-o",
               "gsp.prompts_per_group=3", "--loads", "0.5,0.9", "--routings",
               "round_robin,lbgr", "--evictions", "lru", "--baseline", "lru+round_robin",
               "--no-ceilings", "--jobs", "1", "--out", str(out)])
    assert rc == 0
    for name in ("cdf_gsp_random_load0.5.png", "cdf_gsp_random_load0.9.png",
                 "relative_e2e_mean.png", "e2e_mean.png"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "relative_hit_rate.png").exists()
    # the engines' scheduling flags reach every run, as in sim
    rc = main(["compare", "--workloads", "gsp", "-o", "gsp.groups=2", "-o",
               "gsp.prompts_per_group=2", "--routings", "lbgr", "--evictions", "lru",
               "--mixed-chunk", "--chunk-size", "512", "--max-running", "3",
               "--no-ceilings", "--jobs", "1", "--out", str(tmp_path / "engine")])
    sim = json.loads((tmp_path / "engine" / "runs.json").read_text())["grid"]["sim"]
    assert rc == 0 and (sim["mixed_chunk"], sim["chunk_size"], sim["max_running"]) == \
        (True, 512, 3)
    # two routing policies: their ranks and advantages, as with --routers
    ranks = (out / "ranks.md").read_text()
    assert "| routing | geo-mean E2E advantage |" in ranks and "gsp/random @0.9" in ranks
    assert "| lbgr |" in ranks and "| round_robin |" in ranks


def test_up_prints_the_policys_prediction_errors():
    from kvroute.cli.up import prediction_errors

    assert prediction_errors("lbgr", {}) == ""  # a policy without telemetry: no line
    assert prediction_errors("learned", {"ttft": {"count": 0}}) == ""
    line = prediction_errors("learned", {
        "ttft": {"count": 3, "mean_abs_error_s": 0.5, "mean_observed_s": 2.0},
        "e2e": {"count": 3, "mean_abs_error_s": 1.25, "mean_observed_s": 8.0}})
    assert line.startswith("learned's predictions over the run: TTFT off by 0.50 s")
    assert "TTFT off by 0.50 s on average (observed mean 2.00 s)" in line
    assert "E2E off by 1.25 s on average (observed mean 8.00 s)" in line


def test_up_prints_how_long_requests_were_held_at_the_router():
    from types import SimpleNamespace

    from kvroute.cli.up import held_line
    from kvroute.server.router_metrics import RouterMetrics

    app = SimpleNamespace(metrics=RouterMetrics())
    for _ in range(3):
        app.metrics.held.observe(0.0)
    assert held_line(app) == ""  # nothing held: no line
    app.metrics.held.observe(1.5)
    app.metrics.held.observe(0.5)
    assert held_line(app) == ("held at the router before routing (late binding): 2 of 5 "
                              "requests, 1.00 s each on average (kvroute_held_seconds)")
