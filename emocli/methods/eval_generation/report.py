"""Reports of `emo eval generation`: report.md (EmoGen Table 1's shape), report.html (self-contained), plots,
and `--compare RUN_A RUN_B`.

Plots are matplotlib PNGs (Agg backend, no display needed) under ``RUN/plots/``; the HTML embeds them and the
image thumbnails as base64, so the one file can be mailed or attached as it is.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path

from emocli.errors import EmoError

COLUMNS = ("FID", "LPIPS", "Emo-A", "Sem-C", "Sem-D", "CLIP-I", "CLIP-T")
KEYS = {"FID": "fid", "LPIPS": "lpips", "Emo-A": "emo_a", "Sem-C": "sem_c", "Sem-D": "sem_d", "CLIP-I": "clip_i",
        "CLIP-T": "clip_t"}
HIGHER_IS_BETTER = {"FID": False, "LPIPS": True, "Emo-A": True, "Sem-C": True, "Sem-D": True, "CLIP-I": True,
                    "CLIP-T": True}
# EmoGen (CVPR 2024) Table 1, from the official README (reference/emogen.md section 6). Emo-A as a fraction.
PAPER_ROWS = (
    ("Stable Diffusion", {"FID": 44.05, "LPIPS": 0.687, "Emo-A": 0.7077, "Sem-C": 0.608, "Sem-D": 0.0199}),
    ("Textual Inversion", {"FID": 50.51, "LPIPS": 0.702, "Emo-A": 0.7487, "Sem-C": 0.605, "Sem-D": 0.0282}),
    ("DreamBooth", {"FID": 46.89, "LPIPS": 0.661, "Emo-A": 0.7050, "Sem-C": 0.614, "Sem-D": 0.0178}),
    ("EmoGen", {"FID": 41.60, "LPIPS": 0.717, "Emo-A": 0.7625, "Sem-C": 0.633, "Sem-D": 0.0335}),
)
PAPER_NOTE = ("Paper rows: EmoGen Table 1 (official README). The paper does not say how many images per emotion "
              "it used; its FID is presumably the aggregated one; its LPIPS fed [0, 1] images to LPIPS and drew "
              "some pairs across emotions (ours: [-1, 1], within-emotion pairs); its Sem-D is most likely the MSE "
              "variant. CLIP-I and CLIP-T are not in the paper.")


def fmt(column: str, value) -> str:
    if value is None:
        return "–"
    if column == "Emo-A":
        return f"{100 * value:.2f}%"
    digits = {"FID": 2, "LPIPS": 3, "Sem-C": 3, "Sem-D": 4, "CLIP-I": 3, "CLIP-T": 3}.get(column, 4)
    if abs(value) < 0.5 * 10 ** -digits:
        value = 0.0  # no "-0.00" for round-off around zero (an FID of identical sets)
    return f"{value:.{digits}f}"


def header(column: str) -> str:
    return column + ("↓" if not HIGHER_IS_BETTER[column] else "↑")


# --------------------------------------------------------------------------------------------- plots


def _pyplot():
    from emocli.metrics.plots import pyplot

    return pyplot()


def plot_confusion(confusion, labels, path, title: str = "Emo-A confusion matrix") -> Path:
    """Rows: intended emotion, columns: predicted (emocli.metrics.plots)."""
    from emocli.metrics.plots import plot_confusion as plot

    return plot(confusion, labels, labels, path, title, row_axis="intended")


def plot_per_emotion(values: dict, title: str, path, overall=None, percent: bool = False) -> Path:
    plt = _pyplot()
    names = list(values)
    data = [100 * values[n] if percent else values[n] for n in names]
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    ax.bar(range(len(names)), data, color="#4c72b0")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    if overall is not None:
        ax.axhline(100 * overall if percent else overall, color="#dd8452", linestyle="--", label="overall")
        ax.legend(loc="best", fontsize=8)
    ax.set_title(title)
    from emocli.metrics.plots import save_figure

    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------- markdown


def _table1_rows(result: dict, paper_rows: bool) -> list[tuple[str, dict]]:
    rows = [(f"{name} (paper)", values) for name, values in PAPER_ROWS] if paper_rows else []
    rows.append((f"{result['name']} (this run)", result["table1"]))
    return rows


def _per_emotion_rows(result: dict) -> list[list[str]]:
    metrics, counts = result["metrics"], result["counts"]["generated"]
    out = []
    for e in result["emotions"]:
        row = [e, str(counts.get(e, 0))]
        for col in COLUMNS:
            m = metrics.get(KEYS[col])
            row.append(fmt(col, m["per_emotion"].get(e)) if m else "–")
        out.append(row)
    return out


def markdown_report(result: dict, paper_rows: bool = True) -> str:
    n = sum(result["counts"]["generated"].values())
    lines = [f"# emo eval generation: {result['name']}", "",
             f"- samples: `{result['samples']}` ({n} images, {len(result['emotions'])} emotions)",
             f"- reference: `{result['prepared']}`, split `{result['reference_split']}`",
             f"- run: `{result['run']}` ({result['time']})", "",
             "## EmoGen Table 1 shape", "",
             "| Method | " + " | ".join(header(c) for c in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for name, values in _table1_rows(result, paper_rows):
        lines.append(f"| {name} | " + " | ".join(fmt(c, values.get(c)) for c in COLUMNS) + " |")
    lines.append("")
    if paper_rows:
        lines += [PAPER_NOTE, ""]
    lines += ["## Per emotion", "", "| emotion | images | " + " | ".join(header(c) for c in COLUMNS) + " |",
              "|---|---|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in _per_emotion_rows(result)]
    lines += ["", "## Conventions", ""]
    for col in COLUMNS:
        m = result["metrics"].get(KEYS[col])
        if m:
            lines.append(f"- **{col}** `{m['convention']}`: {m['definition']}.")
    extras = _extras(result)
    if extras:
        lines += ["", "## Also reported", ""] + [f"- {x}" for x in extras]
    if result["skipped"]:
        lines += ["", "## Skipped", ""]
        lines += [f"- **{KEY_NAMES.get(k, k)}** {why}" for k, why in result["skipped"].items()]
    lines += ["", "## Features", "", _cache_line(result), ""]
    return "\n".join(lines)


KEY_NAMES = {v: k for k, v in KEYS.items()}


def _extras(result: dict) -> list[str]:
    m, out = result["metrics"], []
    if "fid" in m and m["fid"].get("mean_per_emotion") is not None:
        out.append(f"FID mean of the per-emotion FIDs: {m['fid']['mean_per_emotion']:.2f}")
    if "emo_a" in m:
        pol = m["emo_a"]["polarity_accuracy"]
        out.append(f"Emo-A polarity accuracy: {fmt('Emo-A', pol)}; mean probability of the intended emotion: "
                   f"{m['emo_a']['mean_true_prob']:.3f}")
    if "sem_d" in m:
        out.append(f"Sem-D cosine variant (1 - cos): {m['sem_d']['cosine']:.4f}")
    if "clip_t" in m:
        out.append(f"CLIP-T as CLIPScore (2.5·max(cos, 0)): {m['clip_t']['clipscore']:.3f}; "
                   f"as torchmetrics (100·cos): {m['clip_t']['clip_score_100']:.2f}")
    if "lpips" in m:
        out.append(f"LPIPS pooled over all pairs: {m['lpips']['pooled']:.3f}")
    return out


def _cache_line(result: dict) -> str:
    parts = [f"{name}: {c['cached']} cached, {c['computed']} computed" for name, c in result["cache"]["generated"].items()]
    for name, st in (result["cache"].get("reference") or {}).items():
        parts.append(f"reference {name}: {len(st['cached'])} emotions cached, {len(st['computed'])} computed")
    return "; ".join(parts) + f". Timings (s): {json.dumps(result['seconds'])}"


# --------------------------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: -apple-system, system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; } th, td { border: 1px solid #ccc; padding: 4px 8px; }
th { background: #f3f3f3; } tr.ours td { font-weight: bold; background: #eef5ff; }
.grid { display: flex; flex-wrap: wrap; gap: 6px; } .cell { width: 136px; font-size: 11px; text-align: center; }
.cell img { width: 128px; height: 128px; object-fit: cover; border: 1px solid #ddd; }
.ok { color: #2a7d2a; } .bad { color: #b22; } img.plot { max-width: 100%; } code { background: #f6f6f6; }
"""


