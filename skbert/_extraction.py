"""The extraction engine: texts in, pooled statistics out, one batch at a time.

Texts are tokenised once to learn their lengths, sorted by token count and
cut into batches under a token budget, so that padding stays small. Each
batch goes through the model once, its hidden states are reduced to pooled
statistics (see :mod:`skbert._pooling`) and handed to the caller together
with the positions of its texts, so the caller can restore input order and
memory stays bounded by one batch.
"""

import contextlib
import inspect
import logging

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["plan_batches", "token_lengths", "iter_statistics"]

#: Default budget of (padded) tokens per batch: measured as a good CPU size.
DEFAULT_BATCH_TOKENS = 1024


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


def _model_input_names(model):
    params = inspect.signature(model.forward).parameters
    return {"input_ids", "attention_mask", "token_type_ids", "position_ids"} & set(params)


def _autocast(device, dtype):
    import torch

    if dtype in (None, "float32"):
        return contextlib.nullcontext()
    device_type = str(device).split(":")[0]
    return torch.autocast(device_type=device_type, dtype=getattr(torch, dtype))


def iter_statistics(
    texts,
    loaded,
    *,
    layers,
    attention,
    max_length,
    batch_size,
    max_batch_tokens=DEFAULT_BATCH_TOKENS,
    dtype="float32",
    verbose=False,
):
    """Yield pooled statistics for ``texts``, batch by batch.

    Parameters
    ----------
    texts : list of str
    loaded : skbert._backend.LoadedModel
    layers : list of int
        Non-negative hidden-state indices to return, in this order.
    attention : bool
        Whether to compute attention-pooling statistics (needs eager
        attention, which is slower).
    max_length : int
    batch_size, max_batch_tokens : int
    dtype : {"float32", "float16", "bfloat16"}
        Compute dtype (autocast); statistics are always float32.
    verbose : bool
        Show a tqdm progress bar.

    Yields
    ------
    positions : ndarray of int
        Positions into ``texts`` of this batch's texts.
    stats : ndarray of float32, shape (batch, len(layers), n_stats, hidden)
    counts : ndarray of int64, shape (batch, 2)
    """
    import torch

    from ._pooling import pooled_statistics

    if not texts:
        return
    tokenizer, model = loaded.tokenizer, loaded.model
    names = _model_input_names(model)
    bar = None
    if verbose:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(texts), unit="text", desc="BERT features")
    # The lock serialises threads sharing this model: fast tokenizers and
    # the attention-implementation switch are not thread-safe.
    try:
        with loaded.lock, loaded.attention_maps(attention), torch.inference_mode():
            lengths = token_lengths(tokenizer, texts, max_length=max_length)
            batches = plan_batches(
                lengths, batch_size=batch_size, max_batch_tokens=max_batch_tokens
            )
            for positions in batches:
                enc = tokenizer(
                    [texts[i] for i in positions],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                    return_special_tokens_mask=True,
                )
                special = enc.pop("special_tokens_mask")
                inputs = {k: v.to(loaded.device) for k, v in enc.items() if k in names}
                with _autocast(loaded.device, dtype):
                    out = loaded.forward(inputs, output_attentions=attention)
                hidden = [out.hidden_states[i] for i in layers]
                attn = None
                if attention:
                    attn = [out.attentions[max(i - 1, 0)] for i in layers]
                stats, counts = pooled_statistics(
                    hidden,
                    inputs["attention_mask"],
                    special.to(loaded.device),
                    attn,
                )
                yield positions, stats.cpu().numpy(), counts.cpu().numpy()
                if bar is not None:
                    bar.update(len(positions))
    finally:
        if bar is not None:
            bar.close()
