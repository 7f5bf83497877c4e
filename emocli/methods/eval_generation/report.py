"""Reports of `emo eval generation` on the shared report module (`emocli.evaluation.report`): metrics.json,
report.md (EmoGen Table 1's shape), report.html, plots, and `--compare RUN_A RUN_B`.

Plots are matplotlib PNGs (Agg backend) under ``RUN/plots/``; with ``report.embed_images`` the HTML embeds
them and the image thumbnails as base64 (one self-contained file), otherwise it links them relatively.
"""

from __future__ import annotations

import json
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


DIGITS = {"FID": 2, "LPIPS": 3, "Emo-A": 2, "Sem-C": 3, "Sem-D": 4, "CLIP-I": 3, "CLIP-T": 3}
PAPER_SOURCE = "EmoGen Table 1"


def fmt(column: str, value) -> str:
    from emocli.evaluation.report import Column

    return Column(column, column, digits=DIGITS.get(column, 4), percent=column == "Emo-A").format(value)


def header(column: str) -> str:
    return column + ("↓" if not HIGHER_IS_BETTER[column] else "↑")


# --------------------------------------------------------------------------------------------- the report


def table_columns() -> list:
    from emocli.evaluation.report import Column

    return [Column(c, c, HIGHER_IS_BETTER[c], digits=DIGITS.get(c, 4), percent=c == "Emo-A") for c in COLUMNS]


def row_flags(result: dict) -> list[str]:
    """Warnings that belong in this run's Table-1 row: metrics computed with weights that are not the
    reference ones (`emocli.evaluation.provenance` status "unverified")."""
    flags = []
    for col in COLUMNS:
        weights = (result["metrics"].get(KEYS[col]) or {}).get("weights") or {}
        bad = [key for key, info in weights.items() if info.get("status") == "unverified"]
        if bad:
            flags.append(f"{col}: unverified weights ({', '.join(f'models.{k}' for k in bad)})")
    return flags


def weights_lines(result: dict) -> list[str]:
    """One line per weights file: recipe key, path, status and why."""
    return [f"`models.{key}` {info['status']}: `{info['path']}` ({info['why']}; reference: {info['reference']})"
            for key, info in (result.get("weights") or {}).items()]


