"""BertVectorizer on tiny seeded models: pooling math, layers, whitening, input."""

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from skbert import BertVectorizer
from skbert._extraction.assembly import softmax

POOLINGS = ["cls", "mean", "max", "attention", "mean_max"]


def _reference(model_path, texts, layer, pooling, exclude_special=False):
    """Independent pooling of one layer, one text at a time (no padding at all)."""
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModel.from_pretrained(model_path, attn_implementation="eager").eval()
    rows = []
    for text in texts:
        enc = tok([text], return_tensors="pt", return_special_tokens_mask=True)
        special = enc.pop("special_tokens_mask")[0].bool().numpy()
        if "token_type_ids" in enc and model.config.model_type == "distilbert":
            enc.pop("token_type_ids")
        with torch.no_grad():
            out = model(**enc, output_hidden_states=True, output_attentions=True)
        h = out.hidden_states[layer][0].numpy().astype(np.float64)
        keep = ~special if exclude_special and (~special).any() else np.ones(len(h), bool)
        if pooling == "cls":
            rows.append(h[0])
        elif pooling == "mean":
            rows.append(h[keep].mean(0))
        elif pooling == "max":
            rows.append(h[keep].max(0))
        elif pooling == "mean_max":
            rows.append(np.concatenate([h[keep].mean(0), h[keep].max(0)]))
        elif pooling == "attention":
            att = out.attentions[max(layer - 1, 0)][0].numpy()  # heads, q, k
            received = att.mean(axis=(0, 1))
            w = received * keep
            rows.append((w / w.sum()) @ h)
    return np.array(rows)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("layer", [0, 1, 2])
def test_pooling_matches_independent_reference(tiny_model, texts, pooling, layer):
    vec = BertVectorizer(tiny_model, layers=layer, pooling=pooling).fit(texts)
    got = vec.transform(texts)
    want = _reference(tiny_model, texts, layer, pooling)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "max", "attention", "mean_max"])
def test_exclude_special_tokens_matches_reference(tiny_model, texts, pooling):
    vec = BertVectorizer(tiny_model, layers=-1, pooling=pooling, exclude_special_tokens=True)
    got = vec.fit_transform(texts)
    want = _reference(tiny_model, texts, 2, pooling, exclude_special=True)
    np.testing.assert_allclose(got, want, atol=1e-5)
    with_special = BertVectorizer(tiny_model, layers=-1, pooling=pooling).fit_transform(texts)
    assert not np.allclose(got[0], with_special[0], atol=1e-4)


@pytest.mark.parametrize("arch_fixture", ["tiny_model", "tiny_distilbert", "tiny_roberta"])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_alone_equals_inside_padded_batch(request, arch_fixture, pooling, texts):
    path = request.getfixturevalue(arch_fixture)
    vec = BertVectorizer(path, layers="all", pooling=pooling, exclude_special_tokens=pooling != "cls")
    batch = vec.fit_transform(texts)
    for i, text in enumerate(texts):
        alone = vec.transform([text])[0]
        np.testing.assert_allclose(alone, batch[i], atol=1e-5, err_msg=f"{text!r}")


def test_padding_never_leaks_with_tiny_batches(tiny_model, texts):
    long_text = " ".join(["wonderful"] * 40)
    mixed = texts + [long_text]
    small = BertVectorizer(tiny_model, pooling="max", batch_size=1).fit_transform(mixed)
    big = BertVectorizer(tiny_model, pooling="max", batch_size=64, max_batch_tokens=None).fit_transform(mixed)
    np.testing.assert_allclose(small, big, atol=1e-5)


