"""BlockIndex: exact cases, and agreement with a naive model under random events."""

import pytest

pytest.importorskip("zmq")
pytest.importorskip("msgspec")

from hypothesis import given, settings
from hypothesis import strategies as st

from kvroute.events import AllBlocksCleared, BlockIndex, BlockRemoved, BlockStored


def chain(*hashes, tokens, parent=None, size=2, **kw):
    return BlockStored(tuple(hashes), parent, tuple(tokens), size, **kw)


def test_match_walks_the_chain_block_by_block():
    """Full blocks of the prompt that chain from the root count; a partial block does not."""
    idx = BlockIndex()
    idx.apply(chain(1, 2, 3, tokens=[1, 2, 3, 4, 5, 6]))
    assert idx.match([1, 2, 3, 4, 5, 6, 7]) == 6
    assert idx.match([1, 2, 3, 9, 5, 6]) == 2
    assert idx.match([1, 2, 3]) == 2
    assert idx.match([1]) == 0 and idx.match([]) == 0 and idx.match([9, 9]) == 0
    assert len(idx) == 3 and 2 in idx and 4 not in idx


def test_events_in_several_batches_chain_through_parent():
    """A later BlockStored continues from its parent hash."""
    idx = BlockIndex()
    idx.apply_all([chain(1, tokens=[1, 2]), chain(2, tokens=[3, 4], parent=1),
                   chain(7, tokens=[3, 4], parent=99)])  # parent not held: unreachable
    assert idx.match([1, 2, 3, 4]) == 4
    assert idx.match([3, 4]) == 0


def test_removal_stops_the_walk_where_the_block_went():
    """Evicting a middle block hides its (still held) children from the walk."""
    idx = BlockIndex()
    idx.apply(chain(1, 2, 3, tokens=[1, 2, 3, 4, 5, 6]))
    idx.apply(BlockRemoved((2,)))
    assert idx.match([1, 2, 3, 4, 5, 6]) == 2
    assert idx.hashes() == {1, 3} and idx.stats.removed == 1


def test_duplicate_copies_are_counted():
    """vLLM keeps duplicate blocks: a hash stays until each copy is removed."""
    idx = BlockIndex()
    idx.apply(chain(1, tokens=[1, 2]))
    idx.apply(chain(1, tokens=[1, 2]))
    assert idx.copies(1) == 2
    idx.apply(BlockRemoved((1,)))
    assert idx.copies(1) == 1 and idx.match([1, 2]) == 2
    idx.apply(BlockRemoved((1, 1)))
    assert idx.copies(1) == 0 and idx.match([1, 2]) == 0
    assert idx.stats.unknown_removals == 1 and idx.stats.relinked == 0


def test_all_blocks_cleared_empties_every_space():
    """AllBlocksCleared drops blocks of every medium and group."""
    idx = BlockIndex()
    idx.apply_all([chain(1, tokens=[1, 2]), chain(2, tokens=[1, 2], medium="CPU"),
                   chain(3, tokens=[1, 2], group_idx=1)])
    idx.apply(AllBlocksCleared())
    assert len(idx) == 0 and idx.match([1, 2]) == 0 and idx.stats.cleared == 1


def test_medium_and_group_are_separate_spaces():
    """Probes and removals address one (group, medium) space."""
    idx = BlockIndex()
    idx.apply_all([chain(1, tokens=[1, 2], medium="CPU"), chain(1, tokens=[1, 2])])
    idx.apply(BlockRemoved((1,), medium="CPU"))
    assert idx.match([1, 2]) == 2 and idx.match([1, 2], medium="CPU") == 0
    idx.apply(chain(5, tokens=[1, 2], group_idx=2))
    assert idx.match([1, 2], group_idx=2) == 2 and idx.hashes(group_idx=2) == {5}


def test_lora_blocks_match_only_their_adapter():
    """An adapter's blocks (by name, else id) match only probes for that adapter; vLLM's
    extra keys that start with the LoRA name are the adapter, not an extra."""
    idx = BlockIndex()
    idx.apply(chain(1, 2, tokens=[1, 2, 3, 4], lora_name="ad", lora_id=4,
                    extra_keys=(("ad",), ("ad",))))
    idx.apply(chain(3, tokens=[1, 2], lora_id=7))
    assert idx.match([1, 2, 3, 4]) == 0
    assert idx.match([1, 2, 3, 4], lora="ad") == 4
    assert idx.match([1, 2], lora=7) == 2


def test_blocks_with_extra_hash_inputs_are_not_plain_matches():
    """A salted first block or a multimodal block does not serve a plain text probe."""
    idx = BlockIndex()
    idx.apply(chain(1, 2, tokens=[1, 2, 3, 4], extra_keys=(("salt",), None)))
    idx.apply(chain(5, 6, tokens=[1, 2, 9, 9], extra_keys=(None, ("img-1",))))
    assert idx.match([1, 2, 3, 4]) == 2  # through block 5, not the salted block 1
    assert idx.match([1, 2, 9, 9]) == 2
    assert len(idx) == 4


