import numpy as np
import pytest

from kvroute.routing.output_lengths import LEVELS, OutputLengths


def prompt(head: int, n: int, tail: int = 0) -> np.ndarray:
    """n units: 600 of application ``head``, then ones of ``tail``."""
    out = np.full(n, 1_000 + tail, dtype=np.int64)
    out[:600] = head
    return out


def fp(units: np.ndarray) -> np.ndarray:
    return OutputLengths.fingerprint(units)


def keys_of(units: np.ndarray) -> list[object]:
    return OutputLengths.keys(OutputLengths.fingerprint(units))


def test_keys_longest_first_and_only_levels_the_prompt_reaches() -> None:
    assert keys_of(np.arange(10)) == []
    keys = keys_of(np.arange(5000))
    assert len(keys) == len(LEVELS) == len(set(keys))
    assert keys_of(np.arange(600)) == keys[1:]  # the 512- and 64-unit ones
    assert keys_of(np.arange(4096)) == keys  # only the first 4096 count
    other = np.arange(5000)
    other[3840] = -1  # past the 512-unit key, at a sampled unit of the 4096 one
    changed = keys_of(other)
    assert changed[1:] == keys[1:] and changed[0] != keys[0]


def test_no_estimate_without_max_tokens_before_any_completion() -> None:
    ol = OutputLengths(forget=1.0)
    assert ol.predict(fp(prompt(1, 700)), None) is None
    assert ol.predict(fp(prompt(1, 700)), 32) == 32.0  # max_tokens taken as it is


def test_each_application_gets_its_own_mean_and_a_new_one_the_global_mean() -> None:
    ol = OutputLengths(forget=1.0)
    for out_a, out_b in ((10, 300), (20, 500)):
        ol.update(fp(prompt(1, 700)), None, out_a)
        ol.update(fp(prompt(2, 700)), None, out_b)
    assert ol.predict(fp(prompt(1, 700)), None) == 15.0
    assert ol.predict(fp(prompt(2, 700)), None) == 400.0
    # another request of application 1 (another tail): its 512- and 64-unit keys
    assert ol.predict(fp(prompt(1, 700, tail=7)), None) == 15.0
    # a prompt nobody sent before: the mean over all
    assert ol.predict(fp(prompt(3, 700)), None) == (10 + 300 + 20 + 500) / 4
    # a short prompt has no key: the mean over all
    assert ol.predict(fp(np.arange(5)), None) == (10 + 300 + 20 + 500) / 4


def test_the_longest_key_with_a_sample_decides() -> None:
    ol = OutputLengths(forget=1.0)
    ol.update(fp(prompt(1, 5000, tail=1)), None, 100)  # one conversation
    ol.update(fp(prompt(1, 700)), None, 10)  # the application's short requests
    assert ol.predict(fp(prompt(1, 5000, tail=1)), None) == 100.0  # its 4096 key
    assert ol.predict(fp(prompt(1, 5000, tail=2)), None) == 55.0  # the 512 key


def test_exact_max_tokens_stay_exact_and_a_cap_is_scaled_by_its_ratio() -> None:
    ol = OutputLengths(forget=0.998)
    units = fp(prompt(1, 700))
    for out in (7, 13, 250):  # clients sending each output exactly: every ratio is 1
        ol.update(units, out, out)
    assert ol.exact and ol.predict(units, 123) == 123.0
    assert ol._sums.keys() == {""}  # no key was needed
    capped = OutputLengths(forget=1.0)
    assert capped.predict(units, 1000) == 1000.0  # before any report: the cap as it is
    capped.update(units, 1000, 100)  # the first output below its cap: keys from now on
    capped.update(units, 1000, 300)
    capped.update(fp(prompt(2, 700)), 1000, 900)  # another application
    assert not capped.exact
    assert capped.predict(units, 1000) == pytest.approx(200.0)  # its key: 100 and 300
    assert capped.predict(fp(prompt(3, 700)), 500) == pytest.approx(
        500 * (0.1 + 0.3 + 0.9) / 3)  # no key of its own: all of them
    assert capped.predict(units, None) is None  # none seen without max_tokens


def test_forgetting_and_the_key_bound() -> None:
    ol = OutputLengths(forget=0.5, max_keys=4)
    first = fp(prompt(1, 700))
    ol.update(first, None, 10)
    ol.update(first, None, 40)
    assert ol.predict(first, None) == (0.5 * 10 + 40) / 1.5
    for head in range(2, 10):
        ol.update(fp(prompt(head, 700)), None, 1)
    assert len(ol._sums) <= 4 + 1  # the bound, beside the global sums
    assert ol.predict(fp(prompt(9, 700)), None) == 1.0  # the newest keys stay