def test_layer_zero_is_embedding_output(tiny_model, texts):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModel.from_pretrained(tiny_model).eval()
    vec = BertVectorizer(tiny_model, layers=0, pooling="mean").fit(texts)
    got = vec.transform(texts[:2])
    for row, text in zip(got, texts[:2]):
        enc = tok([text], return_tensors="pt")
        with torch.no_grad():
            emb = model.embeddings(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"])
        np.testing.assert_allclose(row, emb[0].mean(0).numpy(), atol=1e-5)


def test_layer_aggregations(tiny_model, texts):
    single = [BertVectorizer(tiny_model, layers=i).fit_transform(texts) for i in (0, 1, 2)]
    concat = BertVectorizer(tiny_model, layers=[0, 1, 2], layer_agg="concat").fit_transform(texts)
    np.testing.assert_allclose(concat, np.hstack(single), atol=1e-6)
    every = BertVectorizer(tiny_model, layers="all", layer_agg="concat").fit_transform(texts)
    np.testing.assert_allclose(every, concat, atol=1e-6)
    mean = BertVectorizer(tiny_model, layers=[0, 1, 2], layer_agg="mean").fit_transform(texts)
    np.testing.assert_allclose(mean, np.mean(single, axis=0), atol=1e-5)
    raw = [0.5, -1.0, 2.0]
    vec = BertVectorizer(tiny_model, layers=[0, 1, 2], layer_agg="weighted", layer_weights=raw)
    weighted = vec.fit_transform(texts)
    w = np.exp(raw) / np.exp(raw).sum()
    np.testing.assert_allclose(vec.layer_weights_, w)
    np.testing.assert_allclose(weighted, np.einsum("l,lnd->nd", w, np.array(single)), atol=1e-5)
    neg = BertVectorizer(tiny_model, layers=[-3, -1]).fit(texts)
    assert neg.layers_ == [0, 2]


def test_layer_out_of_range_names_layer_count(tiny_model, texts):
    with pytest.raises(ValueError, match="has 2 layers.*3 entries"):
        BertVectorizer(tiny_model, layers=3).fit(texts)
    with pytest.raises(ValueError, match="out of range"):
        BertVectorizer(tiny_model, layers=[0, -4]).fit(texts)


def test_weighted_needs_one_weight_per_layer(tiny_model, texts):
    with pytest.raises(ValueError, match="layer_weights must hold 2"):
        BertVectorizer(tiny_model, layers=[1, 2], layer_agg="weighted", layer_weights=[1.0]).fit(texts)


def test_whitening_gives_zero_mean_identity_covariance(tiny_model):
    from skbert._testing import TINY_WORDS

    rng = np.random.RandomState(0)
    train = [" ".join(rng.choice(TINY_WORDS, rng.randint(2, 9))) for _ in range(200)]
    vec = BertVectorizer(tiny_model, whitening="whiten")
    Z = vec.fit_transform(train).astype(np.float64)
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-4)
    # LayerNorm output of a random model has zero mean over its hidden units,
    # so the mean-pooled covariance has rank 31 of 32: that direction maps to 0.
    var = vec.whitener_.explained_variance_
    k = int((var > 1e-8 * var.max()).sum())
    assert k == 31
    np.testing.assert_allclose(np.cov(Z[:, :k], rowvar=False), np.eye(k), atol=1e-4)
    np.testing.assert_array_equal(Z[:, k:], 0)
    # n_components keeps the top directions
    vec8 = BertVectorizer(tiny_model, whitening="whiten", n_components=8)
    assert vec8.fit_transform(train).shape == (200, 8)
    assert vec8.get_feature_names_out().shape == (8,)


def test_whitening_is_learned_from_fit_texts_only(tiny_model, texts):
    train, test_a = texts[:5], texts[5:]
    test_b = ["completely different words here", "dog cat car house"]
    raw = BertVectorizer(tiny_model)
    F_train = raw.fit_transform(train).astype(np.float64)
    for method in ("center", "whiten", "abtt"):
        vec = BertVectorizer(tiny_model, whitening=method).fit(train)
        np.testing.assert_allclose(vec.whitener_.mean_, F_train.mean(0), atol=1e-6)
        before = vec.transform(test_a)
        vec.transform(test_b)  # transforming other data learns nothing
        np.testing.assert_allclose(vec.transform(test_a), before)
        np.testing.assert_allclose(vec.whitener_.mean_, F_train.mean(0), atol=1e-6)
    centred = BertVectorizer(tiny_model, whitening="center").fit(train).transform(test_a)
    np.testing.assert_allclose(centred, raw.transform(test_a) - F_train.mean(0), atol=1e-5)


def test_abtt_removes_top_directions(tiny_model, texts):
    vec = BertVectorizer(tiny_model, whitening="abtt", n_components=2)
    Z = vec.fit_transform(texts).astype(np.float64)
    top = vec.whitener_.top_directions_
    np.testing.assert_allclose(Z @ top.T, 0, atol=1e-4)
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-5)


def test_whitening_survives_rank_zero_covariance(tiny_model, texts):
    # Layer 0's [CLS] vector is the same for every text: covariance of rank 0.
    for method in ("center", "whiten", "abtt"):
        vec = BertVectorizer(tiny_model, layers=0, pooling="cls", whitening=method, normalize=True)
        Z = vec.fit_transform(texts)
        assert np.all(np.isfinite(Z))
        assert np.all(np.isfinite(vec.transform(["something new"])))


def test_normalize_gives_unit_vectors(tiny_model, texts):
    Z = BertVectorizer(tiny_model, normalize=True, whitening="center").fit_transform(texts)
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1, atol=1e-5)


def test_scalar_mix_requires_y(tiny_model, texts):
    with pytest.raises(ValueError, match="scalar_mix.*fit\\(X, y\\)"):
        BertVectorizer(tiny_model, layers="all", layer_agg="scalar_mix").fit(texts)


def test_scalar_mix_favours_the_informative_layer():
    from skbert._extraction.assembly import fit_scalar_mix

    rng = np.random.RandomState(0)
    n, dim = 300, 16
    y = rng.randint(0, 2, n)
    pooled = rng.normal(size=(n, 3, dim))
    pooled[:, 1, 0] += 3.0 * (2 * y - 1)  # only layer 1 carries the label
    weights, gamma = fit_scalar_mix(pooled, y, random_state=0)
    assert weights.argmax() == 1
    assert weights[1] > 0.5
    np.testing.assert_allclose(weights.sum(), 1.0)
    assert gamma > 0


