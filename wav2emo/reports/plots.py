"""Figures for reports (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def plot_confusion_matrix(cm: np.ndarray, class_names, path: str | Path, title: str = "") -> Path:
    cm = np.asarray(cm)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}", ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "Confusion matrix (row-normalised colours, counts shown)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def read_epoch_metrics(fold_dir: Path) -> pd.DataFrame | None:
    """Per-epoch metrics from the fold's CSVLogger file (None if CSV logging was off)."""
    files = sorted(Path(fold_dir).glob("csv/version_*/metrics.csv"))
    if not files:
        return None
    df = pd.read_csv(files[-1])
    if "epoch" not in df:
        return None
    return df.groupby("epoch").mean(numeric_only=True)


def plot_learning_curves(fold_dirs: dict[int, Path], path: str | Path) -> Path | None:
    curves = {f: read_epoch_metrics(d) for f, d in fold_dirs.items()}
    curves = {f: c for f, c in curves.items() if c is not None}
    if not curves:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for f, c in sorted(curves.items()):
        for ax, key in zip(axes, ("loss", "ua"), strict=True):
            for split, style in (("train", "--"), ("val", "-")):
                col = f"{split}/{key}"
                if col in c:
                    s = c[col].dropna()
                    ax.plot(s.index, s.values, style, label=f"fold {f} {split}")
    axes[0].set_title("cross-entropy loss")
    axes[1].set_title("UA (macro recall)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def ua_rows_figure(rows: int):
    """A figure with one horizontal row per configuration (:func:`save_ua_rows` finishes and writes it)."""
    return plt.subplots(figsize=(8, 1.2 + 0.45 * rows))


def save_ua_rows(fig, ax, names, xlabel: str, path: str | Path) -> Path:
    """Label the rows (top to bottom), put UA on a 0-1 axis, the legend outside, and write the PNG."""
    ax.set_yticks(np.arange(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
