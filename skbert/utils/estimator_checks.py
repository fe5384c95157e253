"""scikit-learn's common estimator checks, written out for text input.

:func:`sklearn.utils.estimator_checks.check_estimator` feeds numeric arrays,
so for an estimator tagged ``input_tags.string`` nearly every data-dependent
check is skipped or fails for the wrong reason. This module runs the
applicable checks on texts instead, as imbalanced-learn ships its own:

* scikit-learn's data-free checks (cloning, ``get_params`` / ``set_params``,
  ``__init__`` that only stores, ``repr``, tags, parameter validation);
* text versions of the data-dependent ones: ``fit`` returns self, raises on
  zero texts and is idempotent, prediction methods do not change
  ``__dict__``, pickling and cloning give identical results, order and subset
  invariance, feature names matching the output, float32 output and the
  ``preserves_dtype`` tag, ``set_output`` (pandas, polars), no mutation of the
  input, equal results on every accepted container, rejection of unordered
  containers, NotFittedError before ``fit``.

A check that does not apply to an estimator (``transform`` checks on a
classifier, polars when polars is missing) raises :class:`unittest.SkipTest`
with the reason; pytest reports it as a skip.

Examples
--------
In a test module::

    from skbert import BertVectorizer
    from skbert.utils.estimator_checks import parametrize_with_text_checks

    @parametrize_with_text_checks([BertVectorizer("path/to/model", pooling="cls")])
    def test_text_estimators(estimator, check):
        check(estimator)

or in one call, returning what passed and what was skipped::

    from skbert.utils.estimator_checks import check_text_estimator

    check_text_estimator(BertVectorizer("path/to/model"))
"""

import functools
import pickle
import warnings
from unittest import SkipTest

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import NotFittedError, SkipTestWarning
from sklearn.utils import estimator_checks as _sk

__all__ = [
    "TEXTS",
    "LABELS",
    "check_text_estimator",
    "parametrize_with_text_checks",
]

#: Default training texts of the checks: short, with a duplicate, an empty
#: string and non-ASCII characters.
TEXTS = (
    "a good movie",
    "a great film with a fine plot",
    "I really enjoy this story",
    "what a wonderful actor",
    "the best music of the year",
    "a very nice book, I love it",
    "a bad movie",
    "an awful film with a dull plot",
    "I really hate this story",
    "what a terrible actor",
    "the worst music of the year",
    "a boring book — sad and poor",
    "a good movie",
    "",
)

#: Default binary targets, one per text of :data:`TEXTS`.
LABELS = (1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0)

_PREDICTION_METHODS = ("transform", "predict", "predict_proba", "decision_function", "predict_log_proba")

# scikit-learn checks that need no data: they run as they are.
_SKLEARN_DATA_FREE = (
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_no_attributes_set_in_init",
    "check_get_params_invariance",
    "check_set_params",
    "check_parameters_default_constructible",
    "check_estimator_tags_renamed",
    "check_valid_tag_types",
    "check_mixin_order",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_param_validation",
)


# ------------------------------------------------------------------ helpers
def _name(estimator):
    return type(estimator).__name__


def _tags(estimator):
    from sklearn.utils import get_tags

    return get_tags(estimator)


def _prepared(estimator):
    """An unfitted clone with a fixed random_state (as sklearn's checks do)."""
    est = clone(estimator)
    if "random_state" in est.get_params() and est.get_params()["random_state"] is None:
        est.set_params(random_state=0)
    return est


def _methods(estimator):
    return [m for m in _PREDICTION_METHODS if hasattr(estimator, m)]


def _outputs(estimator, X):
    """Every prediction method's output on X, as float64 / object arrays."""
    out = {}
    for method in _methods(estimator):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # log(0) of predict_log_proba
            out[method] = np.asarray(getattr(estimator, method)(X))
    return out


