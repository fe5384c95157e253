"""The report of ``skbert baseline``: Markdown or HTML, with the probe plot as PNG.

:func:`write_report` writes ``report.md`` (or ``report.html``) and
``probe.png`` into a folder; the plot needs matplotlib (optional: without it
the report says so and has no picture). Drawing uses matplotlib's
object-oriented API, never pyplot, so no display backend is involved.
"""

import html
from pathlib import Path

from .._version import __version__
from ..probing import plot_probe
from ._common import fmt_c, table_rows
from .io import atomic_output

__all__ = ["save_probe_plot", "write_report"]

#: Leaderboard rows in the report.
REPORT_TOP = 20


def save_probe_plot(table, path, *, title=None):
    """Draw :func:`skbert.probing.plot_probe` into a PNG file.

    Returns
    -------
    path : str or None
        None when matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None

    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = plot_probe(table, ax=fig.subplots(), title=title)
    legend = ax.get_legend()
    if legend is not None:
        # Outside the axes, to their right: "best" placement still covered
        # points of a full table.
        ax.legend(
            title=legend.get_title().get_text(), fontsize="small",
            loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
        )  # fmt: skip
    path = str(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    return path


def _facts(context, rows):
    c = context
    classes = ", ".join(f"{k} {v}" for k, v in c["class_counts"].items())
    grid = c["grid"]
    layers = grid["layers"]
    if layers == list(range(layers[0], layers[-1] + 1)) and len(layers) > 2:
        layer_text = f"{layers[0]}\u2013{layers[-1]}"
    else:
        layer_text = ", ".join(map(str, layers))
    n_configs = len(rows)
    chance = max(c["class_counts"].values()) / c["n_texts"]
    facts = [
        ("Data", f"{c['source']}: {c['n_texts']} texts, {len(c['class_counts'])} classes ({classes})"),
        ("Model", c["model"]),
        (
            "Grid",
            f"layers {layer_text} \u00d7 pooling {', '.join(grid['pooling'])} \u00d7 whitening "
            f"{', '.join(grid['whitening'])} \u00d7 C {', '.join(map(fmt_c, grid['C']))} "
            f"= {n_configs} configurations",
        ),
        (
            "Cross-validation",
            f"{c['folds']}-fold stratified, shuffled (seed {c['seed']}); metric {c['metric']}; "
            f"majority class {chance:.3f}",
        ),
    ]
    feat = f"{c['n_texts']} texts"
    if c.get("forward_texts") is not None:
        feat += f", {c['forward_texts']} through the model"
    feat += f"; cache {c['memory']}" if c.get("memory") else "; no cache"
    if c.get("extract_seconds") is not None:
        feat += f"; extraction {c['extract_seconds']:.1f} s"
    feat += f"; total {c['total_seconds']:.1f} s"
    facts.append(("Features", feat))
    if c.get("model_path"):
        facts.append(("Saved model", f"{c['model_path']} (best pipeline refitted on all texts)"))
    facts += [("Note", note) for note in c.get("notes", ())]
    return facts


def _best_line(best, metric, folds):
    white = best["whitening"] or "none"
    return (
        f"layer {best['layer']}, {best['pooling']} pooling, whitening {white}, "
        f"C = {fmt_c(best['C'])}: {metric} {best['mean_score']:.3f} \u00b1 "
        f"{best['std_score']:.3f} ({folds}-fold CV)"
    )


def _leaderboard(rows, metric):
    head = ["rank", "layer", "pooling", "whitening", "C", metric, "std", "fit time (s)"]
    ranked = sorted(rows, key=lambda r: -r["mean_score"])[:REPORT_TOP]
    body = [
        [str(i), str(r["layer"]), r["pooling"], r["whitening"], fmt_c(r["C"]),
         f"{r['mean_score']:.3f}", f"{r['std_score']:.3f}", f"{r['fit_time']:.3f}"]
        for i, r in enumerate(ranked, start=1)
    ]  # fmt: skip
    return head, body


def _probe_table(rows):
    """Layer x (pooling, whitening) cells: the best score over C."""
    poolings = list(dict.fromkeys(r["pooling"] for r in rows))
    whitenings = list(dict.fromkeys(r["whitening"] for r in rows))
    keys = [(p, w) for w in whitenings for p in poolings]
    best = {}
    for r in rows:
        key = (r["layer"], r["pooling"], r["whitening"])
        if key not in best or r["mean_score"] > best[key]["mean_score"]:
            best[key] = r
    head = ["layer"] + [p if len(whitenings) == 1 else f"{p} / {w}" for p, w in keys]
    body = []
    for layer in sorted({r["layer"] for r in rows}):
        line = [str(layer)]
        for p, w in keys:
            r = best.get((layer, p, w))
            line.append("" if r is None else f"{r['mean_score']:.3f} \u00b1 {r['std_score']:.3f}")
        body.append(line)
    return head, body


def _held_out_tables(held):
    """Per-class metrics and the confusion matrix of the held-out test, as tables."""
    head = ["class", "precision", "recall", "F1", "support"]
    body = [[r["label"], f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", str(r["support"])]
            for r in held["per_class"]]  # fmt: skip
    chead = ["true / predicted", *held["classes"]]
    cbody = [[c, *map(str, row)] for c, row in zip(held["classes"], held["confusion"])]
    return head, body, chead, cbody


_LOAD_SNIPPET = """import joblib
model = joblib.load({path!r})
model.predict(["a new text to classify"])"""


def _markdown(context, rows, plot_name):
    def table(head, body):
        out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in body]
        return "\n".join(out)

    metric = context["metric"]
    parts = [
        "# skbert baseline report",
        "",
        "**Best configuration:** " + _best_line(context["best"], metric, context["folds"]),
        "",
        table(["", ""], [[f"**{k}**", v] for k, v in _facts(context, rows)]),
        "",
    ]
    if plot_name:
        parts += [f"![{metric} by layer, one line per pooling]({plot_name})", ""]
    else:
        parts += ["*(No plot: matplotlib is not installed.)*", ""]
    head, body = _leaderboard(rows, metric)
    parts += [f"## Leaderboard (top {len(body)} of {len(rows)})", "", table(head, body), ""]
    head, body = _probe_table(rows)
    parts += [f"## Probe table ({metric}, best C per cell, mean \u00b1 std over folds)", "", table(head, body), ""]
    held = context.get("heldout")
    if held:
        parts += [f"## Held-out test: {held['source']}", "",
                  f"{held['n_texts']} texts; {held['metric']} **{held['score']:.3f}** (best configuration refitted on all training texts).", ""]  # fmt: skip
        head, body, chead, cbody = _held_out_tables(held)
        parts += [table(head, body), "", "Confusion matrix (rows: true class, columns: predicted):", "", table(chead, cbody), ""]
    parts += ["## Reproduce", "", "```bash", context["command"], "```", ""]
    if context.get("model_path"):
        parts += ["Use the saved model:", "", "```python", _LOAD_SNIPPET.format(path=str(context["model_path"])), "```", ""]
    parts += [f"*Written by skbert {__version__}.*", ""]
    return "\n".join(parts)


def _html(context, rows, plot_name):
    e = html.escape

    def table(head, body, cls=""):
        out = [f'<table class="{cls}">', "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead>", "<tbody>"]
        out += ["<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in line) + "</tr>" for line in body]
        out.append("</tbody></table>")
        return "\n".join(out)

    metric = context["metric"]
    facts = "\n".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _facts(context, rows))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>skbert baseline report</title>',
        "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
        "table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}"
        "td{font-variant-numeric:tabular-nums}pre{background:#f5f5f5;padding:.8rem;overflow-x:auto}"
        ".best{font-size:1.1rem;background:#eef6ee;padding:.6rem;border-left:4px solid #4a4}</style></head><body>",
        "<h1>skbert baseline report</h1>",
        f'<p class="best"><strong>Best configuration:</strong> {e(_best_line(context["best"], metric, context["folds"]))}</p>',
        f'<table class="facts">{facts}</table>',
    ]
    if plot_name:
        parts.append(f'<p><img src="{e(plot_name)}" alt="{e(metric)} by layer, one line per pooling" style="max-width:100%"></p>')
    else:
        parts.append("<p><em>(No plot: matplotlib is not installed.)</em></p>")
    head, body = _leaderboard(rows, metric)
    parts += [f"<h2>Leaderboard (top {len(body)} of {len(rows)})</h2>", table(head, body, "leaderboard")]
    head, body = _probe_table(rows)
    parts += [f"<h2>Probe table ({e(metric)}, best C per cell, mean \u00b1 std over folds)</h2>", table(head, body, "probe")]
    held = context.get("heldout")
    if held:
        head, body, chead, cbody = _held_out_tables(held)
        parts += [
            f"<h2>Held-out test: {e(held['source'])}</h2>",
            f"<p>{held['n_texts']} texts; {e(held['metric'])} <strong>{held['score']:.3f}</strong> "
            "(best configuration refitted on all training texts).</p>",
            table(head, body, "per-class"),
            "<p>Confusion matrix (rows: true class, columns: predicted):</p>",
            table(chead, cbody, "confusion"),
        ]
    parts += ["<h2>Reproduce</h2>", f"<pre><code>{e(context['command'])}</code></pre>"]
    if context.get("model_path"):
        snippet = _LOAD_SNIPPET.format(path=str(context["model_path"]))
        parts += ["<p>Use the saved model:</p>", f"<pre><code>{e(snippet)}</code></pre>"]
    parts += [f"<p><em>Written by skbert {e(__version__)}.</em></p>", "</body></html>", ""]
    return "\n".join(parts)


def write_report(directory, table, context, *, fmt="markdown"):
    """Write ``report.md`` / ``report.html`` and ``probe.png`` into ``directory``.

    Parameters
    ----------
    directory : str or path-like
        Created if missing.
    table : pandas.DataFrame or structured array
        From :func:`skbert.probing.probe_layers` with a ``C`` column.
    context : dict
        What the report states (see ``skbert.cli.probe._run_baseline``).
    fmt : {"markdown", "html"}, default="markdown"

    Returns
    -------
    report_path, plot_path : str, str or None
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create the report folder {directory}: {exc.strerror or exc}") from None
    rows = table_rows(table)
    name = context.get("source") or ""
    name = name if name.startswith("bundled") else Path(name).name
    title = f"{name}: linear probe by layer" if name else "Linear probe by layer"
    plot_path = save_probe_plot(table, directory / "probe.png", title=title)
    plot_name = "probe.png" if plot_path else None
    if fmt == "html":
        text, name = _html(context, rows, plot_name), "report.html"
    else:
        text, name = _markdown(context, rows, plot_name), "report.md"
    path = directory / name
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path), plot_path
