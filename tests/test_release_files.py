"""Files written by an earlier release load and give the outputs they gave then.

The files in ``tests/data/release-*`` were written by
``tests/data/make_release_files.py`` with that release installed: pickles and a
skops file of fitted estimators on the seeded tiny BERT, and the outputs those
estimators gave. Moving a class to another module breaks them; this test says so.
"""

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

from skbert import SKOPS_TRUSTED_TYPES

DATA = Path(__file__).parent / "data"
RELEASES = sorted(DATA.glob("release-*"))


def _writer():
    spec = importlib.util.spec_from_file_location("make_release_files", DATA / "make_release_files.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TEXTS = _writer().TEXTS


@pytest.fixture(params=RELEASES, ids=lambda p: p.name)
def release(request):
    return request.param


def _outputs(release):
    with np.load(release / "outputs.npz") as data:
        return dict(data)


def test_there_is_a_release_to_load():
    assert RELEASES, "tests/data holds no release files"


def test_vectorizer_pickle_with_stored_weights(release, private_cache):
    vec = pickle.loads((release / "vectorizer.pkl").read_bytes())
    np.testing.assert_allclose(
        vec.transform(TEXTS), _outputs(release)["vectorizer"], rtol=0, atol=1e-5
    )


def test_pipeline_skops_file_with_the_trusted_types(release, private_cache):
    sio = pytest.importorskip("skops.io")
    path = release / "pipeline.skops"
    untrusted = set(sio.get_untrusted_types(file=path))
    assert untrusted <= set(SKOPS_TRUSTED_TYPES)
    pipe = sio.load(path, trusted=SKOPS_TRUSTED_TYPES)
    np.testing.assert_allclose(
        pipe.predict_proba(TEXTS), _outputs(release)["pipeline"], rtol=0, atol=1e-5
    )


def test_selector_and_classifier_pickles(release, tiny_model, private_cache):
    # Their model is the seeded tiny BERT, saved again here (the same weights).
    selector = pickle.loads((release / "selector.pkl").read_bytes())
    selector.set_params(model_name=tiny_model)
    selector.vectorizer_.set_params(model_name=tiny_model)
    np.testing.assert_allclose(
        selector.transform(TEXTS), _outputs(release)["selector"], rtol=0, atol=1e-5
    )
    clf = pickle.loads((release / "classifier.pkl").read_bytes())
    # Parameters added since take the values it was fitted with.
    params = clf.get_params()
    assert (params["min_steps"], params["head_init"], params["class_weight"]) == (0, "random", None)
    assert params["contrastive_steps"] == 0
    clf.set_params(model_name=tiny_model)
    np.testing.assert_allclose(
        clf.predict_proba(TEXTS), _outputs(release)["classifier"], rtol=0, atol=1e-5
    )
