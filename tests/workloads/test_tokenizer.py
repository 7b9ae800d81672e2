"""Tokenizers and the chat template: deterministic ids, exact template, friendly errors."""

import hashlib
import sys

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.workloads.tokenizer import (
    BOS_ID,
    EOT_ID,
    BuiltinTokenizer,
    HFTokenizer,
    Tokenizer,
    apply_chat_template,
    chat_prompt_ids,
    encode_prefix,
    header_ids,
    load_tokenizer,
    pseudo_text,
    render_ids,
)


def _blake(piece: str, vocab: int) -> int:
    return int.from_bytes(hashlib.blake2b(piece.encode(), digest_size=8).digest(),
                          "little") % vocab


def test_builtin_splits_words_punctuation_and_whitespace_runs():
    """One id per word, punctuation char and whitespace run; id = blake2b(piece) mod vocab."""
    tok = BuiltinTokenizer()
    ids = tok.encode("Hello, world!  foo")
    pieces = ["Hello", ",", " ", "world", "!", "  ", "foo"]
    assert ids.dtype == np.int64 and ids.ndim == 1
    assert ids.tolist() == [_blake(p, 128_256) for p in pieces]
    assert tok.encode("").shape == (0,)
    assert isinstance(tok, Tokenizer) and tok.name == "builtin-128256"


def test_builtin_is_deterministic_and_respects_vocab():
    """Equal text gives equal ids across instances; ids stay below vocab_size."""
    a, b = BuiltinTokenizer(1000), BuiltinTokenizer(1000)
    text = "the cat sat on the mat. The end?"
    assert np.array_equal(a.encode(text), b.encode(text))
    ids = a.encode(text)
    assert ids[0] == ids[8] and ids.min() >= 0 and ids.max() < 1000  # "the" twice
    with pytest.raises(ConfigError, match="vocab_size"):
        BuiltinTokenizer(1)


def test_encode_prefix_cuts_text_at_a_piece_boundary():
    """encode_prefix gives the first n ids and exactly the text they cover."""
    tok = BuiltinTokenizer()
    ids, cut = encode_prefix(tok, "alpha beta, gamma", 3)
    assert cut == "alpha beta" and np.array_equal(ids, tok.encode("alpha beta"))
    ids, cut = encode_prefix(tok, "short", 10)
    assert cut == "short" and len(ids) == 1


def test_load_tokenizer_defaults_to_builtin_and_reports_missing_files(tmp_path):
    """None -> builtin; a missing or garbage tokenizer file -> ConfigError naming it."""
    assert isinstance(load_tokenizer(None), BuiltinTokenizer)
    with pytest.raises(ConfigError, match="tokenizer"):
        load_tokenizer(tmp_path / "nope.json")
    pytest.importorskip("tokenizers")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json"):
        load_tokenizer(bad)


def test_hf_tokenizer_missing_package_is_a_clear_error(monkeypatch, tmp_path):
    """Without the tokenizers package, HFTokenizer says how to install it."""
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(ConfigError, match=r"kvroute\[tokenizers\]"):
        HFTokenizer(tmp_path / "tokenizer.json")


def test_hf_tokenizer_encodes_without_special_tokens(tmp_path):
    """A tokenizer.json round-trips: encode, encode_prefix offsets, decode."""
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "again": 3}
    raw = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    raw.save(str(path))
    tok = load_tokenizer(path)
    assert isinstance(tok, HFTokenizer)
    assert tok.encode("hello world again").tolist() == [1, 2, 3]
    ids, cut = encode_prefix(tok, "hello world again", 2)
    assert ids.tolist() == [1, 2] and cut == "hello world"
    assert render_ids(tok, [1, 2]) == "hello world"


def test_chat_template_text_and_ids_match_llama3_structure():
    """Text template and id template: BOS, header+content+eot per message, assistant header."""
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert apply_chat_template(msgs) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nyo<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")
    ids = chat_prompt_ids([("user", np.array([5, 6]))])
    assert ids.tolist() == [BOS_ID, *header_ids("user"), 5, 6, EOT_ID,
                            *header_ids("assistant")]
    assert header_ids("user").tolist() == [128006, 882, 128007, 271]
    with pytest.raises(ConfigError, match="role"):
        header_ids("robot")
    with pytest.raises(ConfigError, match="message 0"):
        apply_chat_template([{"content": "x"}])


def test_pseudo_text_renders_ids_as_words():
    """Ids without text render as one pseudo-word each."""
    assert pseudo_text(np.array([3, 14])) == "w3 w14"
    assert render_ids(None, [7]) == "w7"


def test_a_tokenizer_folder_asks_for_its_tokenizer_json(tmp_path):
    """A model folder given as the tokenizer says to pass the file inside (it said 'not
    found', which the folder plainly is not)."""
    pytest.importorskip("tokenizers")
    with pytest.raises(ConfigError, match=r"is a directory; pass the tokenizer\.json"):
        load_tokenizer(tmp_path)