def build_report(result: dict, out_dir: Path, report_cfg, generated: dict, per_image: list[dict]):
    """The `emocli.evaluation.report.Report` of one `emo eval generation` run (plots are written here)."""
    from emocli.evaluation.report import Column, Image, Report, Row
    from emocli.metrics.plots import plot_confusion, plot_per_group

    n = sum(result["counts"]["generated"].values())
    report = Report(f"emo eval generation: {result['name']}", facts={
        "samples": f"`{result['samples']}` ({n} images, {len(result['emotions'])} emotions)",
        "reference": f"`{result['prepared']}`, split `{result['reference_split']}`",
        "run": f"`{result['run']}` ({result['time']})",
        "reference image bytes": _bytes_line(result.get("reference_bytes"))})
    columns = table_columns()
    table = report.table("EmoGen Table 1 shape", columns,
                         caption=PAPER_NOTE if report_cfg.paper_rows else "")
    if report_cfg.paper_rows:
        for name, values in PAPER_ROWS:
            table.add(Row(f"{name} (paper)", values, reference=True, note=PAPER_SOURCE))
    ci = {c: tuple(result["metrics"][KEYS[c]]["ci"]["pooled"]) for c in COLUMNS
          if (result["metrics"].get(KEYS[c]) or {}).get("ci")}
    table.add(Row(f"{result['name']} (this run)", result["table1"], ci=ci, flags=row_flags(result), highlight=True))
    original = {col: result["metrics"][KEYS[col]]["original_pairs"]["value"] for col in ("LPIPS", "Sem-D")
                if "original_pairs" in (result["metrics"].get(KEYS[col]) or {})}
    if original:
        table.add(Row(f"{result['name']} (this run, EmoGen's cross-emotion pairs)", original,
                      note="LPIPS / Sem-D with the original script's pair sampling (pairs across emotions), "
                           "as Table 1 was sampled; same images"))

    per = report.table("Per emotion", [Column("images", "images")] + columns, first_column="emotion")
    for e in result["emotions"]:
        values = {"images": result["counts"]["generated"].get(e, 0)}
        cis = {}
        for col in COLUMNS:
            m = result["metrics"].get(KEYS[col])
            if m:
                values[col] = m["per_emotion"].get(e)
                if (m.get("ci") or {}).get("per_emotion", {}).get(e):
                    cis[col] = tuple(m["ci"]["per_emotion"][e])
        per.add(Row(e, values, ci=cis))

    bullets = []
    for col in COLUMNS:
        m = result["metrics"].get(KEYS[col])
        if m:
            bullets.append(f"**{col}** `{m['convention']}`: {m['definition']}.")
    report.section("Conventions", bullets=bullets)
    if result.get("weights"):
        report.section("Weights", paragraphs=[
            "verified: the published file's SHA-256; signature: no checksum applies, the reference network's "
            "architecture matches; unverified: not the reference network (flagged in the Table-1 row)."],
            bullets=weights_lines(result))
    extras = _extras(result)
    if extras:
        report.section("Also reported", bullets=extras)
    if result["skipped"]:
        report.section("Skipped", bullets=[f"**{KEY_NAMES.get(k, k)}** {why}" for k, why in result["skipped"].items()])

    if report_cfg.html:
        m = result["metrics"]
        if "emo_a" in m:
            path = plot_confusion(m["emo_a"]["confusion"], m["emo_a"]["labels"], m["emo_a"]["labels"],
                                  out_dir / "plots" / "emo_a_confusion.png", "Emo-A confusion matrix",
                                  row_axis="intended")
            report.plot("Emo-A confusion matrix", path)
        for col in COLUMNS:
            metric = m.get(KEYS[col])
            if metric and metric["per_emotion"]:
                arrow = "lower is better" if not HIGHER_IS_BETTER[col] else "higher is better"
                path = plot_per_group(metric["per_emotion"], f"{col} per emotion ({arrow})",
                                      out_dir / "plots" / f"per_emotion_{KEYS[col]}.png",
                                      overall=metric["value"], percent=col == "Emo-A")
                report.plot(f"{col} per emotion", path, alt=f"{col} per emotion")
        if report_cfg.images_per_emotion:
            rows_by_image = {row["image"]: row for row in per_image}
            groups = {}
            for emotion, paths in generated.items():
                groups[emotion] = []
                for p in paths[: report_cfg.images_per_emotion]:
                    row, details = rows_by_image.get(str(p), {}), []
                    if "emo_a_pred" in row:
                        ok = row["emo_a_pred"] == emotion
                        details.append((f"Emo-A: {row['emo_a_pred']} (p={row['emo_a_true_prob']:.2f})",
                                        "ok" if ok else "bad"))
                    if "sem_c" in row:
                        details.append(f"Sem-C {row['sem_c']:.2f}")
                    groups[emotion].append(Image(Path(p), Path(p).name, details))
            report.gallery("Images", groups)
    report.section("Features", paragraphs=[_cache_line(result)])
    report.links("Files", [("metrics.json", out_dir / "metrics.json"), ("per-image rows", out_dir / "per_image.jsonl")])
    return report


def write_reports(result: dict, out_dir: Path, report_cfg, generated: dict, per_image: list[dict]) -> dict:
    """metrics.json and report.md always; plots + report.html when `report.html` is on. Returns {kind: path}."""
    out_dir = Path(out_dir)
    report = build_report(result, out_dir, report_cfg, generated, per_image)
    return report.write(out_dir, metrics=result, embed_images=report_cfg.embed_images, html=report_cfg.html)


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
    for key in ("lpips", "sem_d"):
        variant = (m.get(key) or {}).get("original_pairs")
        if variant:
            out.append(f"{variant['name']} (`{variant['convention']}`): {variant['value']:.4f}. {variant['definition']}")
    for key, metric in m.items():
        if metric.get("ci"):
            ci = metric["ci"]
            out.append(f"{KEY_NAMES.get(key, key)} {100 * ci['level']:.0f}% interval: "
                       f"[{ci['pooled'][0]:.4g}, {ci['pooled'][1]:.4g}] ({ci['resamples']} resamples; {ci['method']})")
    return out


def _bytes_line(info: dict | None) -> str:
    if not info or not (info["original"] or info["reencoded"]):
        return "the source's own image files, read where they are (not re-encoded by emo)"
    line = f"{info['original']} kept as the source's original bytes, {info['reencoded']} re-encoded"
    return line + (f" ({info['reencoded_as']}: FID sees re-encoded pixels)" if info["reencoded"] else "")


