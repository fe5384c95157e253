"""Peak memory of extraction: bounded by the batch, not the corpus.

Each size runs in a fresh subprocess, which loads all-MiniLM-L6-v2, records
its resident set size (RSS) once the model is loaded and has run one small
batch, then transforms N unique synthetic short texts and reads its peak RSS
(``VmHWM`` from /proc/self/status, or ``ru_maxrss``). It prints the peak
against "model + output array" (the RSS after loading, plus the bytes of the
returned float32 matrix, plus the input texts themselves): what is left is
what extraction keeps beyond those, and it should not grow with N.

Example::

    python benchmarks/memory.py --sizes 10000,100000
"""

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, random, resource, sys, time
n, device, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]

def rss(field):
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

import skbert
from skbert import BertVectorizer
from skbert._model.backend import ModelSpec, resolve_model
path = path if path != "-" else resolve_model(ModelSpec(skbert.DEFAULT_MODEL))
words = ("the a movie film story plot actor scene music good bad great dull fun long short "
         "funny sad dark bright quiet loud old new first last best worst very quite rather "
         "really truly never always often").split()
rng = random.Random(0)
texts = [f"{i} " + " ".join(rng.choice(words) for _ in range(rng.randint(5, 15)))
         for i in range(n)]
texts_bytes = sum(sys.getsizeof(t) for t in texts) + sys.getsizeof(texts)
vec = BertVectorizer(path, device=device).fit(["warm up"])
vec.transform(texts[:256])
base = rss("VmRSS")
start = time.perf_counter()
X = vec.transform(texts)
seconds = time.perf_counter() - start
peak = rss("VmHWM")
print(json.dumps({"n": n, "rss_model": base, "texts_bytes": texts_bytes,
                  "output_bytes": X.nbytes, "peak": peak, "seconds": seconds}))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="-")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    mib = 1 << 20
    print(f"{'texts':>8}{'model RSS':>11}{'output':>9}{'peak RSS':>10}{'peak - model - output':>23}"
          f"{'seconds':>9}   (MiB)")
    for n in [int(s) for s in args.sizes.split(",")]:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(n), args.device, args.model],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            print(proc.stderr[-2000:])
            return proc.returncode
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["overhead"] = row["peak"] - row["rss_model"] - row["output_bytes"]
        rows.append(row)
        print(f"{n:>8}{row['rss_model'] / mib:>11.0f}{row['output_bytes'] / mib:>9.0f}"
              f"{row['peak'] / mib:>10.0f}{row['overhead'] / mib:>23.0f}{row['seconds']:>9.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
