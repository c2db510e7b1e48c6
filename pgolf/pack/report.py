"""What ``pgolf inspect`` shows: header summary, per-tensor byte table, totals vs budget."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pgolf.format import spec
from pgolf.format.header import Header


def tensor_rows(header: Header) -> list[dict[str, Any]]:
    """Per-tensor bytes; a shared segment's bytes are split in proportion to raw bytes."""
    seg_ratio = [s.length / s.raw_length if s.raw_length else 0.0 for s in header.segments]
    rows = []
    for t in header.tensors:
        stored = lqer = 0.0
        for ref in (t.values, t.scales):
            if ref is not None:
                stored += ref.length * seg_ratio[ref.segment]
        for _, ref in t.lqer.refs() if t.lqer is not None else ():
            lqer += ref.length * seg_ratio[ref.segment]
        rows.append(
            {
                "name": t.name,
                "shape": list(t.shape),
                "params": t.numel,
                "scheme": t.scheme
                + (f"/g{t.group_size}" if t.group_size else "")
                + (f"+r{t.lqer.rank}" if t.lqer is not None else ""),
                "codec": header.segments[t.values.segment].codec,
                "raw_bytes": t.numel * spec.DTYPES[t.dtype],
                "stored_bytes": stored + lqer,  # the correction's share included
                "lqer_rank": t.lqer.rank if t.lqer is not None else 0,
                "lqer_bytes": lqer,
                "pruned": t.pruned,
                "rel_err": t.rel_err,
            }
        )
    return rows


def lqer_segment_bytes(header: Header) -> int:
    """Stored bytes of the segments every stream of which belongs to an LQER correction."""
    kinds: dict[int, set[bool]] = {}
    for t in header.tensors:
        for ref in (t.values, t.scales):
            if ref is not None:
                kinds.setdefault(ref.segment, set()).add(False)
        for _, ref in t.lqer.refs() if t.lqer is not None else ():
            kinds.setdefault(ref.segment, set()).add(True)
    return sum(header.segments[i].length for i, k in kinds.items() if k == {True})


def group_of(name: str) -> str:
    """'blocks.3.attn.q.weight' -> 'attn.q'; groups aggregate a tensor kind over layers."""
    base = re.sub(r"^blocks\.\d+\.", "", name)
    return re.sub(r"\.weight$", "", base)


def summary(header: Header, file_bytes: int, code_bytes: int, budget: int) -> dict[str, Any]:
    rows = tensor_rows(header)
    payload = sum(s.length for s in header.segments)
    for r in rows:
        r["stored_bytes"] = round(r["stored_bytes"])
        r["lqer_bytes"] = round(r["lqer_bytes"])
        r["share"] = r["stored_bytes"] / file_bytes if file_bytes else 0.0
    total = file_bytes + code_bytes
    return {
        "format": f"pgolf artifact v{spec.MAJOR}.{spec.MINOR}, scheme v{spec.SCHEME_VERSION}",
        "model": header.model,
        "tokenizer": header.tokenizer,
        "segments": [
            dict(codec=s.codec, filter=s.filter, bytes=s.length, raw=s.raw_length)
            for s in header.segments
        ],
        "tensors": rows,
        "params": sum(r["params"] for r in rows),
        "payload_bytes": payload,
        # Stored bytes of the segments that hold only LQER streams (pgolf's packer puts every
        # correction in one): exact, where the per-tensor split is proportional.
        "lqer_bytes": lqer_segment_bytes(header),
        "header_bytes": file_bytes - payload,
        "file_bytes": file_bytes,
        "code_bytes": code_bytes,
        "total_bytes": total,
        "budget_bytes": budget,
        "headroom_bytes": budget - total,
        "fits": total <= budget,
        "meta": {k: v for k, v in header.meta.items() if k != "config"},
    }


def format_summary(s: dict[str, Any]) -> str:
    tok = s["tokenizer"]
    lines = [
        f"format: {s['format']}",
        f"model: {_model_line(s['model'])}",
        f"tokenizer: vocab_size={tok.get('vocab_size')} sha256={tok.get('sha256') or '-'}",
        "",
        f"{'tensor':<34} {'params':>10} {'scheme':>8} {'codec':>6} {'raw_bytes':>11} "
        f"{'bytes':>10} {'share':>6} {'rel_err':>9}",
    ]
    for r in s["tensors"]:
        err = f"{r['rel_err']:.2e}" if r["rel_err"] is not None else "-"
        lines.append(
            f"{r['name'][:34]:<34} {r['params']:>10,} {r['scheme']:>8} {r['codec']:>6} "
            f"{r['raw_bytes']:>11,} {r['stored_bytes']:>10,} {r['share']:>6.1%} {err:>9}"
        )
    lines += [
        "",
        f"params:{s['params']} payload_bytes:{s['payload_bytes']} header_bytes:"
        f"{s['header_bytes']} file_bytes:{s['file_bytes']}"
        + (f" lqer_bytes:{s['lqer_bytes']}" if s["lqer_bytes"] else ""),
        f"code_bytes:{s['code_bytes']} total_bytes:{s['total_bytes']} budget_bytes:"
        f"{s['budget_bytes']} headroom_bytes:{s['headroom_bytes']} fits:"
        f"{str(s['fits']).lower()}",
    ]
    return "\n".join(lines)


def _model_line(model: dict[str, Any]) -> str:
    keys = ("num_layers", "model_dim", "num_heads", "num_kv_heads", "mlp_mult", "vocab_size")
    return " ".join(f"{k}={model[k]}" for k in keys if k in model) or "-"


def plot_groups(s: dict[str, Any], path: str | Path) -> None:
    """Bar chart of stored bytes per tensor group (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, int] = {}
    for r in s["tensors"]:
        g = group_of(r["name"])
        groups[g] = groups.get(g, 0) + r["stored_bytes"]
    names = sorted(groups, key=groups.get, reverse=True)
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(names) + 1.5))
    ax.barh(names[::-1], [groups[n] / 1e6 for n in names[::-1]])
    ax.set_xlabel("stored MB (decimal)")
    ax.set_title(
        f"artifact {s['file_bytes']:,} B + code {s['code_bytes']:,} B "
        f"vs budget {s['budget_bytes']:,} B"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
