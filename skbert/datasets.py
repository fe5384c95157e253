"""Loaders for the small public text datasets used in skbert's docs and tests.

The loaders follow scikit-learn's ``fetch_*`` functions: each returns a
:class:`~sklearn.utils.Bunch` (or ``(data, target)`` with ``return_X_y=True``),
reads its files from a data home (see :func:`get_data_home`), downloads what
is missing from the dataset's public source pinned by commit, and verifies
every file against a pinned SHA-256 checksum.

On disk, each dataset is a folder of UTF-8 TSV files with a header line, one
example per line, fields separated by a single TAB and no quoting::

    <data_home>/sst2/{train,dev,test}.tsv            label, text
    <data_home>/trec/{train,test}[_fine].tsv         label, text
    <data_home>/stsb/{train,dev,test}.tsv            score, sentence1, sentence2
    <data_home>/imdb/{train,test}.tsv                label, text

This module imports nothing heavier than numpy and scikit-learn's ``Bunch``.
"""

import csv
import hashlib
import logging
import os
import tempfile
import urllib.request

import numpy as np
from sklearn.utils import Bunch

from .exceptions import DatasetChecksumError

__all__ = [
    "DatasetChecksumError",
    "get_data_home",
    "load_demo",
    "load_imdb",
    "load_sst2",
    "load_stsb",
    "load_trec",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the data home (like ``SCIKIT_LEARN_DATA``).
DATA_HOME_ENV = "SKBERT_DATA"

#: Environment variable overriding :data:`BASE_URL` (e.g. a mirror).
DATA_URL_ENV = "SKBERT_DATA_URL"

#: Root of the raw files. A file is fetched from
#: ``{base}/{owner}/{repository}/{commit}/{path}``, the layout of
#: raw.githubusercontent.com; a mirror only has to reproduce that layout.
BASE_URL = "https://raw.githubusercontent.com"

#: Seconds before a download attempt is abandoned.
DOWNLOAD_TIMEOUT = 60

# SHA-256 of every file the loaders read, as pinned in the SHA256SUMS of the
# reference copy (same format). Keys of _SHA256 are paths in the data home.
_SHA256SUMS = """\
257aff6373aac744efeb4b4fc38f1e84a8991462ddbbe0468dbf0216f6e20975  imdb/test.tsv
9dd82f2dfe546e99ffca9c064ed3a6ecc0e5d35437a29c1bf313cb7c5acdda12  imdb/train.tsv
551d775a4c07f9103c09ef2f6da0feb818c5bb01e124a685f171b5d084af6432  sst2/dev.tsv
340c79453f2745b1d54aa0641f19e5aee5cd0cb53354ee0401670adf173ce2cf  sst2/test.tsv
374a19b00f21bb52aee5513ce596aacdbbfd62f552c956299a273a1e19cbe931  sst2/train.tsv
9847c811e123501874b7296eb2780c2e6864f19c51342590cc9db7abefe9840e  stsb/dev.tsv
9d449376d11bd3e1d319c0327dc0c42c1fc0c7491f3f84d4c591765c122233cf  stsb/test.tsv
d46b45477888dd90b914ef6cf502bd8f4b27d52c792b6e54baec729705a14441  stsb/train.tsv
9a1ea9948294b60a468f35723d2cfae0e2650a4d9f1531732b7a6fd874147246  trec/test.tsv
d1d521cd890a9a7a0f8b9a570ffdc843a34491856c2a39e5d85679629c2b0e78  trec/test_fine.tsv
5ec648d32c6675dea28cf4c02a504c1b093a13f7987a18f68fc0a2b39cd8c1e8  trec/train.tsv
11ee3befe74548fbbbcf2e9207d96ae9ca5ab9bf0d8c10a19a6cb67b36bca4b4  trec/train_fine.tsv
"""
_SHA256 = dict(line.split()[::-1] for line in _SHA256SUMS.splitlines())

# Public sources, pinned by commit: (owner/repository, commit, {split: path}).
_SST2_SOURCE = (
    "awake020/pytorch_Bert_sst2",
    "ce2ab1719d32182e6233b24b2de246bd32814fde",
    {"train": "SST-2/train.tsv", "dev": "SST-2/dev.tsv", "test": "SST-2/test.tsv"},
)
_TREC_SOURCE = (
    "trangnt08/q_class_en",
    "3ffc1b21503e89e5eab6bf12ab9eb46d16a14851",
    {"train": "data/train_5500.label", "test": "data/TREC_10.label"},
)
_STSB_SOURCE = (
    "zhangzhenhu/Semantic-Texual-Similarity-Toolkits",
    "c55a72f51bd15a8bd75114247c06984b432050f9",
    {
        "train": "data/stsbenchmark/sts-train.csv",
        "dev": "data/stsbenchmark/sts-dev.csv",
        "test": "data/stsbenchmark/sts-test.csv",
    },
)

_SPLITS = {
    "sst2": ("train", "dev", "test"),
    "trec": ("train", "test"),
    "stsb": ("train", "dev", "test"),
    "imdb": ("train", "test"),
}
_NAMES = {"sst2": "SST-2", "trec": "TREC", "stsb": "STS-B", "imdb": "IMDB"}

_BINARY_TARGET_NAMES = ["negative", "positive"]
_TREC_COARSE = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
_TREC_FINE = [
    "ABBR:abb", "ABBR:exp",
    "DESC:def", "DESC:desc", "DESC:manner", "DESC:reason",
    "ENTY:animal", "ENTY:body", "ENTY:color", "ENTY:cremat", "ENTY:currency",
    "ENTY:dismed", "ENTY:event", "ENTY:food", "ENTY:instru", "ENTY:lang",
    "ENTY:letter", "ENTY:other", "ENTY:plant", "ENTY:product", "ENTY:religion",
    "ENTY:sport", "ENTY:substance", "ENTY:symbol", "ENTY:techmeth",
    "ENTY:termeq", "ENTY:veh", "ENTY:word",
    "HUM:desc", "HUM:gr", "HUM:ind", "HUM:title",
    "LOC:city", "LOC:country", "LOC:mount", "LOC:other", "LOC:state",
    "NUM:code", "NUM:count", "NUM:date", "NUM:dist", "NUM:money", "NUM:ord",
    "NUM:other", "NUM:perc", "NUM:period", "NUM:speed", "NUM:temp",
    "NUM:volsize", "NUM:weight",
]  # fmt: skip

# Characters treated as line breaks by ``str.splitlines``: replaced by spaces
# inside text fields so that a record always stays on one line.
_LINE_BREAKS = str.maketrans(
    {c: " " for c in "\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}
)

# (size, mtime_ns) of the files whose checksum was verified in this process,
# keyed by absolute path.
_VERIFIED = {}


_SST2_DESCR = """\
.. _sst2_dataset:

SST-2 (Stanford Sentiment Treebank, binary)
-------------------------------------------

Binary sentiment of movie-review sentences and phrases, as distributed in
the GLUE benchmark. Text is lower-cased and tokenised as in the GLUE release.

**Data Set Characteristics:**

:Splits: train 67,349 (29,780 negative, 37,569 positive); dev 872
    (428 / 444); test 1,821 (a labelled copy of the test sentences).
:Target: 0 = negative, 1 = positive.
:Source: github.com/awake020/pytorch_Bert_sst2, commit
    ce2ab1719d32182e6233b24b2de246bd32814fde, ``SST-2/{train,dev,test}.tsv``.

.. rubric:: References

- Socher et al. (2013), "Recursive Deep Models for Semantic Compositionality
  Over a Sentiment Treebank", EMNLP.
- Wang et al. (2018), "GLUE: A Multi-Task Benchmark and Analysis Platform for
  Natural Language Understanding".
"""

_TREC_DESCR = """\
.. _trec_dataset:

TREC question classification
----------------------------

Open-domain questions labelled with the type of their answer: 6 coarse
classes (ABBR, DESC, ENTY, HUM, LOC, NUM) or 50 fine ones (e.g. ``LOC:city``).
Questions are tokenised as in the original release; a few garbled lines of
the original (with part-of-speech tags) are kept as they are.

**Data Set Characteristics:**

:Splits: train 5,452; test 500 (TREC 10).
:Target: coarse label (str), or ``COARSE:fine`` label with ``fine=True``
    (50 labels in train, 42 of them in test).
:Source: github.com/trangnt08/q_class_en, commit
    3ffc1b21503e89e5eab6bf12ab9eb46d16a14851, ``data/train_5500.label`` and
    ``data/TREC_10.label`` (from cogcomp.cs.illinois.edu/Data/QA/QC/).

.. rubric:: References

- Li and Roth (2002), "Learning Question Classifiers", COLING.
"""

_STSB_DESCR = """\
.. _stsb_dataset:

STS Benchmark
-------------

English sentence pairs (captions, news headlines, forum posts) with a
human similarity score from 0 (unrelated) to 5 (equivalent).

**Data Set Characteristics:**

:Splits: train 5,749; dev 1,500; test 1,379 pairs.
:Target: similarity score, float in [0, 5].
:Source: github.com/zhangzhenhu/Semantic-Texual-Similarity-Toolkits, commit
    c55a72f51bd15a8bd75114247c06984b432050f9,
    ``data/stsbenchmark/sts-{train,dev,test}.csv``.
:Licence: scores CC BY-SA 4.0; the sentences keep the licences of their
    sources (see the benchmark's LICENSE.txt).

.. rubric:: References

- Cer, Diab, Agirre, Lopez-Gazpio and Specia (2017), "SemEval-2017 Task 1:
  Semantic Textual Similarity Multilingual and Crosslingual Focused
  Evaluation", SemEval.
"""

_IMDB_DESCR = """\
.. _imdb_dataset:

IMDB movie reviews (balanced 2,000-review samples)
--------------------------------------------------

Long movie reviews labelled positive (rating >= 7) or negative (rating <= 4),
verbatim (HTML ``<br />`` tags kept). About 13% of the reviews are longer than
BERT's 512-token window, which makes them the data for truncation and
chunking.

**Data Set Characteristics:**

:Splits: train 2,000; test 2,000 (1,000 per class each): seeded (seed 0)
    balanced samples of the 25,000-review splits, original order kept.
:Target: 0 = negative, 1 = positive.
:Source: Large Movie Review Dataset v1.0 (aclImdb), taken from
    github.com/iamsorenl/Feature-Engineering-and-Sentiment-Analysis, commit
    55144e2ea1de74c60ce9190a47b605b4b071e0ee. Not downloaded by skbert.

.. rubric:: References

- Maas, Daly, Pham, Huang, Ng and Potts (2011), "Learning Word Vectors for
  Sentiment Analysis", ACL-HLT.
"""


def get_data_home(data_home=None):
    """Return the path of the skbert data directory.

    The datasets are kept in this folder so that they are downloaded once.
    It is, in order of precedence, `data_home` when given, the
    ``SKBERT_DATA`` environment variable when set, or ``~/skbert_data``.
    A leading ``~`` is expanded to the user's home folder. As in
    :func:`sklearn.datasets.get_data_home`, the folder is created if it does
    not exist.

    Parameters
    ----------
    data_home : str or path-like, default=None
        The path to the skbert data directory. If None, the ``SKBERT_DATA``
        environment variable, then ``~/skbert_data``.

    Returns
    -------
    data_home : str
        The path to the skbert data directory.

    See Also
    --------
    sklearn.datasets.get_data_home : The same lookup for scikit-learn's data.

    Examples
    --------
    >>> import os
    >>> from skbert.datasets import get_data_home
    >>> data_home_path = get_data_home()  # doctest: +SKIP
    >>> os.path.basename(data_home_path)  # doctest: +SKIP
    'skbert_data'
    """
    if data_home is None:
        data_home = os.environ.get(DATA_HOME_ENV) or os.path.join("~", "skbert_data")
    data_home = os.path.expanduser(os.fspath(data_home))
    os.makedirs(data_home, exist_ok=True)
    return data_home


def load_sst2(
    *, split="train", data_home=None, download_if_missing=True, return_X_y=False
):
    """Load the SST-2 binary sentiment dataset (GLUE).

    67,349 training phrases, 872 dev and 1,821 test sentences from movie
    reviews, lower-cased and tokenised, labelled negative (0) or positive
    (1). The file is downloaded from its pinned public source when missing
    and checked against a pinned SHA-256 checksum.

    Parameters
    ----------
    split : {"train", "dev", "test"}, default="train"
        Which split to load.

    data_home : str or path-like, default=None
        Folder holding ``sst2/<split>.tsv``. By default the data is looked
        for in :func:`get_data_home`.

    download_if_missing : bool, default=True
        If False, raise an OSError instead of downloading a missing file.

    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    dataset : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, with the following attributes.

        data : list of str
            The sentences.
        target : ndarray of shape (n_samples,), dtype=int64
            0 for negative, 1 for positive.
        target_names : list of str
            ``["negative", "positive"]``.
        split : str
            The split loaded.
        filename : str
            Path of the file read.
        DESCR : str
            Description of the dataset.

    (data, target) : tuple if ``return_X_y`` is True
        A list of str and an ndarray of shape (n_samples,).

    Raises
    ------
    ValueError
        If `split` is not one of the splits of the dataset.
    OSError
        If the file is missing and cannot be downloaded.
    DatasetChecksumError
        If the local file or the downloaded content does not match its pinned
        SHA-256 checksum.

    See Also
    --------
    load_imdb : Long movie reviews with the same binary labels.

    Examples
    --------
    >>> from skbert.datasets import load_sst2
    >>> sst2 = load_sst2(split="dev")  # doctest: +SKIP
    >>> len(sst2.data), sst2.target[:5]  # doctest: +SKIP
    (872, array([0, 0, 1, 0, 1]))
    >>> sst2.target_names  # doctest: +SKIP
    ['negative', 'positive']
    """
    _check_split("sst2", split)
    path = _fetch("sst2", f"{split}.tsv", data_home, download_if_missing)
    labels, texts = _read_tsv(path, ("label", "text"))
    target = _binary_target(labels, ("0", "1"), path)
    if return_X_y:
        return texts, target
    return Bunch(
        data=texts,
        target=target,
        target_names=list(_BINARY_TARGET_NAMES),
        split=split,
        filename=path,
        DESCR=_SST2_DESCR,
    )


def load_trec(
    *,
    split="train",
    fine=False,
    data_home=None,
    download_if_missing=True,
    return_X_y=False,
):
    """Load the TREC question classification dataset.

    5,452 training and 500 test questions labelled with the type of their
    expected answer: 6 coarse classes or 50 fine ones. The files are
    downloaded from their pinned public source when missing and checked
    against pinned SHA-256 checksums.

    Parameters
    ----------
    split : {"train", "test"}, default="train"
        Which split to load.

    fine : bool, default=False
        If False, the target is the coarse class (``"LOC"``); if True, the
        fine class written ``COARSE:fine`` (``"LOC:city"``).

    data_home : str or path-like, default=None
        Folder holding ``trec/<split>.tsv`` and ``trec/<split>_fine.tsv``.
        By default the data is looked for in :func:`get_data_home`.

    download_if_missing : bool, default=True
        If False, raise an OSError instead of downloading a missing file.

    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    dataset : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, with the following attributes.

        data : list of str
            The questions, tokenised as in the original release.
        target : ndarray of shape (n_samples,), dtype=str
            The class of each question.
        target_names : list of str
            The 6 coarse or the 50 fine class names, sorted. The test split
            holds 42 of the 50 fine classes.
        split : str
            The split loaded.
        filename : str
            Path of the file read.
        DESCR : str
            Description of the dataset.

    (data, target) : tuple if ``return_X_y`` is True
        A list of str and an ndarray of shape (n_samples,).

    Raises
    ------
    ValueError
        If `split` is not one of the splits of the dataset.
    OSError
        If the file is missing and cannot be downloaded.
    DatasetChecksumError
        If the local file or the downloaded content does not match its pinned
        SHA-256 checksum.

    See Also
    --------
    load_sst2 : Binary sentiment of short sentences.

    Examples
    --------
    >>> from skbert.datasets import load_trec
    >>> trec = load_trec(split="test")  # doctest: +SKIP
    >>> trec.data[0], trec.target[0]  # doctest: +SKIP
    ('How far is it from Denver to Aspen ?', 'NUM')
    >>> load_trec(split="test", fine=True).target[0]  # doctest: +SKIP
    'NUM:dist'
    """
    _check_split("trec", split)
    filename = f"{split}_fine.tsv" if fine else f"{split}.tsv"
    path = _fetch("trec", filename, data_home, download_if_missing)
    labels, texts = _read_tsv(path, ("label", "text"))
    target_names = list(_TREC_FINE if fine else _TREC_COARSE)
    unknown = sorted(set(labels) - set(target_names))
    if unknown:
        raise ValueError(f"{path} has unknown TREC labels {unknown[:5]}.")
    target = np.asarray(labels, dtype=str)
    if return_X_y:
        return texts, target
    return Bunch(
        data=texts,
        target=target,
        target_names=target_names,
        split=split,
        filename=path,
        DESCR=_TREC_DESCR,
    )


def load_stsb(
    *, split="train", data_home=None, download_if_missing=True, return_X_y=False
):
    """Load the STS Benchmark sentence-pair similarity dataset.

    5,749 training, 1,500 dev and 1,379 test sentence pairs with a human
    similarity score between 0 and 5. The file is downloaded from its pinned
    public source when missing and checked against a pinned SHA-256 checksum.

    Parameters
    ----------
    split : {"train", "dev", "test"}, default="train"
        Which split to load.

    data_home : str or path-like, default=None
        Folder holding ``stsb/<split>.tsv``. By default the data is looked
        for in :func:`get_data_home`.

    download_if_missing : bool, default=True
        If False, raise an OSError instead of downloading a missing file.

    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    dataset : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, with the following attributes.

        data : list of tuple of (str, str)
            The sentence pairs.
        sentence1 : list of str
            The first sentence of each pair.
        sentence2 : list of str
            The second sentence of each pair.
        target : ndarray of shape (n_samples,), dtype=float64
            The similarity scores, in [0, 5].
        split : str
            The split loaded.
        filename : str
            Path of the file read.
        DESCR : str
            Description of the dataset.

    (data, target) : tuple if ``return_X_y`` is True
        A list of pairs and an ndarray of shape (n_samples,).

    Raises
    ------
    ValueError
        If `split` is not one of the splits of the dataset.
    OSError
        If the file is missing and cannot be downloaded.
    DatasetChecksumError
        If the local file or the downloaded content does not match its pinned
        SHA-256 checksum.

    See Also
    --------
    load_sst2 : Binary sentiment of short sentences.

    Examples
    --------
    >>> from skbert.datasets import load_stsb
    >>> stsb = load_stsb(split="test")  # doctest: +SKIP
    >>> stsb.data[0], stsb.target[0]  # doctest: +SKIP
    (('A girl is styling her hair.', 'A girl is brushing her hair.'), 2.5)
    """
    _check_split("stsb", split)
    path = _fetch("stsb", f"{split}.tsv", data_home, download_if_missing)
    scores, sentence1, sentence2 = _read_tsv(path, ("score", "sentence1", "sentence2"))
    try:
        target = np.asarray(scores, dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path} has a score that is not a number: {exc}") from exc
    if return_X_y:
        return list(zip(sentence1, sentence2, strict=True)), target
    return Bunch(
        data=list(zip(sentence1, sentence2, strict=True)),
        sentence1=sentence1,
        sentence2=sentence2,
        target=target,
        split=split,
        filename=path,
        DESCR=_STSB_DESCR,
    )


_DEMO_DESCR = """\
.. _demo_dataset:

skbert demo reviews
-------------------

Short English review snippets (films, books, restaurants, hotels, products,
apps) written for skbert, labelled positive or negative. Each topic appears
with both labels, so the topic alone does not give the label away. It ships
inside the package, so :func:`load_demo` needs no download and no data home.

**Data Set Characteristics:**

:Rows: 310 (155 positive, 155 negative), one sentence each, 4 to 12 words.
:Target: ``"negative"`` or ``"positive"`` (str).
:Source: written for the skbert project; ``skbert/data/demo_reviews.tsv``.
:Licence: same as skbert (BSD-3-Clause).
"""


def load_demo(*, return_X_y=False):
    """Load the small labelled review dataset that ships with skbert.

    310 short review sentences (155 positive, 155 negative) written for the
    project. It is what ``skbert demo`` runs on, and it needs no download.

    Parameters
    ----------
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    dataset : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, with the following attributes.

        data : list of str
            The review sentences.
        target : ndarray of shape (310,), dtype=str
            ``"negative"`` or ``"positive"``.
        target_names : list of str
            ``["negative", "positive"]``.
        filename : str
            Path of the file read.
        DESCR : str
            Description of the dataset.

    (data, target) : tuple if ``return_X_y`` is True
        A list of str and an ndarray of shape (310,).

    See Also
    --------
    load_sst2 : Binary sentiment of movie-review sentences.

    Examples
    --------
    >>> from skbert.datasets import load_demo
    >>> demo = load_demo()
    >>> len(demo.data), demo.target_names
    (310, ['negative', 'positive'])
    """
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "demo_reviews.tsv")
    labels, texts = _read_tsv(path, ("label", "text"))
    target = np.asarray(labels, dtype=str)
    if return_X_y:
        return texts, target
    return Bunch(
        data=texts,
        target=target,
        target_names=list(_BINARY_TARGET_NAMES),
        filename=path,
        DESCR=_DEMO_DESCR,
    )


def load_imdb(
    *, split="train", data_home=None, download_if_missing=True, return_X_y=False
):
    """Load a balanced 2,000-review sample of the IMDB sentiment dataset.

    Long movie reviews (about 13% exceed BERT's 512 tokens) labelled
    negative (0) or positive (1). skbert does not download this dataset: its
    release is a 50,000-review archive from which the files are sampled. Put
    ``train.tsv`` and ``test.tsv`` (header ``label<TAB>text``, labels ``neg``
    / ``pos``, the files of the skbert reference copy) in
    ``<data_home>/imdb/``; they are checked against pinned SHA-256 checksums.

    Parameters
    ----------
    split : {"train", "test"}, default="train"
        Which split to load.

    data_home : str or path-like, default=None
        Folder holding ``imdb/<split>.tsv``. By default the data is looked
        for in :func:`get_data_home`.

    download_if_missing : bool, default=True
        Kept for symmetry with the other loaders: the files are never
        downloaded, and a missing file raises an OSError either way.

    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    dataset : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, with the following attributes.

        data : list of str
            The reviews, verbatim (HTML ``<br />`` tags kept).
        target : ndarray of shape (n_samples,), dtype=int64
            0 for negative (``neg``), 1 for positive (``pos``).
        target_names : list of str
            ``["negative", "positive"]``.
        split : str
            The split loaded.
        filename : str
            Path of the file read.
        DESCR : str
            Description of the dataset.

    (data, target) : tuple if ``return_X_y`` is True
        A list of str and an ndarray of shape (n_samples,).

    Raises
    ------
    ValueError
        If `split` is not one of the splits of the dataset.
    FileNotFoundError
        If the file is not in the data home (it is never downloaded).
    DatasetChecksumError
        If the local file does not match its pinned SHA-256 checksum.

    See Also
    --------
    load_sst2 : Short sentences with the same binary labels.

    Examples
    --------
    >>> from skbert.datasets import load_imdb
    >>> imdb = load_imdb(split="test")  # doctest: +SKIP
    >>> len(imdb.data), int(imdb.target.sum())  # doctest: +SKIP
    (2000, 1000)
    """
    _check_split("imdb", split)
    path = _fetch("imdb", f"{split}.tsv", data_home, download_if_missing)
    labels, texts = _read_tsv(path, ("label", "text"))
    target = _binary_target(labels, ("neg", "pos"), path)
    if return_X_y:
        return texts, target
    return Bunch(
        data=texts,
        target=target,
        target_names=list(_BINARY_TARGET_NAMES),
        split=split,
        filename=path,
        DESCR=_IMDB_DESCR,
    )


# ---------------------------------------------------------------------------
# Local files: lookup, checksum verification, reading
# ---------------------------------------------------------------------------


def _check_split(dataset, split):
    valid = _SPLITS[dataset]
    if not isinstance(split, str) or split not in valid:
        raise ValueError(
            f"The 'split' parameter of load_{dataset} must be a str among "
            f"{{{', '.join(repr(s) for s in valid)}}}. Got {split!r} instead."
        )


def _fetch(dataset, filename, data_home, download_if_missing):
    """Return the path of a verified local file, downloading it if needed."""
    key = f"{dataset}/{filename}"
    path = os.path.join(get_data_home(data_home), dataset, filename)
    if not os.path.exists(path):
        if dataset == "imdb":
            raise FileNotFoundError(
                f"IMDB data not found at {path}. skbert does not download IMDB "
                "(its release is a 50,000-review archive the samples are drawn "
                "from): copy the skbert reference files imdb/train.tsv and "
                f"imdb/test.tsv into {os.path.dirname(path)}, or point data_home "
                f"(or the {DATA_HOME_ENV} environment variable) at a folder that "
                "holds them."
            )
        if not download_if_missing:
            raise OSError(
                f"Data not found at {path} and `download_if_missing` is False."
            )
        _DOWNLOADERS[dataset](os.path.dirname(path), filename)
    _verify_checksum(path, _SHA256[key], downloadable=dataset in _DOWNLOADERS)
    return path


def _sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_checksum(path, expected, downloadable=True):
    """Check `path` against its pinned SHA-256, once per file and process.

    A file is hashed again only when its size or modification time changed
    since it was last verified.
    """
    path = os.path.abspath(path)
    st = os.stat(path)
    stamp = (st.st_size, st.st_mtime_ns, expected)
    if _VERIFIED.get(path) == stamp:
        return
    actual = _sha256_file(path)
    if actual != expected:
        _VERIFIED.pop(path, None)
        if downloadable:
            fix = "delete it to download it again"
        else:
            fix = "replace it with a good copy of the skbert reference file"
        raise DatasetChecksumError(
            f"{path} has SHA-256 {actual}, expected {expected}: the file is "
            f"corrupted or is not the skbert version of the data; {fix}."
        )
    _VERIFIED[path] = stamp


def _read_tsv(path, header):
    """Read a skbert TSV file into one list per column, checking its header."""
    columns = tuple([] for _ in header)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE, strict=True)
        first = next(reader, None)
        if first is None or tuple(first) != tuple(header):
            raise ValueError(
                f"{path} should start with the header line "
                f"{chr(9).join(header)!r}; got {first!r}."
            )
        for row in reader:
            if len(row) != len(header):
                raise ValueError(
                    f"{path}, line {reader.line_num}: expected {len(header)} "
                    f"TAB-separated fields, got {len(row)}."
                )
            for column, value in zip(columns, row, strict=True):
                column.append(value)
    return columns


