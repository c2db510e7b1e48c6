"""Model section: the GPT's shape and every architectural switch (an ablation is one --set away)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pgolf.config.base import need
from pgolf.config.bounds import check_model


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    # Vocabulary size; must equal the tokenizer's (checked when data and model meet).
    vocab_size: int = 1024
    # Token id that starts every document; BigramHash and SmearGate restart after it.
    bos_id: int = 1
    # Transformer blocks.
    num_layers: int = 11
    # Residual stream width.
    model_dim: int = 512
    # Query heads; head_dim = model_dim / num_heads.
    num_heads: int = 8
    # Key/value heads (GQA); must divide num_heads.
    num_kv_heads: int = 4
    # MLP hidden width as a multiple of model_dim.
    mlp_mult: float = 3.0
    # MLP activation: "relu2" is relu(x)^2; "leaky_relu2" is leaky_relu(x, slope)^2, which keeps
    # a gradient for negative pre-activations (leaderboard PR #549, in every April record).
    mlp_activation: Literal["relu2", "leaky_relu2"] = "relu2"
    # Negative slope of "leaky_relu2" (PR #549: 0.5).
    mlp_leaky_slope: float = 0.5
    # MLP kernels on CUDA: "torch" (cuBLAS GEMMs, Inductor fuses relu² between them) or
    # "quack" (quack-kernels' Hopper GEMMs with relu² in the up-projection's epilogue and its
    # derivative in the backward GEMM's: pgolf/model/quack_mlp.py; +3.0% tokens/s for
    # `default` on the H200). "auto" picks quack where it applies (relu², a Hopper GPU, the
    # package importable), else torch. The CPU runs the same math through torch either way,
    # so an artifact scores anywhere.
    mlp_kernel: Literal["auto", "torch", "quack"] = "auto"
    # Share the input embedding with the output head (saves vocab*dim bytes in the artifact).
    tie_embeddings: bool = True
    # Std of the normal init of the (tied) embedding.
    embed_init_std: float = 0.005
    # tanh soft cap on logits: cap * tanh(logits / cap); 0 disables.
    logit_softcap: float = 30.0
    # RMSNorm on queries and keys before RoPE (stabilises the high Muon learning rate).
    qk_norm: bool = True
    # Initial value of the learnable per-head query gain.
    q_gain_init: float = 1.5
    # Head dims that receive rotary embedding (partial RoPE); 0 disables RoPE.
    rope_dims: int = 16
    # RoPE base frequency.
    rope_base: float = 10_000.0
    # Sequence length seen in training; longer eval contexts get NTK-scaled RoPE bases.
    train_seq_len: int = 2048
    # Apply exclusive self-attention (XSA) on this many of the deepest blocks.
    xsa_last_n: int = 4
    # Per-head sigmoid gate on the attention output before its projection, computed from the
    # first attn_gate_window dims of the block's normed input: y_h *= sigmoid(scale * W_h x[:w]).
    # W starts at zero (every gate 0.5) and is a tiny control tensor (heads x window). The
    # sparse form of PR #1787 (the dense gate of PR #1736 read all model_dim dims).
    attn_out_gate: bool = False
    # Input dims the attention gate reads (PR #1787: 12).
    attn_gate_window: int = 12
    # Multiplier inside the gate's sigmoid (PR #1855 found 0.5, a softer gate, better than 1).
    attn_gate_scale: float = 1.0
    # Per-block learned mix between the running residual x and the embedding output x0.
    resid_mix: bool = True
    # Scale normed block inputs by 1/sqrt(layer+1) (LN scale).
    ln_scale: bool = True
    # U-Net skips: the first half of the blocks push, the second half pop with learned weights.
    unet_skips: bool = True
    # Parallel residuals (GPT-J style) from this block on: attention and MLP read the same
    # input and their outputs are summed into the stream (PR #1204; #1493 from layer 7); -1 off.
    parallel_residual_from: int = -1
    # Depth recurrence: blocks recur_start..recur_end (inclusive, as the records' LOOP_START/
    # LOOP_END) run recur_passes times in a row with shared weights, so the model gets deeper
    # for no bytes (PR #1204 two layers twice; #1394, #1493 layers 3-5 three times); -1 off.
    # The U-Net skips pair up over the unrolled sequence. Evaluation always runs it.
    recur_start: int = -1
    recur_end: int = -1
    # Passes over the span while recurrence is on (2 = run twice; PR #1493: 3).
    recur_passes: int = 2
    # The trainer runs the cheaper plain stack until this fraction of the training budget,
    # then switches recurrence on (PR #1204 delayed it; #1493: 0.35). 0 = on from the start.
    recur_after_frac: float = 0.0
    # BigramHash buckets (hash of previous and current token); 0 disables.
    bigram_buckets: int = 2048
    # BigramHash embedding width before its projection to model_dim.
    bigram_dim: int = 128
    # SmearGate: per-channel sigmoid gate mixing each position with the previous one.
    smear_gate: bool = True
    # Shared value-embedding width (projected to the KV width); 0 disables.
    value_embed_dim: int = 128
    # Blocks (0-based) whose V receives the shared value embedding.
    value_embed_layers: tuple[int, ...] = (9, 10)
    # Orthogonal init for large matrices (else normal, std 1/sqrt(fan_in)).
    ortho_init: bool = True
    # Output projections (attn.proj, mlp.proj) start at zero; when false they take the
    # orthogonal/normal init scaled by 1/sqrt(2*num_layers) instead.
    zero_init_proj: bool = True
    # Under bf16 autocast, carry the residual stream in bf16 instead of fp32 (the embedding
    # output is fp32): halves the bytes of every norm/scale/mix kernel around the matmuls.
    # H100, micro-batch 24: 1.078M tok/s vs 0.963M in fp32, same loss after 9 steps.
    bf16_residual: bool = True
    # Compute q, k and v with one GEMM against the concatenated weights (the parameters,
    # checkpoint names, Muon shapes and packer classes stay separate): one larger matmul
    # instead of three small ones in forward and backward. Same math up to bf16 rounding.
    fused_qkv: bool = True
    # Attention kernel: "auto" picks FA4 (Hopper+) > FA3 > FA2 > SDPA (cuDNN first) at run
    # time; "sdpa_cudnn" forces cuDNN (KV expanded), "sdpa_flash" SDPA's flash kernel, "math"
    # the reference.
    attention_backend: Literal[
        "auto", "fa4", "fa3", "fa2", "sdpa", "sdpa_cudnn", "sdpa_flash", "math"
    ] = "auto"

    def __post_init__(self) -> None:
        check_model(self)  # types and upper bounds first: the rules below assume them
        need(
            2 <= self.vocab_size <= 65_535,
            f"vocab_size must be in [2, 65535], got {self.vocab_size}",
        )
        need(0 <= self.bos_id < self.vocab_size, f"bos_id {self.bos_id} outside the vocabulary")
        need(self.num_layers >= 1, "num_layers must be >= 1")
        need(
            self.num_heads >= 1 and self.model_dim % self.num_heads == 0,
            f"model_dim {self.model_dim} must be divisible by num_heads {self.num_heads}",
        )
        need(
            self.num_kv_heads >= 1 and self.num_heads % self.num_kv_heads == 0,
            f"num_heads {self.num_heads} must be a multiple of num_kv_heads {self.num_kv_heads}",
        )
        need(self.head_dim % 2 == 0, f"head_dim {self.head_dim} must be even for RoPE")
        need(
            0 <= self.rope_dims <= self.head_dim and self.rope_dims % 2 == 0,
            f"rope_dims must be even and in [0, head_dim={self.head_dim}], got {self.rope_dims}",
        )
        need(self.mlp_mult > 0, "mlp_mult must be > 0")
        need(
            0 <= self.mlp_leaky_slope < 1,
            f"mlp_leaky_slope must be in [0, 1), got {self.mlp_leaky_slope}",
        )
        need(
            self.mlp_kernel != "quack" or self.mlp_activation == "relu2",
            f"mlp_kernel={self.mlp_kernel!r} fuses relu² only; with mlp_activation="
            f"{self.mlp_activation!r} set model.mlp_kernel=torch",
        )
        need(
            self.mlp_kernel != "quack" or (self.model_dim % 8 == 0 and self.mlp_hidden % 8 == 0),
            f"mlp_kernel={self.mlp_kernel!r} needs model_dim and the MLP width multiples of 8 "
            f"(16-byte aligned bf16 rows), got {self.model_dim} and {self.mlp_hidden}",
        )
        need(
            1 <= self.attn_gate_window <= self.model_dim,
            f"attn_gate_window must be in [1, model_dim={self.model_dim}], "
            f"got {self.attn_gate_window}",
        )
        need(self.attn_gate_scale > 0, "attn_gate_scale must be > 0")
        need(
            -1 <= self.parallel_residual_from < self.num_layers,
            f"parallel_residual_from must be -1 (off) or a layer in [0, {self.num_layers}), "
            f"got {self.parallel_residual_from}",
        )
        self._check_recurrence()
        need(self.logit_softcap >= 0, "logit_softcap must be >= 0 (0 disables)")
        need(
            0 <= self.xsa_last_n <= self.num_layers,
            f"xsa_last_n must be in [0, num_layers={self.num_layers}], got {self.xsa_last_n}",
        )
        need(
            self.bigram_buckets >= 0 and self.bigram_dim >= 1,
            "bigram_buckets >= 0, bigram_dim >= 1",
        )
        need(self.value_embed_dim >= 0, "value_embed_dim must be >= 0")
        bad = [i for i in self.value_embed_layers if not 0 <= i < self.num_layers]
        need(not bad, f"value_embed_layers {bad} outside [0, num_layers={self.num_layers})")
        need(self.train_seq_len >= 1, "train_seq_len must be >= 1")
        need(self.embed_init_std > 0, "embed_init_std must be > 0")
        need(
            self.bigram_buckets == 0 or self.bigram_buckets >= 2,
            "bigram_buckets must be 0 (off) or >= 2 (one bucket is reserved for sequence starts)",
        )

    def _check_recurrence(self) -> None:
        if self.recur_start == -1 and self.recur_end == -1:
            return
        need(
            0 <= self.recur_start <= self.recur_end < self.num_layers,
            f"recurrence span recur_start={self.recur_start}..recur_end={self.recur_end} must "
            f"satisfy 0 <= start <= end < num_layers={self.num_layers} (both -1 switches it off)",
        )
        need(self.recur_passes >= 2, f"recur_passes must be >= 2, got {self.recur_passes}")
        need(
            0 <= self.recur_after_frac < 1,
            f"recur_after_frac must be in [0, 1), got {self.recur_after_frac}",
        )

    @property
    def recurrence(self) -> bool:
        return self.recur_start >= 0

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.mlp_mult * self.model_dim))


# The April leaderboard architecture (PR #1493 1.0810 and PR #1855 1.0611, both SP8192): MLP 4x
# LeakyReLU(0.5)^2, XSA on all 11 layers, QK gain 5.25, layers 3-5 looped three times from 35%
# of training, parallel residuals from layer 7, the sparse attention-output gate at scale 0.5.
# Those records dropped BigramHash and the value embeddings (the 8192-token embedding takes
# their bytes); SmearGate stays (PR #1855 keeps a BOS-safe smear).
_RECORD_ARCH: dict[str, Any] = {
    "mlp_mult": 4.0,
    "mlp_activation": "leaky_relu2",
    "mlp_leaky_slope": 0.5,
    "q_gain_init": 5.25,
    "attn_out_gate": True,
    "attn_gate_window": 12,
    "attn_gate_scale": 0.5,
    "recur_passes": 3,
    "recur_after_frac": 0.35,
    "bigram_buckets": 0,
    "value_embed_dim": 0,
    "value_embed_layers": (),
    "smear_gate": True,
}

# Trains on 2 CPU cores in well under a minute; keeps every feature switched on.
_TINY: dict[str, Any] = {
    "vocab_size": 512,
    "num_layers": 4,
    "model_dim": 64,
    "num_heads": 4,
    "num_kv_heads": 2,
    "rope_dims": 8,
    "train_seq_len": 128,
    "xsa_last_n": 2,
    "bigram_buckets": 256,
    "bigram_dim": 16,
    "value_embed_dim": 16,
    "value_embed_layers": (2, 3),
}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": _TINY,
    # Full size for one H200 / 8xH100 with the SP8192 tokenizer (fineweb_8192_bpe.model).
    "record": {
        **_RECORD_ARCH,
        "vocab_size": 8192,
        "num_layers": 11,
        "xsa_last_n": 11,
        "recur_start": 3,
        "recur_end": 5,
        "parallel_residual_from": 7,
    },
    # The record's features at the tiny width (4 layers: the middle pair loops three times).
    "record-tiny": {
        **_TINY,
        **_RECORD_ARCH,
        "xsa_last_n": 4,
        "recur_start": 1,
        "recur_end": 2,
        "parallel_residual_from": 2,
    },
}
