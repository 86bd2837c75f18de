"""The audit's statistics as mergeable partials: any grouping and order of per-batch partials gives the
figures of one pass, checked against NumPy over the whole maps; exactly-once merging by batch key."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from inspector.audit.activations import ActivationStats, map_figures, merge
from inspector.audit.partials import AuditPartial, Merger, batch_key
from inspector.errors import InspectorError


def maps_with_silence(seed: int, images: int = 23, channels: int = 6, size=(5, 4), signed: bool = True):
    """(N, C, H, W) float32 maps: channel 0 all zero, channel 1 constant 0.25, channel 2 silent on some
    images, the rest random (signed, or after a Relu)."""
    r = np.random.default_rng(seed)
    maps = r.standard_normal((images, channels, *size)).astype(np.float32) * 3 + 0.5
    if not signed:
        maps = np.maximum(maps, 0)
    maps[:, 0] = 0
    maps[:, 1] = 0.25
    maps[::3, 2] = 0
    return maps


def one_pass(maps, non_negative):
    stats = ActivationStats(maps.shape[1], non_negative)
    stats.add(maps)
    return stats


def partials(maps, cuts, non_negative):
    edges = [0, *cuts, len(maps)]
    return [ActivationStats.from_figures(map_figures(maps[a:b], non_negative), non_negative)
            for a, b in zip(edges, edges[1:])]


def fold(parts, grouping: str, order):
    parts = [parts[i] for i in order]
    if grouping == "left":
        total = parts[0]
        for part in parts[1:]:
            total = merge(total, part)
        return total
    if grouping == "right":
        total = parts[-1]
        for part in reversed(parts[:-1]):
            total = merge(part, total)
        return total
    while len(parts) > 1:  # a tree, as a cluster's reduction would merge
        parts = [merge(*parts[i:i + 2]) if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
    return parts[0]


def assert_same(a: ActivationStats, b: ActivationStats):
    # Exact: the counts, the minimum and the maximum.
    assert (a.images, a.elements_per_map) == (b.images, b.elements_per_map)
    for name in ("zeros", "silent", "maximum", "minimum"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    # float64 sums: to summation order.
    for name in ("total", "abs_total", "squares", "image_means_squared"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=0, err_msg=name)


def assert_matches_numpy(stats: ActivationStats, maps):
    """Every figure from NumPy over the whole maps in float64, independent of the statistics' code."""
    x = maps.astype(np.float64)
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    assert stats.images == n and stats.elements_per_map == flat.shape[2]
    np.testing.assert_array_equal(stats.zeros, (flat == 0).sum(axis=(0, 2)))
    np.testing.assert_array_equal(stats.silent, (flat == 0).all(axis=2).sum(axis=0))
    np.testing.assert_array_equal(stats.maximum, flat.max(axis=(0, 2)))
    np.testing.assert_array_equal(stats.minimum, flat.min(axis=(0, 2)))
    np.testing.assert_allclose(stats.total, flat.sum(axis=(0, 2)), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stats.abs_total, np.abs(flat).sum(axis=(0, 2)), rtol=1e-6)
    np.testing.assert_allclose(stats.squares, (flat ** 2).sum(axis=(0, 2)), rtol=1e-6)
    # The between-image response from moments equals the one from the list of every image's means.
    image_means = flat.mean(axis=2)  # (N, C): what the moments replace
    rms = np.sqrt((flat ** 2).mean(axis=(0, 2)))
    listed = np.where(rms > 0, image_means.std(axis=0) / np.where(rms > 0, rms, 1), 0.0)
    np.testing.assert_allclose(stats.channel_image_response(), listed, rtol=1e-5, atol=1e-7)
    constant = (flat.max(axis=(0, 2)) == flat.min(axis=(0, 2)))
    np.testing.assert_array_equal(stats.constant_channels(0.0), constant)
    np.testing.assert_array_equal(stats.all_zero_channels(), (flat == 0).all(axis=(0, 2)))


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("grouping", ["left", "right", "tree"])
def test_partials_merged_in_any_grouping_and_order_equal_one_pass_and_numpy(signed, grouping):
    maps = maps_with_silence(0, signed=signed)
    whole = one_pass(maps, not signed)
    assert_matches_numpy(whole, maps)
    parts = partials(maps, [1, 5, 6, 13, 20], not signed)
    for order in (range(len(parts)), reversed(range(len(parts))), [3, 0, 5, 1, 4, 2]):
        merged = fold(parts, grouping, list(order))
        assert_same(merged, whole)
        assert_matches_numpy(merged, maps)
    # The verdicts' inputs, derived from the same figures, agree too.
    assert list(np.flatnonzero(merged.all_zero_channels())) == [0]
    assert list(np.flatnonzero(merged.constant_channels(1e-6))) == [0, 1]
    np.testing.assert_allclose(merged.channel_silent_fraction()[2], 8 / 23)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 16), cuts=st.lists(st.integers(1, 16), max_size=6, unique=True),
       order_seed=st.integers(0, 1000), signed=st.booleans())
def test_merge_is_associative_and_commutative_for_any_split(seed, cuts, order_seed, signed):
    maps = maps_with_silence(seed, images=17, channels=4, size=(3, 3), signed=signed)
    parts = partials(maps, sorted(cuts), not signed)
    order = list(np.random.default_rng(order_seed).permutation(len(parts)))
    assert_same(fold(parts, "tree", order), one_pass(maps, not signed))
    a, b_, c = (parts * 3)[:3]
    assert_same(merge(merge(a, b_), c), merge(a, merge(b_, c)))


