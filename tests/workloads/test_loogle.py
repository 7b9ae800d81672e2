"""LooGLE long-document QA: exact prompts, shared document prefixes, loaders, errors."""

import json

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.workloads.loogle import LoogleConfig, load_loogle, synthetic_loogle
from kvroute.workloads.tokenizer import BuiltinTokenizer

TOK = BuiltinTokenizer()
PRE, SEP = TOK.encode("Input:\n"), TOK.encode("\n\nQuestion: ")


def test_exact_prompt_construction_on_a_tiny_config():
    """prompt = ids("Input:\\n") + doc cut to doc_lengths[d % k] + ids(sep) + question;
    text = "Input:\\n{doc}\\n\\nQuestion: {q}"."""
    cfg = LoogleConfig(documents=3, questions_per_doc=2, doc_lengths=(5, 7),
                       question_tokens=(2, 3))
    w = synthetic_loogle(cfg)
    reqs = list(w)
    assert w.size == len(reqs) == 6 and [r.rid for r in reqs] == list(range(6))
    for r in reqs:
        n_doc = (5, 7)[r.session % 2]
        assert np.array_equal(r.tokens[:len(PRE)], PRE)
        body = r.tokens[len(PRE) + n_doc:]
        assert np.array_equal(body[:len(SEP)], SEP) and 2 <= len(body) - len(SEP) <= 3
        assert r.text.startswith("Input:\nw") and "\n\nQuestion: w" in r.text
        assert len(r.text.split("\n\nQuestion: ")[1].split()) == len(body) - len(SEP)
    by_doc = {}
    for r in reqs:
        by_doc.setdefault(r.session, []).append(r)
    for d, rs in by_doc.items():
        n = len(PRE) + (5, 7)[d % 2] + len(SEP)
        assert len(rs) == 2 and np.array_equal(rs[0].tokens[:n], rs[1].tokens[:n])
        assert {r.turn for r in rs} == {0, 1}
    assert w.meta["prompt_tokens"] == sum(r.prompt_len for r in reqs)


def test_default_size_shuffle_and_arrivals():
    """Defaults: 128 x 32 = 4,096 prompts, globally shuffled, Poisson arrivals near 12/s."""
    w = synthetic_loogle()
    reqs = list(w)
    assert w.size == len(reqs) == 4096
    assert [r.session for r in reqs[:32]] != [reqs[0].session] * 32
    arrivals = np.array([r.arrival for r in reqs])
    assert np.all(np.diff(arrivals) > 0) and 11 < 4096 / arrivals[-1] < 13
    for r in reqs[:200]:
        q_len = r.prompt_len - len(PRE) - len(SEP) - (1024, 2048, 4096, 8192)[r.session % 4]
        assert 16 <= q_len <= 64


def test_reiterating_and_seeds():
    """Iterating twice gives equal requests; same seed same tokens, other seed differs."""
    cfg = LoogleConfig(documents=4, questions_per_doc=3, doc_lengths=(16,))
    w = synthetic_loogle(cfg)
    a, b = list(w), list(w)
    assert all(np.array_equal(x.tokens, y.tokens) and x.arrival == y.arrival
               and x.text == y.text for x, y in zip(a, b, strict=True))
    c = list(synthetic_loogle(cfg))
    assert all(np.array_equal(x.tokens, y.tokens) for x, y in zip(a, c, strict=True))
    d = list(synthetic_loogle(LoogleConfig(documents=4, questions_per_doc=3, doc_lengths=(16,),
                                           seed=2)))
    assert not np.array_equal(a[0].tokens, d[0].tokens)


def _doc(words, questions):
    return {"input": " ".join(f"d{i}" for i in range(words)), "title": "t",
            "qa_pairs": questions}


def test_load_loogle_list_of_dicts_cuts_and_keeps_short_docs(tmp_path):
    """JSON list, qa_pairs as dicts: docs cut to 1K/2K/... in rotation (here 4/8),
    shorter docs kept whole, at most questions_per_doc questions, text matches ids."""
    data = [_doc(10, [{"Q": "why?", "A": "x"}, {"question": "how so", "A": "y"},
                      {"Q": "extra", "A": "z"}]),
            _doc(2, [{"Q": "what", "A": "w"}])]
    path = tmp_path / "loogle.json"
    path.write_text(json.dumps(data))
    cfg = LoogleConfig(documents=5, questions_per_doc=2, doc_lengths=(4, 8))
    reqs = sorted(load_loogle(path, cfg), key=lambda r: (r.session, r.turn))
    assert [(r.session, r.turn) for r in reqs] == [(0, 0), (0, 1), (1, 0)]
    assert reqs[0].text == "Input:\nd0 d1 \n\nQuestion: why?"
    assert np.array_equal(reqs[0].tokens, np.concatenate(
        [PRE, TOK.encode("d0 d1 "), SEP, TOK.encode("why?")]))
    assert reqs[1].text.endswith("Question: how so")
    assert reqs[2].text == "Input:\nd0 d1\n\nQuestion: what"  # 3 pieces < 8: kept whole
    assert len(reqs[2].tokens) == len(PRE) + 3 + len(SEP) + 1


def test_load_loogle_jsonl_with_string_qa_pairs(tmp_path):
    """JSONL whose qa_pairs are Python-literal or JSON strings; 'none' documents skipped."""
    rows = [_doc(3, "none"),
            _doc(3, "[{'Q': 'first?', 'A': 'a', 'S': 's'}, {'Q': 'second?', 'A': 'b'}]"),
            _doc(3, json.dumps([{"Q": "third?", "A": "c"}]))]
    path = tmp_path / "loogle.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    w = load_loogle(path, LoogleConfig(documents=1, doc_lengths=(100,)))
    reqs = list(w)
    assert w.size == 2 and w.meta["documents"] == 1
    assert sorted(r.text.split("Question: ")[1] for r in reqs) == ["first?", "second?"]
    assert all(r.session == 0 for r in reqs)
    assert len(list(load_loogle(path, LoogleConfig(doc_lengths=(100,))))) == 3


def test_loader_errors_are_friendly(tmp_path):
    """Missing file, wrong schema, unparsable qa_pairs, nothing usable: ConfigError."""
    with pytest.raises(ConfigError, match="not found"):
        load_loogle(tmp_path / "nope.json")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"document": "x", "qa_pairs": []}]))
    with pytest.raises(ConfigError, match=r"bad.json\[0\].*'input'"):
        load_loogle(path)
    path.write_text(json.dumps([_doc(3, "[{'Q': 'broken'")]))
    with pytest.raises(ConfigError, match="qa_pairs"):
        load_loogle(path)
    path.write_text(json.dumps([_doc(3, [{"A": "no question"}])]))
    with pytest.raises(ConfigError, match=r"qa_pairs\[0\]"):
        load_loogle(path)
    path.write_text(json.dumps([_doc(3, [])]))
    with pytest.raises(ConfigError, match="no document"):
        load_loogle(path)


def test_bad_config_is_a_clear_error():
    """Invalid config values raise ConfigError naming the field."""
    for kw, field in [({"documents": 0}, "documents"), ({"doc_lengths": ()}, "doc_lengths"),
                      ({"question_tokens": (5, 2)}, "question_tokens"),
                      ({"rate": -1}, "rate"), ({"output_len": 0}, "output_len")]:
        with pytest.raises(ConfigError, match=field):
            LoogleConfig(**kw)
