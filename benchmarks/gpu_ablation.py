"""What each part of the GPU path is worth: reduced precision, attention, tokenising threads.

On a CUDA GPU, for one seeded encoder shape and corpus, times
``BertVectorizer.transform`` (mean-pooled last layer) with one part turned off
at a time, all in one process, and prints texts/s and the ratio to the full
path:

- ``full``: the default float16 path (weights converted once, stacked
  projections, variable-length attention, tokenising threads);
- ``autocast``: float16 as it ran before, under ``torch.autocast`` over float32
  weights (cast again in every call);
- ``padded-attention``: variable-length attention off (padded SDPA);
- ``one-tokenizer-thread``: one tokenising thread, under
  ``TOKENIZERS_PARALLELISM=false``;
- ``float32``: for reference.

It then profiles the full path once (``torch.profiler``) and prints the
busiest CUDA kernels and the fraction of the wall time the GPU was busy.

Example (as run for the performance guide)::

    python benchmarks/gpu_ablation.py --shape minilm --n-texts 10000

Data come from ``--data-home`` (default ``../shared/data`` or
``$SKBERT_DATA``); the script skips with a message when they, or a GPU, are
absent.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import DEFAULT_DATA, SHAPES, load_corpora, synthetic_model  # noqa: E402


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _time(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="minilm", choices=sorted(SHAPES))
    parser.add_argument("--corpus", default="short", choices=("short", "long"))
    parser.add_argument("--n-texts", type=int, default=10000)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds (best kept)")
    parser.add_argument("--device", default="cuda",
                        help="cuda; cpu only to check the script itself (with bfloat16)")
    parser.add_argument("--model", default=None, help="template folder (default: bundled)")
    parser.add_argument("--data-home", default=os.environ.get("SKBERT_DATA", str(DEFAULT_DATA)))
    args = parser.parse_args(argv)

    n_short, n_long = (args.n_texts, 0) if args.corpus == "short" else (0, args.n_texts)
    corpora, missing = load_corpora(args.data_home, n_short, n_long)
    if corpora is None:
        print(f"SKIPPED: benchmark data not found ({missing}).")
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("SKIPPED: no CUDA GPU.")
        return 0
    reduced = "float16" if args.device == "cuda" else "bfloat16"
    import skbert
    from skbert import BertVectorizer
    from skbert._extraction import batches
    from skbert._model import backend, encoder
    from skbert._model.backend import ModelSpec, resolve_model

    texts = corpora[args.corpus]
    template = args.model or resolve_model(ModelSpec(skbert.DEFAULT_MODEL))
    path = synthetic_model(template, args.shape, Path(tempfile.mkdtemp()) / args.shape)

    def vec(dtype):
        v = BertVectorizer(path, device=args.device, dtype=dtype, max_length=args.max_length)
        return v.fit(["warm up"])

    full = vec(reduced)
    full.transform(texts[:256])
    results = {"full": _time(lambda: full.transform(texts), args.repeats)}

    # Autocast over float32 weights: what reduced precision was before.
    original = backend.prepare_precision
    backend.prepare_precision = lambda *a, **k: False
    backend._MODELS.clear()
    try:
        old = vec(reduced)
        old.transform(texts[:256])
        results["autocast"] = _time(lambda: old.transform(texts), args.repeats)
    finally:
        backend.prepare_precision = original
        backend._MODELS.clear()

    full = vec(reduced)
    full.transform(texts[:256])
    saved = encoder.varlen_attention_for
    encoder.varlen_attention_for = lambda device, dtype: None
    try:
        results["padded-attention"] = _time(lambda: full.transform(texts), args.repeats)
    finally:
        encoder.varlen_attention_for = saved

    saved_workers, saved_env = batches.tokenize_workers, os.environ.get("TOKENIZERS_PARALLELISM")
    batches.tokenize_workers = lambda device: 1
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        results["one-tokenizer-thread"] = _time(lambda: full.transform(texts), args.repeats)
    finally:
        batches.tokenize_workers = saved_workers
        if saved_env is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved_env

    fp32 = vec("float32")
    fp32.transform(texts[:256])
    results["float32"] = _time(lambda: fp32.transform(texts), args.repeats)

    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    print(f"\n{name}, {reduced}; {args.shape} shape, {len(texts)} {args.corpus} "
          f"texts, max_length {args.max_length}; best of {args.repeats}")
    print(f"{'variant':<22}{'texts/s':>10}{'x full':>8}")
    for name, seconds in results.items():
        print(f"{name:<22}{len(texts) / seconds:>10,.0f}{results['full'] / seconds:>8.2f}")

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with profile(activities=activities) as prof:
        _sync()
        start = time.perf_counter()
        full.transform(texts)
        _sync()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    if args.device != "cuda":
        print(events.table(sort_by="self_cpu_time_total", row_limit=12))
        return 0
    attr = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else (
        "self_cuda_time_total")
    busy = sum(getattr(e, attr) for e in events) / 1e6
    print(f"\nprofiled full pass: wall {wall:.3f} s (with the profiler), GPU kernels "
          f"{busy:.3f} s: busy {100 * busy / wall:.0f}% of the wall time")
    print(events.table(sort_by=attr, row_limit=12, max_name_column_width=60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
