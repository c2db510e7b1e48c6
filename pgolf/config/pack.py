"""Pack section: pruning, quantization, entropy coding and the byte budget.

Owned by the packer (pgolf/pack). Tensor classes are regexes over canonical parameter
names so the packer works on any checkpoint; the defaults match pgolf/model's names.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal

from pgolf.config.base import need

_CODECS = ("raw", "zstd", "brotli", "lzma", "rans")
_VALUE_FILTERS = ("none", "shuffle2")
_MATRIX_CLASSES = ("embed", "attn", "mlp", "other")


def parse_bits(setting: str) -> tuple[float, float, float]:
    """'8/6/5' -> (embed_bits, attn_bits, mlp_bits); fractional widths like '8/6/5.5' allowed."""
    try:
        bits = tuple(float(p) for p in setting.split("/"))
    except ValueError:
        bits = ()
    if len(bits) != 3 or not all(2 <= b <= 8 for b in bits):
        raise ValueError(
            f"bit setting {setting!r} must look like 8/6/5 or 8/6/5.5 (embed/attn/mlp, 2..8)"
        )
    return bits


def format_bits(setting: tuple[float, ...]) -> str:
    """(8.0, 6.0, 5.5) -> '8/6/5.5'."""
    return "/".join(f"{b:g}" for b in setting)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PackConfig:
    # Artifact budget in decimal bytes, counted code included (the challenge cap).
    budget_bytes: int = 16_000_000
    # Search bit allocation x pruning for the least expected loss under the budget; when off,
    # the recipe below is packed as is (and still refused if it exceeds the budget).
    search: bool = True
    # Regex (re.search) for MLP matrices; int5 is where competitors found the best bytes/loss.
    mlp_pattern: str = r"(^|\.)mlp\.(fc|proj)\.weight$"
    # Regex for attention matrices (q, k, v, output projection).
    attn_pattern: str = r"(^|\.)attn\.(q|k|v|proj)\.weight$"
    # Regex for embedding tables; the tied embedding is also the output head, so it gets int8.
    embed_pattern: str = r"(^|\.)(tok_emb|bigram\.embed|value_embed\.embed)\.weight$"
    # Tensors with fewer elements than this, or fewer than 2 dims, are control tensors
    # (norms, gains, mixes, gates) kept in floating point: their bytes are negligible.
    control_max_numel: int = 4096
    # Regex for control tensors kept in fp32 rather than `passthrough` (empty: none).
    fp32_pattern: str = ""
    # Passthrough scheme of control tensors.
    passthrough: Literal["fp16", "bf16", "fp32"] = "fp16"
    # Bits per class when search is off: MLP, attention, embeddings, other matrices. A
    # fractional width (5.5) is the largest symmetric grid with at most 2**bits levels (±22),
    # stored as the next integer scheme (int6): a finer step between int5 and int6.
    mlp_bits: float = 5
    attn_bits: float = 6
    embed_bits: float = 8
    other_bits: float = 8
    # Elements sharing one fp16 scale along a row; 0 = one scale per row.
    group_size: int = 0
    # Per-row clip search ("GPTQ-lite"): try clip = amax * r for r in linspace(1, clip_min_ratio,
    # clip_candidates) and keep the r with least squared error.
    clip_search: bool = True
    clip_candidates: int = 12
    clip_min_ratio: float = 0.5
    # How each row's clip is chosen: "search" (the least-error ratio above) or "sdclip"
    # (leaderboard PR #1394): clip = k * std(row), no search. A wider clip leaves fewer levels
    # in use, so the entropy-coded stream shrinks (bytes ~ bits - log2 k) at some error; k is
    # the one knob trading size for error, independent of outliers.
    clip_mode: Literal["search", "sdclip"] = "search"
    # SDClip's k for block and other matrices (#1394: 12.85 at int6) ...
    sdclip_k: float = 12.85
    # ... and for embedding tables (#1394: 20 at int8; #1855: 14 at int7).
    sdclip_embed_k: float = 20.0
    # Magnitude pruning of quantized matrices (exact zeros) when search is off.
    prune_fraction: float = 0.0
    # "global": one magnitude threshold over all matrices; "per_tensor": each loses the fraction.
    prune_scope: Literal["global", "per_tensor"] = "per_tensor"
    # Codecs tried on every integer value stream; the smallest output is kept per tensor.
    value_codecs: tuple[str, ...] = ("rans", "zstd")
    # Filters tried with every value codec (the smallest codec x filter is kept per tensor):
    # "shuffle2" is the leaderboard's byte shuffle before brotli-11 (#1394 onwards); it needs
    # an even-length stream and is skipped on odd ones.
    value_filters: tuple[str, ...] = ("none",)
    # Codecs tried on the float segments (scales, passthrough); the smallest is kept.
    float_codecs: tuple[str, ...] = ("zstd", "brotli", "lzma")
    # Budget search grid: "embed/attn/mlp" bit settings and pruning fractions. Fractional
    # widths fill the gap between int5 and int6: on the trained default model 8/5.5/5 was
    # 3% smaller than 8/6/5 + 10% pruning at lower val_bpb (docs/BENCHMARKS.md section 5).
    search_bits: tuple[str, ...] = (
        "8/6/6",
        "8/6/5.5",
        "8/5.5/5.5",
        "8/6/5",
        "8/5.75/5",
        "8/5.5/5",
        "8/5/5",
        "8/5/4",
        "6/5/4",
        "6/4/4",
    )
    search_prune: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)
    # Fraction of rows used to estimate bytes/error per setting (the final pack is exact).
    search_sample: float = 0.125
    # Counted code bytes; -1 measures pgolf's eval-side code (pgolf.pack.codebytes).
    code_bytes: int = -1
    # Hessian-aware GPTQ with activations generated by the model itself (needs pgolf.model):
    # "auto" runs it when a CUDA device is present (on the H100: 11 s calibration + ~10 s,
    # -0.002 val_bpb at the same bytes on the trained default model, docs/BENCHMARKS.md
    # section 5); on CPU it would take minutes, so "auto" leaves it off there.
    gptq: Literal["auto", "on", "off"] = "auto"
    # Calibration: sequences sampled from the model, their length, Hessian damping, block size.
    # 128 x 256 tokens beat 16 x 256 by 0.0005 val_bpb (GPTQ overfits small calibration sets).
    gptq_samples: int = 128
    gptq_seq_len: int = 256
    gptq_damp: float = 0.01
    gptq_block: int = 128
    # GPTQ also quantizes the output head (the tied embedding, else the untied head) against
    # the Hessian of the final hidden states, as leaderboard PR #1394 does for its int8 and
    # #1586 for its int7 embeddings. Needs GPTQ on (pack.gptq).
    gptq_embed: bool = False
    # LQER (leaderboard PR #1797): rank of a low-rank correction A.B of each matrix's
    # quantization residual W - W_hat, stored next to it (container spec 1.2); 0 = off.
    # Measured on CPU (docs/pack.md): it pays only where the residual has low-rank
    # structure; on random or noise-like residuals the bytes buy more as grid bits.
    lqer_rank: int = 0
    # Bits of the factors A [rows, rank] and B [rank, cols] (per-row fp16 scales), 2..8.
    lqer_bits: int = 4
    # Tensor classes that may get a correction (of embed, attn, mlp, other).
    lqer_classes: tuple[str, ...] = ("attn", "mlp")
    # A matrix keeps its correction only if the squared error it removes per byte is at
    # least this multiple of what one more grid bit would remove per byte (0 = always keep).
    lqer_min_gain: float = 1.0
    # AWQ-lite (leaderboard PR #1908): fraction of the quantized parameters promoted by one
    # bit, the matrices with the largest activation-weighted rounding error per parameter
    # first (GPTQ's Hessian diagonals; weight-space error without calibration). 0 = off.
    awq_extra_bits_frac: float = 0.0
    # Tensor classes AWQ-lite may promote (of embed, attn, mlp, other).
    awq_classes: tuple[str, ...] = ("attn", "mlp")
    # Promoted fractions the budget search also tries per setting (empty: only
    # awq_extra_bits_frac), so it can trade promotion against the bit grid.
    search_awq: tuple[float, ...] = ()
    # Seed for calibration sampling.
    seed: int = 0

    def __post_init__(self) -> None:
        need(self.budget_bytes > 0, f"budget_bytes must be > 0, got {self.budget_bytes}")
        for name in ("mlp_pattern", "attn_pattern", "embed_pattern", "fp32_pattern"):
            try:
                re.compile(getattr(self, name))
            except re.error as e:
                raise ValueError(f"{name} is not a valid regex: {e}") from None
        for name in ("mlp_bits", "attn_bits", "embed_bits", "other_bits"):
            need(2 <= getattr(self, name) <= 8, f"{name} must be in 2..8")
        need(self.control_max_numel >= 0, "control_max_numel must be >= 0")
        need(self.group_size >= 0, "group_size must be >= 0 (0 = per row)")
        need(self.clip_candidates >= 1, "clip_candidates must be >= 1")
        need(0 < self.clip_min_ratio <= 1, "clip_min_ratio must be in (0, 1]")
        need(
            self.clip_mode in ("search", "sdclip"),
            f"clip_mode must be search or sdclip, got {self.clip_mode!r}",
        )
        need(self.sdclip_k > 0 and self.sdclip_embed_k > 0, "sdclip_k/sdclip_embed_k must be > 0")
        need(0 <= self.prune_fraction < 1, "prune_fraction must be in [0, 1)")
        for name in ("value_codecs", "float_codecs"):
            codecs = getattr(self, name)
            bad = [c for c in codecs if c not in _CODECS]
            need(codecs and not bad, f"{name} must be a non-empty subset of {_CODECS}")
        need("rans" not in self.float_codecs, "float_codecs: rans codes byte symbols, not floats")
        bad = [f for f in self.value_filters if f not in _VALUE_FILTERS]
        need(
            self.value_filters and not bad,
            f"value_filters must be a non-empty subset of {_VALUE_FILTERS}",
        )
        need(
            not (self.gptq_embed and self.gptq == "off"),
            "gptq_embed needs GPTQ: set pack.gptq=on or auto, or pack.gptq_embed=false",
        )
        need(bool(self.search_bits), "search_bits must not be empty")
        for s in self.search_bits:
            parse_bits(s)
        need(
            bool(self.search_prune) and all(0 <= p < 1 for p in self.search_prune),
            "search_prune fractions must be in [0, 1)",
        )
        need(0 < self.search_sample <= 1, "search_sample must be in (0, 1]")
        need(self.code_bytes >= -1, "code_bytes must be >= 0, or -1 to measure")
        if isinstance(self.gptq, bool):  # configs written before "auto" existed stored a bool
            object.__setattr__(self, "gptq", "on" if self.gptq else "off")
        need(self.gptq in ("auto", "on", "off"), f"gptq must be auto, on or off, got {self.gptq!r}")
        need(self.gptq_samples >= 1 and self.gptq_seq_len >= 2, "gptq_samples/seq_len too small")
        need(0 <= self.gptq_damp < 1 and self.gptq_block >= 1, "gptq_damp in [0,1), block >= 1")
        need(self.lqer_rank >= 0, "lqer_rank must be >= 0 (0 = off)")
        need(
            isinstance(self.lqer_bits, int) and 2 <= self.lqer_bits <= 8,
            "lqer_bits must be an integer in 2..8",
        )
        need(self.lqer_min_gain >= 0, "lqer_min_gain must be >= 0 (0 = keep every correction)")
        for name in ("lqer_classes", "awq_classes"):
            bad = [c for c in getattr(self, name) if c not in _MATRIX_CLASSES]
            need(not bad, f"{name} must be a subset of {_MATRIX_CLASSES}, got {bad}")
        need(
            0 <= self.awq_extra_bits_frac < 1 and all(0 <= f < 1 for f in self.search_awq),
            "awq_extra_bits_frac and search_awq fractions must be in [0, 1)",
        )


PRESETS: dict[str, dict[str, Any]] = {
    # Tiny models: everything is small, so keep 1-D/short tensors only as control tensors and
    # run a short search.
    "tiny": {
        "control_max_numel": 256,
        "clip_candidates": 6,
        "search_prune": (0.0, 0.1),
        "search_sample": 0.5,
        "gptq_samples": 4,
        "gptq_seq_len": 64,
    },
}

# The April leaderboard's packing (PR #1855 and the PRs it stacks on). The budget search still
# picks the bit widths; the embedding stays at 7 bits (#1586) in every setting of the grid.
_RECORD: dict[str, Any] = {
    "clip_mode": "sdclip",  # #1394
    "sdclip_k": 12.85,  # #1394 MATRIX_CLIP_SIGMAS
    "sdclip_embed_k": 14.0,  # #1855 EMBED_CLIP_SIGMAS at int7
    "embed_bits": 7,  # #1586
    "gptq_embed": True,  # #1394, #1586
    # Richest first; the search takes the first that fits. On bench-300 (H200, 2026-12-01)
    # 7/6/6 fitted with 0.39 MB to spare, so finer attention widths come first.
    "search_bits": (
        "7/6.5/6",
        "7/6.25/6",
        "7/6/6",
        "7/6/5.5",
        "7/5.5/5.5",
        "7/6/5",
        "7/5.5/5",
        "7/5/5",
        "7/5/4",
    ),
    "value_codecs": ("rans", "zstd", "brotli"),  # brotli-11 after a byte shuffle: #1394
    "value_filters": ("none", "shuffle2"),
}
# With depth recurrence the U-Net skip weights grow to (block runs // 2) x model_dim: 8 x 512
# (record) and 4 x 64 (record-tiny), exactly the default thresholds; they stay control tensors.
PRESETS["record"] = {**_RECORD, "control_max_numel": 8192}
PRESETS["record-tiny"] = {**PRESETS["tiny"], **_RECORD, "control_max_numel": 512}