@pytest.mark.parametrize("chunk", [1, 7, 40, 1 << 18])
@pytest.mark.parametrize("size", [(5, 4), (3, 3), (8, 8)])
def test_map_figures_chunked_and_the_minimum_shortcut_equal_numpy(monkeypatch, chunk, size):
    """Reduced a few rows at a time (``_CHUNK_ELEMENTS``), with the minimum of a non-negative map that holds
    a zero taken as 0: every figure equals NumPy's over each whole map in float64 (counts, max and min
    exactly; rows with a NaN, with -0.0 and without any zero included)."""
    from inspector.audit import activations

    monkeypatch.setattr(activations, "_CHUNK_ELEMENTS", chunk)
    for signed in (True, False):
        maps = maps_with_silence(7, images=5, channels=6, size=size, signed=signed)
        maps[1, 3] = np.abs(maps[1, 3]) + 0.5  # non-negative, no zero: its minimum must be scanned
        maps[2, 4].flat[1] = np.nan  # a NaN beside zeros: the minimum is NaN, as NumPy's
        maps[3, 5].flat[0] = -0.0
        if not signed:
            maps[2, 4].flat[0] = 0.0
        figures = map_figures(maps, not signed)
        x = maps.astype(np.float64).reshape(5, 6, -1)
        with np.errstate(invalid="ignore"):
            np.testing.assert_array_equal(figures.maximum, x.max(axis=2))
            np.testing.assert_array_equal(figures.minimum, x.min(axis=2))
        np.testing.assert_array_equal(figures.zeros, (x == 0).sum(axis=2))
        np.testing.assert_allclose(figures.sums, x.sum(axis=2), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(figures.squares, (x ** 2).sum(axis=2), rtol=1e-6)
        if signed:
            np.testing.assert_allclose(figures.abs_sums, np.abs(x).sum(axis=2), rtol=1e-6)
        else:
            assert figures.abs_sums is None
            assert np.isnan(figures.minimum[2, 4]) and figures.minimum[1, 3] > 0 and figures.minimum[0, 0] == 0
        # The float32 sums are the pairwise ones ndarray.sum gives, whatever the chunk.
        np.testing.assert_array_equal(figures.sums, maps.reshape(5, 6, -1).sum(axis=2))


def test_an_empty_partial_is_the_identity_and_merge_changes_neither_side():
    maps = maps_with_silence(3)
    whole = one_pass(maps, False)
    before = whole.copy()
    empty = ActivationStats(maps.shape[1], False)
    assert_same(merge(empty, whole), whole)
    assert_same(merge(whole, empty), whole)
    merge(whole, whole)
    assert_same(whole, before)


def test_partials_of_different_map_sizes_or_channels_are_refused():
    a = one_pass(maps_with_silence(0, size=(4, 4)), False)
    with pytest.raises(InspectorError, match="--size"):
        merge(a, one_pass(maps_with_silence(0, size=(3, 3)), False))
    with pytest.raises(InspectorError, match="channels"):
        merge(a, one_pass(maps_with_silence(0, channels=7), False))


def layer_partial(maps, key):
    return AuditPartial(len(maps), {"conv": one_pass(maps, False)}, frozenset({key}))


def test_merger_counts_each_batch_once_and_fails_on_a_lost_one():
    maps = maps_with_silence(5)
    keys = [batch_key([f"{i}\timg{i}.png" for i in range(a, b_)]) for a, b_ in ((0, 8), (8, 16), (16, 23))]
    parts = [layer_partial(maps[a:b_], key) for (a, b_), key in zip(((0, 8), (8, 16), (16, 23)), keys)]
    merger = Merger()
    for part in [parts[2], parts[0], parts[2], parts[1], parts[0]]:  # two retried batches come twice
        merger.add(part)
    assert merger.duplicates == 2
    total = merger.finish(keys, 23)
    assert total.images == 23
    assert_same(total.layers["conv"], one_pass(maps, False))

    lost = Merger()
    lost.add(parts[0])
    lost.add(parts[2])
    with pytest.raises(InspectorError, match="1 of 3 batches were never counted"):
        lost.finish(keys)


def test_batch_keys_depend_on_every_image_and_their_order():
    assert batch_key(["0\ta.png", "1\tb.png"]) == batch_key(["0\ta.png", "1\tb.png"])
    assert batch_key(["0\ta.png", "1\tb.png"]) != batch_key(["1\tb.png", "0\ta.png"])
    assert batch_key(["0\ta.png"]) != batch_key(["0\ta.pn", "g"])


def test_the_audit_counts_a_file_listed_twice_twice(save, tmp_path):
    """The single-process audit merges per-batch partials by key: a key holds the image's position, so a
    repeated file is another image, not a retried batch (whose partial would be dropped)."""
    from PIL import Image

    from inspector.audit import audit
    from test_audit import small_net

    r = np.random.default_rng(0)
    files = []
    for i in range(4):
        files.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(r.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(files[-1])
    path = save(small_net()[0])
    once = audit(path, files * 2, batch=4, preprocess="tf", device="cpu", quiet=True, hold_out=False)
    assert once.images == 8
    single = audit(path, files, batch=4, preprocess="tf", device="cpu", quiet=True, hold_out=False)
    for doubled, plain in zip(once.layers, single.layers):
        np.testing.assert_array_equal(doubled.activations.zeros, 2 * plain.activations.zeros)
        np.testing.assert_allclose(doubled.activations.total, 2 * plain.activations.total, rtol=1e-12)
