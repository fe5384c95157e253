"""The extraction engine: texts in, pooled statistics out, one batch at a time.

Texts are tokenised once to learn their lengths, sorted by token count and
cut into batches under a token budget, so that padding stays small. Each
batch goes through the model once, its hidden states are reduced to pooled
statistics (see :mod:`skbert._extraction.pooling`) and handed to the caller together
with the positions of its texts, so the caller can restore input order and
memory stays bounded by one batch.
"""

import logging

import numpy as np

from .._model.runtime import (
    free_accelerator_memory,
    is_out_of_memory,
    model_input_names,
    thread_budget,
    thread_limit,
)
from .pooling import pooled_statistics

logger = logging.getLogger(__name__)

__all__ = ["plan_batches", "token_lengths", "iter_statistics", "resolve_batching"]

#: Default budget of (padded) tokens per batch on the CPU with 2 threads (or
#: fewer): measured as a good size on 2 cores.
DEFAULT_BATCH_TOKENS = 1024
#: Default cap of texts per batch on the CPU with 2 threads (or fewer).
DEFAULT_BATCH_SIZE = 64
#: ``"auto"`` on the CPU grows with the threads a forward pass uses: this many
#: tokens and texts per thread, up to the caps below. Small batches cannot
#: keep 16 threads busy (each matrix multiply is split among them).
CPU_TOKENS_PER_THREAD = 512
CPU_TEXTS_PER_THREAD = 16
CPU_MAX_BATCH_TOKENS = 8192
CPU_MAX_BATCH_SIZE = 256
#: ``"auto"`` batch sizes on an accelerator (CUDA, MPS): big batches keep a GPU busy;
#: an out-of-memory error halves the batch and retries.
ACCELERATOR_BATCH_SIZE = 512
ACCELERATOR_BATCH_TOKENS = 32768


def resolve_batching(device, batch_size="auto", max_batch_tokens="auto", threads=None):
    """Resolve ``"auto"`` batch settings for ``device``.

    ``"auto"`` on the CPU means 1,024 padded tokens and 64 texts per batch
    up to 2 threads, then :data:`CPU_TOKENS_PER_THREAD` tokens and
    :data:`CPU_TEXTS_PER_THREAD` texts per thread, up to 8,192 tokens and 256
    texts (from 16 threads on); on an accelerator, 512 texts and 32,768 tokens.

    Parameters
    ----------
    device : str
    batch_size, max_batch_tokens : int, "auto" or None
    threads : int, optional
        Torch threads of the forward pass on the CPU; by default this
        process's share of the CPUs (:func:`skbert._model.runtime.thread_budget`),
        capped by ``torch.get_num_threads()`` when torch is loaded.

    Returns
    -------
    batch_size : int
    max_batch_tokens : int or None
    """
    accelerator = str(device).split(":")[0] != "cpu"
    if not accelerator and "auto" in (batch_size, max_batch_tokens) and threads is None:
        threads = _forward_threads()
    threads = max(1, int(threads or 1))
    if batch_size == "auto":
        batch_size = ACCELERATOR_BATCH_SIZE if accelerator else int(
            np.clip(CPU_TEXTS_PER_THREAD * threads, DEFAULT_BATCH_SIZE, CPU_MAX_BATCH_SIZE)
        )
    if max_batch_tokens == "auto":
        max_batch_tokens = ACCELERATOR_BATCH_TOKENS if accelerator else int(
            np.clip(CPU_TOKENS_PER_THREAD * threads, DEFAULT_BATCH_TOKENS, CPU_MAX_BATCH_TOKENS)
        )
    return int(batch_size), (None if max_batch_tokens is None else int(max_batch_tokens))


def _forward_threads():
    """Threads a CPU forward pass will use: within :func:`thread_limit`'s budget."""
    import sys

    budget = thread_budget()
    torch = sys.modules.get("torch")
    return min(budget, torch.get_num_threads()) if torch is not None else budget


