"""The GPT: one definition for training, packing calibration, evaluation and TTT.

Call conventions (the evaluator and the packer depend on them):

* ``model(ids)`` -> fp32 softcapped logits [B, T, V]
* ``model(ids, targets)`` -> mean cross-entropy (fp32 log-softmax even under bf16 autocast)
* ``model(ids, targets, reduction="none")`` -> fp32 per-token NLL [B, T]
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pgolf.config.model import ModelConfig
from pgolf.model.attention import CausalSelfAttention
from pgolf.model.extras import BigramHash, SmearGate, ValueEmbedding
from pgolf.model.layers import MLP, CastedLinear, Matmul, rms_norm


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        d = cfg.model_dim
        self.attn = CausalSelfAttention(cfg, layer)
        leaky = cfg.mlp_leaky_slope if cfg.mlp_activation == "leaky_relu2" else 0.0
        self.mlp = MLP(d, cfg.mlp_hidden, leaky, cfg.mlp_kernel)
        self.attn_scale = nn.Parameter(torch.ones(d))
        self.mlp_scale = nn.Parameter(torch.ones(d))
        # Row 0 weighs the running x, row 1 the embedding output x0 (starts as pure x).
        self.resid_mix = (
            nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d)))) if cfg.resid_mix else None
        )
        # Damps the inputs of deeper blocks, whose residual stream has grown larger. A tensor,
        # not a float: torch.compile guards on Python numbers, and one value per layer would
        # make every block its own graph under compile_blocks().
        scale = 1.0 / math.sqrt(layer + 1) if cfg.ln_scale else 1.0
        self.register_buffer("ln_scale", torch.tensor(scale), persistent=False)
        # GPT-J style from this layer on: the MLP reads the attention's input (PR #1204).
        self.parallel = 0 <= cfg.parallel_residual_from <= layer
        # compile_scope "nested" (GPT.nest_blocks): run the body as a nested compile region.
        self.nested = False

    def forward(
        self, x: torch.Tensor, x0: torch.Tensor, v_extra: torch.Tensor | None
    ) -> torch.Tensor:
        if self.nested:
            # The first block gets x is x0; a region body traced with those inputs aliased and
            # reused for later calls gave wrong resid_mix gradients (torch 2.13, CPU, caught by
            # tests/test_compile_blocks.py), so the region never sees aliased inputs.
            return self._nested_body(x.clone() if x is x0 else x, x0, v_extra)
        return self._body(x, x0, v_extra)

    # Inside a whole-model torch.compile, every call of this region with the same structure
    # reuses one compiled body (hierarchical compilation); outside a compile it is a plain
    # call. getattr: a torch without the API (older than 2.8) runs the plain body.
    @getattr(torch.compiler, "nested_compile_region", lambda fn: fn)
    def _nested_body(
        self, x: torch.Tensor, x0: torch.Tensor, v_extra: torch.Tensor | None
    ) -> torch.Tensor:
        return self._body(x, x0, v_extra)

    def _body(
        self, x: torch.Tensor, x0: torch.Tensor, v_extra: torch.Tensor | None
    ) -> torch.Tensor:
        if self.resid_mix is not None:
            mix = self.resid_mix.to(x.dtype)
            x = mix[0] * x + mix[1] * x0
        h = rms_norm(x) * self.ln_scale
        out = x + self.attn_scale.to(x.dtype) * self.attn(h, v_extra)
        if not self.parallel:
            h = rms_norm(out) * self.ln_scale
        return out + self.mlp_scale.to(x.dtype) * self.mlp(h)


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig, init_weights: bool = True) -> None:
        """``init_weights=False`` for a model whose weights are loaded next: the orthogonal
        init of a record-size model takes ~10 s of CPU (2 cores) only to be overwritten."""
        super().__init__()
        self.cfg = cfg
        self.vocab_size = cfg.vocab_size
        d, n = cfg.model_dim, cfg.num_layers
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        self.head = None if cfg.tie_embeddings else CastedLinear(d, cfg.vocab_size)
        self.bigram = (
            BigramHash(cfg.bigram_buckets, cfg.bigram_dim, d, cfg.bos_id)
            if cfg.bigram_buckets
            else None
        )
        self.smear = SmearGate(d, cfg.bos_id) if cfg.smear_gate else None
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(n))
        # Block order of one forward: plain, and with the recurrence span unrolled. Which one
        # runs is a plain attribute (torch.compile guards on it and keeps one graph each).
        self.plain_order = tuple(range(n))
        self.recur_order = self.plain_order
        if cfg.recurrence:
            span = self.plain_order[cfg.recur_start : cfg.recur_end + 1]
            self.recur_order = (
                self.plain_order[: cfg.recur_start]
                + span * cfg.recur_passes
                + self.plain_order[cfg.recur_end + 1 :]
            )
        # Built as evaluated: a finished run's model always recurs; the trainer switches the
        # recurrence off for the first recur_after_frac of training.
        self.recurrence_active = cfg.recurrence
        # Skip weights for the longest order; the plain order uses the first ones.
        deepest = len(self.recur_order) // 2 if cfg.unet_skips else 0
        num_skips = min(deepest, len(self.recur_order) - deepest)
        self.skip_weights = nn.Parameter(torch.ones(num_skips, d)) if num_skips else None
        ve_layers = sorted(set(cfg.value_embed_layers)) if cfg.value_embed_dim else []
        self.ve_slot = {layer: i for i, layer in enumerate(ve_layers)}
        self.value_embed = (
            ValueEmbedding(cfg.vocab_size, cfg.value_embed_dim, cfg.kv_dim, len(ve_layers))
            if ve_layers
            else None
        )
        if init_weights:
            self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        cfg = self.cfg
        nn.init.normal_(self.tok_emb.weight, std=cfg.embed_init_std)
        proj_scale = 1.0 / math.sqrt(2 * cfg.num_layers)
        for name, mod in self.named_modules():
            if not isinstance(mod, CastedLinear) or not name.startswith(("blocks.", "head")):
                continue  # extras' projections keep their own init (see extras.py)
            if mod.is_output and cfg.zero_init_proj:
                nn.init.zeros_(mod.weight)
                continue
            # Orthogonal init keeps every direction's gain at 1, which suits Muon's
            # orthogonalized updates; tiny matrices fall back to a scaled normal.
            if cfg.ortho_init and min(mod.weight.shape) >= 64:
                nn.init.orthogonal_(mod.weight)
            else:
                nn.init.normal_(mod.weight, std=1.0 / math.sqrt(mod.in_features))
            if mod.is_output:
                mod.weight.mul_(proj_scale)

    def block_linears(self) -> list[CastedLinear]:
        return [m for block in self.blocks for m in block.modules() if isinstance(m, CastedLinear)]

    def set_qat(self, bits: int) -> None:
        """Fake-quantize block matrices to the intN grid from now on (0 switches it off)."""
        for mod in self.block_linears():
            mod.qat_bits = bits

    def set_block_matmul(self, matmul: Matmul | None) -> None:
        """Route the block matrices' GEMMs through ``matmul(x, w)`` (None: ``F.linear``)."""
        for mod in self.block_linears():
            mod.matmul = matmul

    def set_recurrence(self, active: bool) -> None:
        """Run the recurrence span ``recur_passes`` times (True) or once (False)."""
        if active and not self.cfg.recurrence:
            raise ValueError("set_recurrence(True) needs model.recur_start/recur_end set")
        self.recurrence_active = active

    def kernels(self, device_type: str) -> dict[str, str]:
        """The attention and MLP kernels this model runs on ``device_type``: what the configs'
        "auto" resolved to here (logged by the trainer, reported by the evaluator)."""
        block = self.blocks[0]
        return {
            "attention": block.attn._backend(device_type),
            "mlp_kernel": block.mlp.kernel_on(device_type),
        }

    @property
    def block_matmul(self) -> Matmul | None:
        return self.block_linears()[0].matmul

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """x0: token embedding + BigramHash, RMS-normed, then SmearGate."""
        x = self.tok_emb(input_ids)
        if self.bigram is not None:
            x = x + self.bigram(input_ids).to(x.dtype)
        x = rms_norm(x)
        if self.cfg.bf16_residual and torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))
        if self.smear is not None:
            x = self.smear(x, input_ids)
        return x

    def hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        x0 = x = self.embed(input_ids)
        ve = self.value_embed(input_ids) if self.value_embed is not None else None
        order = self.recur_order if self.recurrence_active else self.plain_order
        # U-Net halves over the order actually run (the records pair skips the same way).
        num_encoder = len(order) // 2 if self.cfg.unet_skips else 0
        skips: list[torch.Tensor] = []
        for j, i in enumerate(order):
            if j >= num_encoder and skips:
                w = self.skip_weights[j - num_encoder].to(x.dtype)
                x = x + w * skips.pop()
            v_extra = None
            if ve is not None and i in self.ve_slot:
                v_extra = ve * self.value_embed.layer_scales[self.ve_slot[i]].to(ve.dtype)
            x = self.blocks[i](x, x0, v_extra)
            if j < num_encoder:
                skips.append(x)
        return rms_norm(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        weight = self.tok_emb.weight if self.head is None else self.head.weight
        logits = F.linear(h, weight.to(h.dtype)).float()
        cap = self.cfg.logit_softcap
        return cap * torch.tanh(logits / cap) if cap > 0 else logits

    def forward(
        self,
        input_ids: torch.Tensor,
        target_ids: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        return self.output(self.hidden(input_ids), target_ids, reduction)

    def compiled(self, scope: str, mode: str | None = None):
        """What to call to run this model compiled under ``compile_scope`` ``scope``: the model
        itself with its parts compiled ("blocks"), else one whole-model compile ("model",
        "nested" with the block bodies marked as nested regions first)."""
        if scope == "blocks":
            self.compile_blocks()
            return self
        if scope == "nested":
            self.nest_blocks()
        return torch.compile(self, fullgraph=True, dynamic=False, mode=mode)

    def compile_blocks(self, backend: Any = "inductor") -> None:
        """torch.compile each block, the embedding and the head apart, in place.

        The alternative to compiling the whole forward (``compile_scope="blocks"``): blocks
        share one code object and their weights are graph inputs, so each distinct block
        structure (parallel residual or not, XSA or not, QAT on or off) lowers once and serves
        every layer and both block orders of the depth recurrence, instead of the whole model
        lowering once per order. The price is the fusion across block boundaries.
        """
        # One graph per block variant x grad mode x QAT state: more than the default limit of 8,
        # past which Dynamo would fail (fullgraph) instead of reusing a graph.
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        opts = {"fullgraph": True, "dynamic": False, "backend": backend}
        for block in self.blocks:
            block.compile(**opts)
        self.embed = torch.compile(self.embed, **opts)
        self.output = torch.compile(self.output, **opts)

    def nest_blocks(self) -> None:
        """Mark each block's body as a nested compile region (``compile_scope="nested"``).

        The model is still compiled whole, one graph per block order, but the body of each
        block structure is lowered once and stamped out for every layer and recurrent pass
        that shares it: the warm-up of ``blocks`` without its per-block calls at run time.
        """
        for block in self.blocks:
            block.nested = True

    def output(
        self, h: torch.Tensor, target_ids: torch.Tensor | None = None, reduction: str = "mean"
    ) -> torch.Tensor:
        """Logits of the final hidden state, or the cross-entropy against ``target_ids``."""
        logits = self.logits(h)
        if target_ids is None:
            return logits
        nll = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), target_ids.reshape(-1), reduction=reduction
        )
        return nll.view(target_ids.shape) if reduction == "none" else nll