def _cache_line(result: dict) -> str:
    parts = [f"{name}: {c['cached']} cached, {c['computed']} computed" for name, c in result["cache"]["generated"].items()]
    for name, st in (result["cache"].get("reference") or {}).items():
        parts.append(f"reference {name}: {len(st['cached'])} emotions cached, {len(st['computed'])} computed")
    return "; ".join(parts) + f". Timings (s): {json.dumps(result['seconds'])}"


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


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def paired_units(run_a, run_b) -> dict[str, tuple[list[float], list[float]]]:
    """Per metric, the matched unit values of two runs: images matched by (emotion, file name) from
    per_image.jsonl (Emo-A correctness, Sem-C, CLIP-T, CLIP-I), pairs by (emotion, a, b) from per_pair.jsonl
    (LPIPS, Sem-D). FID is a set statistic without units: no paired test."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for file, key_of, fields in (
            ("per_image.jsonl", lambda r: (r["emotion"], Path(r["image"]).name), ("emo_a", "sem_c", "clip_t", "clip_i")),
            ("per_pair.jsonl", lambda r: (r["emotion"], r["a"], r["b"]), ("lpips", "sem_d"))):
        rows = [{key_of(r): r for r in _jsonl(_run_dir(run) / file)} for run in (run_a, run_b)]
        common = [k for k in rows[0] if k in rows[1]]
        for name in fields:
            va, vb = [], []
            for k in common:
                ra, rb = rows[0][k], rows[1][k]
                if name == "emo_a":
                    if "emo_a_pred" in ra and "emo_a_pred" in rb:
                        va.append(float(ra["emo_a_pred"] == ra["emotion"]))
                        vb.append(float(rb["emo_a_pred"] == rb["emotion"]))
                elif name in ra and name in rb:
                    va.append(float(ra[name]))
                    vb.append(float(rb[name]))
            if va:
                out[name] = (va, vb)
    return out


def _run_dir(run) -> Path:
    path = Path(run).expanduser()
    return path if path.is_dir() else path.parent


def compare_rows(a: dict, b: dict, paired: dict | None = None, resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> list[tuple[str, str, str, str, str, str]]:
    """(metric, A, B, B - A, paired interval of B - A, better) rows. A difference is called (better "A" or
    "B") only when the paired bootstrap interval of the matched units excludes zero; otherwise "n.s."; FID
    (no units) and metrics without matched units show "no paired test". Conventions that differ are
    flagged in the metric name."""
    from emocli.metrics.bootstrap import paired_difference

    paired = paired or {}
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
            rows.append((name, fmt(col, va), fmt(col, vb), "–", "–", "–"))
            continue
        delta = vb - va
        scale = 100 if col == "Emo-A" else 1
        d = f"{100 * delta:+.2f} pt" if col == "Emo-A" else f"{delta:+.4g}"
        if key in paired:
            test = paired_difference(*paired[key], resamples=resamples, seed=seed, level=level)
            lo, hi = test["interval"]
            interval = f"[{scale * lo:+.4g}, {scale * hi:+.4g}] (n={test['n']})"
            if not test["real"]:
                better = "n.s."
            else:
                better = "B" if (test["difference"] > 0) == HIGHER_IS_BETTER[col] else "A"
        else:
            interval, better = "no paired test", "?" if abs(delta) > 1e-12 else "="
        rows.append((name, fmt(col, va), fmt(col, vb), d, interval, better))
    ga, gb = sum(a["counts"]["generated"].values()), sum(b["counts"]["generated"].values())
    rows.append(("images", str(ga), str(gb), f"{gb - ga:+d}", "", ""))
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
    table.add_column("paired 95% interval of B - A", justify="right")
    table.add_column("better", justify="center")
    rows = compare_rows(a, b, paired_units(run_a, run_b))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print("better: A or B only when the paired bootstrap interval (matched images or pairs, 1000 "
                  "resamples, seed 0) excludes zero; n.s. otherwise; FID is a set statistic (see its intervals "
                  "in each report)")
    only = sorted(set(a["metrics"]) ^ set(b["metrics"]))
    if only:
        console.print("computed in one run only: " + ", ".join(KEY_NAMES.get(k, k) for k in only))
    return rows
