"""The ``skbert baseline``, ``skbert probe`` and ``skbert demo`` sub-commands.

``skbert.cli`` registers them with :func:`add_probe_parsers`. Each handler
reads labelled texts, checks them (one-line :class:`~skbert.exceptions.CLIError` or
:class:`~skbert.exceptions.InputError` on bad input), runs
:func:`skbert.probing.probe_layers` through the feature cache and prints the
result; ``baseline`` also writes a report (:mod:`skbert.cli.report`) and
optionally the fitted best pipeline.
"""

import argparse
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

from .._cache import cache_info, parse_size
from .._extraction.assembly import POOLINGS
from .._model import backend as _backend
from .._model.backend import DEFAULT_MODEL
from .._vectorizer import BertVectorizer
from ..datasets import load_demo
from ..exceptions import CLIError, WhiteningWarning
from ..probing import best_configuration, make_probe_pipeline, probe_layers
from ._common import checked_memory, extraction_params, fmt_c, layers_arg, table_rows
from .cache import _size
from .io import atomic_output, check_output_path, read_texts
from .report import save_probe_plot, write_report

__all__ = ["add_probe_parsers", "default_cache_dir"]

#: Environment variable naming the command line's default feature cache.
CACHE_ENV = "SKBERT_CACHE"

#: Size cap of the command line's default feature cache (not of ``--memory DIR``):
#: least recently used entries are evicted beyond it. About 40,000 short
#: sentences with all-MiniLM-L6-v2 (about 52 KB each, every layer's statistics).
DEFAULT_CACHE_MAX_BYTES = "2GiB"


