"""CSV traces of lengths only (Azure's and BurstGPT's columns) read as Mooncake records:
times, fresh block ids, the layouts, errors that name the line."""

import gzip

import numpy as np
import pytest

from kvroute.errors import ConfigError
from kvroute.workloads.mooncake import load_mooncake, read_mooncake

AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,1396,109

2023-11-16 18:15:51.2224670,879,0
"""

BURSTGPT = """Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type
5,ChatGPT,472,18,490,Conversation log
45,ChatGPT,1087,0,1087,Conversation log
118,GPT-4,417,304,721,API log
"""


def test_azure_rows_keep_their_lengths_and_times_and_share_no_block(tmp_path):
    path = tmp_path / "azure_conv.csv"
    path.write_text(AZURE)
    records = read_mooncake(path)
    assert [(r.input_length, r.output_length, r.line) for r in records] == [
        (374, 44, 2), (1396, 109, 3), (879, 0, 5)]
    assert [r.timestamp for r in records] == pytest.approx([0.0, 4314.579, 4541.877])
    assert [r.hash_ids.tolist() for r in records] == [[0], [1, 2, 3], [4, 5]]
    w = load_mooncake(path)
    assert w.name == "azure_conv" and w.size == 3
    reqs = list(w)
    assert [r.arrival for r in reqs] == pytest.approx([0.0, 4.314579, 4.541877])
    assert [r.prompt_len for r in reqs] == [374, 1396, 879]
    assert [r.output_len for r in reqs] == [44, 109, 1]  # no output: one token, as JSONL's 0
    firsts = {int(r.tokens[0]) for r in reqs}
    assert len(firsts) == 3  # no two prompts begin alike: nothing to reuse


def test_burstgpt_rows_with_other_columns_and_other_block_sizes(tmp_path):
    path = tmp_path / "burst.csv"
    path.write_text(BURSTGPT)
    records = read_mooncake(path, block_size=16)
    assert [r.timestamp for r in records] == [5000.0, 45000.0, 118000.0]
    assert [len(r.hash_ids) for r in records] == [30, 68, 27]  # ceil(n / 16)
    ids = np.concatenate([r.hash_ids for r in records])
    assert ids.tolist() == list(range(len(ids)))


def test_gzip_and_byte_order_mark_read_as_the_plain_file(tmp_path):
    want = [(r.timestamp, r.input_length) for r in read_mooncake(_write(tmp_path, AZURE))]
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(AZURE.encode()))
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + AZURE.replace("\n", "\r\n").encode())
    for path in (gz, bom):
        assert [(r.timestamp, r.input_length) for r in read_mooncake(path)] == want


def _write(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, reason", [
    ("time,prompt,output\n1,2,3\n", "nor a CSV with the columns TIMESTAMP,ContextTokens"),
    (AZURE.splitlines()[0] + "\n2023-11-16 18:15:46,0,4\n", r"t\.csv:2: ContextTokens .* >= 1"),
    (AZURE.splitlines()[0] + "\n2023-11-16 18:15:46,12.5,4\n", r"t\.csv:2: ContextTokens"),
    (AZURE.splitlines()[0] + "\n2023-11-16 18:15:46,12,-1\n", r"t\.csv:2: GeneratedTokens"),
    (AZURE.splitlines()[0] + "\nyesterday,12,4\n", r"t\.csv:2: cannot read the time"),
    (AZURE.splitlines()[0] + "\n2023-11-16 18:15:46,12\n", r"t\.csv:2: expected 3 columns"),
    (BURSTGPT.splitlines()[0] + "\nnan,ChatGPT,4,4,8,API log\n", r"t\.csv:2: cannot read"),
])
def test_bad_rows_are_config_errors_that_name_the_line(tmp_path, text, reason):
    with pytest.raises(ConfigError, match=reason):
        read_mooncake(_write(tmp_path, text))


def test_a_header_without_rows_is_an_empty_trace(tmp_path):
    with pytest.raises(ConfigError, match="empty trace"):
        read_mooncake(_write(tmp_path, AZURE.splitlines()[0] + "\n"))
