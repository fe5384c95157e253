"""The real all-MiniLM-L6-v2 against sentence-transformers and STS-B."""

import csv

import numpy as np
import pytest

from skbert import BertVectorizer

pytestmark = pytest.mark.integration

SENTENCES = [
    "A man is playing a guitar.",
    "The new movie is awesome and I loved every minute of it!",
    "",
    "Stocks fell sharply on Monday as investors worried about rates.",
    "a",
]


def test_default_model_equals_sentence_transformers_encode(minilm_path):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(minilm_path, device="cpu")
    want = model.encode(SENTENCES, batch_size=2, convert_to_numpy=True, normalize_embeddings=False)
    # all-MiniLM-L6-v2's pipeline is mean pooling then L2 normalisation.
    got = BertVectorizer(layers=-1, pooling="mean", normalize=True).fit_transform(SENTENCES)
    assert got.shape == (5, 384)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_stsb_test_spearman(minilm_path, shared_data):
    from scipy.stats import spearmanr

    path = shared_data / "stsb" / "test.tsv"
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    scores = np.array([float(r[0]) for r in rows])
    vec = BertVectorizer(layers=-1, pooling="mean", normalize=True).fit(["x"])
    a = vec.transform([r[1] for r in rows])
    b = vec.transform([r[2] for r in rows])
    cosine = (a * b).sum(axis=1)
    rho = spearmanr(cosine, scores).correlation
    assert abs(rho - 0.8203) <= 0.001, rho
