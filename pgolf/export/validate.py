"""``pgolf validate DIR``: check a records folder the way the challenge's reviewers do.

Every check adds one line naming the file and the fix; an empty list means the folder
passes. Checked: the folder's place in a checkout, the required files, submission.json's
fields and types, byte totals (<= 16,000,000 and equal to the real file sizes), that
train_gpt.py compiles, and that each seed's log holds the score and stopped in time.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from pathlib import Path
from typing import Any

CAP_BYTES = 16_000_000
LIMIT_S = 600.0
TRACK_DIR = ("records", "track_10min_16mb")
REQUIRED = ("README.md", "submission.json", "requirements.txt", "train_gpt.py")
# field -> accepted JSON types (bool is never a number here)
FIELDS: dict[str, tuple[type, ...]] = {
    "author": (str,),
    "github_id": (str,),
    "name": (str,),
    "blurb": (str,),
    "date": (str,),
    "val_loss": (int, float),
    "val_bpb": (int, float),
    "val_bpb_std": (int, float),
    "bytes_total": (int,),
    "bytes_code": (int,),
    "seeds": (list,),
    "seed_results": (dict,),
    "hardware": (str,),
    "pytorch_version": (str,),
    "compliance": (dict,),
}
SEED_FIELDS: dict[str, tuple[type, ...]] = {
    "val_bpb": (int, float),
    "artifact_bytes": (int,),
    "eval_time_s": (int, float),
}
FINAL_LINE = re.compile(r"^final_\S+ val_loss:(\S+) val_bpb:(\S+)", re.MULTILINE)
CLOCK = re.compile(r"train_plus_pack_s:(\S+)")


def _typed(value: Any, types: tuple[type, ...]) -> bool:
    return isinstance(value, types) and not isinstance(value, bool)


def check_location(folder: Path) -> list[str]:
    """Inside a git checkout the folder must sit at records/track_10min_16mb/<name>/."""
    folder = folder.resolve()
    root = next((p for p in (folder, *folder.parents) if (p / ".git").exists()), None)
    if root is None:
        return []
    rel = folder.relative_to(root).parts
    if rel[:-1] != TRACK_DIR:
        return [f"{folder}: must be {'/'.join(TRACK_DIR)}/<name>/ in the checkout {root}"]
    return []


def check_fields(sub: dict[str, Any]) -> list[str]:
    problems = []
    for key, types in FIELDS.items():
        if key not in sub:
            problems.append(f"submission.json: missing field {key!r}")
        elif not _typed(sub[key], types):
            want = " or ".join(t.__name__ for t in types)
            problems.append(f"submission.json: {key} must be {want}, got {sub[key]!r}")
    if _typed(sub.get("date"), (str,)):
        try:
            datetime.date.fromisoformat(sub["date"])
        except ValueError:
            problems.append(f"submission.json: date {sub['date']!r} must be YYYY-MM-DD")
    for key in ("val_loss", "val_bpb", "val_bpb_std"):
        if _typed(sub.get(key), (int, float)) and not math.isfinite(sub[key]):
            problems.append(f"submission.json: {key} must be finite, got {sub[key]!r}")
    return problems


def check_seeds(sub: dict[str, Any], code_size: int) -> list[str]:
    seeds, results = sub.get("seeds"), sub.get("seed_results")
    if not isinstance(seeds, list) or not isinstance(results, dict):
        return []
    problems = []
    if sorted(str(s) for s in seeds) != sorted(results):
        problems.append(
            f"submission.json: seeds {seeds} and seed_results keys {sorted(results)} differ"
        )
    totals = []
    for seed, r in results.items():
        for key, types in SEED_FIELDS.items():
            if not _typed(r.get(key), types):
                problems.append(
                    f"submission.json: seed_results[{seed}].{key} missing or not a number"
                )
        if _typed(r.get("artifact_bytes"), (int,)):
            totals.append(r["artifact_bytes"] + code_size)
            if totals[-1] > CAP_BYTES:
                problems.append(
                    f"seed {seed}: artifact {r['artifact_bytes']:,} + code {code_size:,} = "
                    f"{totals[-1]:,} bytes exceeds {CAP_BYTES:,}"
                )
        if _typed(r.get("eval_time_s"), (int, float)) and r["eval_time_s"] > LIMIT_S:
            problems.append(f"seed {seed}: eval took {r['eval_time_s']} s, over {LIMIT_S:.0f} s")
    if totals and sub.get("bytes_total") != max(totals):
        problems.append(
            f"submission.json: bytes_total {sub.get('bytes_total')} != largest artifact + "
            f"train_gpt.py = {max(totals)}"
        )
    bpbs = [r["val_bpb"] for r in results.values() if _typed(r.get("val_bpb"), (int, float))]
    mean_ok = _typed(sub.get("val_bpb"), (int, float))
    if bpbs and mean_ok and abs(sub["val_bpb"] - sum(bpbs) / len(bpbs)) > 1e-6:
        problems.append("submission.json: val_bpb is not the mean of seed_results' val_bpb")
    return problems


def check_log(path: Path, seed: str, result: dict[str, Any]) -> list[str]:
    text = path.read_text(errors="replace")
    problems = []
    finals = FINAL_LINE.findall(text)
    if not finals:
        problems.append(f"{path.name}: no final 'final_... val_loss:X val_bpb:Y' score line")
    elif _typed(result.get("val_bpb"), (int, float)):
        logged = float(finals[-1][1])
        if abs(logged - result["val_bpb"]) > 1e-6:
            problems.append(
                f"{path.name}: logs val_bpb {logged} but seed_results[{seed}] says "
                f"{result['val_bpb']}"
            )
    clocks = CLOCK.findall(text)
    if not clocks:
        problems.append(f"{path.name}: no 'train_plus_pack_s:' line to show when training stopped")
    elif float(clocks[-1]) > LIMIT_S:
        problems.append(
            f"{path.name}: training + pack took {float(clocks[-1]):.1f} s, over {LIMIT_S:.0f} s"
        )
    if "Total submission size" not in text:
        problems.append(f"{path.name}: no 'Total submission size' line")
    return problems


def validate(folder: str | Path) -> list[str]:
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder}: not a folder"]
    problems = check_location(folder)
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    problems += [f"{folder / name}: required file missing" for name in missing]
    script = folder / "train_gpt.py"
    code_size = script.stat().st_size if script.is_file() else 0
    if script.is_file():
        try:
            compile(script.read_bytes(), str(script), "exec")
        except (SyntaxError, ValueError) as e:
            problems.append(f"train_gpt.py: does not compile ({e})")
    if "submission.json" in missing:
        return problems
    try:
        sub = json.loads((folder / "submission.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return [*problems, f"submission.json: not valid JSON ({e})"]
    if not isinstance(sub, dict):
        return [*problems, "submission.json: must hold a JSON object"]
    problems += check_fields(sub)
    if sub.get("bytes_code") != code_size:
        problems.append(
            f"submission.json: bytes_code {sub.get('bytes_code')} != train_gpt.py's "
            f"{code_size} bytes"
        )
    if _typed(sub.get("bytes_total"), (int,)) and sub["bytes_total"] > CAP_BYTES:
        problems.append(f"submission.json: bytes_total {sub['bytes_total']:,} > {CAP_BYTES:,}")
    problems += check_seeds(sub, code_size)
    for seed, result in (sub.get("seed_results") or {}).items():
        logs = [p for p in sorted(folder.glob("*.log")) if re.search(rf"seed{seed}(?!\d)", p.name)]
        if not logs:
            problems.append(f"seed {seed}: no train log (expected a *seed{seed}*.log file)")
        for log in logs:
            problems += check_log(log, seed, result if isinstance(result, dict) else {})
    return problems
