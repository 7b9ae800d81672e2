"""benchmarks/same_decisions.py: ``compare`` tells two records apart exactly where a
request went elsewhere or finished at another time, or a replay's units moved."""

import argparse
import json

import pytest

from tests.benchmark_scripts import load


@pytest.fixture(scope="module")
def sd():
    return load("same_decisions")


RUN = {"workers": [0, 1, 2, 3], "finish": [1.0, 2.0, 3.0, 4.0], "e2e_mean": 1.5}
REPLAY = [{"capacity": 10, "policy": "rlt", "hit_units": 5, "evicted_units": 7},
          {"capacity": 10, "policy": "learned", "hit_units": 6, "evicted_units": 6}]


def run_compare(sd, tmp_path, before, after):
    paths = []
    for name, cases in (("a.json", before), ("b.json", after)):
        path = tmp_path / name
        path.write_text(json.dumps({"src": "src", "cases": cases}))
        paths.append(str(path))
    return sd.compare(argparse.Namespace(before=paths[0], after=paths[1]))


def test_identical_records_agree(sd, tmp_path, capsys):
    cases = {"sim x": RUN, "cache y": REPLAY}
    assert run_compare(sd, tmp_path, cases, json.loads(json.dumps(cases))) == 0
    assert "0 of 2 cases differ" in capsys.readouterr().out


def test_a_request_elsewhere_is_named(sd, tmp_path, capsys):
    moved = dict(RUN, workers=[0, 1, 3, 3])
    assert run_compare(sd, tmp_path, {"sim x": RUN}, {"sim x": moved}) == 1
    assert "1 of 4 requests routed elsewhere, the first at request 2" in capsys.readouterr().out


def test_a_later_finish_alone_differs(sd, tmp_path, capsys):
    later = dict(RUN, finish=[1.0, 2.0, 3.0, 4.000001])
    assert run_compare(sd, tmp_path, {"sim x": RUN}, {"sim x": later}) == 1
    assert "0 of 4 requests routed elsewhere" in capsys.readouterr().out


def test_replay_units_and_missing_cases(sd, tmp_path, capsys):
    moved = [REPLAY[0], dict(REPLAY[1], hit_units=5, evicted_units=7)]
    assert run_compare(sd, tmp_path, {"cache y": REPLAY, "sim x": RUN}, {"cache y": moved}) == 1
    out = capsys.readouterr().out
    assert "learned at 10 6 / 6 -> 5 / 7" in out and "rlt at" not in out
    assert "sim x: only in" in out and "2 of 2 cases differ" in out
