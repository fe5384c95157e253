"""BertClassifier: fine-tuning with partial freezing and gradual unfreezing."""

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError

from skbert import BertClassifier, BertVectorizer, DeviceFallbackWarning

torch = pytest.importorskip("torch")

from conftest import TEXTS as _BASE_TEXTS  # noqa: E402

TEXTS = list(_BASE_TEXTS) * 3
LABELS = np.array(["pos", "neg", "pos", "neg", "neg", "pos", "neg", "pos"] * 3)

#: BERT-base figures from the seed (section 4).
BERT_BASE_TOTAL = 109_482_240
BERT_BASE_FROZEN_8 = 80_540_160
BERT_BASE_TRAINABLE_8 = 28_942_080
BERT_BASE_LAYER = 7_087_872
BERT_BASE_POOLER = 590_592


def _fit(tiny_model, **params):
    params.setdefault("epochs", 2)
    params.setdefault("min_steps", 0)  # exactly `epochs` epochs: fast tests
    params.setdefault("contrastive_steps", 0)
    params.setdefault("random_state", 0)
    return BertClassifier(tiny_model, **params).fit(TEXTS, LABELS)


def _weights(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


def _changed(base, tuned, prefix):
    names = [k for k in base if k.startswith(prefix)]
    assert names, prefix
    return {k: not np.array_equal(base[k], tuned[k]) for k in names}


# ------------------------------------------------------------ basic contract
def test_binary_string_labels(tiny_model):
    clf = _fit(tiny_model)
    assert list(clf.classes_) == ["neg", "pos"]
    pred = clf.predict(TEXTS)
    assert pred.shape == (len(TEXTS),) and set(pred) <= {"neg", "pos"}
    proba = clf.predict_proba(TEXTS)
    assert proba.shape == (len(TEXTS), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    scores = clf.decision_function(TEXTS)
    assert scores.shape == (len(TEXTS),)
    np.testing.assert_array_equal(clf.classes_[(scores > 0).astype(int)], pred)
    assert 0.0 <= clf.score(TEXTS, LABELS) <= 1.0
    assert clf.n_iter_ == 2 and len(clf.loss_curve_) == 2
    assert clf.validation_scores_ is None
    assert clf.predict([]).shape == (0,)


def test_multiclass_integer_labels(tiny_model):
    y = np.arange(len(TEXTS)) % 3
    clf = BertClassifier(tiny_model, epochs=1, random_state=0, min_steps=0, contrastive_steps=0).fit(TEXTS, y)
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    assert clf.decision_function(TEXTS).shape == (len(TEXTS), 3)
    proba = clf.predict_proba(TEXTS)
    np.testing.assert_array_equal(clf.predict(TEXTS), clf.classes_[proba.argmax(axis=1)])


def test_input_and_parameter_errors(tiny_model):
    with pytest.raises(ValueError, match="string object received"):
        BertClassifier(tiny_model).fit("a text", ["a"])
    with pytest.raises(InvalidParameterError, match="'unfreeze' parameter of BertClassifier"):
        BertClassifier(tiny_model, unfreeze="sudden").fit(TEXTS, LABELS)
    with pytest.raises(InvalidParameterError, match="'freeze_layers' parameter"):
        BertClassifier(tiny_model, freeze_layers=-1).fit(TEXTS, LABELS)
    with pytest.raises(ValueError, match="freeze_layers=3 exceeds the model's 2"):
        BertClassifier(tiny_model, freeze_layers=3).fit(TEXTS, LABELS)
    with pytest.raises(ValueError, match="at least 2 classes"):
        BertClassifier(tiny_model).fit(TEXTS, ["a"] * len(TEXTS))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        BertClassifier(tiny_model).fit(TEXTS, LABELS[:3])
    with pytest.raises(ValueError, match="'layers' parameter of BertClassifier|out of range"):
        BertClassifier(tiny_model, layers=7).fit(TEXTS, LABELS)


# -------------------------------------------------------------------- freezing
def test_frozen_parameters_do_not_change(tiny_model, tmp_path):
    clf = _fit(tiny_model, freeze_layers=1)
    base = _weights(tiny_model)
    tuned = _weights(clf.save_pretrained(tmp_path / "tuned"))
    assert not any(_changed(base, tuned, "embeddings.").values())
    assert not any(_changed(base, tuned, "encoder.layer.0.").values())
    assert not any(_changed(base, tuned, "pooler.").values())  # no pooling reads it
    assert all(_changed(base, tuned, "encoder.layer.1.").values())
    assert clf.trainable_layers_ == [[2], [2]]


def test_full_fine_tuning_changes_every_used_layer(tiny_model, tmp_path):
    clf = _fit(tiny_model, freeze_layers=0)
    base = _weights(tiny_model)
    tuned = _weights(clf.save_pretrained(tmp_path / "tuned"))
    for prefix in ("embeddings.word_embeddings", "encoder.layer.0.", "encoder.layer.1."):
        assert all(_changed(base, tuned, prefix).values()), prefix
    assert clf.trainable_layers_ == [[0, 1, 2], [0, 1, 2]]


def test_layers_above_the_pooled_ones_stay_frozen(tiny_model, tmp_path):
    clf = _fit(tiny_model, layers=1)
    tuned = _weights(clf.save_pretrained(tmp_path / "tuned"))
    base = _weights(tiny_model)
    assert not any(_changed(base, tuned, "encoder.layer.1.").values())
    assert all(_changed(base, tuned, "encoder.layer.0.").values())
    assert clf.trainable_layers_ == [[0, 1], [0, 1]]


def test_freeze_all_leaves_encoder_untouched(tiny_model, tmp_path):
    clf = _fit(tiny_model, freeze_layers="all")
    tuned = _weights(clf.save_pretrained(tmp_path / "tuned"))
    base = _weights(tiny_model)
    assert all(np.array_equal(base[k], tuned[k]) for k in base)
    n_head = 32 * 2 + 2
    assert clf.n_trainable_params_ == [n_head, n_head]
    assert clf.trainable_layers_ == [[], []]


def test_gradual_unfreezing_schedule(tiny_model, tmp_path):
    from skbert._finetune import layer_groups

    clf = _fit(tiny_model, unfreeze="gradual", unfreeze_step=1, epochs=4)
    # Epoch 0: head only; then one unit per epoch from the top; unit 0 = embeddings.
    assert clf.trainable_layers_ == [[], [2], [1, 2], [0, 1, 2]]
    groups = layer_groups(clf._network()[0], 2)
    steps = np.diff(clf.n_trainable_params_)
    np.testing.assert_array_equal(steps, [groups.numel([u]) for u in (2, 1, 0)])

    base = _weights(tiny_model)
    # Stopped after 2 epochs, only the top layer has trained.
    two = _weights(_fit(tiny_model, unfreeze="gradual", unfreeze_step=1).save_pretrained(tmp_path / "2"))
    assert all(_changed(base, two, "encoder.layer.1.").values())
    assert not any(_changed(base, two, "encoder.layer.0.").values())
    assert not any(_changed(base, two, "embeddings.").values())
    # After 3 epochs, layers 1 and 2 have trained, the embeddings not yet.
    three = _weights(
        _fit(tiny_model, unfreeze="gradual", unfreeze_step=1, epochs=3).save_pretrained(tmp_path / "3")
    )
    assert all(_changed(base, three, "encoder.layer.0.").values())
    assert not any(_changed(base, three, "embeddings.").values())


def test_gradual_unfreezing_respects_the_frozen_floor(tiny_model):
    clf = _fit(tiny_model, freeze_layers=1, unfreeze="gradual", unfreeze_step=2, epochs=3)
    assert clf.trainable_layers_ == [[], [2], [2]]


def test_layer_lr_decay_slows_lower_layers(tiny_model, tmp_path):
    clf = _fit(tiny_model, layer_lr_decay=1e-9)
    base = _weights(tiny_model)
    tuned = _weights(clf.save_pretrained(tmp_path / "tuned"))
    for k in base:
        if k.startswith(("embeddings.", "encoder.layer.0.")):
            np.testing.assert_allclose(tuned[k], base[k], atol=1e-6)
    assert all(_changed(base, tuned, "encoder.layer.1.").values())


def test_parameter_accounting_matches_the_seed():
    """BERT-base: freezing the embeddings and 8 layers, gradual unfreezing by 2."""
    from transformers import BertConfig, BertModel

    from skbert._finetune import final_units, layer_groups, trainable_units

    torch.manual_seed(0)
    model = BertModel(BertConfig())
    groups = layer_groups(model, 12)
    assert sum(p.numel() for p in model.parameters()) == BERT_BASE_TOTAL
    frozen = set(range(13)) - set(final_units(12, 8))
    assert groups.numel(frozen) == BERT_BASE_FROZEN_8
    pooler = sum(p.numel() for _, p in groups.pooler)
    assert pooler == BERT_BASE_POOLER
    # The seed counts the pooler as trainable; skbert never trains it (no
    # pooling reads it), so a classifier trains 4 layers plus its head.
    assert groups.numel(final_units(12, 8)) + pooler == BERT_BASE_TRAINABLE_8
    assert all(groups.numel([u]) == BERT_BASE_LAYER for u in range(1, 13))
    counts = [
        groups.numel(trainable_units(12, 0, epoch, unfreeze="gradual", step=2))
        for epoch in range(7)
    ]
    assert counts[0] == 0
    np.testing.assert_array_equal(np.diff(counts), [2 * BERT_BASE_LAYER] * 6)
    assert 2 * BERT_BASE_LAYER == 14_175_744
    floor = [
        groups.numel(trainable_units(12, 8, epoch, unfreeze="gradual", step=2))
        for epoch in range(4)
    ]
    assert floor == [0, 14_175_744, 28_351_488, 28_351_488]


@pytest.fixture(scope="module")
def bert_base_random(tmp_path_factory, tiny_model):
    """A randomly initialised BERT-base-sized encoder with the tiny tokenizer."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("bert-base-random")
    torch.manual_seed(0)
    BertModel(BertConfig()).save_pretrained(path, safe_serialization=True)
    BertTokenizerFast.from_pretrained(tiny_model).save_pretrained(path)
    return str(path)


def test_classifier_parameter_counts_on_bert_base(bert_base_random):
    # Freeze the embeddings and 8 layers, unfreeze the other 4 two per epoch.
    head = 768 * 2 + 2
    clf = BertClassifier(
        bert_base_random, freeze_layers=8, unfreeze="gradual", unfreeze_step=2, epochs=4,
        min_steps=0, max_length=8, random_state=0,
    ).fit(["good movie", "bad film"], ["pos", "neg"])
    trained = BERT_BASE_TRAINABLE_8 - BERT_BASE_POOLER  # the pooler is never trained
    assert clf.n_trainable_params_ == [head, head + 14_175_744, head + trained, head + trained]
    assert clf.trainable_layers_ == [[], [11, 12], [9, 10, 11, 12], [9, 10, 11, 12]]


# ------------------------------------------------------------ representation
@pytest.mark.parametrize(
    "params",
    [
        dict(pooling="mean"),
        dict(pooling="cls"),
        dict(pooling="max", exclude_special_tokens=True),
        dict(pooling="attention", layers=[0, 2]),
        dict(pooling="mean_max", layers=[1, 2], layer_agg="concat"),
        dict(pooling="mean", exclude_special_tokens=True, layers="all", layer_agg="mean"),
        dict(pooling="max", layers=[1, 2], layer_agg="weighted", layer_weights=[0.3, -1.0]),
    ],
)
def test_frozen_features_equal_vectorizer(tiny_model, params):
    clf = _fit(tiny_model, freeze_layers="all", epochs=1, **params)
    vec = BertVectorizer(tiny_model, **params).fit(TEXTS)
    np.testing.assert_allclose(clf._features(TEXTS), vec.transform(TEXTS), atol=1e-5)


def test_scalar_mix_is_learned_with_the_head(tiny_model):
    clf = _fit(tiny_model, freeze_layers="all", layers=[1, 2], layer_agg="scalar_mix", epochs=3)
    assert clf.layer_weights_.shape == (2,)
    np.testing.assert_allclose(clf.layer_weights_.sum(), 1.0)
    assert not np.allclose(clf.layer_weights_, 0.5) or clf.gamma_ != 1.0
    vec = BertVectorizer(
        tiny_model, layers=[1, 2], layer_agg="weighted", layer_weights=np.log(clf.layer_weights_)
    ).fit(TEXTS)
    np.testing.assert_allclose(clf._features(TEXTS), clf.gamma_ * vec.transform(TEXTS), atol=1e-5)


def test_pool_tokens_matches_pooled_statistics_and_ignores_padding():
    from skbert._extraction.assembly import pool_layers
    from skbert._extraction.pooling import pool_tokens, pooled_statistics

    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 6, 4, generator=gen, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    special = torch.tensor([[1, 0, 0, 0, 0, 1], [1, 0, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    attn = torch.softmax(torch.randn(3, 2, 6, 6, generator=gen), dim=-1)
    stats, _ = pooled_statistics([hidden.detach()], mask, special, [attn])
    for pooling in ("cls", "mean", "max", "attention", "mean_max"):
        for exclude in (False, True):
            got = pool_tokens(hidden, mask, special, pooling, exclude, attn)
            want = pool_layers(stats.numpy(), pooling, exclude)[:, 0]
            np.testing.assert_allclose(got.detach().numpy(), want, atol=1e-6)
            if pooling != "cls":
                hidden.grad = None
                got.sum().backward()
                assert torch.all(hidden.grad[mask == 0] == 0)
                assert torch.any(hidden.grad[mask == 1] != 0)


# ---------------------------------------------------------------- training
def test_early_stopping_stops_and_records_scores(tiny_model):
    clf = _fit(
        tiny_model, early_stopping=True, validation_fraction=0.25, n_iter_no_change=2,
        epochs=10, learning_rate=0.0, head_learning_rate=0.0,
    )
    assert clf.n_iter_ == 3
    assert len(clf.validation_scores_) == 3 == len(clf.loss_curve_)
    assert clf.best_validation_score_ == max(clf.validation_scores_)


def test_early_stopping_needs_every_class_held_out(tiny_model):
    with pytest.raises(ValueError, match="early_stopping could not hold out"):
        BertClassifier(tiny_model, early_stopping=True, validation_fraction=0.01).fit(
            TEXTS[:4], LABELS[:4]
        )


def test_fit_is_reproducible_and_leaves_global_rng_alone(tiny_model):
    state = torch.get_rng_state()
    a = _fit(tiny_model, dropout=0.5)
    assert torch.equal(torch.get_rng_state(), state)
    b = _fit(tiny_model, dropout=0.5)
    assert a.loss_curve_ == b.loss_curve_
    np.testing.assert_array_equal(a.predict_proba(TEXTS), b.predict_proba(TEXTS))
    c = _fit(tiny_model, dropout=0.5, random_state=1)
    assert a.loss_curve_ != c.loss_curve_


def test_sample_weight(tiny_model):
    a = _fit(tiny_model)
    b = BertClassifier(tiny_model, epochs=2, random_state=0, min_steps=0, contrastive_steps=0).fit(
        TEXTS, LABELS, sample_weight=np.full(len(TEXTS), 3.0)
    )
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-6)
    w = np.where(LABELS == "pos", 5.0, 1.0)
    c = BertClassifier(tiny_model, epochs=2, random_state=0, min_steps=0, contrastive_steps=0).fit(TEXTS, LABELS, sample_weight=w)
    assert c.predict_proba(TEXTS)[:, 1].mean() > a.predict_proba(TEXTS)[:, 1].mean()


def test_verbose_shows_a_progress_bar_with_loss(tiny_model, capsys):
    _fit(tiny_model, verbose=1)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "loss=" in err


# ------------------------------------------------------- pickle, clone, search
def test_pickle_round_trip_in_process(tiny_model):
    clf = _fit(tiny_model, freeze_layers=1)
    data = pickle.dumps(clf)
    loaded = pickle.loads(data)
    # Re-pickling before first use keeps the weights.
    again = pickle.loads(pickle.dumps(loaded))
    for other in (loaded, again):
        np.testing.assert_array_equal(other.predict_proba(TEXTS), clf.predict_proba(TEXTS))
    # A head-only probe pickles in kilobytes: only changed weights are stored.
    probe = _fit(tiny_model, freeze_layers="all")
    assert len(pickle.dumps(probe)) < 10_000
    assert len(pickle.dumps(BertClassifier(tiny_model))) < 10_000


def test_pickle_round_trip_in_a_fresh_process(tiny_model, tmp_path):
    clf = _fit(tiny_model, pooling="attention", layers=[1, 2], layer_agg="scalar_mix")
    path = tmp_path / "clf.pkl"
    path.write_bytes(pickle.dumps(clf))
    out = tmp_path / "proba.npy"
    code = textwrap.dedent(
        f"""
        import pickle, numpy as np
        clf = pickle.loads(open({str(path)!r}, "rb").read())
        np.save({str(out)!r}, clf.predict_proba({TEXTS!r}))
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    np.testing.assert_allclose(np.load(out), clf.predict_proba(TEXTS), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(
        clf.classes_[np.load(out).argmax(axis=1)], clf.predict(TEXTS)
    )


def test_unpickle_without_its_gpu_falls_back_to_cpu(tiny_model):
    if torch.cuda.is_available():
        pytest.skip("this machine has the GPU")
    clf = _fit(tiny_model)
    state = clf.__getstate__()
    state["device_"] = "cuda"
    loaded = BertClassifier.__new__(BertClassifier)
    loaded.__setstate__(state)
    with pytest.warns(DeviceFallbackWarning, match="not available here"):
        proba = loaded.predict_proba(TEXTS)
    assert loaded.device_ == "cpu"
    np.testing.assert_array_equal(proba, clf.predict_proba(TEXTS))


def test_clone_and_grid_search_over_freeze_layers(tiny_model):
    clf = BertClassifier(tiny_model, epochs=1, random_state=0, min_steps=0, contrastive_steps=0)
    fitted = clone(clf).fit(TEXTS, LABELS)
    fresh = clone(fitted)
    assert not hasattr(fresh, "classes_")
    assert fresh.get_params() == clf.get_params()
    search = GridSearchCV(clf, {"freeze_layers": [0, 1, "all"]}, cv=2).fit(TEXTS, LABELS)
    assert search.best_params_["freeze_layers"] in (0, 1, "all")
    assert search.predict(TEXTS[:3]).shape == (3,)


def test_init_stores_parameters_only(tiny_model):
    clf = BertClassifier("no/such-model", freeze_layers="all", layers=(1, 2))
    assert clf.get_params()["layers"] == (1, 2)
    assert not any(k.endswith("_") for k in vars(clf))


# --------------------------------------------------------- save_pretrained
def test_save_pretrained_is_a_tuned_encoder_for_the_vectorizer(tiny_model, tmp_path):
    base = BertVectorizer(tiny_model).fit(TEXTS).transform(TEXTS)
    tuned = _fit(tiny_model).save_pretrained(tmp_path / "tuned")
    features = BertVectorizer(tuned).fit(TEXTS).transform(TEXTS)
    assert not np.allclose(features, base, atol=1e-4)
    frozen = _fit(tiny_model, freeze_layers="all").save_pretrained(tmp_path / "frozen")
    np.testing.assert_allclose(BertVectorizer(frozen).fit(TEXTS).transform(TEXTS), base, atol=1e-6)


def test_unpickling_over_a_changed_base_model_fails_loudly(tmp_path):
    from skbert._testing import make_tiny_model

    folder = str(make_tiny_model(tmp_path / "model"))
    data = pickle.dumps(BertClassifier(folder, epochs=1, random_state=0, min_steps=0, contrastive_steps=0).fit(TEXTS, LABELS))
    make_tiny_model(folder, seed=1)  # same path, other weights
    loaded = pickle.loads(data)
    with pytest.raises(ValueError, match="differs from the one this BertClassifier"):
        loaded.predict(TEXTS)


# ------------------------------------------------- small data (#20): defaults that learn
def test_probe_head_is_a_logistic_regression_on_the_frozen_features(tiny_model):
    """With nothing trained after it, the LP-FT head is sklearn's probe, C chosen by CV."""
    from sklearn.linear_model import LogisticRegression

    clf = _fit(tiny_model, epochs=1, learning_rate=0.0, head_learning_rate=0.0, dropout=0.0,
               head_init="probe")
    assert clf.probe_C_ in (0.1, 1.0, 10.0, 100.0)
    features = clf._features(TEXTS).astype(np.float64)
    probe = LogisticRegression(C=clf.probe_C_, max_iter=2000).fit(features, LABELS)
    np.testing.assert_allclose(clf.predict_proba(TEXTS), probe.predict_proba(features),
                               rtol=0, atol=1e-4)
    assert _fit(tiny_model, head_init="random").probe_C_ is None


def test_probe_head_multiclass(tiny_model):
    from sklearn.linear_model import LogisticRegression

    y = np.arange(len(TEXTS)) % 3
    clf = BertClassifier(tiny_model, epochs=1, min_steps=0, contrastive_steps=0, learning_rate=0.0,
                         head_learning_rate=0.0, dropout=0.0, random_state=0).fit(TEXTS, y)
    features = clf._features(TEXTS).astype(np.float64)
    probe = LogisticRegression(C=clf.probe_C_, max_iter=2000).fit(features, y)
    np.testing.assert_allclose(clf.predict_proba(TEXTS), probe.predict_proba(features),
                               rtol=0, atol=1e-4)


@pytest.mark.parametrize("min_steps, epochs, n_iter", [(0, 2, 2), (7, 2, 4), (3, 2, 2), (8, 1, 4)])
def test_min_steps_adds_epochs(tiny_model, min_steps, epochs, n_iter):
    clf = _fit(tiny_model, min_steps=min_steps, epochs=epochs)  # 24 texts: 2 steps an epoch
    assert clf.n_iter_ == n_iter == len(clf.loss_curve_)
    assert clf.n_steps_ == 2 * n_iter


def test_class_weight_balanced_is_sklearns_weighting(tiny_model):
    from sklearn.utils.class_weight import compute_sample_weight

    y = np.where(np.arange(len(TEXTS)) % 4 == 0, "rare", "common")
    a = BertClassifier(tiny_model, epochs=2, min_steps=0, contrastive_steps=0, random_state=0,
                       class_weight="balanced").fit(TEXTS, y)
    b = BertClassifier(tiny_model, epochs=2, min_steps=0, contrastive_steps=0, random_state=0).fit(
        TEXTS, y, sample_weight=compute_sample_weight("balanced", y)
    )
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-6)
    c = BertClassifier(tiny_model, epochs=2, min_steps=0, contrastive_steps=0, random_state=0,
                       class_weight={"rare": 3.0, "common": 1.0}).fit(TEXTS, y)
    d = BertClassifier(tiny_model, epochs=2, min_steps=0, contrastive_steps=0, random_state=0).fit(TEXTS, y)
    assert c.predict_proba(TEXTS)[:, 1].mean() > d.predict_proba(TEXTS)[:, 1].mean()


def test_warns_when_it_learned_nothing(tiny_model):
    from sklearn.exceptions import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match="learned little beyond the class frequencies"):
        clf = _fit(tiny_model, head_init="random", learning_rate=0.0, head_learning_rate=0.0)
    assert clf.train_loss_ > 0.9 * clf.prior_loss_
    np.testing.assert_allclose(clf.prior_loss_, np.log(2), rtol=1e-6)  # balanced labels


def test_learning_check_flags_one_class_taking_the_predictions():
    from skbert._finetune import learning_check

    classes = np.array(["neg", "pos"])
    codes = np.array([0] * 45 + [1] * 55)
    # Confident and right on most texts (a loss far below the prior's), but
    # 'pos' for 89 % of the texts where 55 % are labelled so: the case.
    logits = np.zeros((100, 2))
    logits[np.arange(100), codes] = 6.0
    logits[:34] = [0.0, 0.5]
    loss, prior, problem = learning_check(logits, codes, np.ones(100), classes)
    np.testing.assert_allclose(prior, -(0.45 * np.log(0.45) + 0.55 * np.log(0.55)))
    assert loss < 0.9 * prior
    assert problem == "predicts class 'pos' for 89% of its training texts, which are 55% labelled so"
    # The predictions follow the labels: nothing to say.
    logits[:34] = [0.5, 0.0]
    assert learning_check(logits, codes, np.ones(100), classes)[2] is None
    # Both at once: one message naming both.
    both = np.tile([0.0, 0.1], (100, 1))
    problem = learning_check(both, codes, np.ones(100), classes)[2]
    assert problem.startswith("learned little") and "predicts class 'pos' for 100%" in problem


def test_no_warning_when_it_learned(tiny_model, recwarn):
    from sklearn.exceptions import ConvergenceWarning

    clf = _fit(tiny_model, epochs=20, learning_rate=1e-3)
    assert not [w for w in recwarn if issubclass(w.category, ConvergenceWarning)]
    assert clf.train_loss_ < 0.5 * clf.prior_loss_
    assert clf.score(TEXTS, LABELS) == 1.0


def test_early_stopping_auto_holds_out_only_large_training_sets(tiny_model, monkeypatch):
    import skbert._classifier as module

    assert _fit(tiny_model).validation_scores_ is None  # "auto", 24 texts
    monkeypatch.setattr(module, "EARLY_STOPPING_AUTO_MIN", 10)
    clf = _fit(tiny_model, validation_fraction=0.25)
    assert len(clf.validation_scores_) == clf.n_iter_


def test_contrastive_pairs_pair_each_text_with_its_class_and_another():
    from skbert._finetune import contrastive_pairs

    codes = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
    n = len(codes)
    pairs = contrastive_pairs(codes, 3 * 2 * n, np.random.RandomState(0))
    assert len(pairs) == 6 * n
    for i, j, target in pairs:
        assert target == float(codes[i] == codes[j])
        assert i != j
    # Each pass pairs every text once with its class and once outside it.
    lefts = np.array([i for i, _, t in pairs if t == 1.0])
    np.testing.assert_array_equal(np.bincount(lefts, minlength=n), np.full(n, 3))
    lefts = np.array([i for i, _, t in pairs if t == 0.0])
    np.testing.assert_array_equal(np.bincount(lefts, minlength=n), np.full(n, 3))
    # Shuffled: not every same-class pair first.
    assert {t for _, _, t in pairs[:n]} == {0.0, 1.0}
    # A class of one text pairs with itself for its positive pair.
    assert all(j == 0 for i, j, t in contrastive_pairs(np.array([0, 1, 1]), 12,
                                                        np.random.RandomState(0))
               if i == 0 and t == 1.0)


def _class_cosines(features, labels):
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    sim = unit @ unit.T
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(len(labels), dtype=bool)
    return sim[same & off].mean(), sim[~same].mean()


def test_contrastive_stage_pulls_each_class_together(tiny_model):
    """SetFit-style tuning: same-class features closer, other-class ones apart."""
    params = dict(epochs=1, learning_rate=0.0, head_learning_rate=0.0, dropout=0.0)
    plain = _fit(tiny_model, **params)
    tuned = _fit(tiny_model, contrastive_steps=30, contrastive_learning_rate=1e-3, **params)
    assert plain.contrastive_loss_curve_ == []
    curve = tuned.contrastive_loss_curve_
    assert len(curve) == 30 and tuned.n_steps_ == plain.n_steps_ + 30
    assert np.mean(curve[-5:]) < 0.5 * np.mean(curve[:5])
    same0, other0 = _class_cosines(plain._features(TEXTS), LABELS)
    same1, other1 = _class_cosines(tuned._features(TEXTS), LABELS)
    assert same1 - other1 > same0 - other0 + 0.2
    assert tuned.score(TEXTS, LABELS) >= plain.score(TEXTS, LABELS)


def test_contrastive_stage_leaves_frozen_layers_alone(tiny_model, tmp_path):
    base = _weights(tiny_model)
    clf = _fit(tiny_model, freeze_layers=1, contrastive_steps=5, learning_rate=0.0,
               contrastive_learning_rate=1e-3)
    tuned = _weights(clf.save_pretrained(tmp_path / "tuned"))
    assert not any(_changed(base, tuned, "embeddings.").values())
    assert not any(_changed(base, tuned, "encoder.layer.0.").values())
    # Only the contrastive stage moved the encoder (its learning_rate is 0).
    assert all(_changed(base, tuned, "encoder.layer.1.").values())


def test_length_grouped_batches_cover_each_text_once_with_less_padding():
    from skbert._finetune import LENGTH_GROUP_BATCHES, length_grouped_batches

    rng = np.random.RandomState(0)
    lengths = rng.randint(3, 60, size=1000)
    batches = length_grouped_batches(lengths, 16, np.random.RandomState(1))
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(1000))
    assert sum(len(b) < 16 for b in batches) <= -(-1000 // (16 * LENGTH_GROUP_BATCHES))
    padded = sum(lengths[b].max() * len(b) for b in batches)
    order = np.random.RandomState(1).permutation(1000)
    random_padded = sum(lengths[order[s:s + 16]].max() * len(order[s:s + 16])
                        for s in range(0, 1000, 16))
    assert padded < 0.7 * random_padded
    # Each epoch draws other batches.
    again = length_grouped_batches(lengths, 16, np.random.RandomState(2))
    assert {tuple(sorted(b)) for b in batches} != {tuple(sorted(b)) for b in again}


def test_contrastive_steps_auto_runs_setfits_rounds_on_small_data_only(tiny_model, monkeypatch):
    import skbert._classifier as module

    clf = BertClassifier(tiny_model, epochs=1, min_steps=0, random_state=0).fit(TEXTS, LABELS)
    # 20 rounds of 2 pairs for each of the 24 texts, 16 pairs a step.
    assert clf.contrastive_steps_ == 60 == len(clf.contrastive_loss_curve_)
    assert clf.n_steps_ == 60 + 2
    monkeypatch.setattr(module, "CONTRASTIVE_AUTO_MAX", 23)
    clf.fit(TEXTS, LABELS)
    assert clf.contrastive_steps_ == 0 and clf.contrastive_loss_curve_ == []
    assert clf.n_steps_ == 2
    clf.set_params(contrastive_steps=7).fit(TEXTS, LABELS)
    assert clf.contrastive_steps_ == 7 and clf.n_steps_ == 9
    with pytest.raises(InvalidParameterError, match="contrastive_steps"):
        clf.set_params(contrastive_steps=-1).fit(TEXTS, LABELS)
    with pytest.raises(InvalidParameterError, match="contrastive_learning_rate"):
        clf.set_params(contrastive_steps=0, contrastive_learning_rate=-1e-5).fit(TEXTS, LABELS)
