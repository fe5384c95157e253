"""Write the pickles and skops files that ``tests/test_release_files.py`` loads.

Run once per release that changes where classes live, with that release
installed: ``python tests/data/make_release_files.py tests/data/release-<version>``.
The files hold fitted estimators on the seeded tiny BERT (weights stored in
the vectorizer's pickle) and the outputs they gave when they were written, so
a later release must load them and give the same outputs.
"""

import pickle
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import skbert
from skbert import BertClassifier, BertLayerSelector, BertVectorizer
from skbert._testing import make_tiny_model

TEXTS = [
    "the movie was good",
    "a bad film with a dull plot",
    "what a wonderful story",
    "i hate this boring movie",
    "the best actor and the worst scene",
    "they love the music very much",
    "one two three",
    "a dull and boring story",
]
LABELS = np.array([1, 0, 1, 0, 1, 1, 0, 0])


def main(out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = str(make_tiny_model(Path(tempfile.mkdtemp()) / "tiny", "bert", seed=0))
    outputs = {}

    vec = BertVectorizer(
        model, layers=[1, 2], layer_agg="scalar_mix", pooling="mean_max",
        whitening="whiten", store_weights_in_pickle=True,
    ).fit(TEXTS, LABELS)
    outputs["vectorizer"] = vec.transform(TEXTS)
    (out / "vectorizer.pkl").write_bytes(pickle.dumps(vec))

    pipe = make_pipeline(
        BertVectorizer(model, layers=-1, pooling="cls", store_weights_in_pickle=True),
        LogisticRegression(max_iter=500),
    ).fit(TEXTS, LABELS)
    outputs["pipeline"] = pipe.predict_proba(TEXTS)
    import skops.io as sio

    sio.dump(pipe, out / "pipeline.skops")

    selector = BertLayerSelector(
        model, layers=[0, 1, 2], pooling="mean", whitening="center", cv=2
    ).fit(TEXTS, LABELS)
    outputs["selector"] = selector.transform(TEXTS)
    (out / "selector.pkl").write_bytes(pickle.dumps(selector))

    clf = BertClassifier(model, epochs=1, min_steps=0, batch_size=4, random_state=0).fit(TEXTS, LABELS)
    outputs["classifier"] = clf.predict_proba(TEXTS)
    (out / "classifier.pkl").write_bytes(pickle.dumps(clf))

    np.savez(out / "outputs.npz", **outputs)
    (out / "VERSION").write_text(skbert.__version__ + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
