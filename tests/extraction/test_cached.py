"""The cached extraction path: the spec in, the statistics and the cache's counts out."""

import dataclasses

import numpy as np
import pytest

from skbert._extraction import ExtractionSpec, StoreSpec
from skbert._extraction.batches import iter_statistics
from skbert._extraction.cached import iter_cached_statistics, namespace_fields
from skbert._model import backend as _backend
from skbert._model.backend import ModelSpec


def _run(generator, n):
    """Every batch of ``generator`` in text order, and its return value."""
    stats, counts, order = [], [], []
    while True:
        try:
            positions, st, ct = next(generator)
        except StopIteration as done:
            report = done.value
            break
        order.append(positions)
        stats.append(st)
        counts.append(ct)
    order = np.concatenate(order)
    assert sorted(order.tolist()) == list(range(n))
    inverse = np.argsort(order)
    return np.concatenate(stats)[inverse], np.concatenate(counts)[inverse], report


@pytest.fixture
def setup(tiny_model, tmp_path):
    model = ModelSpec(tiny_model)
    info = _backend.model_info(model)
    spec = ExtractionSpec(layers=[2, 0], max_length=32, batch_size=3)
    store = StoreSpec(
        memory=tmp_path / "store",
        fields=namespace_fields(model, max_length=32, dtype="float32"),
        meta={"model_name": tiny_model},
        n_hidden_states=info.n_hidden_states,
        hidden_size=info.hidden_size,
    )
    return model, spec, store


def test_cold_then_warm_counts_and_same_statistics(setup, texts):
    model, spec, store = setup
    load = lambda: _backend.load_model(model, "cpu")  # noqa: E731
    unique = list(dict.fromkeys(texts))
    fresh = _run(iter_statistics(unique, load(), spec), len(unique))
    cold = _run(iter_cached_statistics(unique, spec, store, load=load), len(unique))
    assert cold[2]["misses"] == len(unique) and cold[2]["hits"] == 0
    assert cold[2]["written"] == len(unique) and cold[2]["damaged"] == 0  # one "base" entry each
    np.testing.assert_allclose(cold[0], fresh[0], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(cold[1], fresh[1])

    def no_model():
        raise AssertionError("a warm call loaded the model")

    warm = _run(iter_cached_statistics(unique, spec, store, load=no_model), len(unique))
    assert warm[2]["hits"] == len(unique) and warm[2]["misses"] == 0
    np.testing.assert_array_equal(warm[0], cold[0])


def test_only_the_requested_hidden_states_come_back(setup, texts):
    model, spec, store = setup
    load = lambda: _backend.load_model(model, "cpu")  # noqa: E731
    unique = list(dict.fromkeys(texts))
    all_layers = _run(
        iter_cached_statistics(unique, dataclasses.replace(spec, layers=(0, 1, 2)), store, load=load),
        len(unique),
    )
    # A warm read of another selection: the same numbers, in the order asked for.
    picked = _run(iter_cached_statistics(unique, spec, store, load=load), len(unique))
    assert picked[2]["hits"] == len(unique)
    np.testing.assert_array_equal(picked[0], all_layers[0][:, [2, 0]])


def test_the_spec_is_frozen_and_normalised():
    spec = ExtractionSpec(layers=[np.int64(3), 1], max_length=16, slots=[0])
    assert spec.layers == (3, 1) and spec.slots == (0,)
    assert all(type(i) is int for i in spec.layers)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.layers = (0,)
    assert spec == ExtractionSpec(layers=(3, 1), max_length=16, slots=(0,))
