"""Loss-curve PNG for a run dir (matplotlib, headless)."""

from __future__ import annotations

import io
from pathlib import Path

from pgolf.io import atomic_write_bytes


def plot_loss_curve(history: list[dict[str, float]], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["train_loss"]) for h in history if "train_loss" in h]
    val = [(h["step"], h["val_bpb"]) for h in history if "val_bpb" in h]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), lw=1, label="train loss (nats)")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    if val:
        ax2 = ax.twinx()
        ax2.plot(*zip(*val, strict=True), "o-", color="tab:red", label="val bpb")
        ax2.set_ylabel("val bpb")
        ax2.legend(loc="upper center")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