def plan_batches(lengths, *, batch_size, max_batch_tokens=DEFAULT_BATCH_TOKENS):
    """Cut texts into batches of similar length.

    Texts are ordered by decreasing token count (ties by position, so the
    plan is deterministic) and grouped greedily while the padded size,
    ``len(batch) * longest``, stays within ``max_batch_tokens`` and the batch
    holds at most ``batch_size`` texts. A text longer than the budget gets a
    batch of its own.

    Parameters
    ----------
    lengths : array-like of int
    batch_size : int
    max_batch_tokens : int or None
        None means no token budget (only ``batch_size`` applies).

    Returns
    -------
    batches : list of ndarray of int
        Positions into ``lengths``; together they cover every position once.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.lexsort((np.arange(len(lengths)), -lengths))
    batches, current, longest = [], [], 0
    for pos in order:
        n = int(lengths[pos])
        longest_if_added = max(longest, n)
        too_many = len(current) >= batch_size
        too_big = (
            max_batch_tokens is not None
            and current
            and longest_if_added * (len(current) + 1) > max_batch_tokens
        )
        if current and (too_many or too_big):
            batches.append(np.asarray(current, dtype=np.int64))
            current, longest_if_added = [], n
        current.append(int(pos))
        longest = longest_if_added
    if current:
        batches.append(np.asarray(current, dtype=np.int64))
    return batches


def token_lengths(tokenizer, texts, *, max_length, chunk=4096):
    """Token counts (with special tokens, after truncation) of each text."""
    out = np.empty(len(texts), dtype=np.int64)
    for start in range(0, len(texts), chunk):
        enc = tokenizer(
            texts[start : start + chunk],
            truncation=True,
            max_length=max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        out[start : start + chunk] = [len(ids) for ids in enc["input_ids"]]
    return out


def iter_statistics(texts, loaded, spec):
    """Yield pooled statistics for ``texts``, batch by batch.

    Only the transformer layers up to the deepest one in ``layers`` run
    (early exit); the pooler never runs. On the CPU torch's threads are kept
    within this process's share of the CPUs (see
    :func:`skbert._model.runtime.thread_limit`). When an accelerator runs out of
    memory the batch is halved and retried, and later batches stay at most
    that size.

    Parameters
    ----------
    texts : list of str
        Texts, or token windows when ``spec.pretokenized``.
    loaded : skbert._model.backend.LoadedModel
    spec : skbert._extraction.ExtractionSpec
        Which hidden states and statistics, the token limit, batching,
        compute dtype and progress bar.

    Yields
    ------
    positions : ndarray of int
        Positions into ``texts`` of this batch's texts.
    stats : ndarray of float32, shape (batch, len(layers), n_stats, hidden)
        ``n_stats`` from :func:`skbert._extraction.pooling.n_stats_for`.
    counts : ndarray of int64, shape (batch, 2)
    """
    import torch

    if not texts:
        return
    if (loaded.dtype or "float32") != (spec.dtype or "float32"):
        raise ValueError(
            f"The model was loaded for dtype={loaded.dtype!r} but the extraction asks for "
            f"dtype={spec.dtype!r}; load it with load_model(..., dtype={spec.dtype!r})."
        )
    batch_size, max_batch_tokens = resolve_batching(
        loaded.device, spec.batch_size, spec.max_batch_tokens
    )
    bar = None
    if spec.verbose:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(texts), unit="text", desc="BERT features")
    # The lock serialises threads sharing this model: fast tokenizers, the
    # attention-implementation switch and early exit are not thread-safe.
    try:
        with (
            loaded.lock,
            thread_limit(loaded.device),
            loaded.attention_maps(spec.attention),
            torch.inference_mode(),
        ):
            runner = _BatchRunner(
                loaded,
                layers=list(spec.layers),
                attention=spec.attention,
                dtype=spec.dtype,
                slots=spec.slots,
                positional=spec.positional,
                pool_skip=spec.pool_skip,
            )
            # On an accelerator the next chunks are tokenised in threads while
            # the device works; on the CPU they would compete for the cores.
            workers = tokenize_workers(loaded.device)
            chunks = _iter_chunks(
                loaded.tokenizer,
                texts,
                max_length=spec.max_length,
                token_type_ids="token_type_ids" in runner.names,
                pretokenized=spec.pretokenized,
                prefetch=workers > 0,
                workers=max(workers, 1),
                tokenizers=loaded.tokenizer_copies(workers) if workers > 1 else None,
            )
            jobs = (
                (chunk, local)
                for chunk in chunks
                for local in plan_batches(
                    chunk.lengths, batch_size=batch_size, max_batch_tokens=max_batch_tokens
                )
            )
            for positions, stats, counts in runner.run(jobs):
                yield positions, stats, counts
                if bar is not None:
                    bar.update(len(positions))
    finally:
        if bar is not None:
            bar.close()


#: Texts tokenised together (once) and planned into batches together. Texts
#: are sorted by length within a chunk, and the chunk's token ids are the only
#: per-text state kept (int32), so memory stays bounded for any corpus size.
CHUNK_TEXTS = 4096
#: With prefetching (on an accelerator), chunks also end after about this many
#: characters, so that several are tokenised at once by the tokenising
#: threads, and the first one after :data:`FIRST_CHUNK_CHARS`, so that the
#: device starts early.
CHUNK_CHARS = 1 << 18
FIRST_CHUNK_CHARS = 1 << 15
#: With prefetching, the first chunk holds at most this many texts.
FIRST_CHUNK_TEXTS = 256
#: Most threads that tokenise ahead of an accelerator. Each has its own copy
#: of the tokenizer (fast tokenizers are not thread-safe) and releases the
#: GIL while it tokenises, so tokenising keeps up with the device whatever
#: ``TOKENIZERS_PARALLELISM`` says.
TOKENIZE_WORKERS = 4


def tokenize_workers(device):
    """Threads that tokenise ahead of ``device``: none on the CPU (they would
    compete with the forward pass for its cores), else up to
    :data:`TOKENIZE_WORKERS`, leaving one CPU to the thread that drives the device."""
    if str(device).split(":")[0] == "cpu":
        return 0
    return max(1, min(TOKENIZE_WORKERS, thread_budget() - 1))


class _Chunk:
    """Consecutive texts ``start:start + n``, tokenised once (unpadded).

    Token ids, special-token flags and token types are kept flat (int32),
    row ``i`` at ``offsets[i]:offsets[i + 1]``, so padding a batch is a few
    vectorised copies rather than a Python loop over its texts.
    """

    def __init__(self, start, enc, token_type_ids):
        import itertools

        self.start = start
        ids = enc["input_ids"]
        self.lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        self.offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=self.offsets[1:])
        total = int(self.offsets[-1])

        def flat(rows):
            chain = itertools.chain.from_iterable(rows)
            return np.fromiter(chain, dtype=np.int32, count=total)

        self.flat_ids = flat(ids)
        self.flat_special = flat(enc["special_tokens_mask"])
        self.flat_types = flat(enc["token_type_ids"]) if token_type_ids else None

    def __len__(self):
        return len(self.lengths)

    def row(self, i):
        """Token ids of text ``i`` (a view)."""
        return self.flat_ids[self.offsets[i] : self.offsets[i + 1]]

    @classmethod
    def from_windows(cls, start, windows, token_type_ids):
        """A chunk of pre-tokenised ``(input_ids, special_tokens_mask)`` pairs."""
        enc = {
            "input_ids": [ids for ids, _ in windows],
            "special_tokens_mask": [special for _, special in windows],
        }
        if token_type_ids:
            enc["token_type_ids"] = [[0] * len(ids) for ids, _ in windows]
        return cls(start, enc, token_type_ids)


def _tokenize_chunk(tokenizer, texts, start, *, max_length, token_type_ids):
    want_types = token_type_ids and "token_type_ids" in tokenizer.model_input_names
    enc = tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=want_types,
        return_special_tokens_mask=True,
    )
    return _Chunk(start, enc, want_types)


def chunk_bounds(sizes, *, size=CHUNK_TEXTS, chars=None, first_texts=None, first_chars=None):
    """Where chunks of consecutive texts end.

    Each chunk holds at most ``size`` texts and, with ``chars``, ends once
    its texts' sizes (characters, or tokens of pre-tokenised windows) reach
    ``chars``; the first chunk has its own limits (``first_texts``,
    ``first_chars``). Every chunk holds at least one text.

    Returns
    -------
    bounds : list of (start, stop)
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    n = len(sizes)
    ends = np.cumsum(sizes)
    spans, start = [], 0
    while start < n:
        first = not spans
        most = (first_texts or size) if first else size
        budget = (first_chars or chars) if first else chars
        stop = min(start + most, n)
        if budget is not None:
            before = ends[start - 1] if start else 0
            # The first text whose running total reaches the budget ends the chunk.
            reach = int(np.searchsorted(ends[start:stop], before + budget, side="left"))
            stop = min(stop, start + reach + 1)
        spans.append((start, max(stop, start + 1)))
        start = spans[-1][1]
    return spans