def _assert_outputs_close(got, want, *, exact=False, msg=""):
    assert got.keys() == want.keys(), msg
    for method, a in want.items():
        b = got[method]
        assert a.shape == b.shape, f"{msg} {method}: shape {b.shape} != {a.shape}"
        if exact or not np.issubdtype(a.dtype, np.floating):
            np.testing.assert_array_equal(b, a, err_msg=f"{msg} {method}")
        else:
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5, err_msg=f"{msg} {method}")


def _require_transformer(estimator):
    if not hasattr(estimator, "transform"):
        raise SkipTest(f"{_name(estimator)} has no transform: the check is about transformers.")


def _fitted(estimator, X, y):
    return _prepared(estimator).fit(list(X), list(y))


# ------------------------------------------------------------ text checks
def check_text_not_fitted(name, estimator, X, y):
    """Prediction methods raise NotFittedError before fit."""
    est = _prepared(estimator)
    for method in _methods(est):
        try:
            getattr(est, method)(list(X))
        except NotFittedError:
            continue
        raise AssertionError(f"{name}.{method} before fit did not raise NotFittedError.")


def check_text_fit_returns_self(name, estimator, X, y):
    est = _prepared(estimator)
    assert est.fit(list(X), list(y)) is est, f"{name}.fit does not return self."


def check_text_fit_empty(name, estimator, X, y):
    """fit on zero texts raises ValueError, in scikit-learn's words."""
    import re

    est = _prepared(estimator)
    try:
        est.fit([], [])
    except ValueError as exc:
        assert re.search(r"0 sample\(s\)", str(exc)), (
            f"{name}.fit([]) raised ValueError without scikit-learn's '0 sample(s)' "
            f"wording: {exc}"
        )
        return
    raise AssertionError(f"{name}.fit([]) did not raise a ValueError.")


def check_text_fit_idempotent(name, estimator, X, y):
    """Fitting twice on the same data gives the same predictions."""
    est = _prepared(estimator)
    first = _outputs(est.fit(list(X), list(y)), list(X))
    second = _outputs(est.fit(list(X), list(y)), list(X))
    _assert_outputs_close(second, first, msg=f"{name} refitted:")


def check_text_dict_unchanged(name, estimator, X, y):
    """Prediction methods leave the fitted estimator unchanged (and its joblib hash)."""
    import joblib

    est = _fitted(estimator, X, y)
    for method in _methods(est):
        before = dict(est.__dict__)
        digest = joblib.hash(est)
        getattr(est, method)(list(X))
        assert est.__dict__ == before, f"{name}.{method} changes __dict__."
        assert joblib.hash(est) == digest, f"{name}.{method} changes the fitted estimator's state."


def check_text_pickle_round_trip(name, estimator, X, y):
    """A pickled and unpickled fitted estimator predicts identically."""
    est = _fitted(estimator, X, y)
    want = _outputs(est, list(X))
    twin = pickle.loads(pickle.dumps(est))
    _assert_outputs_close(_outputs(twin, list(X)), want, exact=True, msg=f"{name} unpickled:")


def check_text_clone_equivalence(name, estimator, X, y):
    """A clone of a fitted estimator is unfitted, and refits to the same predictions."""
    from sklearn.utils.validation import check_is_fitted

    est = _fitted(estimator, X, y)
    want = _outputs(est, list(X))
    twin = clone(est)
    try:
        check_is_fitted(twin)
    except NotFittedError:
        pass
    else:
        raise AssertionError(f"A clone of a fitted {name} looks fitted.")
    assert twin.get_params() == est.get_params()
    _assert_outputs_close(_outputs(twin.fit(list(X), list(y)), list(X)), want, msg=f"{name} clone:")


def check_text_fit_transform(name, estimator, X, y):
    """fit_transform equals fit followed by transform."""
    _require_transformer(estimator)
    a = _prepared(estimator).fit_transform(list(X), list(y))
    b = _prepared(estimator).fit(list(X), list(y)).transform(list(X))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"{name}.fit_transform")