# Parameter roles. The packer classifies tensors by these same names.
_MATRIX = re.compile(
    r"^(blocks\.\d+\.(attn\.(q|k|v|proj)|mlp\.(fc|proj))|bigram\.proj|value_embed\.proj|head)"
    r"\.weight$"
)
_EMBEDDING = re.compile(r"^(tok_emb|bigram\.embed|value_embed\.embed)\.weight$")


def param_role(name: str) -> str:
    """'matrix' (Muon), 'embedding' (AdamW, embedding lr) or 'control' (AdamW, scalar lr)."""
    if _MATRIX.match(name):
        return "matrix"
    if _EMBEDDING.match(name):
        return "embedding"
    return "control"


def param_groups(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """{'matrix': [...], 'embedding': [...], 'control': [...]} of (name, parameter) pairs."""
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {
        "matrix": [],
        "embedding": [],
        "control": [],
    }
    for name, p in model.named_parameters():
        groups[param_role(name)].append((name, p))
    return groups


def matmul_params(model: GPT) -> int:
    """Parameters that take part in a matmul per token (embedding lookups excluded)."""
    total = sum(p.numel() for name, p in model.named_parameters() if _MATRIX.match(name))
    if model.head is None:
        total += model.tok_emb.weight.numel()  # the tied head is a real matmul
    return total


def train_flops_per_token(model: GPT, seq_len: int) -> float:
    """6·N_matmul + causal attention FLOPs per trained token.

    Attention forward per layer and token: QK^T and AV each 2·ctx·(heads·head_dim) with a
    causal mean context of T/2, so 2·T·h·d; fwd+bwd triples it.
    """
    cfg = model.cfg
    # Depth recurrence runs some blocks more than once per token: count every run.
    runs = len(model.recur_order if model.recurrence_active else model.plain_order)
    block = sum(p.numel() for n, p in model.blocks[0].named_parameters() if p.dim() == 2)
    attn = 6 * runs * cfg.num_heads * cfg.head_dim * seq_len
    return 6.0 * (matmul_params(model) + (runs - cfg.num_layers) * block) + attn
