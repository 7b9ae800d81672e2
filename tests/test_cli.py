"""The kvroute command line: the cache replay job and its errors."""

import json

from kvroute.cli import main


def test_cache_command_writes_a_table_and_json(tmp_path, capsys):
    """`kvroute cache` replays GSP through each policy; optimal is the top hit rate."""
    out = tmp_path / "r.json"
    rc = main(["cache", "--groups", "6", "--prompts-per-group", "6", "--capacity", "6000",
               "--json", str(out)])
    assert rc == 0
    assert "rlt_faithful" in capsys.readouterr().out
    data = json.loads(out.read_text())
    rates = {r["policy"]: r["hit_rate"] for r in data["policies"]}
    assert set(rates) == {"lru", "rlt", "rlt_faithful", "optimal"}
    assert max(rates.values()) == rates["optimal"] <= data["ceilings"]["infinite"]


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
    assert main(["sim", "--workload", "mooncake"]) == 2
    assert "--trace" in capsys.readouterr().err
    assert main(["sim", "--routing", "nope"]) == 2
    assert "unknown routing policy nope" in capsys.readouterr().err
    assert main(["sim", "--profile", "tpu-v9"]) == 2
    assert "l40-llama3-8b" in capsys.readouterr().err


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
