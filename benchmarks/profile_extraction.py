"""Where extraction time goes: a torch.profiler table per forward path.

Runs ``BertVectorizer`` (mean-pooled last layer, default settings) on the
first ``--n-texts`` SST-2 training sentences, once per path, and prints the
operators that took the most time, with each path's wall time:

- ``transformers``: transformers' own forward (what architectures outside
  ``skbert._model.encoder.LEAN_MODEL_TYPES`` run);
- ``lean-blas``: skbert's lean pass with ``F.linear`` (the BLAS, MKL on x86);
- ``lean``: the default, the lean pass with oneDNN's float32 linear kernel
  where it is available.

Example::

    python benchmarks/profile_extraction.py --n-texts 2000

Data come from ``--data-home`` (default ``../shared/data`` or
``$SKBERT_DATA``); the script skips with a message when they are absent.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import DEFAULT_DATA, load_corpora  # noqa: E402

PATHS = ("transformers", "lean-blas", "lean")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-texts", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, help="untimed-by-profiler rounds")
    parser.add_argument("--rows", type=int, default=12, help="operators listed per path")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--data-home", default=os.environ.get("SKBERT_DATA", str(DEFAULT_DATA)))
    args = parser.parse_args(argv)
    corpora, missing = load_corpora(args.data_home, args.n_texts, 0)
    if corpora is None:
        print(f"SKIPPED: benchmark data not found ({missing}); pass --data-home.")
        return 0
    texts = corpora["short"]

    import torch
    from torch.profiler import ProfilerActivity, profile

    import skbert
    from skbert import BertVectorizer
    from skbert._model import backend as _backend
    from skbert._model.backend import ModelSpec

    path = _backend.resolve_model(ModelSpec(skbert.DEFAULT_MODEL))
    loaded = _backend.load_model(ModelSpec(path), "cpu")
    lean, onednn = loaded.lean, loaded.onednn
    vec = BertVectorizer(path, device="cpu").fit(["warm up"])
    print(f"{len(texts)} SST-2 sentences, {torch.get_num_threads()} threads, "
          f"oneDNN kernel available: {onednn}")
    settings = {"transformers": (None, False), "lean-blas": (lean, False), "lean": (lean, onednn)}
    try:
        for name in args.paths.split(","):
            loaded.lean, loaded.onednn = settings[name]
            vec.transform(texts[:256])
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                vec.transform(texts)
                times.append(time.perf_counter() - start)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                vec.transform(texts)
            print(f"\n== {name}: {statistics.median(times):.3f} s "
                  f"(median of {args.repeats}, without the profiler)")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    finally:
        loaded.lean, loaded.onednn = lean, onednn
    return 0


if __name__ == "__main__":
    sys.exit(main())
