"""Parameter resolution shared by BertVectorizer and BertClassifier (skbert._params)."""

import numpy as np
import pytest

from skbert import BertClassifier, BertVectorizer
from skbert._params import resolve_layer_weights, resolve_layers, resolve_max_length

LABELS = [0, 1, 0, 1, 0, 1, 0, 1]


def test_layers_resolve_to_non_negative_indices():
    assert resolve_layers("all", 3, "X") == [0, 1, 2]
    assert resolve_layers(-1, 3, "X") == [2]
    assert resolve_layers([np.int64(0), -2], 3, "X") == [0, 1]


@pytest.mark.parametrize(
    "layers, message",
    [([], "must not be empty"), ([1.5], "must hold ints; got 1.5"), ([True], "must hold ints"),
     ([3], "Layer index 3 is out of range.*valid indices are -3..2")],
)
def test_bad_layers_name_the_estimator(layers, message):
    with pytest.raises(ValueError, match=message) as info:
        resolve_layers(layers, 3, "SomeEstimator")
    if "parameter" in str(info.value):
        assert "'layers' parameter of SomeEstimator" in str(info.value)


@pytest.mark.parametrize("estimator", [BertVectorizer, BertClassifier])
def test_each_estimator_is_named_in_its_own_layer_errors(estimator, tiny_model, texts):
    with pytest.raises(ValueError, match=f"'layers' parameter of {estimator.__name__} must not be empty"):
        estimator(tiny_model, layers=[]).fit(texts, LABELS)


def test_layer_weights_are_softmax_normalised_or_refused():
    np.testing.assert_allclose(resolve_layer_weights(None, "weighted", [1, 2]), [0.5, 0.5])
    w = resolve_layer_weights([0.0, np.log(3.0)], "weighted", [1, 2])
    np.testing.assert_allclose(w, [0.25, 0.75])
    with pytest.raises(ValueError, match=r"layer_weights must hold 2 finite values.*\[1, 2\]"):
        resolve_layer_weights([1.0, np.nan], "weighted", [1, 2])
    assert resolve_layer_weights(None, "concat", [1, 2]) is None


@pytest.mark.parametrize("estimator", [BertVectorizer, BertClassifier])
def test_ignored_layer_weights_warn_in_both_estimators(estimator, tiny_model, texts):
    params = dict(layers=[1, 2], layer_agg="mean", layer_weights=[1.0, 2.0])
    if estimator is BertClassifier:
        params.update(epochs=1, min_steps=0, contrastive_steps=0, random_state=0)
    with pytest.warns(UserWarning, match="only used with layer_agg='weighted'.*'mean'"):
        fitted = estimator(tiny_model, **params).fit(texts, LABELS)
    assert getattr(fitted, "layer_weights_", None) is None


def test_max_length_is_the_model_s_limit_or_at_most_it():
    assert resolve_max_length(None, 128) == 128
    assert resolve_max_length("auto", 128) == 128
    assert resolve_max_length(np.int64(64), 128) == 64
    with pytest.raises(ValueError, match="max_length=200 exceeds the model's limit of 128 tokens"):
        resolve_max_length(200, 128)


@pytest.mark.parametrize("estimator", [BertVectorizer, BertClassifier])
def test_both_estimators_refuse_a_max_length_past_the_model(estimator, tiny_model, texts):
    with pytest.raises(ValueError, match="max_length=1000 exceeds the model's limit of 128"):
        estimator(tiny_model, max_length=1000).fit(texts, LABELS)
