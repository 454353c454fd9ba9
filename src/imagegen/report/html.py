"""`imagegen report RUN`: one self-contained HTML page (pictures inlined as base64, no server, no scripts) with a
run's numbers, training curves, sample grids over time and explanations."""

from __future__ import annotations

import base64
import html
import json
import math
import os
from pathlib import Path

from ..artifacts import read_header
from ..errors import ImagegenError
from ..metrics.glossary import describe, ordered, verdict
from ..metrics.report import evaluator_line, floor_words
from ..metrics.trust import trust_lines
from ..utils import read_json, read_jsonl
from .plots import plt

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;margin-top:2em}
table{border-collapse:collapse;font-size:.9em}td,th{padding:.25em .8em;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}figure{display:inline-block;margin:.5em;vertical-align:top}
img{max-width:100%;image-rendering:pixelated}figcaption{font-size:.8em;color:#555}pre{background:#f6f6f6;
padding:.8em;font-size:.8em;overflow:auto}td.what{text-align:left;color:#555;font-size:.9em}
.verdict{font-weight:bold}.caution{color:#a33}"""


def build_report(run: str | os.PathLike, out: str | os.PathLike | None = None, *, explain: bool = True,
                 device: str = "auto", log=print) -> Path:
    """Write RUN/report.html (or `out`) for a generator run or a seed-classifier run."""
    run = Path(run)
    header = run / "model.json"
    if (run / "sweep.json").is_file():  # a sweep directory (imagegen sweep): its trials, best settings, pictures
        from .sweep import sweep_sections

        body = sweep_sections(run, _img, _section, _table)
    elif not header.is_file():
        raise ImagegenError(f"{run} is not a run directory: it has no model.json (train one with imagegen train "
                            "or imagegen classify train --out DIR)")
    elif read_header(header).get("kind") == "seed-classifier":
        body = _classifier_sections(run, explain, log)
    else:
        body = _generator_sections(run, explain, device, log)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>imagegen report: {html.escape(run.name)}"
            f"</title><style>{STYLE}</style></head><body><h1>imagegen report: {html.escape(str(run))}</h1>"
            + "".join(body) + "</body></html>\n")
    path = Path(out) if out else run / "report.html"
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(page)
        os.replace(tmp, path)
    except BaseException:  # a full disk, say: no partial file stays behind
        tmp.unlink(missing_ok=True)
        raise
    return path


def _img(path: Path, caption: str = "") -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(caption or path.name)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _section(title: str, *parts: str) -> str:
    return f"<h2>{html.escape(title)}</h2>" + "".join(parts)


def _table(rows: list[list], head: list[str]) -> str:
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))  # noqa: E731
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows) + "</table>")


def evaluation_table(ev: dict) -> str:
    """Samples beside the real-data floor under the name of the evaluator that scored them, metric by metric in
    order of importance, each with its sentence (what it measures, which way is better), then the verdict."""
    keys = ordered(k for k in ev.get("samples", {}) if k in ev.get("floor", {}))
    rows = "".join(_metric_row(k, ev["samples"][k], ev["floor"][k]) for k in keys)
    floor = floor_words(ev) if "n_floor" in ev else "? real training images"
    note = (f"<p><b>{html.escape(evaluator_line(ev.get('evaluator')))}</b>.</p>"
            f"<p>{ev.get('n', '?')} samples"
            + (f" (scored at the floor's n: {ev['n_compared']} of them; memorisation: all)"
               if ev.get("n_compared", ev.get("n")) != ev.get("n") else "")
            + f" vs {html.escape(floor)} (the floor), both "
            f"against the {ev.get('n_reference', '?')} test images; evaluator accuracy on real test images "
            f"{ev.get('evaluator_accuracy', float('nan')):.3f}"
            + (f"; precision and recall at n = {ev['n_precision_recall']} on each side" if "n_precision_recall" in ev
               else "") + ".</p>")
    trust = "".join(_trust_paragraph(line) for line in trust_lines(ev))
    head = "".join(f"<th>{h}</th>" for h in ("metric", "samples", "real-data floor", "what it measures"))
    said = verdict(ev) if keys else ""
    return (note + trust + f"<table><tr>{head}</tr>{rows}</table>"
            + (f"<p class='verdict'>{html.escape(said)}</p>" if said else ""))


def _trust_paragraph(line: str) -> str:
    """A line of `metrics.trust`: the images per class, or the caution (coloured)."""
    cls = " class='caution'" if line.startswith("caution") else ""
    return f"<p{cls}>{html.escape(line)}.</p>"


def _metric_row(key: str, sample: float, floor: float) -> str:
    label, sentence = describe(key)
    return (f"<tr><td>{html.escape(label)}</td><td>{sample:.4g}</td><td>{floor:.4g}</td>"
            f"<td class='what'>{html.escape(sentence)}</td></tr>")