def _binary_target(labels, names, path):
    mapping = {name: i for i, name in enumerate(names)}
    try:
        return np.fromiter(
            (mapping[v] for v in labels), dtype=np.int64, count=len(labels)
        )
    except KeyError as exc:
        raise ValueError(
            f"{path} has label {exc.args[0]!r}; expected one of {list(names)}."
        ) from None


# ---------------------------------------------------------------------------
# Downloads: fetch the raw release, convert it, publish it atomically
# ---------------------------------------------------------------------------


def _source_url(source, split):
    repository, commit, paths = source
    base = (os.environ.get(DATA_URL_ENV) or BASE_URL).rstrip("/")
    return f"{base}/{repository}/{commit}/{paths[split]}"


def _download(url):
    """Return the bytes at `url`, raising an OSError that names the URL."""
    logger.info("Downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
            return response.read()
    except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts, bad URL
        raise OSError(
            f"Failed to download {url} ({exc}). Check the network connection (or "
            f"the {DATA_URL_ENV} environment variable), or point data_home (or "
            f"the {DATA_HOME_ENV} environment variable) at a folder that already "
            "holds a copy of the skbert data."
        ) from exc


def _decode(raw, encoding, url):
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DatasetChecksumError(
            f"{url} is not valid {encoding} text ({exc}); the download is "
            "corrupted or the source changed. Nothing was written."
        ) from exc


def _lines(text):
    """Split on LF only, dropping the empty string after a final newline."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _clean(field):
    """Replace tabs and line breaks inside a text field by spaces."""
    return field.translate(_LINE_BREAKS)


def _format_error(url, lineno, message):
    return DatasetChecksumError(
        f"{url}, line {lineno}: {message}; the download is corrupted or the "
        "source changed. Nothing was written."
    )


def _convert_sst2(raw, url):
    """GLUE SST-2 TSV (header with 'sentence' and 'label') -> label, text.

    Lines are split on LF only and the text is kept as released; a CR that
    ends a line is kept at the end of the converted line (the pinned train
    file has CRLF line ends, which the reference copy keeps).
    """
    lines = _lines(_decode(raw, "utf-8", url))
    if not lines:
        raise _format_error(url, 1, "empty file")
    header = lines[0].rstrip("\r").split("\t")
    if sorted(header) != ["label", "sentence"]:
        raise _format_error(url, 1, f"unexpected header {lines[0]!r}")
    i_label, i_text = header.index("label"), header.index("sentence")
    out = ["label\ttext\n"]
    for lineno, line in enumerate(lines[1:], start=2):
        crlf = line.endswith("\r")
        fields = (line[:-1] if crlf else line).split("\t")
        end = "\r\n" if crlf else "\n"
        if len(fields) != 2 or fields[i_label] not in ("0", "1"):
            raise _format_error(url, lineno, f"unexpected SST-2 line {line[:80]!r}")
        out.append(f"{fields[i_label]}\t{fields[i_text]}{end}")
    return "".join(out)


def _convert_trec(raw, url, fine):
    """Li & Roth 'COARSE:fine question' lines (latin-1) -> label, text."""
    out = ["label\ttext\n"]
    for lineno, line in enumerate(_lines(_decode(raw, "latin-1", url)), start=1):
        line = line.rstrip("\r")
        if not line:
            continue
        label, _, text = line.partition(" ")
        coarse, sep, sub = label.partition(":")
        if not (sep and coarse in _TREC_COARSE and sub and text):
            raise _format_error(url, lineno, f"unexpected TREC line {line[:80]!r}")
        out.append(f"{label if fine else coarse}\t{_clean(text)}\n")
    return "".join(out)


def _convert_stsb(raw, url):
    """STS Benchmark TAB-separated release -> score, sentence1, sentence2.

    Columns are genre, file, year, id, score, sentence1, sentence2 and, on
    some rows, extra licence columns (dropped). The release is split on TAB,
    not read with a CSV reader: it contains unbalanced quotes.
    """
    out = ["score\tsentence1\tsentence2\n"]
    for lineno, line in enumerate(_lines(_decode(raw, "utf-8", url)), start=1):
        line = line.rstrip("\r")
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) < 7:
            raise _format_error(url, lineno, f"{len(fields)} fields instead of 7")
        score = fields[4]
        try:
            ok = 0.0 <= float(score) <= 5.0
        except ValueError:
            ok = False
        if not ok:
            raise _format_error(url, lineno, f"score {score!r} is not in [0, 5]")
        out.append(f"{score}\t{_clean(fields[5])}\t{_clean(fields[6])}\n")
    return "".join(out)


def _publish(directory, converted, url):
    """Write converted files into `directory`, all or nothing.

    `converted` maps file names to their text. Every text is checked against
    its pinned SHA-256 before anything is written; each file is then written
    to a temporary file in the same folder and renamed into place, so that a
    final path only ever holds a complete, verified file. Files already
    present are left alone.
    """
    dataset = os.path.basename(directory)
    checked = {}
    for filename, text in converted.items():
        expected = _SHA256[f"{dataset}/{filename}"]
        data = text.encode("utf-8")
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise DatasetChecksumError(
                f"The {dataset}/{filename} converted from {url} has SHA-256 "
                f"{actual}, expected {expected}: the download is corrupted or "
                "the source changed. Nothing was written."
            )
        checked[filename] = data
    os.makedirs(directory, exist_ok=True)
    for filename, data in checked.items():
        path = os.path.join(directory, filename)
        if os.path.exists(path):
            continue
        fd, tmp = tempfile.mkstemp(
            dir=directory, prefix=f".{filename}.", suffix=".part"
        )
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        logger.info("Wrote %s", path)


def _download_sst2(directory, filename):
    split = filename.removesuffix(".tsv")
    url = _source_url(_SST2_SOURCE, split)
    _publish(directory, {filename: _convert_sst2(_download(url), url)}, url)


def _download_trec(directory, filename):
    # One raw file gives both the coarse and the fine version of a split.
    split = filename.removesuffix(".tsv").removesuffix("_fine")
    url = _source_url(_TREC_SOURCE, split)
    raw = _download(url)
    converted = {
        f"{split}.tsv": _convert_trec(raw, url, fine=False),
        f"{split}_fine.tsv": _convert_trec(raw, url, fine=True),
    }
    _publish(directory, converted, url)


def _download_stsb(directory, filename):
    split = filename.removesuffix(".tsv")
    url = _source_url(_STSB_SOURCE, split)
    _publish(directory, {filename: _convert_stsb(_download(url), url)}, url)


_DOWNLOADERS = {
    "sst2": _download_sst2,
    "trec": _download_trec,
    "stsb": _download_stsb,
}
