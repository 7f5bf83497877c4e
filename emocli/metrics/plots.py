"""Plots shared by every report (matplotlib, Agg backend, imported on use)."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    """Lay out, write the PNG (creating its folder) and free the figure."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    pyplot().close(fig)
    return path


def plot_confusion(counts, row_labels, col_labels, path, title: str, row_axis: str = "true") -> Path:
    """A row-normalised confusion matrix (rows: `row_axis`, columns: predicted) with the counts in the
    cells, as PNG. `counts` may have extra columns (e.g. "no answer") named in `col_labels`."""
    import numpy as np

    plt = pyplot()
    cm = np.asarray(counts, dtype=np.float64)
    totals = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
    fig, ax = plt.subplots(figsize=(1.6 + 0.62 * len(col_labels), 1.2 + 0.55 * len(row_labels)), dpi=100)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=45, ha="right")
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel(row_axis)
    ax.set_title(title)
    for r in range(cm.shape[0]):
        for c in range(cm.shape[1]):
            if cm[r, c]:
                ax.text(c, r, str(int(cm[r, c])), ha="center", va="center", fontsize=8,
                        color="white" if share[r, c] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the row")
    return save_figure(fig, path)


def plot_per_group(values, title: str, path, overall=None, percent: bool = False, intervals=None) -> Path:
    """A bar per group (e.g. emotion) with an optional dashed overall line and optional error bars
    (`intervals[group] = (low, high)`), as PNG. `percent` shows fractions as percentages."""
    import numpy as np

    plt = pyplot()
    names = list(values)
    scale = 100.0 if percent else 1.0
    data = np.array([scale * values[n] for n in names], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    yerr = None
    if intervals:
        lows = np.array([scale * intervals.get(n, (values[n], values[n]))[0] for n in names])
        highs = np.array([scale * intervals.get(n, (values[n], values[n]))[1] for n in names])
        yerr = np.clip(np.stack([data - lows, highs - data]), 0, None)
    ax.bar(range(len(names)), data, color="#4c72b0", yerr=yerr, capsize=3 if yerr is not None else 0)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    if overall is not None:
        ax.axhline(scale * overall, color="#dd8452", linestyle="--", label="overall")
        ax.legend(loc="best", fontsize=8)
    ax.set_title(title)
    return save_figure(fig, path)
