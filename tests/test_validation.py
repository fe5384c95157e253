"""Input validation of texts (issue #12, item 7): check_texts and the estimators' fit/transform."""

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer

from skbert import BertClassifier, BertLayerSelector, BertVectorizer, probe_layers
from skbert._validation import check_texts

LABELS = [1, 0, 1, 0, 0, 0, 1, 1]


@pytest.mark.parametrize(
    "bad, kind",
    [
        ({"a", "b"}, "set"),
        (frozenset({"a", "b"}), "frozenset"),
        ({0: "a", 1: "b"}, "dict"),
        ({"a": 0, "b": 1}.keys(), "dict_keys"),
        ({0: "a", 1: "b"}.values(), "dict_values"),
        ({0: "a", 1: "b"}.items(), "dict_items"),
    ],
)
def test_unordered_containers_are_refused(bad, kind):
    with pytest.raises(TypeError, match=rf"got a {kind}, whose order is undefined or ambiguous"):
        check_texts(bad)


def test_fit_on_zero_texts_raises_like_sklearn(tiny_model):
    msg = r"Found array with 0 sample\(s\) \(shape=\(0,\)\) while a minimum of 1 is required by"
    with pytest.raises(ValueError, match=msg + " BertVectorizer"):
        BertVectorizer(tiny_model).fit([])
    with pytest.raises(ValueError, match=msg + " BertVectorizer"):
        BertVectorizer(tiny_model).fit_transform(np.array([], dtype=object))
    with pytest.raises(ValueError, match=msg + " BertClassifier"):
        BertClassifier(tiny_model, epochs=1).fit([], [])
    with pytest.raises(ValueError, match=msg + " BertLayerSelector"):
        BertLayerSelector(tiny_model).fit([], [])
    with pytest.raises(ValueError, match=msg + " probe_layers"):
        probe_layers([], [], model_name=tiny_model)


def test_transform_of_zero_texts_stays_allowed(tiny_model, texts):
    """As CountVectorizer.transform([]): an empty batch gives an empty matrix."""
    vec = BertVectorizer(tiny_model).fit(texts)
    assert vec.transform([]).shape == (0, 32)


@pytest.mark.parametrize("text, index, point, position", [
    ("\ud800abc", 0, "D800", 0),
    ("caf\u00e9 \udcff", 1, "DCFF", 5),
    ("\ud83d\ude00", 1, "D83D", 0),  # a surrogate *pair* left as two code points
])
def test_surrogates_are_named_with_their_index(tiny_model, text, index, point, position):
    texts = ["fine"] * index + [text]
    with pytest.raises(ValueError, match=rf"Text at index {index} holds the surrogate code point U\+{point} at position {position}"):
        check_texts(texts)
    with pytest.raises(ValueError, match=rf"index {index}"):
        BertVectorizer(tiny_model).fit(texts)


def test_non_ascii_text_without_surrogates_passes():
    texts = ["café", "日本語", "emoji 😀", "a\u0301"]
    assert check_texts(texts) == texts


@pytest.mark.parametrize("element", [["a", "b"], ("a",), np.array(["a"]), np.array([1.0, np.nan])])
def test_non_scalar_elements_are_not_strings_never_missing(element):
    with pytest.raises(TypeError, match=r"element at index 1 is an? \w+, not a string"):
        check_texts(["ok", element])


def test_pandas_series_element_is_not_a_string():
    pd = pytest.importorskip("pandas")
    with pytest.raises(TypeError, match="element at index 0 is a Series, not a string"):
        check_texts([pd.Series(["a", None])])
    with pytest.raises(ValueError, match=r"index 1 is missing \(<NA>\)"):
        check_texts(pd.Series(["a", pd.NA], dtype="string"))


def test_two_column_array_points_to_column_transformer():
    X = np.array([["a", "b"], ["c", "d"]], dtype=object)
    with pytest.raises(ValueError, match=r"shape \(2, 2\).*ColumnTransformer"):
        check_texts(X)