def _iter_chunks(
    tokenizer, texts, *, max_length, token_type_ids, prefetch, pretokenized=False,
    size=CHUNK_TEXTS, workers=1, tokenizers=None,
):
    """Yield the :class:`_Chunk` of ``texts``, in order.

    With ``prefetch``, up to ``workers`` chunks are tokenised ahead in as many
    threads, each with its own tokenizer from ``tokenizers`` (copies of
    ``tokenizer``; the tokenizer itself when None and ``workers == 1``), and
    chunks are cut by characters too (see :func:`chunk_bounds`).
    """
    if prefetch:
        sizes = [len(t) for t in texts]
        spans = chunk_bounds(
            sizes, size=size, chars=CHUNK_CHARS,
            first_texts=min(FIRST_CHUNK_TEXTS, size), first_chars=FIRST_CHUNK_CHARS,
        )
    else:
        spans = chunk_bounds(np.ones(len(texts), dtype=np.int64), size=size)
    want_types = token_type_ids and "token_type_ids" in tokenizer.model_input_names

    def tokenize(span, tok=tokenizer):
        start, stop = span
        if pretokenized:
            return _Chunk.from_windows(start, texts[start:stop], want_types)
        return _tokenize_chunk(
            tok, texts[start:stop], start, max_length=max_length, token_type_ids=token_type_ids
        )

    if not prefetch or len(spans) < 2:
        for span in spans:
            yield tokenize(span)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, int(workers))
    if tokenizers is None:
        if workers > 1:
            raise ValueError("several tokenising threads need a tokenizer each")
        tokenizers = [tokenizer]
    workers = min(workers, len(tokenizers), len(spans))
    # Chunk k uses tokenizer k % workers; at most `workers` chunks are in
    # flight, so no tokenizer is ever used by two threads at once.
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="skbert-tokenize") as pool:
        pending = deque()
        for k, span in enumerate(spans[:workers]):
            pending.append(pool.submit(tokenize, span, tokenizers[k % workers]))
        submitted = len(pending)
        while pending:
            chunk = pending.popleft().result()
            if submitted < len(spans):
                tok = tokenizers[submitted % workers]
                pending.append(pool.submit(tokenize, spans[submitted], tok))
                submitted += 1
            yield chunk


