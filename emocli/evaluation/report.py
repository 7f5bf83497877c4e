"""One report for every `emo eval ...` command: ``report.md`` + ``report.html`` + plots + ``metrics.json``.

An evaluation builds a `Report` (a title, a few facts, then blocks in reading order) and calls `Report.write`:

    from emocli.evaluation.report import Column, Image, Report, Row

    report = Report("emo eval ldm: run-1", facts={"samples": "/runs/ldm/samples (240 images)"})
    table = report.table("Results", [Column("fid", "FID", higher_is_better=False, digits=2),
                                     Column("clip_t", "CLIP-T", digits=3)])
    table.add(Row("SD 1.5 (paper)", {"fid": 12.63}, reference=True, note="paper Table 2, COCO 30k"))
    table.add(Row("run-1 (this run)", {"fid": 14.1, "clip_t": 0.31}, ci={"fid": (13.2, 15.3)},
                  flags=["FID: unverified Inception weights"], highlight=True))
    report.section("Conventions", bullets=["**FID** `fid/tf`: ...", "..."])
    report.plot("FID per emotion", save_figure(fig, out_dir / "plots" / "fid.png"))
    report.gallery("Samples", {"amusement": [Image(path, "a.png", details=[("Emo-A: awe", "bad")])]})
    report.write(out_dir, metrics=result, embed_images=True)

Blocks:

- `Table` (`Report.table`): `Column`s (key, title, direction arrow, digits or percent) and `Row`s. A row holds
  numbers (formatted per column), strings (shown as they are) or None ("–"); optional confidence intervals
  (``ci[key] = (low, high)``, shown as ``v [low, high]``); ``reference=True`` marks a number taken from
  elsewhere (a paper), labelled "reference" in the notes column and greyed in HTML; ``note`` and ``flags``
  (warnings such as unverified weights, prefixed with ⚠) go into that row's notes column, which is present
  when any row has a note, a flag or is a reference row. ``highlight=True`` bolds the row (this run).
- `Section` (`Report.section`): a heading with paragraphs and/or bullets. Text may use ``**bold**`` and
  ```code```; everything else is escaped in HTML.
- `Plot` (`Report.plot`): a PNG already written by `emocli.metrics.plots.save_figure`.
- `Gallery` (`Report.gallery`): groups of `Image`s (a file, a caption, detail lines with an optional
  ``"ok"``/``"bad"`` colour), shown as thumbnails in HTML only.
- `Links` (`Report.links`): relative links to files of the run (metrics.json, per-image rows, ...).

`Report.write(out_dir, metrics=..., embed_images=True, html=True)` writes

- ``report.md``: every table, section and link; plots as relative image links; galleries as a count;
- ``report.html`` (when ``html``): the same plus galleries. ``embed_images=True`` embeds plots (PNG) and
  gallery thumbnails (JPEG) as ``data:`` URIs, so the file stands alone; ``False`` links them relative to
  ``out_dir`` (the report then needs the run folder and the images where they are);
- ``metrics.json`` when ``metrics`` is given (written atomically).

Nothing here knows a metric: the evaluations (`emocli.methods.*`) choose the columns, rows and sections.
"""

from __future__ import annotations

import base64
import html as _html
import io
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MISSING = "–"


# --------------------------------------------------------------------------------------------- blocks


@dataclass
class Column:
    """One value column. `higher_is_better` adds ↑/↓ to the title (None: no arrow). Numbers are shown with
    `digits` decimals, or as percentages with `percent` (the value is a fraction)."""

    key: str
    title: str
    higher_is_better: bool | None = None
    digits: int = 3
    percent: bool = False

    @property
    def header(self) -> str:
        if self.higher_is_better is None:
            return self.title
        return self.title + ("↑" if self.higher_is_better else "↓")

    def format(self, value) -> str:
        if value is None:
            return MISSING
        if isinstance(value, str):
            return value
        if isinstance(value, bool) or (isinstance(value, int) and not self.percent):
            return str(value)
        value = float(value)
        if value != value:  # NaN
            return "nan"
        if self.percent:
            return f"{100 * value:.{self.digits}f}%"
        if abs(value) < 0.5 * 10 ** -self.digits:
            value = 0.0  # no "-0.00" for round-off around zero
        return f"{value:.{self.digits}f}"

    def format_ci(self, interval) -> str:
        low, high = interval
        return f"[{self.format(low)}, {self.format(high)}]"


@dataclass
class Row:
    """A table row: `values[column key]`, optional `ci[column key] = (low, high)`, and its notes."""

    name: str
    values: Mapping[str, object]
    ci: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    reference: bool = False
    note: str = ""
    flags: Sequence[str] = ()
    highlight: bool = False

    def notes(self) -> list[str]:
        out = ["reference" + (f": {self.note}" if self.note else "")] if self.reference else \
            ([self.note] if self.note else [])
        return out + [f"⚠ {f}" for f in self.flags]

    def cell(self, column: Column) -> str:
        text = column.format(self.values.get(column.key))
        if column.key in self.ci and self.values.get(column.key) is not None:
            text += " " + column.format_ci(self.ci[column.key])
        return text