def check_text_feature_names_out(name, estimator, X, y):
    """get_feature_names_out names every output column, uniquely."""
    _require_transformer(estimator)
    est = _fitted(estimator, X, y)
    Z = est.transform(list(X))
    names = est.get_feature_names_out()
    assert isinstance(names, np.ndarray) and names.dtype == object
    assert Z.shape == (len(X), len(names)), f"{name}: {Z.shape} output for {len(names)} names"
    assert all(isinstance(n, str) for n in names) and len(set(names)) == len(names)


def check_text_output_dtype(name, estimator, X, y):
    """Output is float32, and the preserves_dtype tag says no input dtype is kept."""
    _require_transformer(estimator)
    est = _fitted(estimator, X, y)
    assert est.transform(list(X)).dtype == np.float32, f"{name}.transform is not float32"
    assert est.fit_transform(list(X), list(y)).dtype == np.float32
    preserves = _tags(est).transformer_tags.preserves_dtype
    assert preserves == [], (
        f"{name} takes texts, so it preserves no input dtype; its "
        f"transformer_tags.preserves_dtype is {preserves!r}, expected []."
    )


def check_text_order_invariance(name, estimator, X, y):
    """Predictions on permuted texts are the permuted predictions."""
    est = _fitted(estimator, X, y)
    texts = list(X)
    want = _outputs(est, texts)
    perm = np.random.RandomState(0).permutation(len(texts))
    got = _outputs(est, [texts[i] for i in perm])
    _assert_outputs_close(got, {m: v[perm] for m, v in want.items()}, msg=f"{name} permuted:")


def check_text_subset_invariance(name, estimator, X, y):
    """Predictions on each single text equal the rows of the whole batch."""
    est = _fitted(estimator, X, y)
    texts = list(X)
    want = _outputs(est, texts)
    for i in range(len(texts)):
        got = _outputs(est, texts[i : i + 1])
        _assert_outputs_close(got, {m: v[i : i + 1] for m, v in want.items()}, msg=f"{name} text {i}:")


def check_text_input_not_mutated(name, estimator, X, y):
    """fit and prediction methods do not modify the texts or targets they get."""
    texts, labels = list(X), list(y)
    containers = [list(texts), np.array(texts, dtype=object)]
    try:
        import pandas as pd

        containers.append(pd.Series(texts, index=np.arange(100, 100 + len(texts))))
    except ImportError:  # pragma: no cover
        pass
    for Xc in containers:
        copy = pickle.loads(pickle.dumps(Xc))
        y_arr = np.array(labels)
        y_copy = y_arr.copy()
        est = _prepared(estimator).fit(Xc, y_arr)
        _outputs(est, Xc)
        if isinstance(Xc, np.ndarray):
            np.testing.assert_array_equal(Xc, copy)
        elif hasattr(Xc, "equals"):
            assert Xc.equals(copy) and list(Xc.index) == list(copy.index)
        else:
            assert Xc == copy
        np.testing.assert_array_equal(y_arr, y_copy)


def check_text_input_containers(name, estimator, X, y):
    """Lists, tuples, arrays, Series and one-column frames give identical results."""
    est = _fitted(estimator, X, y)
    texts = list(X)
    want = _outputs(est, texts)
    containers = {
        "tuple": tuple(texts),
        "ndarray": np.array(texts),
        "object ndarray": np.array(texts, dtype=object),
        "one-column ndarray": np.array(texts, dtype=object)[:, None],
        "generator": (t for t in texts),
    }
    try:
        import pandas as pd

        containers["pandas Series"] = pd.Series(texts, index=np.arange(7, 7 + len(texts)))
        containers["pandas DataFrame"] = pd.DataFrame({"text": texts})
        containers["pandas string Series"] = pd.Series(texts, dtype="string")
    except ImportError:  # pragma: no cover
        pass
    try:
        import polars as pl

        containers["polars Series"] = pl.Series("text", texts)
        containers["polars DataFrame"] = pl.DataFrame({"text": texts})
    except ImportError:
        pass
    for kind, Xc in containers.items():
        if kind == "generator" and len(_methods(est)) > 1:
            Xc = list(Xc)
        _assert_outputs_close(_outputs(est, Xc), want, exact=True, msg=f"{name} on a {kind}:")