def pad_batch(chunk, local, *, pad_token_id, pad_token_type_id=0, left=False):
    """Padded numpy inputs for texts ``local`` (positions within ``chunk``).

    Equal to the tokenizer's own ``padding=True`` output: ``input_ids``,
    ``attention_mask``, ``token_type_ids`` (when tokenised) and
    ``special_tokens_mask`` (1 on padding), padded on the tokenizer's side.
    Also returns, under ``"real_index"``, the flat positions (in the
    ``(n, width)`` layout) of the real tokens, row by row: the lean pass packs
    them without looking at the mask on the device.
    """
    local = np.asarray(local, dtype=np.int64)
    lens = chunk.lengths[local]
    n, width = len(local), int(lens.max())
    total = int(lens.sum())
    row = np.repeat(np.arange(n, dtype=np.int64), lens)
    # Position of each token within its text.
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
    source = np.repeat(chunk.offsets[local], lens) + within
    col = within + (np.repeat(width - lens, lens) if left else 0)
    out = {
        "input_ids": np.full((n, width), pad_token_id, dtype=np.int64),
        "attention_mask": np.zeros((n, width), dtype=np.int64),
        "special_tokens_mask": np.ones((n, width), dtype=np.int64),
    }
    out["input_ids"][row, col] = chunk.flat_ids[source]
    out["attention_mask"][row, col] = 1
    out["special_tokens_mask"][row, col] = chunk.flat_special[source]
    if chunk.flat_types is not None:
        out["token_type_ids"] = np.full((n, width), pad_token_type_id, dtype=np.int64)
        out["token_type_ids"][row, col] = chunk.flat_types[source]
    out["real_index"] = row * width + col
    return out


