"""Tokenising ahead of the device: chunk bounds, tokenising threads, their copies.

Outputs are compared with the plain (one thread, fixed chunks) path; timings
never appear here (see benchmarks/throughput.py).
"""

import threading

import numpy as np
import pytest

import skbert._extraction.batches as batches
from skbert import BertVectorizer
from skbert._extraction.batches import _iter_chunks, chunk_bounds, tokenize_workers
from skbert._model import backend as _backend
from skbert._model.backend import ModelSpec

pytest.importorskip("torch")


def _covers(spans, n):
    flat = [i for start, stop in spans for i in range(start, stop)]
    return flat == list(range(n)) and all(stop > start for start, stop in spans)


def test_chunk_bounds_by_texts():
    assert chunk_bounds(np.ones(10), size=4) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_bounds(np.ones(0), size=4) == []


def test_chunk_bounds_by_characters():
    sizes = [5, 5, 5, 5, 5, 5, 5]
    # A chunk ends with the text whose running total reaches the budget.
    assert chunk_bounds(sizes, size=100, chars=10) == [(0, 2), (2, 4), (4, 6), (6, 7)]
    # The first chunk has limits of its own.
    spans = chunk_bounds(sizes, size=100, chars=15, first_texts=1, first_chars=15)
    assert spans == [(0, 1), (1, 4), (4, 7)]
    spans = chunk_bounds(sizes, size=2, chars=1000, first_chars=6)
    assert spans == [(0, 2), (2, 4), (4, 6), (6, 7)]


def test_chunk_bounds_never_empty_and_cover_everything():
    rng = np.random.default_rng(0)
    sizes = rng.integers(0, 50, size=500)
    sizes[7] = 10_000  # one text longer than any budget ends its chunk
    for kw in (dict(size=7, chars=60), dict(size=64, chars=1, first_texts=3, first_chars=1)):
        spans = chunk_bounds(sizes, **kw)
        assert _covers(spans, len(sizes))
        assert all(stop - start <= kw["size"] for start, stop in spans)
    spans = chunk_bounds(sizes, size=64, chars=200)
    assert spans[0] == (0, 8) and spans[1][0] == 8


def test_tokenize_workers(monkeypatch):
    assert tokenize_workers("cpu") == 0
    monkeypatch.setattr(batches, "thread_budget", lambda: 16)
    assert tokenize_workers("cuda") == batches.TOKENIZE_WORKERS
    assert tokenize_workers("cuda:1") == batches.TOKENIZE_WORKERS
    monkeypatch.setattr(batches, "thread_budget", lambda: 2)
    assert tokenize_workers("cuda") == 1
    monkeypatch.setattr(batches, "thread_budget", lambda: 1)
    assert tokenize_workers("mps") == 1


class _Guarded:
    """A tokenizer that fails if two threads use it at once, and records threads."""

    def __init__(self, tokenizer, seen):
        self._tokenizer = tokenizer
        self._busy = threading.Lock()
        self._seen = seen
        self.model_input_names = tokenizer.model_input_names

    def __call__(self, *args, **kwargs):
        if not self._busy.acquire(blocking=False):
            raise AssertionError("one tokenizer used by two threads at once")
        try:
            self._seen.add(threading.get_ident())
            threading.Event().wait(0.002)  # widen the window for a clash
            return self._tokenizer(*args, **kwargs)
        finally:
            self._busy.release()


def test_tokenising_threads_give_the_plain_chunks(tiny_model, monkeypatch):
    loaded = _backend.load_model(ModelSpec(tiny_model), "cpu")
    texts = [f"text number {i} " + "word " * (i % 13) for i in range(400)]
    kw = dict(max_length=16, token_type_ids=True)
    plain = list(_iter_chunks(loaded.tokenizer, texts, prefetch=False, size=40, **kw))
    seen = set()
    copies = [_Guarded(t, seen) for t in loaded.tokenizer_copies(3)]
    monkeypatch.setattr(batches, "CHUNK_CHARS", 300)
    monkeypatch.setattr(batches, "FIRST_CHUNK_CHARS", 50)
    ahead = list(_iter_chunks(
        loaded.tokenizer, texts, prefetch=True, size=40, workers=3, tokenizers=copies, **kw
    ))
    assert len(ahead) > 6 and len(seen) > 1
    starts = [c.start for c in ahead]
    assert starts == sorted(starts) and starts[0] == 0
    got_rows = [c.row(i) for c in ahead for i in range(len(c))]
    want_rows = [c.row(i) for c in plain for i in range(len(c))]
    assert len(got_rows) == len(want_rows) == len(texts)
    for got, want in zip(got_rows, want_rows):
        np.testing.assert_array_equal(got, want)


def test_several_threads_need_a_tokenizer_each(tiny_model):
    loaded = _backend.load_model(ModelSpec(tiny_model), "cpu")
    chunks = _iter_chunks(loaded.tokenizer, ["a"] * 600, max_length=8, token_type_ids=False,
                          prefetch=True, workers=2)
    with pytest.raises(ValueError, match="tokenizer each"):
        list(chunks)


def test_tokenizer_copies_are_kept_and_independent(tiny_model):
    loaded = _backend.load_model(ModelSpec(tiny_model), "cpu")
    copies = loaded.tokenizer_copies(3)
    assert copies[0] is loaded.tokenizer and len({id(c) for c in copies}) == 3
    assert loaded.tokenizer_copies(2) == copies[:2]
    enc = [c(["the movie was good"])["input_ids"] for c in copies]
    assert enc[0] == enc[1] == enc[2]


def test_vectorizer_with_tokenising_threads_equals_without(tiny_model, texts, monkeypatch):
    many = [f"{t} {i}" for i in range(40) for t in texts]
    want = BertVectorizer(tiny_model, device="cpu").fit_transform(many)
    calls = []
    monkeypatch.setattr(batches, "tokenize_workers", lambda device: 3)
    monkeypatch.setattr(batches, "CHUNK_CHARS", 500)
    original = batches._tokenize_chunk

    def spy(tokenizer, chunk_texts, start, **kwargs):
        calls.append((id(tokenizer), threading.get_ident()))
        return original(tokenizer, chunk_texts, start, **kwargs)

    monkeypatch.setattr(batches, "_tokenize_chunk", spy)
    got = BertVectorizer(tiny_model, device="cpu").fit_transform(many)
    assert len({tok for tok, _ in calls}) == 3
    assert threading.get_ident() not in {thread for _, thread in calls}
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
