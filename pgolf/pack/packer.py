"""State dict -> artifact bytes: prune, quantize, pick a codec per stream, lay out.

Tensors are handled in name order so the output never depends on the checkpoint's order.
Each integer tensor's values get their own segment (so each gets its own rANS histogram
and its own codec choice); scales and fp16/bf16 control tensors share one byte-shuffled
float segment, fp32 control tensors another. LQER corrections (pack.lqer_rank) share one
more segment of their own, so their bytes are one exact number in the header; AWQ-lite
(pack.awq_extra_bits_frac) only changes which bits a matrix is quantized at.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from tqdm import tqdm

from pgolf import runtime
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
    # AWQ-lite: name -> promoted bits of the matrices that got one more bit.
    promoted: dict[str, float] = dataclasses.field(default_factory=dict)
    # Wall seconds of this pack's phases: "quantize" (pruning, clip search, GPTQ) and "code"
    # (codec trials and container assembly).
    phases: dict[str, float] = dataclasses.field(default_factory=dict)

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
    awq_frac: float | None = None,
    promoted: dict[str, float] | None = None,
) -> tuple[list[EncodedTensor], dict[str, str]]:
    """Prune and quantize every tensor; ``quantizer`` (GPTQ's ``gptq.Quantizer``) may replace
    clip-search RTN.

    ``awq_frac`` (default ``cfg.awq_extra_bits_frac``) promotes that fraction of the
    parameters by one bit (AWQ-lite, with GPTQ's Hessians when the quantizer has them);
    the promoted names and bits are written into ``promoted`` when given.
    """
    names = sorted(tensors)
    classes = {n: Q.classify(n, tensors[n], cfg) for n in names}
    mats = {n: tensors[n] for n in names if classes[n] != "control"}
    frac = cfg.prune_fraction if prune_fraction is None else prune_fraction
    thresholds = Q.prune_thresholds(mats, frac, cfg.prune_scope)
    ratios = Q.clip_ratios(cfg)
    prepared = {}  # name -> (float tensor, dtype, bits, pruned weights, pruned count, clip)
    for name in names:
        if classes[name] == "control":
            continue
        w, dtype = _float_tensor(name, tensors[name])
        bits = Q.class_bits(classes[name], cfg, setting)
        pruned_w, pruned = Q.prune(w.float(), thresholds[name])
        clip = Q.fixed_clip(w, classes[name], cfg)  # of the unpruned rows: pruning keeps the grid
        prepared[name] = (w, dtype, bits, pruned_w, pruned, clip)
    awq_f = cfg.awq_extra_bits_frac if awq_frac is None else awq_frac
    if awq_f > 0:
        bits_of = {n: p[2] for n, p in prepared.items()}
        up = promotion(mats, classes, bits_of, cfg, awq_f, quantizer)
        for name, bits in up.items():
            prepared[name] = (*prepared[name][:2], bits, *prepared[name][3:])
        if promoted is not None:
            promoted.update(up)
    done = {}
    if quantizer is not None:  # GPTQ sweeps every matrix of one shape in one batch
        jobs = [(n, p[3], p[2], p[5]) for n, p in prepared.items() if p[3].dim() == 2]
        done = quantizer.many(jobs, cfg.group_size, ratios)
    out = []
    for name in tqdm(names, desc="quantize", unit="tensor", disable=not progress, leave=False):
        if classes[name] == "control":
            w, dtype = _float_tensor(name, tensors[name])
            scheme = Q.passthrough_scheme(name, cfg)
            blob = schemes.encode_passthrough(w, scheme)
            back = schemes.decode_passthrough_bytes(blob, scheme)
            err = Q.rel_sq_error(w, back)
            out.append(EncodedTensor(name, tuple(w.shape), dtype, scheme, blob, rel_err=err))
            continue
        w, dtype, bits, pruned_w, pruned, clip = prepared.pop(name)
        qt = done.get(name) or Q.quantize(pruned_w, bits, cfg.group_size, ratios, clip=clip)
        values, scales = schemes.encode_int(qt.q, qt.scales)
        w_hat, extra = qt.dequantize(), {}
        if cfg.lqer_rank > 0 and classes[name] in cfg.lqer_classes and w.dim() == 2:
            from pgolf.pack import lqer  # only configs with LQER carry it (export.bundle)

            corr, w_hat = lqer.correct(w, w_hat, cfg, ratios)
            if corr is not None:
                extra = dict(
                    lqer_rank=corr.rank, lqer_scheme=f"int{corr.bits}", lqer=corr.streams()
                )
        err = Q.rel_sq_error(w, w_hat)
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
                **extra,
            )
        )
    return out, classes


def promotion(mats, classes, bits, cfg: PackConfig, frac: float, quantizer=None):
    """AWQ-lite's {name: promoted bits}; activation statistics from the GPTQ quantizer."""
    from pgolf.pack import awq  # only configs with AWQ-lite carry it (export.bundle)

    act = awq.act_stats(getattr(quantizer, "hessians", None))
    names = awq.candidates({n: classes[n] for n in mats}, cfg, act)
    sal = {
        n: awq.salience(mats[n], bits[n], classes[n], cfg, None if act is None else act[n])
        for n in names
    }
    numel = {n: mats[n].numel() for n in mats}
    return awq.promote(numel, sal, {n: bits[n] for n in names}, frac)


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
    encoded: list[EncodedTensor], cfg: PackConfig, cache: dict | None = None
) -> tuple[list[SegmentPlan], list[bytes], list[bytes], dict]:
    """Choose each segment's codec (smallest wins) and return plan, raws, blobs, refs.

    Every codec trial (each value stream x codec x filter, the float segments x codec x
    filter) runs at once on a thread pool, rANS on the calling thread meanwhile. ``cache``
    (a dict kept across the packs of one budget search) maps (codec, filter, digest of the
    bytes) to the compressed blob, so a stream that comes out identical in a later pack (the
    8-bit embeddings of every setting, the MLP when only attention bits change) is not
    compressed twice; the output is byte-identical either way.
    """
    cache = {} if cache is None else cache
    ints = [t for t in encoded if t.scales is not None]
    value_plan = [SegmentPlan("?", "none", ((t.name, "values"),)) for t in ints]
    corrected = [t.name for t in encoded if t.lqer]
    # Corrections exist only with LQER on; all of them go in one segment, so its stored length
    # is their exact bytes.
    if cfg.lqer_rank > 0 and corrected:
        streams = ("lqer.a", "lqer.a_scales", "lqer.b", "lqer.b_scales")
        value_plan.append(
            SegmentPlan("?", "none", tuple((n, k) for n in corrected for k in streams))
        )
    value_raws, _ = layout(encoded, value_plan)
    groups = {2: [], 4: []}  # element width -> members of that float segment
    for t in encoded:
        if t.scales is not None:
            groups[2].append((t.name, "scales"))
        else:
            groups[schemes.PASSTHROUGH_WIDTH[t.scheme]].append((t.name, "values"))
    float_plans = []  # per float segment: the candidate plans, in the order ties resolve
    trials: list[tuple[str, str, bytes]] = []  # (codec, filter, filtered raw bytes)
    value_trials: list[list[tuple[str, str, int]]] = [[] for _ in value_raws]
    for filt in cfg.value_filters:
        for i, raw in enumerate(value_raws):
            if filt != "none" and len(raw) % 2:  # shuffle2 regroups whole 2-byte elements
                continue
            data = codecs.apply_filter(filt, raw)
            for codec in cfg.value_codecs:
                value_trials[i].append((codec, filt, len(trials)))
                trials.append((codec, filt, data))
    for width, members in groups.items():
        if not members:
            continue
        cands = []
        for filt in ("none", f"shuffle{width}"):
            for codec in cfg.float_codecs:
                seg = SegmentPlan(codec, filt, tuple(members))
                (raw,), _ = layout(encoded, [seg])
                cands.append((seg, len(trials)))
                trials.append((codec, filt, raw))
        float_plans.append(cands)
    blobs_of = _compress_trials(trials, cache)
    plan, blobs = [], []
    for i, seg in enumerate(value_plan):
        tried = [(len(blobs_of[k]), codec, filt, k) for codec, filt, k in value_trials[i]]
        _, codec, filt, k = min(tried, key=lambda t: t[:3])
        plan.append(dataclasses.replace(seg, codec=codec, filter=filt))
        blobs.append(blobs_of[k])
    for cands in float_plans:  # the first smallest candidate, as a sequential search keeps
        seg, k = min(cands, key=lambda c: len(blobs_of[c[1]]))
        plan.append(seg)
        blobs.append(blobs_of[k])
    raws, refs = layout(encoded, plan)
    return plan, raws, blobs, refs


def _workers() -> int:
    """Compression threads: zstd, brotli and lzma release the GIL; a GPU host has many cores,
    of which this process takes its share only (runtime.cpu_share: a neighbour job keeps
    the rest)."""
    return max(2, min(16, runtime.cpu_share()))


def _compress_trials(trials: list[tuple[str, str, bytes]], cache: dict) -> list[bytes]:
    """Blob of each (codec, filter, data) trial, from ``cache`` or compressed now."""
    keys = [
        (codec, filt, hashlib.blake2b(data, digest_size=16).digest())
        for codec, filt, data in trials
    ]
    out: list[bytes | None] = [cache.get(k) for k in keys]
    todo = [i for i, blob in enumerate(out) if blob is None]
    first: dict[tuple, int] = {}  # identical trials within one pack are compressed once
    for i in todo:
        first.setdefault(keys[i], i)
    unique = sorted(first.values(), key=lambda i: -len(trials[i][2]))  # longest first
    rans_idx = [i for i in unique if trials[i][0] == "rans"]
    other_idx = [i for i in unique if trials[i][0] != "rans"]
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        futures = {i: pool.submit(codecs.compress, trials[i][0], trials[i][2]) for i in other_idx}
        if rans_idx:  # one vectorized pass over every rANS stream, here meanwhile
            enc = compress_segments([trials[i][2] for i in rans_idx], ["rans"] * len(rans_idx))
            for i, blob in zip(rans_idx, enc, strict=True):
                cache[keys[i]] = blob
        for i, fut in futures.items():
            cache[keys[i]] = fut.result()
    return [cache[k] for k in keys]


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
    cache: dict | None = None,
    awq_frac: float | None = None,
) -> PackResult:
    """One complete pack of ``tensors`` at one setting (no budget logic); ``cache`` carries
    compressed streams from one pack to the next (plan_and_compress)."""
    t0 = time.perf_counter()
    encoded, classes = encode_tensors(
        tensors,
        cfg,
        setting=setting,
        prune_fraction=prune_fraction,
        quantizer=quantizer,
        progress=progress,
        awq_frac=awq_frac,
        promoted=(promoted := {}),
    )
    if promoted or any(t.lqer for t in encoded):  # informational: what the switches did
        meta = dict(meta or {}, awq_promoted=sorted(promoted))
        meta["lqer_tensors"] = sorted(t.name for t in encoded if t.lqer)
    t1 = time.perf_counter()
    plan, raws, blobs, refs = plan_and_compress(encoded, cfg, cache)
    data = finish(encoded, plan, raws, blobs, refs, model=model, tokenizer=tokenizer, meta=meta)
    errs = {t.name: t.rel_err for t in encoded}
    t2 = time.perf_counter()
    return PackResult(
        data, classes, errs, t2 - t0, promoted, {"quantize": t1 - t0, "code": t2 - t1}
    )