def test_scalar_mix_end_to_end(tiny_model, texts):
    y = [0, 1, 0, 1, 0, 1, 0, 1]
    vec = BertVectorizer(tiny_model, layers="all", layer_agg="scalar_mix", random_state=0)
    Z = vec.fit_transform(texts, y)
    assert vec.layer_weights_.shape == (3,)
    np.testing.assert_allclose(vec.layer_weights_.sum(), 1.0)
    assert Z.shape == (8, 32)
    pooled = BertVectorizer(tiny_model, layers="all", layer_agg="concat").fit_transform(texts)
    manual = vec.gamma_ * np.einsum("l,nld->nd", vec.layer_weights_, pooled.reshape(8, 3, 32))
    np.testing.assert_allclose(Z, manual, atol=1e-5)
    np.testing.assert_allclose(vec.transform(texts), Z, atol=1e-6)


# ---------------------------------------------------------------- input
@pytest.mark.parametrize(
    "bad, match",
    [
        ("a bare string", "Iterable over raw text documents expected, string object received"),
        (["ok", None], "index 1 is missing"),
        (["ok", "fine", float("nan")], "index 2 is missing"),
        (np.array([["a", "b"], ["c", "d"]]), r"shape \(2, 2\)"),
    ],
)
def test_bad_input_errors(tiny_model, bad, match):
    vec = BertVectorizer(tiny_model).fit(["x"])
    with pytest.raises(ValueError, match=match):
        vec.transform(bad)


def test_non_string_element_is_a_type_error(tiny_model):
    vec = BertVectorizer(tiny_model).fit(["x"])
    with pytest.raises(TypeError, match="index 1 is int"):
        vec.transform(["ok", 3])


def test_accepted_input_containers(tiny_model, texts):
    pd = pytest.importorskip("pandas")
    vec = BertVectorizer(tiny_model).fit(texts)
    want = vec.transform(texts)
    for X in (
        tuple(texts),
        np.array(texts, dtype=object),
        np.array(texts),
        pd.Series(texts, index=range(10, 18)),
        pd.DataFrame({"text": texts}),
        np.array(texts, dtype=object)[:, None],
    ):
        np.testing.assert_allclose(vec.transform(X), want, atol=1e-6)
    with pytest.raises(ValueError, match=r"DataFrame of shape \(8, 2\)"):
        vec.transform(pd.DataFrame({"a": texts, "b": texts}))


def test_empty_string_and_empty_input(tiny_model):
    for pooling in POOLINGS:
        vec = BertVectorizer(tiny_model, pooling=pooling, exclude_special_tokens=True).fit(["x"])
        assert np.all(np.isfinite(vec.transform([""])))
        assert vec.transform([]).shape == (0, vec.get_feature_names_out().shape[0])


def test_duplicates_encoded_once(tiny_model, texts):
    from skbert._model.backend import forward_counts

    vec = BertVectorizer(tiny_model, batch_size=1).fit(texts)
    before = forward_counts()["texts"]
    Z = vec.transform(texts + texts[::-1])
    assert forward_counts()["texts"] - before == len(set(texts))
    np.testing.assert_array_equal(Z[: len(texts)], Z[len(texts) :][::-1])


def test_truncation_to_max_length(tiny_model):
    long_a = "good " * 100 + "bad"
    long_b = "good " * 100 + "awful"
    from skbert import TruncationWarning

    vec = BertVectorizer(tiny_model, max_length=16).fit(["x"])
    with pytest.warns(TruncationWarning, match="2 of 2 unique texts"):
        a, b = vec.transform([long_a, long_b])
    np.testing.assert_allclose(a, b)  # the differing tail was cut
    assert vec.max_length_ == 16
    with pytest.raises(ValueError, match="exceeds the model's limit of 128"):
        BertVectorizer(tiny_model, max_length=1000).fit(["x"])
    assert BertVectorizer(tiny_model).fit(["x"]).max_length_ == 128


def test_progress_bar(tiny_model, texts, capsys):
    BertVectorizer(tiny_model, verbose=True).fit_transform(texts)
    assert "BERT features" in capsys.readouterr().err


def test_reduced_precision_stays_close(tiny_model, texts):
    ref = BertVectorizer(tiny_model, layers="all").fit_transform(texts)
    bf16 = BertVectorizer(tiny_model, layers="all", dtype="bfloat16").fit_transform(texts)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, ref, atol=0.1)
    assert not np.array_equal(bf16, ref)


def test_device_auto_resolves(tiny_model):
    vec = BertVectorizer(tiny_model).fit(["x"])
    expected = "cuda" if torch.cuda.is_available() else vec.device_
    assert vec.device_ == expected
    assert vec.device == "auto"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(tiny_model, texts):
    cpu = BertVectorizer(tiny_model, device="cpu", layers="all").fit_transform(texts)
    gpu = BertVectorizer(tiny_model, device="cuda", layers="all").fit_transform(texts)
    np.testing.assert_allclose(cpu, gpu, atol=1e-4)


def test_softmax_helper():
    np.testing.assert_allclose(softmax([0.0, 0.0]), [0.5, 0.5])
    np.testing.assert_allclose(softmax([1000.0, 0.0]), [1.0, 0.0])