def default_cache_dir():
    """The command line's default feature cache folder.

    ``$SKBERT_CACHE`` when set, else ``$XDG_CACHE_HOME/skbert``, else
    ``~/.cache/skbert``.

    Returns
    -------
    path : str
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return os.path.expanduser(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return os.path.join(os.path.expanduser(base), "skbert")


# ----------------------------------------------------------------- parsing
def _csv_list(convert, what):
    def parse(value):
        items = [v.strip() for v in value.split(",") if v.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}")
        try:
            return [convert(v) for v in items]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {what}; got {value!r}"
            ) from None

    return parse


def _choice_list(choices, what):
    def convert(v):
        if v not in choices:
            raise ValueError(v)
        return v

    parse = _csv_list(convert, f"{what} among {', '.join(choices)}")
    return parse


def _positive_float(v):
    x = float(v)
    if not x > 0:
        raise ValueError(v)
    return x


def _int_at_least(low, message):
    def parse(value):
        try:
            k = int(value)
        except ValueError:
            k = low - 1
        if k < low:
            raise argparse.ArgumentTypeError(f"{message}; got {value!r}")
        return k

    return parse


def _size_arg(value):
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if size < 1:
        raise argparse.ArgumentTypeError(f"expected a positive size; got {value!r}")
    return size


_positive_int = _int_at_least(1, "expected a positive int")
_folds = _int_at_least(2, "--cv needs an int of at least 2")


_POOLINGS = list(POOLINGS)
_WHITENINGS = ["none", "center", "whiten", "abtt"]


def _add_data_options(p, *, optional):
    group = p.add_argument_group("data")
    if optional:
        group.add_argument(
            "data", metavar="DATA", nargs="?", default=None,
            help="labelled texts: .csv, .tsv or .jsonl with a header (default: the bundled demo reviews)",
        )  # fmt: skip
    else:
        group.add_argument("data", metavar="DATA", help="labelled texts: .csv, .tsv or .jsonl with a header")
    group.add_argument("--text-column", default=None, metavar="C", help="column of the texts (default: 'text' or 'sentence')")
    group.add_argument("--label-column", default=None, metavar="L", help="column of the labels (default: 'label', 'labels', 'target' or 'y')")
    group.add_argument("--format", default="auto", choices=["auto", "csv", "tsv", "jsonl"], help="input format (default: by suffix)")


def _add_grid_options(p, *, poolings, whitening, cs):
    group = p.add_argument_group("search grid")
    group.add_argument("--layers", type=layers_arg, default="all", help="layers to probe: 'all' (default), an index, or comma-separated indices; 0 is the embedding output")
    group.add_argument("--pooling", type=_choice_list(_POOLINGS, "poolings"), default=poolings, metavar="LIST", help=f"comma-separated poolings among {', '.join(_POOLINGS)} (default: {','.join(poolings)})")
    group.add_argument("--whitening", type=_choice_list(_WHITENINGS, "whitenings"), default=whitening, metavar="LIST", help=f"comma-separated whitenings among {', '.join(_WHITENINGS)}, fitted on each training fold (default: {','.join(whitening)})")
    group.add_argument("--n-components", type=_positive_int, default=None, metavar="K", help="dimensions kept by whiten (default: all when a training fold has more texts than dimensions, else half its texts) or directions removed by abtt (default: 1%% of them)")
    if cs is not None:
        group.add_argument("--C", dest="C", type=_csv_list(_positive_float, "positive numbers"), default=cs, metavar="LIST", help=f"comma-separated inverse regularisation strengths of the logistic regression (default: {','.join(f'{c:g}' for c in cs)})")
    else:
        group.add_argument("--C", dest="C", type=_positive_float, default=1.0, help="inverse regularisation strength of the logistic regression (default: %(default)s)")
    group.add_argument("--cv", type=_folds, default=5, metavar="K", help="stratified cross-validation folds, shuffled (default: %(default)s)")
    group.add_argument("--scoring", default=None, help="scikit-learn scorer name, e.g. accuracy, f1_macro, balanced_accuracy (default: accuracy)")
    group.add_argument("--seed", type=int, default=0, help="seed of the fold shuffling (default: %(default)s)")
    group.add_argument("--n-jobs", type=int, default=None, metavar="N", help="parallel jobs over the folds (default: 1)")


def _add_model_options(p):
    group = p.add_argument_group("model and cache")
    group.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local folder (default: %(default)s, bundled offline)")
    group.add_argument("--revision", default=None, help="hub revision to load")
    group.add_argument("--exclude-special-tokens", action="store_true", help="leave [CLS]/[SEP] out of mean, max and attention pooling")
    group.add_argument("--max-length", type=int, default=None, help="maximum tokens per text (default: the model's limit, at most 512)")
    group.add_argument("--batch-size", type=int, default=None, help="maximum texts per forward pass (default: BertVectorizer's, 64 on a CPU)")
    group.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default: %(default)s)")
    group.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="compute dtype (default: %(default)s)")
    group.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub to run")
    cache = group.add_mutually_exclusive_group()
    cache.add_argument("--memory", default=None, metavar="DIR", help=f"feature cache folder (default: ${CACHE_ENV}, else $XDG_CACHE_HOME/skbert, else ~/.cache/skbert); a --memory that cannot be used is an error, a default one that cannot be used runs without a cache")
    cache.add_argument("--no-cache", action="store_true", help="do not use a feature cache (the model runs on every invocation)")
    group.add_argument("--cache-max-bytes", type=_size_arg, default=None, metavar="SIZE", help=f"size cap of the feature cache, least recently used entries evicted beyond it: bytes or 500M, 4G, 1.5GiB (default: {DEFAULT_CACHE_MAX_BYTES} for the default cache folder, no cap for --memory DIR)")


def _add_baseline_options(p):
    out = p.add_argument_group("output")
    out.add_argument("--top", type=int, default=10, metavar="N", help="leaderboard rows to print (default: %(default)s)")
    out.add_argument("--report", default="skbert-report", metavar="DIR", help="folder of the report and its probe plot (default: %(default)s)")
    out.add_argument("--report-format", default="markdown", choices=["markdown", "html"], help="report.md or report.html (default: %(default)s)")
    out.add_argument("--no-report", action="store_true", help="write no report")
    out.add_argument("--save-model", default=None, metavar="FILE", help="write the best pipeline, refitted on all texts, with joblib (load it with joblib.load and call predict on texts)")
    out.add_argument("--test", default=None, metavar="DATA", help="held-out labelled texts (same format and columns as DATA): the best pipeline, refitted on all of DATA, is scored on them, with per-class precision, recall, F1 and the confusion matrix")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


_BASELINE_GRID = dict(poolings=["cls", "mean", "max"], whitening=["none", "whiten"], cs=[0.1, 1.0, 10.0])

_BASELINE_DESCRIPTION = """\
Find the best frozen-BERT baseline for a labelled text data set. Every
combination of layer x pooling x whitening x C is scored by a stratified
cross-validated logistic regression on the frozen features; the model runs
once per unique text for the whole grid, and not at all on a second run
(features come from the feature cache). Prints a ranked leaderboard and the
best configuration with its cross-validated score, writes a report
(Markdown or HTML, with the probe plot as PNG) and, with --save-model, the
best pipeline refitted on all texts.
"""

_EPILOG = """\
examples:
  skbert baseline reviews.csv --text-column review --label-column stars
  skbert baseline train.tsv --pooling mean --whitening none --C 1 --cv 10
  skbert baseline data.jsonl --save-model best.joblib --report-format html
  skbert baseline            # no DATA: the bundled demo reviews