def check_text_unordered_input_rejected(name, estimator, X, y):
    """Sets and dicts (undefined or ambiguous order) are refused with a TypeError."""
    texts = list(dict.fromkeys(X))
    mapping = {i: t for i, t in enumerate(texts)}
    est = _prepared(estimator)
    for bad in (set(texts), frozenset(texts), mapping, mapping.values()):
        try:
            est.fit(bad, list(y)[: len(texts)])
        except TypeError as exc:
            assert "order" in str(exc), f"{name}: unhelpful message {exc}"
            continue
        raise AssertionError(f"{name}.fit accepted a {type(bad).__name__}.")


def check_text_set_output_pandas(name, estimator, X, y):
    """set_output(transform="pandas") gives a DataFrame with feature names and the input's index."""
    _require_transformer(estimator)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        raise SkipTest("pandas is not installed.") from None
    est = _prepared(estimator).set_output(transform="pandas")
    Xs = pd.Series(list(X), index=np.arange(50, 50 + len(X)))
    Z = est.fit_transform(Xs, list(y))
    assert isinstance(Z, pd.DataFrame), f"{name}.fit_transform gave {type(Z).__name__}"
    assert list(Z.columns) == list(est.get_feature_names_out())
    assert list(Z.index) == list(Xs.index)
    assert isinstance(est.transform(Xs), pd.DataFrame)


def check_text_set_output_polars(name, estimator, X, y):
    """set_output(transform="polars") gives a polars DataFrame with feature names."""
    _require_transformer(estimator)
    try:
        import polars as pl
    except ImportError:
        raise SkipTest("polars is not installed.") from None
    est = _prepared(estimator).set_output(transform="polars")
    Z = est.fit_transform(pl.DataFrame({"text": list(X)}), list(y))
    assert isinstance(Z, pl.DataFrame), f"{name}.fit_transform gave {type(Z).__name__}"
    assert Z.columns == list(est.get_feature_names_out())


def check_text_y_length_mismatch(name, estimator, X, y):
    """Supervised fit refuses targets of another length."""
    est = _prepared(estimator)
    if not _tags(est).target_tags.required:
        raise SkipTest(f"{name} does not require y.")
    try:
        est.fit(list(X), list(y)[:-1])
    except ValueError:
        return
    raise AssertionError(f"{name}.fit accepted {len(y) - 1} targets for {len(X)} texts.")


def check_text_classifier_outputs(name, estimator, X, y):
    """Labels come from classes_, probabilities sum to one, scores agree with predict."""
    from sklearn.base import is_classifier

    if not is_classifier(estimator):
        raise SkipTest(f"{name} is not a classifier.")
    labels = np.where(np.asarray(y) == 1, "pos", "neg")  # string labels
    est = _prepared(estimator).fit(list(X), labels)
    assert list(est.classes_) == ["neg", "pos"]
    pred = est.predict(list(X))
    assert pred.shape == (len(X),) and set(pred) <= set(est.classes_)
    if hasattr(est, "predict_proba"):
        proba = est.predict_proba(list(X))
        assert proba.shape == (len(X), 2)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
        np.testing.assert_array_equal(est.classes_[proba.argmax(axis=1)], pred)
    if hasattr(est, "decision_function"):
        scores = est.decision_function(list(X))
        np.testing.assert_array_equal(est.classes_[(scores > 0).astype(int)], pred)


_TEXT_CHECKS = (
    check_text_not_fitted,
    check_text_fit_returns_self,
    check_text_fit_empty,
    check_text_fit_idempotent,
    check_text_dict_unchanged,
    check_text_pickle_round_trip,
    check_text_clone_equivalence,
    check_text_fit_transform,
    check_text_feature_names_out,
    check_text_output_dtype,
    check_text_order_invariance,
    check_text_subset_invariance,
    check_text_input_not_mutated,
    check_text_input_containers,
    check_text_unordered_input_rejected,
    check_text_set_output_pandas,
    check_text_set_output_polars,
    check_text_y_length_mismatch,
    check_text_classifier_outputs,
)


