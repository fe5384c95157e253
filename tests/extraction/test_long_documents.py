"""Long documents through BertVectorizer: chunking, aggregation, truncation warning, cache."""

import warnings

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from skbert import BertVectorizer, TruncationWarning
from skbert._extraction.chunking import split_documents
from skbert._model.backend import forward_counts

WORDS = "good bad movie film story plot actor music scene day".split()


def _doc(n_words, seed=0):
    rng = np.random.RandomState(seed)
    return " ".join(rng.choice(WORDS, n_words))


def _window_vectors(model_path, windows, pooling):
    """Pool each window by hand with the model (no skbert code involved)."""
    model = AutoModel.from_pretrained(model_path).eval()
    rows, weights = [], []
    for ids, special in windows:
        with torch.no_grad():
            h = model(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy()
        rows.append(h.mean(0) if pooling == "mean" else h.max(0))
        weights.append(len(ids) - sum(special))
    return np.array(rows, dtype=np.float64), np.array(weights, dtype=np.float64)


def test_split_documents_token_exact(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    text = _doc(100)
    content = tok(text, add_special_tokens=False)["input_ids"]
    assert len(content) == 100  # one token per word in the tiny vocabulary
    windows = split_documents(tok, [text], chunk_size=22, chunk_overlap=5)[0]
    cls, sep = tok.cls_token_id, tok.sep_token_id
    pieces = []
    for ids, special in windows:
        assert len(ids) <= 22
        assert ids[0] == cls and ids[-1] == sep
        assert special == (1,) + (0,) * (len(ids) - 2) + (1,)
        pieces.append(list(ids[1:-1]))
    # 20 content tokens per window, stride 15: ceil((100 - 5) / 15) windows
    assert len(windows) == 7
    assert [len(p) for p in pieces] == [20] * 6 + [10]
    rebuilt = pieces[0] + [t for p in pieces[1:] for t in p[5:]]
    assert rebuilt == content


def test_windows_keep_word_pieces_together(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    text = " ".join(["xyzzy"] * 12)  # x ##y ##z ##z ##y: 5 pieces a word
    windows = split_documents(tok, [text], chunk_size=14, chunk_overlap=0)[0]
    for ids, _ in windows:
        content = tok.convert_ids_to_tokens(list(ids[1:-1]))
        assert content[0] == "x" and not content[0].startswith("##")
        assert len(content) == 10  # 2 whole words in 12 content slots
    assert len(windows) == 6


def test_short_text_gives_the_truncate_result(tiny_model, texts):
    trunc = BertVectorizer(tiny_model, layers="all", pooling="mean_max").fit_transform(texts)
    for agg in ("mean", "token_mean", "max", "first"):
        chunk = BertVectorizer(
            tiny_model, layers="all", pooling="mean_max", long_text="chunk", chunk_agg=agg
        ).fit_transform(texts)
        np.testing.assert_array_equal(chunk, trunc)


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_aggregations_match_hand_computation(tiny_model, pooling):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    doc = _doc(70, seed=1) + " xyzzy quite"
    windows = split_documents(tok, [doc], chunk_size=24, chunk_overlap=3)[0]
    assert len(windows) >= 3
    V, w = _window_vectors(tiny_model, windows, pooling)
    expected = {
        "mean": V.mean(0),
        "token_mean": (w[:, None] * V).sum(0) / w.sum(),
        "max": V.max(0),
        "first": V[0],
    }
    for agg, want in expected.items():
        vec = BertVectorizer(
            tiny_model, pooling=pooling, long_text="chunk", chunk_size=24,
            chunk_overlap=3, chunk_agg=agg,
        )
        np.testing.assert_allclose(vec.fit_transform([doc])[0], want, atol=1e-5, err_msg=agg)


def test_truncation_warning_counts_cut_texts(tiny_model, texts):
    docs = texts + [_doc(200, 1), _doc(300, 2), _doc(30, 3)]
    vec = BertVectorizer(tiny_model).fit(["x"])
    with pytest.warns(TruncationWarning, match=r"^2 of 11 unique texts are longer than max_length=128"):
        vec.transform(docs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)
        vec.transform(texts)  # nothing cut, no warning
        BertVectorizer(tiny_model, long_text="chunk").fit_transform(docs)


def test_chunking_with_cache_equals_fresh_and_agg_needs_no_forward(tiny_model, texts, tmp_path):
    docs = texts + [_doc(300, 4), _doc(150, 5)]
    fresh = BertVectorizer(tiny_model, long_text="chunk", chunk_size=40, chunk_overlap=8).fit_transform(docs)
    vec = BertVectorizer(tiny_model, long_text="chunk", chunk_size=40, chunk_overlap=8, memory=str(tmp_path))
    before = forward_counts()["texts"]
    cold = vec.fit_transform(docs)
    after_cold = forward_counts()["texts"]
    assert after_cold > before
    np.testing.assert_array_equal(cold, fresh)
    for agg in ("token_mean", "max", "first"):
        vec.set_params(chunk_agg=agg)
        vec.fit_transform(docs)
        assert vec.last_cache_stats_["misses"] == 0
    assert forward_counts()["texts"] == after_cold
    vec.set_params(chunk_overlap=4)  # new windows: computed
    vec.fit_transform(docs)
    assert forward_counts()["texts"] > after_cold


def test_chunk_parameters_are_validated(tiny_model):
    with pytest.raises(ValueError, match="chunk_size=500 exceeds the model's limit of 128"):
        BertVectorizer(tiny_model, long_text="chunk", chunk_size=500).fit(["x"])
    with pytest.raises(ValueError, match="chunk_overlap=8 must be smaller than the 8 content tokens"):
        BertVectorizer(tiny_model, long_text="chunk", chunk_size=10, chunk_overlap=8).fit(["x"])
    with pytest.raises(ValueError, match="The 'chunk_agg' parameter"):
        BertVectorizer(tiny_model, long_text="chunk", chunk_agg="median").fit(["x"])
    vec = BertVectorizer(tiny_model, long_text="chunk", max_length=64).fit(["x"])
    assert vec.chunk_size_ == 64


def test_chunk_parameters_are_grid_searchable(tiny_model):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    X = [_doc(60, s) + (" good great" if s % 2 else " bad awful") for s in range(12)]
    y = [s % 2 for s in range(12)]
    pipe = Pipeline([("bert", BertVectorizer(tiny_model, long_text="chunk")), ("clf", LogisticRegression())])
    grid = GridSearchCV(
        pipe,
        {"bert__chunk_size": [16, 32], "bert__chunk_agg": ["mean", "max"], "bert__chunk_overlap": [0, 4]},
        cv=2,
        error_score="raise",
    ).fit(X, y)
    assert len(grid.cv_results_["params"]) == 8


def test_cache_stats_cover_every_block_of_documents(tiny_model, tmp_path, monkeypatch):
    from skbert._extraction import chunking as _chunking

    monkeypatch.setattr(_chunking, "DOC_BLOCK", 3)  # 8 documents -> 3 blocks
    docs = [_doc(90, seed) for seed in range(8)]
    tok = AutoTokenizer.from_pretrained(tiny_model)
    windows = {w for doc in split_documents(tok, docs, chunk_size=32, chunk_overlap=0) for w in doc}
    vec = BertVectorizer(tiny_model, long_text="chunk", chunk_size=32, memory=str(tmp_path))
    vec.fit_transform(docs)
    assert vec.last_cache_stats_["misses"] == len(windows)
    assert vec.last_cache_stats_["hits"] == 0
    vec.fit_transform(docs)
    assert vec.last_cache_stats_["hits"] == len(windows)
    assert vec.last_cache_stats_["misses"] == 0