"""


def add_probe_parsers(subparsers):
    """Register ``baseline``, ``probe`` and ``demo`` on an argparse ``subparsers``.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``ArgumentParser.add_subparsers()`` returned.
    """
    fmt = argparse.RawDescriptionHelpFormatter

    p = subparsers.add_parser(
        "baseline", help="grid-search layer x pooling x whitening x C; leaderboard, report, best model",
        description=_BASELINE_DESCRIPTION, epilog=_EPILOG, formatter_class=fmt,
    )  # fmt: skip
    _add_data_options(p, optional=True)
    _add_grid_options(p, **_BASELINE_GRID)
    _add_model_options(p)
    _add_baseline_options(p)
    p.set_defaults(handler=_run_baseline)

    p = subparsers.add_parser(
        "demo", help="run the baseline on the bundled demo reviews (offline)",
        description=(
            "Run `skbert baseline` on the small labelled data set that ships with\n"
            "skbert (310 short reviews, positive or negative; see\n"
            "skbert.datasets.load_demo), offline on the default model. Accepts the\n"
            "baseline's options. `skbert baseline` without DATA does the same."
        ),
        epilog=(
            "examples:\n"
            "  skbert demo\n"
            "  skbert demo --report-format html --save-model demo.joblib\n"
        ),
        formatter_class=fmt,
    )  # fmt: skip
    _add_grid_options(p, **_BASELINE_GRID)
    _add_model_options(p)
    _add_baseline_options(p)
    p.set_defaults(handler=_run_baseline, data=None, text_column=None, label_column=None, format="auto")

    p = subparsers.add_parser(
        "probe", help="linear-probe score of every layer and pooling (table and plot)",
        description=(
            "Score a linear probe (logistic regression) on the frozen features of\n"
            "every layer, for each pooling and whitening, by stratified\n"
            "cross-validation, and print the table (rows: layers; columns:\n"
            "poolings; * marks the best cell). The model runs once per unique text\n"
            "for the whole table, and not at all when the feature cache is warm."
        ),
        epilog=(
            "examples:\n"
            "  skbert probe train.tsv --pooling cls,mean,max --plot probe.png\n"
            "  skbert probe data.csv --text-column body --label-column topic -o table.csv\n"
        ),
        formatter_class=fmt,
    )  # fmt: skip
    _add_data_options(p, optional=False)
    _add_grid_options(p, poolings=["cls", "mean", "max"], whitening=["none"], cs=None)
    _add_model_options(p)
    out = p.add_argument_group("output")
    out.add_argument("-o", "--output", default=None, metavar="TABLE.csv", help="write the tidy table as CSV")
    out.add_argument("--plot", default=None, metavar="FILE.png", help="draw score by layer, one line per pooling (needs matplotlib)")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_run_probe)


# ---------------------------------------------------------------- helpers
def _load_data(args):
    if args.data is None:
        demo = load_demo()
        return list(demo.data), [str(t) for t in demo.target], "bundled demo reviews (skbert.datasets.load_demo)"
    texts, labels = read_texts(
        args.data,
        text_column=args.text_column,
        label_column=args.label_column,
        fmt=args.format,
        need_labels=True,
    )
    return texts, labels, str(args.data)


def _check_labels(labels, folds, source):
    from collections import Counter

    if not labels:
        raise CLIError(f"{source}: no rows.")
    counts = Counter(labels)
    if len(counts) < 2:
        (only,) = counts
        raise CLIError(
            f"{source}: every row has the label {only!r}; a classifier needs at least two classes."
        )
    label, smallest = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
    if smallest < folds:
        raise CLIError(
            f"{source}: class {label!r} has {smallest} example{'s' if smallest != 1 else ''}, "
            f"fewer than the {folds} cross-validation folds; add examples or lower --cv "
            f"(at least 2)."
        )
    return counts


def _check_scoring(scoring):
    if scoring is None:
        return None
    from sklearn.metrics import get_scorer

    try:
        get_scorer(scoring)
    except ValueError:
        raise CLIError(
            f"unknown --scoring {scoring!r}; use a scikit-learn scorer name such as "
            "accuracy, balanced_accuracy or f1_macro."
        ) from None
    return scoring


def _memory(args):
    """The feature cache folder of this run (checked once; see :func:`checked_memory`)."""
    if not hasattr(args, "_memory"):
        if args.no_cache:
            args._memory = None
        elif args.memory is not None:
            args._memory = checked_memory(args.memory, explicit=True)
        else:
            args._memory = checked_memory(default_cache_dir(), explicit=False)
    return args._memory


def _cache_cap(args):
    """The cache's size cap in bytes, or None (see ``--cache-max-bytes``)."""
    if args.cache_max_bytes is not None:
        return args.cache_max_bytes
    if args.no_cache or args.memory is not None:
        return None
    return parse_size(DEFAULT_CACHE_MAX_BYTES)