def curves(lines: list[dict], path: Path) -> Path | None:
    """Loss (and, where logged, the grid's FID) against images seen."""
    def number(v) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    lines = [ln for ln in lines if number(ln.get("images"))]  # rows a reader can plot (a hand-edited one may not)
    lines = [{k: v for k, v in ln.items() if number(v) or not ("loss" in k or k == "grid_fid")} for ln in lines]
    loss_keys = [k for k in (lines[0] if lines else {}) if "loss" in k]
    grid = [ln for ln in lines if "grid_fid" in ln]
    if not loss_keys and not grid:
        return None
    fig, axes = plt.subplots(1, 2 if grid else 1, figsize=(10 if grid else 5.5, 3.5), squeeze=False)
    train = [ln for ln in lines if loss_keys and all(k in ln for k in loss_keys)]
    for k in loss_keys:
        axes[0][0].plot([ln["images"] for ln in train], [ln[k] for ln in train], label=k)
    axes[0][0].set(xlabel="images seen", ylabel="loss", yscale="log", title="training loss")
    if train:  # a run too short for a log line has no loss curve to name
        axes[0][0].legend(fontsize=8)
    if grid:
        axes[0][1].plot([ln["images"] for ln in grid], [ln["grid_fid"] for ln in grid], "o-")
        axes[0][1].set(xlabel="images seen", ylabel="FID of the 100 grid images", yscale="log",
                       title="grid FID (n=100: biased up; shows the trend)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _generator_sections(run: Path, explain: bool, device: str, log) -> list[str]:
    results, config = read_json(run / "results.json"), read_json(run / "config.json")
    lines = read_jsonl(run / "metrics.jsonl")  # a line torn by a kill is skipped
    out = []
    if results:
        summary = [["method", results.get("method", "?")], ["dataset", results.get("dataset", "?")],
                   ["images seen", results.get("images", 0)], ["training minutes", results.get("seconds", 0) / 60],
                   ["images / second", results.get("images_per_second", 0.0)],
                   ["parameters", results.get("parameters", 0)]]
        out.append(_section("Run", _table(summary, ["", ""])))
    else:
        out.append(_section("Run", "<p>No results.json: the run has not finished (or was interrupted).</p>"))
    if results.get("evaluation"):
        out.append(_section("Evaluation", evaluation_table(results["evaluation"])))
    (run / "explain").mkdir(exist_ok=True)
    curve = curves(lines, run / "explain" / "curves.png")
    if curve:
        out.append(_section("Training curves", _img(curve, "loss and grid FID against images seen")))
    grids = sorted((run / "grids").glob("*.png")) if (run / "grids").is_dir() else []
    pick = [grids[round(i * (len(grids) - 1) / 5)] for i in range(6)] if len(grids) > 6 else grids
    parts = [_img(run / "grid.png", "final samples, one row per class")] if (run / "grid.png").is_file() else []
    parts += [_img(g, f"after {int(g.stem):,} images") for g in dict.fromkeys(pick)]
    out.append(_section("Samples", *parts))
    if explain:
        _draw_generator_explanations(run, device, log)
    out.append(_explanations(run))
    out.append(_section("Config", f"<pre>{html.escape(json.dumps(config, indent=2))}</pre>"))
    return out


def _draw_generator_explanations(run: Path, device: str, log) -> None:
    from ..sampling import SampleRequest, load_generator
    from .draw import draw_guidance, draw_nearest, draw_trajectory, draw_walk, model_split

    gen = load_generator(run, device)
    sampling = SampleRequest(str(run), device=device).check().settings(gen)  # the run's own settings
    ex = run / "explain"
    log("drawing explanations: nearest training images, latent walk" +
        (", trajectory, guidance" if gen.method in ("flow", "edm") else ""))
    train = model_split(gen.meta["dataset"], "train", gen.image_shape).images
    draw_nearest(gen, train, ex / "nearest.png", n=6, k=4, **sampling)
    draw_walk(gen, 0, ex / "walk.png", **sampling)
    if gen.method in ("flow", "edm"):
        draw_trajectory(gen, 0, ex / "trajectory.png", **sampling)
        draw_guidance(gen, 0, ex / "guidance.png", steps=sampling["steps"], sampler=sampling["sampler"],
                      guidance_interval=sampling["guidance_interval"])


def _explanations(run: Path) -> str:
    pics = [p for p in sorted((run / "explain").glob("*.png")) if p.name != "curves.png"] \
        if (run / "explain").is_dir() else []
    if not pics:
        return _section("Explanations", "<p>None yet: imagegen explain ... or imagegen report without "
                        "--no-explain draws them.</p>")
    return _section("Explanations", *[_img(p, p.stem) for p in pics])


def _classifier_sections(run: Path, explain: bool, log) -> list[str]:
    metrics = read_json(run / "metrics.json")
    flat = [[k, v] for k, v in metrics.items() if isinstance(v, (int, float, str))]
    out = [_section("Run", _table(flat, ["", ""]) if flat else "<p>No metrics.json.</p>")]
    pics = [_img(run / n, c) for n, c in (("curves.png", "loss and accuracy per epoch"),
                                          ("predictions.png", "test predictions, red when wrong"))
            if (run / n).is_file()]
    out.append(_section("Training", *pics))
    if explain:
        from .draw import draw_attributions, draw_features, draw_filters, draw_mistakes, load_classifier, model_split

        clf = load_classifier(run)
        log("drawing explanations: attributions, mistakes, feature maps, filters")
        test = model_split(clf.dataset, "test", clf.image_shape)
        ex = run / "explain"
        draw_attributions(clf, test.images[:6], ex / "attributions.png", labels=test.labels[:6])
        try:
            draw_mistakes(clf, test.images, test.labels, ex / "mistakes.png")
        except ImagegenError as e:  # a classifier without mistakes on the test split
            log(str(e))
        draw_features(clf, test.images[0], ex / "features.png")
        draw_filters(clf, ex / "filters.png")
    out.append(_explanations(run))
    return out