def _b64(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _thumbnail(path: Path, size: int = 128) -> str:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def html_report(result: dict, out_dir: Path, report_cfg, generated: dict, per_image: list[dict],
                plots: dict[str, Path]) -> str:
    esc = html.escape
    rows_by_image = {row["image"]: row for row in per_image}
    n = sum(result["counts"]["generated"].values())
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>emo eval: {esc(result['name'])}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>emo eval generation: {esc(result['name'])}</h1>",
             f"<p>samples <code>{esc(result['samples'])}</code> ({n} images, {len(result['emotions'])} emotions); "
             f"reference <code>{esc(result['prepared'])}</code>, split <code>{esc(result['reference_split'])}</code>; "
             f"{esc(result['time'])}</p>",
             "<h2>EmoGen Table 1 shape</h2><table><tr><th>Method</th>"
             + "".join(f"<th>{esc(header(c))}</th>" for c in COLUMNS) + "</tr>"]
    for name, values in _table1_rows(result, report_cfg.paper_rows):
        cls = " class='ours'" if name.endswith("(this run)") else ""
        parts.append(f"<tr{cls}><td>{esc(name)}</td>" + "".join(f"<td>{esc(fmt(c, values.get(c)))}</td>"
                                                                for c in COLUMNS) + "</tr>")
    parts.append("</table>")
    if report_cfg.paper_rows:
        parts.append(f"<p><small>{esc(PAPER_NOTE)}</small></p>")
    parts.append("<h2>Per emotion</h2><table><tr><th>emotion</th><th>images</th>"
                 + "".join(f"<th>{esc(header(c))}</th>" for c in COLUMNS) + "</tr>")
    for row in _per_emotion_rows(result):
        parts.append("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in row) + "</tr>")
    parts.append("</table>")
    if "confusion" in plots:
        parts.append(f"<h2>Emo-A confusion matrix</h2><img class='plot' src='{_b64(plots['confusion'])}' "
                     "alt='Emo-A confusion matrix'>")
    bars = [c for c in COLUMNS if c in plots]
    if bars:
        parts.append("<h2>Per-emotion metrics</h2>")
        parts += [f"<img class='plot' src='{_b64(plots[c])}' alt='{esc(c)} per emotion'>" for c in bars]
    parts.append("<h2>Conventions</h2><ul>")
    for col in COLUMNS:
        m = result["metrics"].get(KEYS[col])
        if m:
            parts.append(f"<li><b>{esc(col)}</b> <code>{esc(m['convention'])}</code>: {esc(m['definition'])}.</li>")
    parts += [f"<li>{esc(x)}</li>" for x in _extras(result)]
    parts.append("</ul>")
    if result["skipped"]:
        parts.append("<h2>Skipped</h2><ul>" + "".join(f"<li><b>{esc(KEY_NAMES.get(k, k))}</b> {esc(why)}</li>"
                                                      for k, why in result["skipped"].items()) + "</ul>")
    if report_cfg.images_per_emotion:
        parts.append("<h2>Images</h2>")
        for emotion, paths in generated.items():
            parts.append(f"<h3>{esc(emotion)}</h3><div class='grid'>")
            for p in paths[: report_cfg.images_per_emotion]:
                src = _thumbnail(p) if report_cfg.embed_images else esc(os.path.relpath(p, out_dir))
                row = rows_by_image.get(str(p), {})
                caption = esc(p.name)
                if "emo_a_pred" in row:
                    ok = row["emo_a_pred"] == emotion
                    caption += (f"<br><span class='{'ok' if ok else 'bad'}'>Emo-A: {esc(row['emo_a_pred'])}</span>"
                                f" (p={row['emo_a_true_prob']:.2f})")
                if "sem_c" in row:
                    caption += f"<br>Sem-C {row['sem_c']:.2f}"
                parts.append(f"<div class='cell'><img src='{src}' alt='{esc(p.name)}'><br>{caption}</div>")
            parts.append("</div>")
    parts.append(f"<h2>Features</h2><p>{esc(_cache_line(result))}</p></body></html>")
    return "\n".join(parts)


def write_reports(result: dict, out_dir: Path, report_cfg, generated: dict, per_image: list[dict]) -> dict:
    """report.md always; plots + report.html when `report.html` is on. Returns {kind: path}."""
    out_dir = Path(out_dir)
    written = {"markdown": out_dir / "report.md"}
    (out_dir / "report.md").write_text(markdown_report(result, report_cfg.paper_rows), encoding="utf-8")
    if not report_cfg.html:
        return written
    plots: dict[str, Path] = {}
    m = result["metrics"]
    if "emo_a" in m:
        plots["confusion"] = plot_confusion(m["emo_a"]["confusion"], m["emo_a"]["labels"],
                                            out_dir / "plots" / "emo_a_confusion.png")
    for col in COLUMNS:
        metric = m.get(KEYS[col])
        if metric and metric["per_emotion"]:
            arrow = "lower is better" if not HIGHER_IS_BETTER[col] else "higher is better"
            plots[col] = plot_per_emotion(metric["per_emotion"], f"{col} per emotion ({arrow})",
                                          out_dir / "plots" / f"per_emotion_{KEYS[col]}.png",
                                          overall=metric["value"], percent=col == "Emo-A")
    (out_dir / "report.html").write_text(html_report(result, out_dir, report_cfg, generated, per_image, plots),
                                         encoding="utf-8")
    written["html"] = out_dir / "report.html"
    written.update({f"plot:{k}": v for k, v in plots.items()})
    return written


# --------------------------------------------------------------------------------------------- compare


def load_metrics(run) -> dict:
    """metrics.json of an eval run (the run directory or the file itself)."""
    path = Path(run).expanduser()
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise EmoError(f"{run}: no metrics.json (not an `emo eval generation` run directory)")
    try:
        data = json.loads(path.read_text())
    except ValueError:
        raise EmoError(f"{path} is not valid JSON") from None
    if not isinstance(data, dict) or "table1" not in data:
        raise EmoError(f"{path} is not the metrics.json of `emo eval generation`")
    return data


def compare_rows(a: dict, b: dict) -> list[tuple[str, str, str, str, str]]:
    """(metric, A, B, B - A, better) rows; conventions that differ are flagged in the metric name."""
    rows = []
    for col in COLUMNS:
        key = KEYS[col]
        ma, mb = a["metrics"].get(key), b["metrics"].get(key)
        if not ma and not mb:
            continue
        va, vb = (ma or {}).get("value"), (mb or {}).get("value")
        name = col + ("↓" if not HIGHER_IS_BETTER[col] else "↑")
        if ma and mb and ma.get("convention") != mb.get("convention"):
            name += " (conventions differ)"
        if va is None or vb is None:
            rows.append((name, fmt(col, va), fmt(col, vb), "–", "–"))
            continue
        delta = vb - va
        d = f"{100 * delta:+.2f} pt" if col == "Emo-A" else f"{delta:+.4g}"
        if abs(delta) <= 1e-12:
            better = "="
        else:
            better = "B" if (delta > 0) == HIGHER_IS_BETTER[col] else "A"
        rows.append((name, fmt(col, va), fmt(col, vb), d, better))
    ga, gb = sum(a["counts"]["generated"].values()), sum(b["counts"]["generated"].values())
    rows.append(("images", str(ga), str(gb), f"{gb - ga:+d}", ""))
    return rows


def compare_runs(run_a, run_b, console=None) -> list[tuple]:
    """Print a side-by-side table of two eval runs' metrics.json (stdout)."""
    from rich.console import Console
    from rich.table import Table

    a, b = load_metrics(run_a), load_metrics(run_b)
    console = console or Console(width=max(100, Console().width), soft_wrap=True)
    console.print(f"A: {run_a} ({a.get('name', '')}, {sum(a['counts']['generated'].values())} images)")
    console.print(f"B: {run_b} ({b.get('name', '')}, {sum(b['counts']['generated'].values())} images)")
    table = Table(title="emo eval generation: A vs B")
    table.add_column("metric")
    table.add_column(f"A {a.get('name', '')}", justify="right")
    table.add_column(f"B {b.get('name', '')}", justify="right")
    table.add_column("B - A", justify="right")
    table.add_column("better", justify="center")
    rows = compare_rows(a, b)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    only = sorted(set(a["metrics"]) ^ set(b["metrics"]))
    if only:
        console.print("computed in one run only: " + ", ".join(KEY_NAMES.get(k, k) for k in only))
    return rows
