"""State dict -> artifact bytes: prune, quantize, pick a codec per stream, lay out.

Tensors are handled in name order so the output never depends on the checkpoint's order.
Each integer tensor's values get their own segment (so each gets its own rANS histogram
and its own codec choice); scales and fp16/bf16 control tensors share one byte-shuffled
float segment, fp32 control tensors another.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from tqdm import tqdm

from pgolf.config.pack import PackConfig
from pgolf.errors import PgolfError
from pgolf.format import codecs, grid, schemes
from pgolf.format.writer import EncodedTensor, SegmentPlan, compress_segments, finish, layout
from pgolf.pack import quantize as Q


@dataclasses.dataclass(frozen=True)
class PackResult:
    data: bytes
    classes: dict[str, str]  # tensor name -> class
    rel_err: dict[str, float]  # tensor name -> relative squared error
    seconds: float

    def mean_error(self, tensors: dict[str, torch.Tensor]) -> float:
        """Parameter-weighted mean relative squared error: the search's quality-loss proxy."""
        return weighted_error(self.rel_err, tensors)


def weighted_error(rel_err: dict[str, float], tensors: dict[str, torch.Tensor]) -> float:
    total = sum(tensors[n].numel() for n in rel_err)
    return sum(e * tensors[n].numel() for n, e in rel_err.items()) / max(total, 1)


def encode_tensors(
    tensors: dict[str, torch.Tensor],
    cfg: PackConfig,
    *,
    setting: tuple[int, int, int] | None = None,
    prune_fraction: float | None = None,
    quantizer=None,
    progress: bool = False,
) -> tuple[list[EncodedTensor], dict[str, str]]:
    """Prune and quantize every tensor; ``quantizer`` (GPTQ) may replace clip-search RTN."""
    names = sorted(tensors)
    classes = {n: Q.classify(n, tensors[n], cfg) for n in names}
    mats = {n: tensors[n] for n in names if classes[n] != "control"}
    frac = cfg.prune_fraction if prune_fraction is None else prune_fraction
    thresholds = Q.prune_thresholds(mats, frac, cfg.prune_scope)
    ratios = Q.clip_ratios(cfg)
    out = []
    for name in tqdm(names, desc="quantize", unit="tensor", disable=not progress, leave=False):
        w, dtype = _float_tensor(name, tensors[name])
        if classes[name] == "control":
            scheme = Q.passthrough_scheme(name, cfg)
            blob = schemes.encode_passthrough(w, scheme)
            back = schemes.decode_passthrough_bytes(blob, scheme)
            err = Q.rel_sq_error(w, back)
            out.append(EncodedTensor(name, tuple(w.shape), dtype, scheme, blob, rel_err=err))
            continue
        bits = Q.class_bits(classes[name], cfg, setting)
        pruned_w, pruned = Q.prune(w.float(), thresholds[name])
        clip = Q.fixed_clip(w, classes[name], cfg)  # of the unpruned rows: pruning keeps the grid
        if quantizer is not None and pruned_w.dim() == 2:
            qt = quantizer(name, pruned_w, bits, cfg.group_size, ratios, clip)
        else:
            qt = Q.quantize(pruned_w, bits, cfg.group_size, ratios, clip=clip)
        values, scales = schemes.encode_int(qt.q, qt.scales)
        err = Q.rel_sq_error(w, qt.dequantize())
        out.append(
            EncodedTensor(
                name,
                tuple(w.shape),
                dtype,
                f"int{grid.scheme_bits(bits)}",
                values,
                scales,
                cfg.group_size,
                pruned,
                err,
            )
        )
    return out, classes


def _float_tensor(name: str, w: torch.Tensor) -> tuple[torch.Tensor, str]:
    """The tensor and its artifact dtype name; float64 is stored as float32."""
    if w.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return w, schemes.dtype_name(w.dtype)
    if w.is_floating_point():
        return w.float(), "float32"
    raise PgolfError(
        f"{name}: dtype {w.dtype} cannot be packed (artifacts hold float tensors); drop "
        "non-parameter buffers from the checkpoint"
    )