class _BatchRunner:
    """Pad, run and pool batches, one batch ahead, halving on out-of-memory.

    On an accelerator the forward pass and pooling of batch ``i`` are queued
    asynchronously; the next batch is padded on the CPU while they run, and
    only then are batch ``i``'s statistics copied back.
    """

    def __init__(self, loaded, *, layers, attention, dtype, slots=None, positional=False,
                 pool_skip=0):
        self.loaded = loaded
        self.layers = layers
        self.attention = attention
        self.dtype = dtype
        self.slots = slots
        self.positional = positional
        self.pool_skip = pool_skip
        self.names = model_input_names(loaded.model)
        self.cap = None  # most texts per batch after an out-of-memory error
        tokenizer = loaded.tokenizer
        self.pad = dict(
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
            pad_token_type_id=getattr(tokenizer, "pad_token_type_id", 0) or 0,
            left=getattr(tokenizer, "padding_side", "right") == "left",
        )

    def prepare(self, job):
        import torch

        chunk, local = job
        arrays = pad_batch(chunk, local, **self.pad)
        special = torch.from_numpy(arrays.pop("special_tokens_mask"))
        real_index = torch.from_numpy(arrays.pop("real_index"))
        enc = {k: torch.from_numpy(v) for k, v in arrays.items()}
        return job, enc, special, real_index

    def launch(self, prepared):
        """Forward pass and pooling on the device; returns device tensors."""
        (chunk, local), enc, special, real_index = prepared
        device = self.loaded.device
        inputs = {k: v.to(device) for k, v in enc.items() if k in self.names}
        hidden, attn = self.loaded.hidden_states(
            inputs, self.layers, output_attentions=self.attention, real_index=real_index
        )
        stats, counts = pooled_statistics(
            hidden,
            inputs["attention_mask"],
            special.to(device),
            attn,
            slots=self.slots,
            positional=self.positional,
            pool_skip=self.pool_skip,
        )
        return chunk.start + local, stats, counts

    def run(self, jobs):
        """Yield ``(positions, stats, counts)`` for an iterable of ``(chunk, local)`` jobs."""
        from collections import deque

        jobs = iter(jobs)
        pending = deque()
        prepared = self._prepare_next(jobs, pending)
        while prepared is not None:
            try:
                launched = self.launch(prepared)
            except Exception as exc:
                if not is_out_of_memory(exc) or len(prepared[0][1]) == 1:
                    raise
                oom = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            else:
                oom = None
            if oom is not None:
                # Outside the except block, so the failed pass's tensors are freed.
                chunk, local = prepared[0]
                prepared = None
                free_accelerator_memory(self.loaded.device)
                half = (len(local) + 1) // 2
                self.cap = half
                logger.warning(
                    "Out of memory on %s with a batch of %d texts (%s); retrying "
                    "with batches of at most %d.",
                    self.loaded.device, len(local), oom, half,
                )
                pending.appendleft((chunk, local[half:]))
                pending.appendleft((chunk, local[:half]))
                prepared = self._prepare_next(jobs, pending)
                continue
            # Pad the next batch while the device works on this one.
            prepared = self._prepare_next(jobs, pending)
            positions, stats, counts = launched
            yield positions, stats.cpu().numpy(), counts.cpu().numpy()

    def _prepare_next(self, jobs, pending):
        if not pending:
            job = next(jobs, None)
            if job is None:
                return None
            pending.append(job)
        chunk, local = pending.popleft()
        if self.cap is not None and len(local) > self.cap:
            pending.appendleft((chunk, local[self.cap :]))
            local = local[: self.cap]
        return self.prepare((chunk, local))
