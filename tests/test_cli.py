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