def test_polars_inputs(tiny_model, texts):
    pl = pytest.importorskip("polars")
    vec = BertVectorizer(tiny_model).fit(texts)
    want = vec.transform(texts)
    for X in (pl.Series("text", texts), pl.DataFrame({"text": texts})):
        np.testing.assert_array_equal(vec.transform(X), want)
    np.testing.assert_array_equal(BertVectorizer(tiny_model).fit_transform(pl.DataFrame({"text": texts})), want)
    with pytest.raises(ValueError, match=r"Text at index 2 is missing \(None\)"):
        vec.transform(pl.DataFrame({"text": ["a", "b", None]}))
    with pytest.raises(ValueError, match=r"DataFrame of shape \(8, 2\).*ColumnTransformer"):
        vec.transform(pl.DataFrame({"a": texts, "b": texts}))


def test_column_transformer_on_polars(tiny_model, texts):
    pl = pytest.importorskip("polars")
    df = pl.DataFrame({"text": texts, "n": np.arange(8.0)})
    want = BertVectorizer(tiny_model).fit_transform(texts)
    for columns in (["text"], "text"):
        ct = ColumnTransformer([("t", BertVectorizer(tiny_model), columns), ("num", "passthrough", ["n"])])
        Z = ct.fit_transform(df)
        assert Z.shape == (8, 33)
        np.testing.assert_allclose(Z[:, :32], want, atol=1e-6)
    ct = ColumnTransformer([("t", BertVectorizer(tiny_model), ["text"])]).set_output(transform="polars")
    out = ct.fit_transform(df)
    assert isinstance(out, pl.DataFrame) and out.columns[0] == "t__bertvectorizer0"


def test_engine_partitions_get_the_same_checks_as_estimators():
    # The engines' per-partition check shares the estimators' element rules and
    # names the partition and row instead of a global index.
    from skbert.engines._common import check_partition

    assert check_partition(["a", "b"], partition=0) == ["a", "b"]
    with pytest.raises(ValueError, match=r"row 1 of partition 3 \(index label 'x'\) holds the surrogate"):
        check_partition(["a", "\ud800b"], partition=3, labels=["w", "x"])
    with pytest.raises(TypeError, match=r"row 0 of a batch is a list, not a string"):
        check_partition([["a"]], partition=None, what="batch")
    with pytest.raises(ValueError, match=r"row 1 of partition 0 is missing \(nan\)"):
        check_partition(["a", float("nan")], partition=0)


def test_arrow_string_arrays(tiny_model, texts):
    """#19 item 17: Arrow arrays (HF datasets' with_format("arrow")) give the texts, not scalars."""
    pa = pytest.importorskip("pyarrow")
    vec = BertVectorizer(tiny_model).fit(texts)
    want = vec.transform(texts)
    half = len(texts) // 2
    for X in (
        pa.array(texts),
        pa.array(texts, type=pa.large_string()),
        pa.array(texts).dictionary_encode(),
        pa.chunked_array([texts[:half], texts[half:]]),
        pa.table({"text": texts}),
        list(pa.array(texts)),  # Arrow scalars
    ):
        assert check_texts(X) == texts
        np.testing.assert_array_equal(vec.transform(X), want)
    np.testing.assert_array_equal(BertVectorizer(tiny_model).fit_transform(pa.array(texts)), want)
    # A null is refused as None is, wherever it is.
    for X in (pa.array(["a", "b", None]), pa.chunked_array([["a", "b"], [None]]), [pa.scalar("a"), pa.scalar("b"), pa.scalar(None, pa.string())]):
        with pytest.raises(ValueError, match=r"Text at index 2 is missing \(None\)"):
            vec.transform(X)
    with pytest.raises(TypeError, match=r"element at index 0 is int \(1\), not a string"):
        check_texts(pa.array([1, 2]))


def test_validation_never_imports_pyarrow():
    """pyarrow is optional: plain inputs work where it cannot be imported."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['pyarrow'] = None\n"  # `import pyarrow` now fails
        "from skbert._validation import check_texts\n"
        "import numpy as np\n"
        "assert check_texts(['a', 'b']) == ['a', 'b']\n"
        "assert check_texts(np.array(['a'], dtype=object)) == ['a']\n"
        "try:\n    check_texts(['a', None])\nexcept ValueError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Text at index 1 is missing (None)" in out.stdout