def _cache_state(memory):
    """(entries, bytes) of the cache in ``memory``; (0, 0) before it exists."""
    try:
        info = cache_info(memory)
    except (OSError, ValueError):
        return 0, 0
    return info["entries"], info["bytes"]


def _cache_line(memory, before, cap):
    """What this run wrote into the cache, its total and its cap, in one line."""
    entries, size = _cache_state(memory)
    added, grown = entries - before[0], size - before[1]
    sign = "+" if grown >= 0 else "-"
    cap_text = f" (cap {_size(cap)}, --cache-max-bytes)" if cap else " (no cap)"
    return (
        f"cache: {memory}: {added:+,} entries, {sign}{_size(abs(grown))} this run; "
        f"{entries:,} entries, {_size(size)} in all{cap_text}"
    )


def _vectorizer_params(args):
    params = extraction_params(args)
    cap = _cache_cap(args)
    if cap is not None and _memory(args) is not None:
        params["cache_max_bytes"] = cap
    if args.n_components is not None:
        params["n_components"] = args.n_components
    return params


def _whitenings(args):
    return tuple(None if w == "none" else w for w in args.whitening)


def _splitter(args):
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(n_splits=args.cv, shuffle=True, random_state=args.seed)


def _run_grid(args, texts, labels, param_grid):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    cv = _splitter(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # Said once, in the command's own terms, by _whitening_note.
        warnings.simplefilter("ignore", WhiteningWarning)
        return probe_layers(
            texts,
            labels,
            model_name=args.model,
            layers=args.layers,
            poolings=tuple(args.pooling),
            whitening=_whitenings(args),
            estimator=LogisticRegression(max_iter=1000),
            param_grid=param_grid,
            cv=cv,
            scoring=args.scoring,
            memory=_memory(args),
            n_jobs=args.n_jobs,
            vectorizer_params=_vectorizer_params(args),
            error_score="raise",
            verbose=not args.quiet,
        )


def _whiten_dims(args, texts, labels):
    """(dimensions "whiten" would keep, texts of the smallest training fold)."""
    import numpy as np

    n_train = min(len(train) for train, _ in _splitter(args).split(np.zeros((len(labels), 1)), labels))
    params = {k: v for k, v in _vectorizer_params(args).items() if k != "n_components"}
    hidden = BertVectorizer(args.model, **params).fit(texts[:1]).hidden_size_  # config only
    dim = max(hidden * (2 if p == "mean_max" else 1) for p in args.pooling)
    kept = dim if args.n_components is None else min(args.n_components, dim)
    return kept, n_train


def _default_components(args, texts, labels):
    """Choose ``--n-components`` for "whiten" when it was not given; a line saying so, or None.

    Whitening all dimensions on a training fold with fewer texts than
    dimensions amplifies noise (the demo: 384 dimensions, 248 texts per
    fold), and a default grid must not produce scores it then calls
    unreliable. So without ``--n-components``, "whiten" keeps half the texts
    of a training fold when it could not keep them all. With "abtt" in the
    same grid ``--n-components`` would also change abtt's meaning, so then
    nothing is chosen (and :func:`_whitening_note` speaks).
    """
    if "whiten" not in args.whitening or args.n_components is not None or "abtt" in args.whitening:
        return None
    kept, n_train = _whiten_dims(args, texts, labels)
    if kept < n_train:
        return None
    args.n_components = max(1, n_train // 2)
    return (
        f"whiten keeps {args.n_components} of {kept} dimensions: half the {n_train} texts "
        f"of a training fold, as all {kept} would amplify noise (set --n-components to choose)."
    )


def _whitening_note(args, texts, labels):
    """A warning, or None: does "whiten" keep more dimensions than a fold has texts?

    Whitening rescales every kept direction to unit variance; fitted on ``n``
    texts, at most ``n - 1`` directions carry variance, so keeping ``n`` or
    more amplifies noise and its scores mislead. As
    :class:`skbert.WhiteningWarning`, said once, with the option that fixes
    it. Only an explicit ``--n-components`` (or a grid with "abtt") gets
    here: otherwise :func:`_default_components` chose fewer.
    """
    if "whiten" not in args.whitening:
        return None
    kept, n_train = _whiten_dims(args, texts, labels)
    if kept < n_train:
        return None
    return (
        f"whiten keeps {kept} dimensions but was fitted on {n_train} texts per training "
        f"fold, so it amplifies noise and its scores are unreliable; keep fewer with "
        f"--n-components (e.g. {max(1, n_train // 2)}), or use more texts."
    )


def _ranked(rows):
    return sorted(rows, key=lambda r: -r["mean_score"])  # stable: ties keep table order


def _leaderboard_lines(rows, top, metric):
    header = f"{'rank':>4}  {'layer':>5}  {'pooling':<9} {'whitening':<9} {'C':>6}  {metric}"
    lines = [header]
    for rank, r in enumerate(_ranked(rows)[:top], start=1):
        lines.append(
            f"{rank:>4}  {r['layer']:>5}  {r['pooling']:<9} {r['whitening']:<9} "
            f"{fmt_c(r['C']):>6}  {r['mean_score']:.3f} \u00b1 {r['std_score']:.3f}"
        )
    return lines


def _describe_best(best, metric, folds):
    return (
        f"layer={best['layer']} pooling={best['pooling']} whitening={best['whitening'] or 'none'} "
        f"C={fmt_c(best['C'])}: {metric} {best['mean_score']:.3f} \u00b1 {best['std_score']:.3f} "
        f"({folds}-fold CV)"
    )


def _held_out(pipe, test_data, metric, scoring):
    """The refitted winner on held-out texts: its score and per-class metrics."""
    from sklearn.metrics import confusion_matrix, get_scorer, precision_recall_fscore_support

    texts, labels, source = test_data
    pred = pipe.predict(texts)
    score = get_scorer(scoring or "accuracy")(pipe, texts, labels)
    classes = sorted(set(labels) | set(pred.tolist()))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, pred, labels=classes, zero_division=0
    )
    return dict(
        source=source,
        n_texts=len(texts),
        metric=metric,
        score=float(score),
        classes=[str(c) for c in classes],
        per_class=[
            dict(label=str(c), precision=float(p), recall=float(r), f1=float(f), support=int(n))
            for c, p, r, f, n in zip(classes, precision, recall, f1, support)
        ],
        confusion=confusion_matrix(labels, pred, labels=classes).tolist(),
    )


def _held_out_lines(h):
    width = max(5, *(len(c) for c in h["classes"]))
    lines = [
        f"held-out: {h['source']}: {h['n_texts']} texts, {h['metric']} {h['score']:.3f} "
        "(best pipeline refitted on all training texts)",
        f"  {'class':<{width}}  precision  recall     f1  support",
    ]
    for r in h["per_class"]:
        lines.append(
            f"  {r['label']:<{width}}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:5.3f}  {r['support']:7d}"
        )
    lines.append(f"  confusion (rows: true, columns: predicted {', '.join(h['classes'])}):")
    for c, row in zip(h["classes"], h["confusion"]):
        lines.append(f"  {c:<{width}}  " + "  ".join(f"{v:>{max(3, len(k))}}" for v, k in zip(row, h["classes"])))
    return lines


def _atomic_dump(obj, path):
    import joblib

    with atomic_output(path) as tmp:
        joblib.dump(obj, tmp)


def _command_line(args):
    argv = getattr(args, "argv", None)
    argv = sys.argv[1:] if argv is None else argv
    return "skbert " + " ".join(shlex.quote(str(a)) for a in argv)


# ---------------------------------------------------------------- handlers
def _run_baseline(args):
    started = time.perf_counter()
    if args.save_model:
        check_output_path(args.save_model)
    texts, labels, source = _load_data(args)
    counts = _check_labels(labels, args.cv, source)
    test_data = None
    if args.test:
        test_texts, test_labels = read_texts(
            args.test, text_column=args.text_column, label_column=args.label_column,
            fmt=args.format, need_labels=True,
        )  # fmt: skip
        test_data = (test_texts, test_labels, str(args.test))
    scoring = _check_scoring(args.scoring)
    metric = scoring or "accuracy"
    if args.top < 1:
        raise CLIError("--top needs at least 1 row.")
    memory = _memory(args)  # an unusable --memory fails here, before any work
    out = sys.stdout
    chosen = _default_components(args, texts, labels)
    cache_before = _cache_state(memory) if memory else None

    classes = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"data: {source}: {len(texts)} texts, {len(counts)} classes ({classes})", file=out)
    table = _run_grid(args, texts, labels, {"C": list(args.C)})
    rows = table_rows(table)
    n_layers = len({r["layer"] for r in rows})
    n_configs = len(rows)
    print(
        f"model: {args.model}; grid: {n_layers} layers x {len(args.pooling)} poolings x "
        f"{len(args.whitening)} whitenings x {len(args.C)} C = {n_configs} configurations, "
        f"{args.cv}-fold stratified CV",
        file=out,
    )
    forward = table.attrs.get("forward_texts") if hasattr(table, "attrs") else None
    cache_note = f"cache {memory}" if memory else "no cache"
    if forward is not None:
        print(
            f"features: {len(texts)} texts, {forward} through the model ({cache_note}), "
            f"{table.attrs['extract_seconds']:.1f} s",
            file=out,
        )
    if memory:
        print(_cache_line(memory, cache_before, _cache_cap(args)), file=out)
    if chosen:
        print(f"whitening: {chosen}", file=out)
    print("", file=out)
    print("\n".join(_leaderboard_lines(rows, args.top, metric)), file=out)
    best = best_configuration(table)
    print("", file=out)
    print("best: " + _describe_best(best, metric, args.cv), file=out)
    note = _whitening_note(args, texts, labels)
    if note:
        print(f"note: {note}", file=out)

    model_path = None
    heldout = None
    if args.save_model or args.test:
        before = _backend.forward_counts()["texts"]
        pipe = make_probe_pipeline(
            best,
            model_name=args.model,
            memory=memory,
            vectorizer_params=_vectorizer_params(args),
        )
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            pipe.fit(texts, labels)
        refit_forward = _backend.forward_counts()["texts"] - before
        if args.test:
            heldout = _held_out(pipe, test_data, metric, scoring)
            for line in _held_out_lines(heldout):
                print(line, file=out)
        if args.save_model:
            # The saved pipeline does not point at this machine's cache.
            pipe.named_steps["bert"].set_params(memory=None, cache_max_bytes=None, verbose=False)
            _atomic_dump(pipe, args.save_model)
            model_path = args.save_model
            print(
                f"model: {model_path} (best pipeline refitted on all {len(texts)} texts; "
                f"{refit_forward} through the model)",
                file=out,
            )

    if not args.no_report:
        context = dict(
            source=source,
            n_texts=len(texts),
            class_counts=dict(sorted(counts.items())),
            model=str(args.model),
            metric=metric,
            folds=args.cv,
            seed=args.seed,
            grid=dict(
                layers=sorted({r["layer"] for r in rows}),
                pooling=list(args.pooling),
                whitening=list(args.whitening),
                C=list(args.C),
            ),
            best=best,
            memory=memory,
            forward_texts=forward,
            extract_seconds=table.attrs.get("extract_seconds") if hasattr(table, "attrs") else None,
            total_seconds=time.perf_counter() - started,
            model_path=model_path,
            notes=[n for n in (chosen, note) if n],
            heldout=heldout,
            command=_command_line(args),
        )
        path, plot_path = write_report(args.report, table, context, fmt=args.report_format)
        extra = f" and {plot_path}" if plot_path else " (no plot: matplotlib is not installed)"
        print(f"report: {path}{extra}", file=out)
    return 0


