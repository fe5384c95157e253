"""Tiny seeded encoders saved to disk, for tests, doctests and offline demos.

``make_tiny_model(path, architecture="bert")`` writes a randomly initialised
(but seeded, hence reproducible) encoder with a small WordPiece vocabulary and
safetensors weights, loadable with ``from_pretrained(path)`` like any hub
model. It is tiny (hidden size 32, 2 layers, 4 heads) so tests run in
milliseconds.
"""

import os
import random
from pathlib import Path

from ._vectorizer import BertVectorizer

__all__ = [
    "make_tiny_model",
    "TINY_WORDS",
    "WORKER_ENV",
    "ForwardLog",
    "random_corpus",
    "labelled_corpus",
    "small_grid_search",
    "check_gridsearch_on_cluster",
]

#: The environment of engine workers in tests: one thread each, so that two
#: workers share two cores without oversubscription.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

TINY_WORDS = (
    "the a an and or but not no is are was were be been this that these those it "
    "i you he she we they my your his her our their me him us them "
    "good great excellent wonderful best love like enjoy fun happy nice "
    "bad awful terrible worst boring hate dull poor sad ugly "
    "movie film story plot actor acting scene music book text first second "
    "one two three very so too really quite just still only also "
    "what who where when why how which do does did have has had "
    "cat dog car house city country man woman people time day year "
    "in on at to of for with from by about as into over after"
).split()

_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _vocab():
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    digits = [str(d) for d in range(10)]
    punct = list(".,!?;:'\"()-")
    pieces = ["##" + c for c in letters + digits]
    return _SPECIAL + letters + digits + punct + pieces + list(dict.fromkeys(TINY_WORDS))


def _wordpiece_tokenizer(vocab, vocab_file, **kwargs):
    import inspect

    from transformers import BertTokenizerFast

    params = inspect.signature(BertTokenizerFast.__init__).parameters
    if "vocab" in params:  # transformers >= 5
        return BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, **kwargs)
    return BertTokenizerFast(vocab_file=str(vocab_file), **kwargs)


def make_tiny_model(path, architecture="bert", *, seed=0, max_position_embeddings=128):
    """Save a tiny seeded encoder and its tokenizer to ``path``.

    Parameters
    ----------
    path : str or path-like
        Directory to write (created if missing).
    architecture : {"bert", "distilbert", "roberta"}, default="bert"
        The model family. All share the same WordPiece vocabulary, except
        RoBERTa's special tokens (``<s>``, ``</s>``, ``<pad>``).
    seed : int, default=0
        Seed of the random weights.
    max_position_embeddings : int, default=128

    Returns
    -------
    path : pathlib.Path
    """
    import torch
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = _vocab()
    if architecture == "roberta":
        vocab = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + vocab[len(_SPECIAL):]
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    common = dict(
        vocab_size=len(vocab),
        max_position_embeddings=max_position_embeddings,
    )
    torch.manual_seed(seed)
    if architecture == "bert":
        from transformers import BertConfig, BertModel

        config = BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, type_vocab_size=2, **common,
        )
        model = BertModel(config)
        tokenizer = _wordpiece_tokenizer(vocab, vocab_file, do_lower_case=True)
    elif architecture == "distilbert":
        from transformers import DistilBertConfig, DistilBertModel

        config = DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37, **common)
        model = DistilBertModel(config)
        tokenizer = _wordpiece_tokenizer(vocab, vocab_file, do_lower_case=True)
    elif architecture == "roberta":
        from transformers import RobertaConfig, RobertaModel

        config = RobertaConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, pad_token_id=1, bos_token_id=0, eos_token_id=2,
            type_vocab_size=1,
            **{**common, "max_position_embeddings": max_position_embeddings + 2},
        )
        model = RobertaModel(config)
        tokenizer = _wordpiece_tokenizer(
            vocab, vocab_file, do_lower_case=True,
            cls_token="<s>", sep_token="</s>", pad_token="<pad>",
            unk_token="<unk>", mask_token="<mask>",
        )
    else:
        raise ValueError(
            f"architecture must be 'bert', 'distilbert' or 'roberta'; got {architecture!r}."
        )
    tokenizer.model_max_length = max_position_embeddings
    model.eval()
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


