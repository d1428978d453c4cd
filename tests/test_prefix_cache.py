from __future__ import annotations

import numpy as np

from rag.prefix_cache import PrefixCache, shared_prefix


def test_shared_prefix():
    a = np.array([1, 2, 3, 4])
    assert shared_prefix(a, np.array([1, 2, 9])) == 2
    assert shared_prefix(a, np.array([1, 2, 3, 4, 5])) == 4
    assert shared_prefix(a, np.array([], dtype=int)) == 0


def test_longest_shared_prefix_wins_and_states_survive_a_restart(tmp_path):
    cache = PrefixCache(tmp_path, max_bytes=1 << 20)
    cache.add([1, 2, 3], b"short")
    cache.add([1, 2, 3, 4, 5], b"longer")
    assert cache.best([1, 2, 3, 4, 5, 6]) == (PrefixCache.key([1, 2, 3, 4, 5]), 5)
    assert cache.best([1, 2, 7]) in {(PrefixCache.key([1, 2, 3]), 2), (PrefixCache.key([1, 2, 3, 4, 5]), 2)}
    assert cache.best([9]) == ("", 0)
    again = PrefixCache(tmp_path, max_bytes=1 << 20)
    tokens, data = again.load(PrefixCache.key([1, 2, 3, 4, 5]))
    assert tokens.tolist() == [1, 2, 3, 4, 5] and data == b"longer"
    assert [1, 2, 3] in again and len(again) == 2


def test_damaged_or_missing_state_files_are_dropped(tmp_path):
    cache = PrefixCache(tmp_path, max_bytes=1 << 20)
    cache.add([1, 2], b"abcd")
    key = PrefixCache.key([1, 2])
    (tmp_path / f"{key}.state").write_bytes(b"ab")  # truncated
    assert cache.load(key) is None and len(cache) == 0 and not list(tmp_path.iterdir())
    (tmp_path / "x.tokens.npy").write_bytes(b"not numpy")
    assert len(PrefixCache(tmp_path, max_bytes=1 << 20)) == 0 and not list(tmp_path.iterdir())


def test_a_state_damaged_in_place_is_never_loaded(tmp_path):
    cache = PrefixCache(tmp_path, max_bytes=1 << 20)
    cache.add([1, 2], b"abcdefgh")
    key = PrefixCache.key([1, 2])
    (tmp_path / f"{key}.state").write_bytes(b"abcdXfgh")  # same length, one byte changed
    reopened = PrefixCache(tmp_path, max_bytes=1 << 20)
    assert reopened.load(key) is None and len(reopened) == 0  # dropped: the model state is computed again
    cache.add([3], b"xyz")
    (tmp_path / f"{PrefixCache.key([3])}.digest").unlink()  # a state saved without its digest (older paperchat)
    assert len(PrefixCache(tmp_path, max_bytes=1 << 20)) == 0


def test_a_full_disk_keeps_no_half_state(tmp_path, monkeypatch):
    import pathlib

    cache = PrefixCache(tmp_path, max_bytes=1 << 20)

    def full(self, data):
        raise OSError(28, "No space left on device")

    for method in ("write_bytes", "write_text"):  # the state, then its digest
        monkeypatch.setattr(pathlib.Path, method, full)
        cache.add([1, 2], b"abcd")  # not kept, no error: a missing state only costs speed
        monkeypatch.undo()
        assert len(cache) == 0 and not list(tmp_path.iterdir())
    (tmp_path / "dead.state").write_bytes(b"x")  # a crash after the state, before its token list
    assert len(PrefixCache(tmp_path, max_bytes=1 << 20)) == 0 and not list(tmp_path.iterdir())


def test_least_recently_used_states_go_beyond_the_size_bound():
    cache = PrefixCache(None, max_bytes=10)
    cache.add([1], b"x" * 4)
    cache.add([2], b"x" * 4)
    cache.load(PrefixCache.key([1]))  # [1] is now the more recently used
    cache.add([3], b"x" * 4)
    assert [1] in cache and [3] in cache and [2] not in cache and cache.size == 8
