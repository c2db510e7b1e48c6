"""Budget search: the bit allocation x pruning fraction with least expected loss that fits.

Bytes and error of every (tensor, bits, pruning) are estimated once on a row sample:
bytes from the empirical entropy of the levels (what rANS reaches within ~0.2%), error
as the parameter-weighted relative squared error. Settings are tried in order of
estimated error; the first whose real pack fits wins. Nothing is ever written over budget.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import torch

from pgolf.config.pack import PackConfig, parse_bits
from pgolf.errors import PgolfError
from pgolf.format import codecs, schemes
from pgolf.format.rans import entropy_bytes
from pgolf.pack import quantize as Q

# Header bytes guessed before the real pack measures them: a fixed part (model config,
# resolved config) plus one JSON entry per tensor, after zstd.
HEADER_FIXED, HEADER_PER_TENSOR = 800, 30
# A setting is packed for real only if its (bias-corrected) estimate is at most this far over.
ESTIMATE_SLACK = 1.005


@dataclasses.dataclass
class Row:
    bits: str
    prune: float
    est_bytes: int
    est_err: float
    actual_bytes: int | None = None
    status: str = ""
    # AWQ-lite fraction of this row when the search tries several (pack.search_awq), else None.
    awq: float | None = None


class BudgetError(PgolfError):
    """No setting fits the byte budget; ``rows`` is the search table for the log."""

    def __init__(self, message: str, rows: list[Row]) -> None:
        super().__init__(message)
        self.rows = rows


def _sample_rows(w: torch.Tensor, frac: float) -> torch.Tensor:
    mat = Q.as_matrix(w.float())
    step = max(1, round(1 / frac))
    return mat[::step].contiguous()  # strided rows make every later op several times slower


def estimate(
    tensors: dict[str, torch.Tensor], cfg: PackConfig, act: dict[str, torch.Tensor] | None = None
) -> tuple[list[Row], dict[str, str]]:
    """One Row per setting with estimated payload bytes (code excluded) and error.

    With LQER (``pack.lqer_rank``) each matrix's correction is fitted on the row sample too
    and its factor bytes are added where it pays; with AWQ-lite the promoted matrices
    (chosen from ``act``, the calibration's input second moments, when given) are estimated
    at their promoted bits. Rows are (bits x prune), times ``pack.search_awq`` when set.
    """
    names = sorted(tensors)
    classes = {n: Q.classify(n, tensors[n], cfg) for n in names}
    mats = {n: tensors[n] for n in names if classes[n] != "control"}
    ratios = Q.clip_ratios(cfg)
    control = [n for n in names if classes[n] == "control"]
    fixed = len(
        codecs.compress(
            "zstd",
            b"".join(
                schemes.encode_passthrough(tensors[n], Q.passthrough_scheme(n, cfg))
                for n in control
            ),
        )
    )
    cache: dict[tuple[str, int, float], tuple[float, float]] = {}
    thresholds = Q.prune_thresholds_many(mats, tuple(cfg.search_prune), cfg.prune_scope)
    fracs = tuple(cfg.search_awq) or (cfg.awq_extra_bits_frac,)
    needed = {
        (n, Q.class_bits(classes[n], cfg, parse_bits(b))) for n in mats for b in cfg.search_bits
    }
    awq_names: list[str] = []
    if any(f > 0 for f in fracs):
        from pgolf.pack import awq  # only configs with AWQ-lite carry it (export.bundle)

        awq_names = awq.candidates({n: classes[n] for n in mats}, cfg, act)
        needed |= {(n, min(8.0, b + 1)) for n, b in needed if n in awq_names}
    needed = sorted(needed)
    salience: dict[tuple[str, float], float] = {}
    for name, bits in needed:
        w = mats[name]
        sample = _sample_rows(w, cfg.search_sample)
        clip = Q.fixed_clip(sample, classes[name], cfg)  # pruning keeps the grid
        if clip is None:
            clip = Q.quantize(sample, bits, cfg.group_size, ratios).clip
        mat = Q.as_matrix(w)
        groups = (mat.shape[1] // cfg.group_size) if cfg.group_size else 1
        scale_bytes = mat.shape[0] * groups * 2
        for prune in cfg.search_prune:
            pruned, _ = Q.prune(sample, thresholds[prune][name])
            qt = Q.quantize(pruned, bits, cfg.group_size, ratios, clip=clip)
            counts = np.bincount(qt.q.numpy().view(np.uint8).ravel(), minlength=256)
            per_elem = entropy_bytes(counts) / max(qt.q.numel(), 1)
            # rANS: 8-byte head, 3 bytes per table symbol, 4 per lane; on small tensors zstd's
            # compact Huffman table wins instead (~2% over entropy), and the packer keeps it.
            h = per_elem * w.numel()
            rans_bytes = h + 8 + 3 * int((counts > 0).sum()) + 4 * -(-w.numel() // 4096)
            value_bytes = min(rans_bytes, 1.02 * h + 64)
            w_hat = qt.dequantize()
            if cfg.lqer_rank > 0 and classes[name] in cfg.lqer_classes and w.dim() == 2:
                extra, w_hat = _lqer_estimate(sample, w_hat, mat.shape, cfg, ratios)
                value_bytes += extra
            err = Q.rel_sq_error(sample, w_hat)
            cache[(name, bits, prune)] = (value_bytes + scale_bytes, err)
        if name in awq_names:
            a = None if act is None else act[name]
            salience[(name, bits)] = awq.salience(w, bits, classes[name], cfg, a)
    out = []
    total = sum(w.numel() for w in mats.values())
    numel = {n: w.numel() for n, w in mats.items()}
    for b, prune, frac in itertools.product(cfg.search_bits, cfg.search_prune, fracs):
        setting = parse_bits(b)
        bits = {n: Q.class_bits(classes[n], cfg, setting) for n in mats}
        if frac > 0:
            sal = {n: salience[(n, bits[n])] for n in awq_names}
            bits.update(awq.promote(numel, sal, {n: bits[n] for n in awq_names}, frac))
        est = [cache[(n, bits[n], prune)] for n in mats]
        size = fixed + HEADER_FIXED + HEADER_PER_TENSOR * len(names) + sum(e[0] for e in est)
        err = sum(e[1] * mats[n].numel() for e, n in zip(est, mats, strict=True)) / max(total, 1)
        out.append(Row(b, prune, int(size), err, awq=frac if cfg.search_awq else None))
    out.sort(key=lambda r: (r.est_err, r.est_bytes))
    return out, classes


def _lqer_estimate(sample, w_hat, shape, cfg: PackConfig, ratios) -> tuple[float, torch.Tensor]:
    """(Estimated factor bytes of the whole matrix, sample weights after correction).

    The factors are fitted on the row sample's residual: A's bytes scale with the rows,
    B's (rank x cols) do not. The keep-or-drop rule is the packer's (lqer.pays).
    """
    from pgolf.pack import lqer  # only configs with LQER carry it (export.bundle)

    corr = lqer.factorize(sample - w_hat, cfg.lqer_rank, cfg.lqer_bits, ratios)
    fixed = corr.apply(w_hat)
    rows = shape[0]
    a_bytes = lqer.level_bytes(corr.qa) * rows / max(sample.shape[0], 1) + 2 * rows
    b_bytes = lqer.level_bytes(corr.qb) + 2 * corr.rank
    # rANS table and lane overhead of the shared segment, spread over the corrections.
    cost = a_bytes + b_bytes + 16
    # The packer's keep-or-drop rule on the sample: its error against its share of the bytes.
    if not lqer.pays(sample, w_hat, fixed, cost * sample.shape[0] / rows, cfg.lqer_min_gain):
        return 0.0, w_hat
    return cost, fixed


def search(tensors, cfg: PackConfig, code_bytes: int, pack_fn, log=None, rows=None):
    """Pack the best-estimated fitting setting; ``pack_fn(setting, prune) -> PackResult``.

    ``rows``: ``estimate(tensors, cfg)[0]`` when the caller already has it.
    """
    rows = estimate(tensors, cfg)[0] if rows is None else rows
    budget = cfg.budget_bytes
    # On trained checkpoints estimates come within ~0.3% of real sizes (bench-300: 0.16-0.24%
    # over), and most of that error is one bias shared by every setting (GPTQ, for one, shifts
    # the level histograms the sample cannot see). The first real pack measures it and later
    # rows are judged on corrected estimates: a GPU run should not pay ~15 s for a GPTQ pack
    # that was bound to be over.
    bias = 1.0
    for row in rows:
        if row.est_bytes * bias + code_bytes > budget * ESTIMATE_SLACK:
            row.status = "est over"
            continue
        result = _pack_row(pack_fn, row)
        row.actual_bytes = len(result.data) + code_bytes
        if row.actual_bytes <= budget:
            row.status = "chosen"
            return result, row, rows
        row.status = "over"
        bias = (row.actual_bytes - code_bytes) / row.est_bytes
    tried = [r for r in rows if r.actual_bytes is not None]
    if not tried:  # measure the smallest estimate so the error reports a real size
        smallest = min(rows, key=lambda r: r.est_bytes)
        result = _pack_row(pack_fn, smallest)
        smallest.actual_bytes, smallest.status = len(result.data) + code_bytes, "over"
        tried = [smallest]
    best = min(tried, key=lambda r: r.actual_bytes)
    raise BudgetError(
        f"no setting fits the budget of {budget:,} bytes (code {code_bytes:,} included): the "
        f"smallest reached is {best.actual_bytes:,} bytes (bits {best.bits}, prune "
        f"{best.prune}); allow fewer bits (--set pack.search_bits=...), more pruning "
        f"(--set pack.search_prune=...) or a larger --budget",
        rows,
    )


def _pack_row(pack_fn, row: Row):
    if row.awq is None:
        return pack_fn(parse_bits(row.bits), row.prune)
    return pack_fn(parse_bits(row.bits), row.prune, awq=row.awq)


def format_table(rows: list[Row]) -> str:
    awq_col = any(r.awq is not None for r in rows)  # only when the search tries several
    awq_head = f" {'awq':>5}" if awq_col else ""
    head = (
        f"{'bits e/a/m':>10} {'prune':>6}{awq_head} {'est_bytes':>12} {'est_rel_err':>12} "
        f"{'bytes':>12}  status"
    )
    lines = [head]
    for r in rows:
        actual = f"{r.actual_bytes:,}" if r.actual_bytes is not None else "-"
        awq = f" {r.awq or 0:>5.3f}" if awq_col else ""
        lines.append(
            f"{r.bits:>10} {r.prune:>6.3f}{awq} {r.est_bytes:>12,} {r.est_err:>12.3e} "
            f"{actual:>12}  {r.status}"
        )
    return "\n".join(lines)
