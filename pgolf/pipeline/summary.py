"""The pipeline's closing summary: one JSON for tools, one short Markdown page for people."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from pgolf.config import RunConfig
from pgolf.io import atomic_write_text
from pgolf.pipeline.stages import stage_record


def _train_facts(run_dir: Path) -> dict[str, Any]:
    """Steps, throughput and pre-quantization val_bpb from the trainer's JSONL log."""
    log = run_dir / "train_log.jsonl"
    if not log.is_file():
        return {}
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    # Skip the first logged window: it still carries the compile/warm-cache transient.
    rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][1:]
    finals = [r for r in records if r.get("event") == "final"]
    facts: dict[str, Any] = {}
    if rates:
        facts["tokens_per_s_median"] = statistics.median(rates)
    if finals:
        f = finals[-1]
        facts.update(
            steps=f.get("step"),
            train_s=f.get("train_s"),
            averaging=f.get("averaging"),
            val_bpb_prequant=f.get("val_bpb"),
            val_bpb_prequant_raw_weights=f.get("val_bpb_raw"),
        )
    return facts


def _eval_facts(out: Path, ttt_modes: tuple[str, ...]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for mode in ttt_modes:
        path = out / f"eval_{mode}.json"
        if path.is_file():
            r = json.loads(path.read_text())
            facts[mode] = {
                k: r.get(k)
                for k in (
                    "val_bpb",
                    "val_loss",
                    "tokens_scored",
                    "time_total_s",
                    "time_ttt_s",
                    "time_score_s",
                    "compliant",
                    "full_split",
                )
            }
    return facts


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def summarize(
    out: Path, config: RunConfig, ttt_modes: tuple[str, ...], gpus: int = 1
) -> dict[str, Any]:
    artifact = out / "artifact.pgolf"
    stages = {}
    for name in ("data", "train", "pack", "eval"):
        record = stage_record(out, name)
        if record is not None:
            stages[name] = record["wall_s"]
    evals = _eval_facts(out, ttt_modes)
    pack = json.loads((out / "pack.json").read_text()) if (out / "pack.json").is_file() else None
    # The TTT figure is the first mode that adapts (the recipe's own unless --ttt chose).
    ttt_mode = next((m for m in ttt_modes if m != "none"), None)
    summary: dict[str, Any] = {
        "preset": config.preset,
        "gpus": gpus,
        "device": _device_name(),
        "train": _train_facts(out / "train"),
        "artifact_bytes": artifact.stat().st_size if artifact.is_file() else None,
        "pack": pack,
        # What the 16,000,000-byte cap counts: compressed weights + counted eval-side code.
        "total_bytes": pack.get("total_bytes") if pack else None,
        "eval": evals,
        "val_bpb_postpack": evals.get("none", {}).get("val_bpb"),
        "ttt_mode": ttt_mode,
        "val_bpb_ttt": evals.get(ttt_mode, {}).get("val_bpb"),
        "stage_wall_s": stages,
        "total_wall_s": round(sum(stages.values()), 3),
    }
    return summary


def markdown(summary: dict[str, Any]) -> str:
    t = summary["train"]

    def fmt(value: Any, spec: str = "") -> str:
        return "—" if value is None else format(value, spec)

    lines = [
        f"# pgolf run ({summary['preset']}, {summary['gpus']} × {summary['device']})",
        "",
        "| figure | value |",
        "|---|---|",
        f"| val_bpb before packing (averaged weights, plain) | {fmt(t.get('val_bpb_prequant'), '.4f')} |",
        f"| val_bpb after pack round trip (sliding, no TTT) | {fmt(summary['val_bpb_postpack'], '.4f')} |",
        f"| val_bpb after score-first TTT ({summary['ttt_mode']}) | {fmt(summary['val_bpb_ttt'], '.4f')} |",
        f"| artifact bytes (weights) | {fmt(summary['artifact_bytes'], ',')} |",
        f"| total bytes (weights + counted code; cap 16,000,000) | {fmt(summary['total_bytes'], ',')} |",
        f"| training steps | {fmt(t.get('steps'))} |",
        f"| training tokens/s (median) | {fmt(t.get('tokens_per_s_median'), ',.0f')} |",
        "",
        "| stage | wall s |",
        "|---|---|",
        *(f"| {name} | {sec:.1f} |" for name, sec in summary["stage_wall_s"].items()),
        f"| **total** | {summary['total_wall_s']:.1f} |",
        "",
    ]
    return "\n".join(lines)


def write_summary(
    out: Path, config: RunConfig, ttt_modes: tuple[str, ...], gpus: int = 1
) -> dict[str, Any]:
    summary = summarize(out, config, ttt_modes, gpus)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "summary.md", markdown(summary))
    print("summary " + json.dumps(summary), flush=True)
    return summary
