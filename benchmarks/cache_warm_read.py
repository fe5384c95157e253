"""How fast a warm feature cache assembles features, with no model at all.

Fills a cache with N synthetic texts (cold: the model runs once per text),
then times a warm ``fit_transform`` over the same texts in a fresh vectorizer
(zero forward passes) and a second warm call with another layer/pooling
choice. Prints texts per second and bytes per text.

    python benchmarks/cache_warm_read.py --n-texts 100000            # tiny model
    python benchmarks/cache_warm_read.py --model default --n-texts 5000

The tiny model (hidden 32, 3 hidden states) makes entries of 2,000 bytes, so
most of the time is per-file overhead; with all-MiniLM-L6-v2 (53,840 bytes
per text) the time per byte shows.
"""

import argparse
import random
import tempfile
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-texts", type=int, default=100_000)
    parser.add_argument("--model", default="tiny", help="'tiny' (seeded, offline), 'default', or a path/hub id")
    parser.add_argument("--memory", default=None, help="cache directory (default: a temporary one)")
    parser.add_argument("--cache-dtype", default="float32", choices=["float32", "float16"])
    args = parser.parse_args(argv)

    from skbert import BertVectorizer, DEFAULT_MODEL, cache_info
    from skbert._model.backend import forward_counts
    from skbert._testing import TINY_WORDS, make_tiny_model

    tmp = tempfile.TemporaryDirectory(prefix="skbert-bench-")
    model = args.model
    if model == "tiny":
        model = str(make_tiny_model(f"{tmp.name}/tiny"))
    elif model == "default":
        model = DEFAULT_MODEL
    memory = args.memory or f"{tmp.name}/cache"
    rng = random.Random(0)
    texts = list(
        dict.fromkeys(
            f"{i} " + " ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(3, 15)))
            for i in range(args.n_texts)
        )
    )
    n = len(texts)

    def timed(**params):
        vec = BertVectorizer(model, memory=memory, cache_dtype=args.cache_dtype, **params)
        before = forward_counts()["texts"]
        start = time.perf_counter()
        X = vec.fit_transform(texts)
        return time.perf_counter() - start, forward_counts()["texts"] - before, X, vec

    cold_s, cold_fwd, X_cold, _ = timed()
    warm_s, warm_fwd, X_warm, vec = timed()
    other_s, other_fwd, _, _ = timed(layers=[0, -1], pooling="max", exclude_special_tokens=True)
    info = cache_info(memory)
    per_text = info["bytes"] / max(info["entries"], 1)
    print(f"model: {model}")
    print(f"texts: {n:,}   cache: {info['bytes'] / 2**20:,.1f} MiB, {per_text:,.0f} bytes per text "
          f"({args.cache_dtype})")
    print(f"{'call':<42}{'forward texts':>14}{'seconds':>10}{'texts/s':>12}")
    for name, s, fwd in (
        ("cold (model runs, entries written)", cold_s, cold_fwd),
        ("warm, same configuration", warm_s, warm_fwd),
        ("warm, layers=[0, -1], max, no specials", other_s, other_fwd),
    ):
        print(f"{name:<42}{fwd:>14,}{s:>10.2f}{n / s:>12,.0f}")
    print(f"warm / cold time: {warm_s / cold_s:.3f}")
    print(f"warm features equal cold ones bitwise: {np.array_equal(X_cold, X_warm)}")
    print(f"last call: {vec.last_cache_stats_}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
