"""The report's figures, drawn with matplotlib's Agg backend and returned as base64 PNG text
for `<img src="data:image/png;base64,...">`. matplotlib is imported here only, when a figure
is drawn, so that importing qatune.report costs nothing.
"""

from __future__ import annotations

import base64
import io
from typing import Sequence

from qatune.calibration import ScoreBin
from qatune.metrics import exact_of
from qatune.report.history import History, smoothed

DPI = 100
COLORS = {"loss": "#1f77b4", "em": "#d62728", "f1": "#2ca02c", "best": "#555555", "bar": "#9ecae1"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: no display, no window
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> str:
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def loss_png(history: History) -> str | None:
    """The loss of every training batch (thin, light) and its exponential moving average; None without steps."""
    if not history.steps:
        return None
    plt = _pyplot()
    losses = [float(record["loss"]) for record in history.steps]
    batches = list(range(1, len(losses) + 1))
    figure, axes = plt.subplots(figsize=(6.4, 3.2))
    axes.plot(batches, losses, color=COLORS["loss"], alpha=0.3, linewidth=0.8, label="loss per batch")
    axes.plot(batches, smoothed(losses), color=COLORS["loss"], linewidth=2.0, label="smoothed")
    epochs = [record.get("epoch") for record in history.steps]
    for index in range(1, len(epochs)):
        if epochs[index] != epochs[index - 1]:
            axes.axvline(index + 0.5, color="#bbbbbb", linewidth=0.7, linestyle=":")
    axes.set_xlabel("training batch (dotted lines: epoch ends)")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right")
    return _png(figure)


def dev_scores_png(history: History, best_epoch: int | None) -> str | None:
    """Dev EM and F1 per evaluated epoch, the scores before training at epoch 0, the kept
    model's scores and its epoch marked; None without any evaluation."""
    if not history.evals and history.baseline is None:
        return None
    return _png(dev_scores_figure(history, best_epoch))


def dev_scores_figure(history: History, best_epoch: int | None):
    """The figure of `dev_scores_png`: whole epochs on the x axis, the legend beside the plot
    (scores of a small model sit low, where a legend inside would hide them)."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    records = ([history.baseline] if history.baseline else []) + list(history.evals)
    epochs = [record.get("epoch", 0) for record in records]
    figure, axes = plt.subplots(figsize=(6.4, 3.2))
    axes.plot(epochs, [exact_of(r) for r in records], marker="o", color=COLORS["em"], label="exact match")
    axes.plot(epochs, [r["f1"] for r in records], marker="s", color=COLORS["f1"], label="F1")
    if best_epoch is not None:
        axes.axvline(best_epoch, color=COLORS["best"], linestyle="--", linewidth=1, label=f"kept: epoch {best_epoch}")
    if history.kept is not None:
        kept_epoch = history.kept.get("epoch", best_epoch)
        axes.scatter([kept_epoch], [history.kept["f1"]], marker="*", s=160, color=COLORS["f1"], zorder=3,
                     edgecolors="black", label="kept model, F1 (answering engine)")
    axes.set_xlabel("epoch (0: before training)" if history.baseline else "epoch")
    axes.set_ylabel("dev score (%)")
    axes.set_ylim(-2, 102)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize="small")
    return figure


def reliability_png(bins: Sequence[ScoreBin], ece: float) -> str | None:
    """Share of right answers per score bin against the diagonal, the bins' counts as bars below."""
    if not any(entry.count for entry in bins):
        return None
    plt = _pyplot()
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(5.2, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    centers = [(entry.low + entry.high) / 2 for entry in bins]
    width = bins[0].high - bins[0].low
    filled = [entry for entry in bins if entry.count]
    top.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=1, label="perfectly calibrated")
    top.bar([(e.low + e.high) / 2 for e in filled], [e.accuracy for e in filled], width=width * 0.9,
            color=COLORS["bar"], edgecolor="#3182bd", label="share right")
    top.plot([e.mean_score for e in filled], [e.accuracy for e in filled], marker="o", color="#08519c",
             linewidth=1, label="mean score vs share right")
    top.set_ylabel("share right")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.05)
    top.set_title(f"expected calibration error {100 * ece:.1f} points")
    top.legend(loc="upper left", fontsize="small")
    top.grid(alpha=0.3)
    counts = [entry.count for entry in bins]
    bottom.bar(centers, counts, width=width * 0.9, color="#bdbdbd")
    for x, count in zip(centers, counts):
        if count:
            bottom.annotate(str(count), (x, count), ha="center", va="bottom", fontsize="x-small")
    bottom.set_ylabel("answers")
    bottom.set_xlabel("score of the best span")
    bottom.set_ylim(0, max(counts) * 1.3)
    return _png(figure)


def threshold_png(curve: Sequence[tuple[float, float]], saved: float, f1_at_saved: float) -> str | None:
    """Overall F1 against the no-answer threshold, the model's saved threshold marked."""
    if not curve:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 3.2))
    thresholds = [t for t, _ in curve]
    positive = [t for t in thresholds + [saved] if t > 0]
    # no-answer probabilities crowd near 0: a log axis shows them apart (0 drawn at its left edge)
    low = min(positive) / 3 if positive and min(positive) < 0.01 else None
    if low is not None:
        axes.set_xscale("log")
        thresholds = [max(t, low) for t in thresholds]
    axes.step(thresholds, [f for _, f in curve], where="post", color=COLORS["f1"], label="F1 (all questions)")
    axes.axvline(max(saved, low or 0), color=COLORS["best"], linestyle="--", linewidth=1,
                 label=f"saved threshold {saved:.3g}: F1 {f1_at_saved:.1f}")
    scale = " (log scale)" if low is not None else ""
    axes.set_xlabel(f"no-answer threshold{scale}: unanswered when the no-answer probability is above it")
    axes.set_ylabel("F1 (%)")
    axes.set_xlim(low or 0, 1)
    axes.set_ylim(-2, 102)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    return _png(figure)


__all__ = ["dev_scores_png", "loss_png", "reliability_png", "threshold_png"]