def plan_and_compress(
    encoded: list[EncodedTensor], cfg: PackConfig
) -> tuple[list[SegmentPlan], list[bytes], list[bytes], dict]:
    """Choose each segment's codec (smallest wins) and return plan, raws, blobs, refs."""
    ints = [t for t in encoded if t.scales is not None]
    value_plan = [SegmentPlan("?", "none", ((t.name, "values"),)) for t in ints]
    value_raws, _ = layout(encoded, value_plan)
    trials = _value_trials(value_raws, cfg)
    plan, blobs = [], []
    for i, seg in enumerate(value_plan):
        tried = [(len(blob), codec, filt, blob) for (codec, filt), blob in trials[i].items()]
        _, codec, filt, blob = min(tried, key=lambda t: t[:3])
        plan.append(dataclasses.replace(seg, codec=codec, filter=filt))
        blobs.append(blob)
    groups = {2: [], 4: []}  # element width -> members of that float segment
    for t in encoded:
        if t.scales is not None:
            groups[2].append((t.name, "scales"))
        else:
            groups[schemes.PASSTHROUGH_WIDTH[t.scheme]].append((t.name, "values"))
    for width, members in groups.items():
        if members:
            seg, blob = _best_float_segment(encoded, tuple(members), width, cfg)
            plan.append(seg)
            blobs.append(blob)
    raws, refs = layout(encoded, plan)
    return plan, raws, blobs, refs


def _value_trials(raws: list[bytes], cfg: PackConfig) -> list[dict[tuple[str, str], bytes]]:
    """Every segment compressed with every value codec x filter it admits (shuffle2 needs an
    even length: a filter regroups whole 2-byte elements)."""
    out: list[dict[tuple[str, str], bytes]] = [{} for _ in raws]
    for filt in cfg.value_filters:
        idx = [i for i, r in enumerate(raws) if filt == "none" or len(r) % 2 == 0]
        filtered = [codecs.apply_filter(filt, raws[i]) for i in idx]
        for codec in cfg.value_codecs:
            for i, blob in zip(idx, _compress_all(filtered, codec), strict=True):
                out[i][(codec, filt)] = blob
    return out


def _compress_all(raws: list[bytes], codec: str) -> list[bytes]:
    if codec == "rans":
        return compress_segments(raws, ["rans"] * len(raws))
    with ThreadPoolExecutor(max_workers=2) as pool:  # zstd/brotli/lzma release the GIL
        return list(pool.map(lambda r: codecs.compress(codec, r), raws))


def _best_float_segment(encoded, members, width, cfg) -> tuple[SegmentPlan, bytes]:
    best = None
    for filt in ("none", f"shuffle{width}"):
        for codec in cfg.float_codecs:
            seg = SegmentPlan(codec, filt, members)
            (raw,), _ = layout(encoded, [seg])
            blob = codecs.compress(codec, raw)
            if best is None or len(blob) < len(best[1]):
                best = (seg, blob)
    return best


def pack_state(
    tensors: dict[str, torch.Tensor],
    *,
    model: dict[str, Any],
    tokenizer: dict[str, Any],
    cfg: PackConfig,
    setting: tuple[int, int, int] | None = None,
    prune_fraction: float | None = None,
    meta: dict[str, Any] | None = None,
    quantizer=None,
    progress: bool = False,
) -> PackResult:
    """One complete pack of ``tensors`` at one setting (no budget logic)."""
    t0 = time.perf_counter()
    encoded, classes = encode_tensors(
        tensors,
        cfg,
        setting=setting,
        prune_fraction=prune_fraction,
        quantizer=quantizer,
        progress=progress,
    )
    plan, raws, blobs, refs = plan_and_compress(encoded, cfg)
    data = finish(encoded, plan, raws, blobs, refs, model=model, tokenizer=tokenizer, meta=meta)
    errs = {t.name: t.rel_err for t in encoded}
    return PackResult(data, classes, errs, time.perf_counter() - t0)