def test_variable_block_sizes():
    """SGLang's node-sized blocks: the walk tries each held size, longest first."""
    idx = BlockIndex()
    idx.apply_all([chain(1, tokens=[1, 2, 3], size=3), chain(2, tokens=[4, 5], parent=1),
                   chain(3, tokens=[1, 2], size=2), chain(4, tokens=[7], parent=3, size=1)])
    assert idx.match([1, 2, 3, 4, 5, 6]) == 5
    assert idx.match([1, 2, 7]) == 3
    idx.apply(BlockRemoved((1,)))
    assert idx.match([1, 2, 3, 4, 5]) == 2


def test_restored_hash_with_a_new_link_is_relinked():
    """A content-only hash stored under a new parent keeps the newest link only."""
    idx = BlockIndex()
    idx.apply_all([chain(1, tokens=[1, 1]), chain(2, tokens=[2, 2]),
                   chain(9, tokens=[5, 5], parent=1), chain(9, tokens=[5, 5], parent=2)])
    assert idx.stats.relinked == 1 and idx.copies(9) == 2
    assert idx.match([1, 1, 5, 5]) == 2 and idx.match([2, 2, 5, 5]) == 4


def test_byte_hashes():
    """vLLM's byte hashes work as keys."""
    a, b = b"\x01" * 32, b"\x02" * 32
    idx = BlockIndex()
    idx.apply(chain(a, b, tokens=[1, 2, 3, 4]))
    idx.apply(BlockRemoved((b,)))
    assert idx.match([1, 2, 3, 4]) == 2 and idx.hashes() == {a}


# --------------------------------------------------------------------- naive model

class Model:
    """The multiset of held hashes, each with its latest (parent, tokens, adapter); a probe
    scans every held block at every step."""

    def __init__(self):
        self.copies, self.key, self.unknown = {}, {}, 0

    def store(self, e):
        parent = e.parent_block_hash
        for i, h in enumerate(e.block_hashes):
            self.copies[h] = self.copies.get(h, 0) + 1
            toks = e.token_ids[i * e.block_size:(i + 1) * e.block_size]
            self.key[h] = (parent, toks, e.lora)
            parent = h

    def remove(self, e):
        for h in e.block_hashes:
            if self.copies.get(h, 0) == 0:
                self.unknown += 1
                continue
            self.copies[h] -= 1
            if self.copies[h] == 0:
                del self.copies[h], self.key[h]

    def match(self, prompt, lora):
        pos, parent = 0, None
        while True:
            fits = [h for h in self.copies if self.key[h][0] == parent
                    and self.key[h][2] == lora
                    and tuple(prompt[pos:pos + len(self.key[h][1])]) == self.key[h][1]]
            if not fits:
                return pos
            parent = max(fits, key=lambda h: len(self.key[h][1]))
            pos += len(self.key[parent][1])


ops = st.lists(st.tuples(
    st.sampled_from(["store"] * 6 + ["remove"] * 2 + ["clear"]),
    st.integers(0, 50),                                  # which parent / which hash
    st.lists(st.integers(0, 1), min_size=1, max_size=6),  # tokens
    st.sampled_from([1, 2]),                             # block size
    st.sampled_from([None, "a"]),                        # LoRA
    st.integers(1, 2),                                   # hashes per removal
), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(program=ops, content_hash=st.booleans())
def test_agrees_with_naive_model(program, content_hash):
    """Under random stores (chained or content-only hashes, as vLLM and SGLang), removals
    (held, unknown, duplicate) and clears, the index holds exactly the model's multiset
    and every probe matches what the model's exhaustive walk finds."""
    idx, model = BlockIndex(), Model()
    ids = {}  # the hash function: a fresh int per distinct input
    path = {}  # hash -> its tokens from the root, when its chain was known at store time
    held_order = []
    for op in program:
        kind, pick, tokens, size, lora, n = op
        if kind == "store":
            tokens = tokens[:len(tokens) // size * size] or [0] * size
            live = [h for h in held_order if h in model.copies]
            parent = live[pick % len(live)] if live and pick % 3 else None
            base = [] if parent is None else path.get(parent, [9])
            hashes, prev = [], parent
            for i in range(0, len(tokens), size):
                chunk = tuple(tokens[i:i + size])
                prev = ids.setdefault(chunk if content_hash else (prev, chunk, lora), len(ids))
                hashes.append(prev)
                path[prev] = base + tokens[:i + size]
            event = BlockStored(tuple(hashes), parent, tuple(tokens), size, lora_name=lora)
            held_order += hashes
            model.store(event)
        elif kind == "remove":
            pool = [*held_order, 1000 + pick]
            event = BlockRemoved(tuple(pool[(pick + i) % len(pool)] for i in range(n)))
            model.remove(event)
        else:
            event = AllBlocksCleared()
            model.copies.clear()
            model.key.clear()
        idx.apply(event)
        assert idx.hashes() == set(model.copies)
        assert all(idx.copies(h) == c for h, c in model.copies.items())
        for prompt in [*path.values(), [0, 1, 0, 1]]:
            for lora in (None, "a"):
                assert idx.match(prompt, lora=lora) == model.match(prompt, lora)
    assert idx.stats.unknown_removals == model.unknown
