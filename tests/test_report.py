"""The shared report module (emocli.evaluation.report): markdown and HTML of tables with reference rows,
flags and intervals, sections, plots and galleries, embedded or linked."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest


def make_report(tmp_path: Path):
    """A report with one of every block; images and a plot written under tmp_path."""
    from PIL import Image as PILImage

    from emocli.evaluation.report import Column, Image, Report, Row
    from emocli.metrics.plots import plot_per_group

    out = tmp_path / "run"
    images = []
    for i, colour in enumerate(((200, 30, 30), (30, 200, 30))):
        path = tmp_path / "samples" / f"im{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        PILImage.new("RGB", (40, 30), colour).save(path)
        images.append(path)
    report = Report("emo eval demo: r1", facts={"samples": f"`{tmp_path / 'samples'}` (2 images)"})
    table = report.table("Results", [Column("fid", "FID", higher_is_better=False, digits=2),
                                     Column("acc", "Acc", higher_is_better=True, digits=1, percent=True),
                                     Column("n", "images")], caption="Paper rows: **Table 1**.")
    table.add(Row("Paper (paper)", {"fid": 41.6, "acc": 0.7625}, reference=True, note="EmoGen Table 1"))
    table.add(Row("r1 (this run)", {"fid": 40.123, "acc": 0.5, "n": 2}, ci={"fid": (38.0, 42.5)},
                  flags=["FID: unverified Inception weights"], highlight=True))
    report.section("Conventions", paragraphs=["FID is `tf` <b>not html</b>."], bullets=["**FID** aggregated"])
    report.plot("FID per group", plot_per_group({"a": 1.0, "b": 2.0}, "FID", out / "plots" / "fid.png",
                                                overall=1.5, intervals={"a": (0.5, 1.5)}))
    report.gallery("Images", {"a": [Image(images[0], "im0.png", [("pred: a", "ok"), "Sem-C 0.50"])],
                              "b": [Image(images[1])]})
    report.links("Files", [("metrics.json", out / "metrics.json")])
    return report, out, images


def test_markdown_rows_reference_notes_flags_and_intervals(tmp_path):
    report, out, _ = make_report(tmp_path)
    written = report.write(out, metrics={"fid": 40.123})
    md = (out / "report.md").read_text()
    assert "| Method | FID↓ | Acc↑ | images | notes |" in md
    assert "| Paper (paper) | 41.60 | 76.2% | – | reference: EmoGen Table 1 |" in md
    assert "| r1 (this run) | 40.12 [38.00, 42.50] | 50.0% | 2 | ⚠ FID: unverified Inception weights |" in md
    assert "![FID per group](plots/fid.png)" in md and "- [metrics.json](metrics.json)" in md
    assert "2 images in 2 groups" in md
    assert json.loads((out / "metrics.json").read_text()) == {"fid": 40.123}
    assert set(written) == {"metrics", "markdown", "html"}


def test_html_embeds_or_links_every_image(tmp_path):
    report, out, images = make_report(tmp_path)
    report.write(out, embed_images=True)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 1 and html.count("data:image/jpeg;base64,") == 2
    assert "class='reference'" in html and "class='highlight'" in html and "class='flag'" in html
    assert "<code>tf</code>" in html and "&lt;b&gt;not html&lt;/b&gt;" in html and "<b>FID</b>" in html
    assert "<span class='ok'>pred: a</span>" in html

    report.write(out, embed_images=False)
    html = (out / "report.html").read_text()
    assert "data:image" not in html
    sources = re.findall(r"src='([^']+)'", html)
    assert sorted(sources) == sorted(["plots/fid.png", "../samples/im0.png", "../samples/im1.png"])
    assert all((out / s).is_file() for s in sources)


def test_a_row_for_an_unknown_column_is_refused():
    from emocli.evaluation.report import Column, Report, Row

    table = Report("t").table("T", [Column("fid", "FID")])
    with pytest.raises(ValueError, match="unknown columns"):
        table.add(Row("x", {"lpips": 0.1}))


def test_numbers_are_formatted_per_column():
    from emocli.evaluation.report import Column

    assert Column("f", "FID", digits=2).format(-1e-9) == "0.00"
    assert Column("a", "Emo-A", digits=2, percent=True).format(0.7625) == "76.25%"
    assert Column("n", "n").format(24) == "24" and Column("n", "n").format(None) == "–"
    assert Column("t", "t").format("n/a") == "n/a"