@dataclass
class Table:
    title: str
    columns: list[Column]
    rows: list[Row] = field(default_factory=list)
    first_column: str = "Method"
    caption: str = ""

    def add(self, row: Row) -> Row:
        unknown = set(row.values) - {c.key for c in self.columns}
        if unknown:
            raise ValueError(f"table {self.title!r}: row {row.name!r} has values for unknown columns {sorted(unknown)}")
        self.rows.append(row)
        return row

    @property
    def has_notes(self) -> bool:
        return any(r.notes() for r in self.rows)


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)


@dataclass
class Plot:
    title: str
    path: Path
    alt: str = ""


@dataclass
class Image:
    """A gallery image: the file, a caption, and detail lines (text, or (text, "ok" | "bad"))."""

    path: Path
    caption: str = ""
    details: Sequence[str | tuple[str, str]] = ()


@dataclass
class Gallery:
    title: str
    groups: Mapping[str, Sequence[Image]]
    thumbnail: int = 128


@dataclass
class Links:
    title: str
    files: Sequence[tuple[str, Path]]  # (label, path)


# --------------------------------------------------------------------------------------------- the report


class Report:
    """A report in reading order; see the module docstring."""

    def __init__(self, title: str, facts: Mapping[str, object] | None = None):
        self.title = title
        self.facts = dict(facts or {})
        self.blocks: list[object] = []

    def table(self, title: str, columns: Sequence[Column], first_column: str = "Method", caption: str = "") -> Table:
        table = Table(title, list(columns), first_column=first_column, caption=caption)
        self.blocks.append(table)
        return table

    def section(self, title: str, paragraphs: Iterable[str] = (), bullets: Iterable[str] = ()) -> Section:
        section = Section(title, list(paragraphs), list(bullets))
        self.blocks.append(section)
        return section

    def plot(self, title: str, path, alt: str = "") -> Plot:
        plot = Plot(title, Path(path), alt or title)
        self.blocks.append(plot)
        return plot

    def gallery(self, title: str, groups: Mapping[str, Sequence[Image]], thumbnail: int = 128) -> Gallery:
        gallery = Gallery(title, dict(groups), thumbnail)
        self.blocks.append(gallery)
        return gallery

    def links(self, title: str, files: Iterable[tuple[str, object]]) -> Links:
        links = Links(title, [(label, Path(p)) for label, p in files])
        self.blocks.append(links)
        return links

    # ----------------------------------------------------------------------------------------- writing

    def write(self, out_dir, metrics: Mapping | None = None, embed_images: bool = True,
              html: bool = True) -> dict[str, Path]:
        """Write report.md (+ report.html, + metrics.json) into `out_dir`; returns {kind: path}."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = {}
        if metrics is not None:
            from emocli.runs import write_json_atomic

            write_json_atomic(out_dir / "metrics.json", dict(metrics))
            written["metrics"] = out_dir / "metrics.json"
        (out_dir / "report.md").write_text(self.markdown(out_dir), encoding="utf-8")
        written["markdown"] = out_dir / "report.md"
        if html:
            (out_dir / "report.html").write_text(self.html(out_dir, embed_images), encoding="utf-8")
            written["html"] = out_dir / "report.html"
        return written

    def markdown(self, out_dir) -> str:
        lines = [f"# {self.title}", ""]
        lines += [f"- {k}: {v}" for k, v in self.facts.items()]
        for block in self.blocks:
            lines += ["", f"## {block.title}", ""]
            if isinstance(block, Table):
                lines += _markdown_table(block)
            elif isinstance(block, Section):
                for p in block.paragraphs:
                    lines += [p, ""]
                lines += [f"- {b}" for b in block.bullets]
            elif isinstance(block, Plot):
                lines.append(f"![{block.alt}]({_relative(block.path, out_dir)})")
            elif isinstance(block, Gallery):
                n = sum(len(v) for v in block.groups.values())
                lines.append(f"{n} images in {len(block.groups)} groups: see report.html.")
            elif isinstance(block, Links):
                lines += [f"- [{label}]({_relative(p, out_dir)})" for label, p in block.files]
        return "\n".join(lines).rstrip() + "\n"

    def html(self, out_dir, embed_images: bool = True) -> str:
        out_dir = Path(out_dir)
        esc = _html.escape
        parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(self.title)}</title>"
                 f"<style>{_CSS}</style></head><body>", f"<h1>{esc(self.title)}</h1>"]
        if self.facts:
            parts.append("<ul class='facts'>" + "".join(f"<li>{esc(str(k))}: {inline(str(v))}</li>"
                                                        for k, v in self.facts.items()) + "</ul>")
        for block in self.blocks:
            parts.append(f"<h2>{esc(block.title)}</h2>")
            if isinstance(block, Table):
                parts.append(_html_table(block))
            elif isinstance(block, Section):
                parts += [f"<p>{inline(p)}</p>" for p in block.paragraphs]
                if block.bullets:
                    parts.append("<ul>" + "".join(f"<li>{inline(b)}</li>" for b in block.bullets) + "</ul>")
            elif isinstance(block, Plot):
                src = _data_uri(block.path, "image/png") if embed_images else esc(_relative(block.path, out_dir))
                parts.append(f"<img class='plot' src='{src}' alt='{esc(block.alt)}'>")
            elif isinstance(block, Gallery):
                parts.append(_html_gallery(block, out_dir, embed_images))
            elif isinstance(block, Links):
                parts.append("<ul>" + "".join(f"<li><a href='{esc(_relative(p, out_dir))}'>{esc(label)}</a></li>"
                                              for label, p in block.files) + "</ul>")
        parts.append("</body></html>")
        return "\n".join(parts)


# --------------------------------------------------------------------------------------------- rendering

_CSS = """
body { font-family: -apple-system, system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; } th, td { border: 1px solid #ccc; padding: 4px 8px; }
th { background: #f3f3f3; } tr.highlight td { font-weight: bold; background: #eef5ff; }
tr.reference td { color: #555; font-style: italic; } td.notes { font-size: 12px; font-weight: normal; }
.flag { color: #b26b00; } .grid { display: flex; flex-wrap: wrap; gap: 6px; }
.cell { width: 136px; font-size: 11px; text-align: center; }
.cell img { width: 128px; height: 128px; object-fit: cover; border: 1px solid #ddd; }
.ok { color: #2a7d2a; } .bad { color: #b22; } img.plot { max-width: 100%; } code { background: #f6f6f6; }
"""


def inline(text: str) -> str:
    """Escaped HTML of `text`, with ``**bold**`` and ```code``` turned into tags."""
    out = _html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def _markdown_table(table: Table) -> list[str]:
    notes = table.has_notes
    head = [table.first_column] + [c.header for c in table.columns] + (["notes"] if notes else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.rows:
        cells = [row.name] + [row.cell(c) for c in table.columns]
        if notes:
            cells.append("; ".join(row.notes()))
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    if table.caption:
        lines += ["", table.caption]
    return lines


def _html_table(table: Table) -> str:
    esc = _html.escape
    notes = table.has_notes
    parts = ["<table><tr><th>" + esc(table.first_column) + "</th>"
             + "".join(f"<th>{esc(c.header)}</th>" for c in table.columns) + ("<th>notes</th>" if notes else "")
             + "</tr>"]
    for row in table.rows:
        classes = [name for name, on in (("reference", row.reference), ("highlight", row.highlight)) if on]
        cls = f" class='{' '.join(classes)}'" if classes else ""
        cells = f"<td>{esc(row.name)}</td>" + "".join(f"<td>{esc(row.cell(c))}</td>" for c in table.columns)
        if notes:
            items = ([esc(row.notes()[0])] if row.reference or row.note else [])
            items += [f"<span class='flag'>{esc('⚠ ' + f)}</span>" for f in row.flags]
            cells += f"<td class='notes'>{'; '.join(items)}</td>"
        parts.append(f"<tr{cls}>{cells}</tr>")
    parts.append("</table>")
    if table.caption:
        parts.append(f"<p><small>{inline(table.caption)}</small></p>")
    return "\n".join(parts)


def _html_gallery(gallery: Gallery, out_dir: Path, embed: bool) -> str:
    esc = _html.escape
    parts = []
    for group, images in gallery.groups.items():
        parts.append(f"<h3>{esc(group)}</h3><div class='grid'>")
        for im in images:
            src = thumbnail_uri(im.path, gallery.thumbnail) if embed else esc(_relative(im.path, out_dir))
            caption = esc(im.caption or Path(im.path).name)
            for detail in im.details:
                text, cls = (detail, "") if isinstance(detail, str) else detail
                caption += f"<br><span class='{esc(cls)}'>{esc(text)}</span>" if cls else f"<br>{esc(text)}"
            parts.append(f"<div class='cell'><img src='{src}' alt='{esc(Path(im.path).name)}'><br>{caption}</div>")
        parts.append("</div>")
    return "\n".join(parts)


def _relative(path, out_dir) -> str:
    """`path` relative to the report's folder, with forward slashes (a URL path)."""
    return Path(os.path.relpath(Path(path).resolve(), Path(out_dir).resolve())).as_posix()


def _data_uri(path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def thumbnail_uri(path, size: int = 128) -> str:
    """A JPEG thumbnail (longest side `size`) of an image file as a data: URI."""
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