# ---------------------------------------------- helpers of the engine tests
class ForwardLog:
    """The forward-pass log that worker processes append to.

    With ``SKBERT_FORWARD_LOG=path`` in a process's environment, every batch
    the model runs appends a line ``"<pid> <texts>"`` (see
    :mod:`skbert._model.backend`); tests count forward passes across processes
    with it, never by timing.
    """

    def __init__(self, path):
        self.path = Path(path)

    def lines(self):
        """``[(pid, texts), ...]``, one per batch, in order."""
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [tuple(map(int, line.split())) for line in f if line.strip()]

    def texts(self):
        """Texts run through the model so far, over every process."""
        return sum(n for _, n in self.lines())

    def pids(self):
        """The processes that ran the model so far."""
        return {pid for pid, _ in self.lines()}

    def settle(self, quiet=2.0, timeout=120.0):
        """Wait until no process has appended a line for ``quiet`` seconds.

        After a job that failed on one partition, engines let the tasks
        already running on other workers finish (their results are
        dropped): their forward passes would be counted by the next test.
        Tests call this after such a job; with nothing running it returns
        after ``quiet`` seconds.
        """
        import time

        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            size = os.path.getsize(self.path) if os.path.exists(self.path) else 0
            if size != last:
                last, since = size, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.path} kept growing for {timeout:g} s")


def random_corpus(n_unique, n_total, seed=0):
    """``n_total`` texts of :data:`TINY_WORDS` drawn from ``n_unique`` distinct ones, shuffled."""
    rng = random.Random(seed)
    unique = set()
    while len(unique) < n_unique:
        unique.add(" ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(1, 10))))
    unique = sorted(unique)
    texts = unique + [rng.choice(unique) for _ in range(n_total - n_unique)]
    rng.shuffle(texts)
    return texts


def labelled_corpus(n_unique, n_total, seed=0):
    """``(texts, y)``: :func:`random_corpus` labelled 1 where a text has a positive word."""
    import numpy as np

    texts = random_corpus(n_unique, n_total, seed=seed)
    good = set("good great excellent wonderful best love like enjoy fun happy nice".split())
    return texts, np.array([int(any(w in good for w in t.split())) for t in texts])


def small_grid_search(model, memory, n_jobs=1):
    """A GridSearchCV over layers x pooling x C (12 candidates, 3 folds) on ``memory``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    pipe = Pipeline([("vec", BertVectorizer(model, memory=memory)),
                     ("clf", LogisticRegression(max_iter=500))])
    grid = {"vec__layers": [0, -1, [1, 2]], "vec__pooling": ["mean", "max"], "clf__C": [0.1, 10.0]}
    return GridSearchCV(pipe, grid, cv=3, n_jobs=n_jobs)


def check_gridsearch_on_cluster(backend, model, memory, log, texts, y):
    """Assert that a grid search under joblib's ``backend`` equals one process.

    Cold (an empty ``memory``), the search runs each unique text through the
    model once across the workers; warm, it runs none; both give the
    ``cv_results_`` of the same search with ``n_jobs=1``, bitwise. ``log`` is
    the workers' :class:`ForwardLog`.

    Returns
    -------
    pids : set of int
        The processes that ran the model in the cold search.
    """
    import joblib
    import numpy as np

    before, n_lines = log.texts(), len(log.lines())
    with joblib.parallel_backend(backend):
        cold = small_grid_search(model, memory, n_jobs=-1).fit(texts, y)
    assert log.texts() - before == len(set(texts))
    pids = {pid for pid, _ in log.lines()[n_lines:]}
    before = log.texts()
    with joblib.parallel_backend(backend):
        warm = small_grid_search(model, memory, n_jobs=-1).fit(texts, y)
    assert log.texts() == before
    single = small_grid_search(model, memory, n_jobs=1).fit(texts, y)
    for key in ("mean_test_score", "std_test_score", "rank_test_score"):
        np.testing.assert_array_equal(warm.cv_results_[key], single.cv_results_[key])
        np.testing.assert_array_equal(cold.cv_results_[key], single.cv_results_[key])
    assert warm.best_params_ == single.best_params_
    return pids