def _sklearn_check(check_name):
    check = getattr(_sk, check_name)

    @functools.wraps(check)
    def run(name, estimator, X, y):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            check(name, estimator)

    return run


def _yield_text_checks(estimator, X=None, y=None):
    """Each applicable check, as a callable ``check(estimator)``."""
    X = TEXTS if X is None else X
    y = LABELS if y is None else y
    X, y = list(X), list(y)
    for check_name in _SKLEARN_DATA_FREE:
        if hasattr(_sk, check_name):  # they come and go across sklearn versions
            yield _bind(_sklearn_check(check_name), X, y)
    for check in _TEXT_CHECKS:
        yield _bind(check, X, y)


def _bind(check, X, y):
    @functools.wraps(check)
    def bound(estimator):
        return check(_name(estimator), estimator, X, y)

    return bound


def check_text_estimator(estimator, *, X=None, y=None, on_skip="warn"):
    """Run every applicable common check on ``estimator`` with text data.

    Parameters
    ----------
    estimator : estimator object
        An unfitted estimator taking texts (tagged ``input_tags.string``).
        Checks work on clones, with ``random_state=0`` when the estimator
        has a ``random_state`` left to None.
    X : sequence of str, default=None
        Training texts; None means :data:`TEXTS`.
    y : sequence, default=None
        Binary targets, one per text; None means :data:`LABELS`.
    on_skip : {"warn", None}, default="warn"
        Warn (:class:`~sklearn.exceptions.SkipTestWarning`) for each check
        that does not apply, or stay silent.

    Returns
    -------
    results : dict of str to str
        Each check's name and ``"passed"`` or ``"skipped: <reason>"``.

    Raises
    ------
    AssertionError
        At the first check that fails (its name in the message).
    """
    results = {}
    for check in _yield_text_checks(estimator, X, y):
        name = check.__name__
        try:
            check(estimator)
        except SkipTest as exc:
            results[name] = f"skipped: {exc}"
            if on_skip == "warn":
                warnings.warn(f"{name} skipped for {_name(estimator)}: {exc}", SkipTestWarning, stacklevel=2)
        except AssertionError as exc:
            raise AssertionError(f"{name} failed for {_name(estimator)}: {exc}") from exc
        else:
            results[name] = "passed"
    return results


def parametrize_with_text_checks(estimators, *, X=None, y=None):
    """pytest decorator: one test per (estimator, applicable check).

    Parameters
    ----------
    estimators : list of estimator objects
        Unfitted estimators taking texts.
    X : sequence of str, default=None
        Training texts; None means :data:`TEXTS`.
    y : sequence, default=None
        Binary targets; None means :data:`LABELS`.

    Returns
    -------
    decorator : ``pytest.mark.parametrize("estimator, check", ...)``
        The test receives an estimator and a check and calls
        ``check(estimator)``; checks that do not apply raise
        :class:`unittest.SkipTest`, reported by pytest as skips.
    """
    import pytest

    params, ids = [], []
    for estimator in estimators:
        for check in _yield_text_checks(estimator, X, y):
            params.append((estimator, check))
            ids.append(f"{_name(estimator)}({_short_params(estimator)})-{check.__name__}")
    return pytest.mark.parametrize("estimator, check", params, ids=ids)


def _short_params(estimator):
    """The parameters that differ from the defaults, model path left out."""
    params = estimator.get_params(deep=False)
    try:
        defaults = type(estimator)().get_params(deep=False)
    except TypeError:  # required constructor arguments: show everything
        defaults = {}
    shown = [
        f"{k}={v!r}" for k, v in params.items() if k != "model_name" and repr(v) != repr(defaults.get(k))
    ]
    return ",".join(shown)