def _pivot_lines(rows, metric):
    poolings = list(dict.fromkeys(r["pooling"] for r in rows))
    whitenings = list(dict.fromkeys(r["whitening"] for r in rows))
    keys = [(p, w) for w in whitenings for p in poolings]
    names = [p if len(whitenings) == 1 else f"{p}/{w}" for p, w in keys]
    cell = {(r["layer"], r["pooling"], r["whitening"]): r for r in rows}
    width = max(15, *(len(n) for n in names))
    lines = [f"{metric} by layer (mean \u00b1 std over folds)", f"{'layer':>5}  " + "  ".join(f"{n:>{width}}" for n in names)]
    best = max(rows, key=lambda r: r["mean_score"])
    for layer in sorted({r["layer"] for r in rows}):
        cells = []
        for p, w in keys:
            r = cell.get((layer, p, w))
            if r is None:
                cells.append(f"{'':>{width}}")
                continue
            mark = "*" if r is best else " "
            cells.append(f"{r['mean_score']:.3f} \u00b1 {r['std_score']:.3f}{mark}".rjust(width))
        lines.append(f"{layer:>5}  " + "  ".join(cells))
    return lines


def _run_probe(args):
    for path in (args.output, args.plot):
        if path:
            check_output_path(path)
    texts, labels, source = _load_data(args)
    counts = _check_labels(labels, args.cv, source)
    scoring = _check_scoring(args.scoring)
    metric = scoring or "accuracy"
    memory = _memory(args)  # an unusable --memory fails here, before any work
    chosen = _default_components(args, texts, labels)
    cache_before = _cache_state(memory) if memory else None
    table = _run_grid(args, texts, labels, {"C": [args.C]})
    rows = table_rows(table)
    for r in rows:
        r.pop("C", None)
    print(f"data: {source}: {len(texts)} texts, {len(counts)} classes; model: {args.model}; {args.cv}-fold stratified CV")
    if hasattr(table, "attrs"):
        print(f"features: {table.attrs['forward_texts']} of {len(texts)} texts through the model, {table.attrs['extract_seconds']:.1f} s")
    if memory:
        print(_cache_line(memory, cache_before, _cache_cap(args)))
    if chosen:
        print(f"whitening: {chosen}")
    print("\n".join(_pivot_lines(rows, metric)))
    note = _whitening_note(args, texts, labels)
    if note:
        print(f"note: {note}")
    if hasattr(table, "drop"):
        table = table.drop(columns=["C"])
    if args.output:
        _write_csv(rows, args.output)
        print(f"table: {args.output}")
    if args.plot:
        save_probe_plot(table, args.plot, title=f"{Path(source).name}: linear probe by layer")
        print(f"plot: {args.plot}")
    return 0


def _write_csv(rows, path):
    import csv

    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
