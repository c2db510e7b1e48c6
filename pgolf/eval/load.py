"""Everything the evaluator reads from disk: the artifact (or checkpoint), tokenizer, val split.

All artifact access goes through ``load_artifact``, so the evaluator depends on the
container only here. Besides ``.pgolf`` artifacts it accepts a full-precision run dir (or
its ``.safetensors`` file), which gives the pre-quantization val_bpb of the same run.

Artifacts of container spec 1.2 may carry low-rank corrections (``lqer``) of their integer
tensors; the container reader adds them while decoding, in the order the spec fixes, so
``state`` is the corrected weights and this module needs nothing from the packer.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pgolf.config import ModelConfig
from pgolf.config.base import from_dict
from pgolf.data.bpb import ByteTable
from pgolf.data.shards import list_shards, load_split
from pgolf.data.tokenizer import load_tokenizer, sha256_file
from pgolf.errors import PgolfError

if TYPE_CHECKING:
    from pgolf.format import Artifact
    from pgolf.format.header import Header


class EvalInputError(PgolfError, ValueError):
    """The artifact, tokenizer or val split cannot be evaluated together."""


class TokenizerMismatch(EvalInputError):
    """The tokenizer file is not the one the artifact was trained with."""


class ValTooShort(EvalInputError):
    """The val split has fewer tokens than one window needs."""


@dataclasses.dataclass
class LoadedArtifact:
    state: dict[str, torch.Tensor]  # dequantized tensors, ready for GPT.load_state_dict
    model_config: ModelConfig
    tokenizer: dict[str, Any] | None  # {"sha256", "vocab_size", ...} as recorded at pack time
    artifact_bytes: int  # size of the file(s) read (the artifact's own byte count)
    seconds: float  # wall time to read, verify and decompress
    kind: str  # "artifact" or "checkpoint"
    # Tensors whose decoded weights include a low-rank correction (spec 1.2 ``lqer``).
    lqer_tensors: int = 0


def load_artifact(path: str | Path) -> LoadedArtifact:
    """Read a ``.pgolf`` artifact, a run dir or a ``.safetensors`` checkpoint."""
    path = Path(path)
    t0 = time.perf_counter()
    if not path.exists():
        raise EvalInputError(f"{path}: no such artifact or checkpoint")
    is_checkpoint = path.is_dir() or path.suffix == ".safetensors"
    loaded = _from_checkpoint(path) if is_checkpoint else _from_container(path)
    loaded.seconds = time.perf_counter() - t0
    return loaded


def _from_container(path: Path) -> LoadedArtifact:
    art, config = read_container(path)
    return LoadedArtifact(
        state=dict(art.state),
        model_config=config,
        tokenizer=dict(art.tokenizer) if art.tokenizer else None,
        artifact_bytes=art.file_bytes,
        seconds=0.0,
        kind="artifact",
        lqer_tensors=sum(t.lqer is not None for t in art.header.tensors),
    )


def read_container(path: str | Path) -> tuple[Artifact, ModelConfig]:
    """A ``.pgolf`` artifact decoded, and its model config, after the model-level checks.

    The config must be a valid, bounded ``ModelConfig`` (R30) and the tensors exactly the
    ones it implies, name for name and shape for shape (R31). Both run on the header alone,
    before a single stream is decoded, so a file that lies about its model costs neither
    decode time nor memory. ``pgolf inspect`` and ``pgolf unpack`` read through here too.
    """
    # Imported here so a checkpoint-only evaluation never needs the container code.
    from pgolf.format import errors as E
    from pgolf.format import load_artifact as read

    configs: list[ModelConfig] = []

    def check(header: Header) -> None:
        config = _model_config(header.model)
        try:
            problem = shape_mismatch({t.name: t.shape for t in header.tensors}, config)
        except ValueError as e:  # the model's own config checks (e.g. attention backend)
            raise E.ModelConfigInvalid(f"the model config does not build a model: {e}") from None
        if problem:
            raise E.TensorShapeMismatch(
                f"{problem}; the header's model config and tensors disagree"
            )
        configs.append(config)

    art = read(path, check_header=check)  # FormatError (one line, rule number) on any problem
    return art, configs[0]


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor the config's GPT holds, from a model on the meta device
    (no memory, milliseconds), so it is the model definition itself and cannot drift."""
    from pgolf.model import GPT

    with torch.device("meta"):
        model = GPT(config, init_weights=False)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def shape_mismatch(have: dict[str, tuple[int, ...]], config: ModelConfig) -> str | None:
    """What differs between tensor shapes ``have`` and those ``config`` implies, or None."""
    want = expected_shapes(config)
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing or extra:
        return (
            f"the model config implies {len(want)} tensors: {len(missing)} missing "
            f"{missing[:3]}, {len(extra)} not in the model {extra[:3]}"
        )
    for name, shape in want.items():
        if tuple(have[name]) != shape:
            return f"{name} has shape {list(have[name])}, the model config implies {list(shape)}"
    return None


def _from_checkpoint(path: Path) -> LoadedArtifact:
    from pgolf.checkpoint import CHECKPOINT_FILE, load_checkpoint

    tensors, config, info = load_checkpoint(path)
    file = path / CHECKPOINT_FILE if path.is_dir() else path
    return LoadedArtifact(
        state={k: v.float() if v.is_floating_point() else v for k, v in tensors.items()},
        model_config=config.model,
        tokenizer=info.get("tokenizer"),
        artifact_bytes=file.stat().st_size,
        seconds=0.0,
        kind="checkpoint",
    )


def _model_config(raw: dict[str, Any]) -> ModelConfig:
    from pgolf.format import errors as E

    try:
        return from_dict(ModelConfig, raw, "model")  # R14 made it a dict
    except PgolfError as e:
        raise E.ModelConfigInvalid(
            f"{e}; the header's model config is not one this pgolf can build"
        ) from None


def build_model(loaded: LoadedArtifact) -> torch.nn.Module:
    """GPT rebuilt from the artifact's own config, weights loaded strictly (fp32 on CPU)."""
    from pgolf.model import GPT

    # Artifacts were checked on read (R31); a run dir's checkpoint is checked here, before
    # the model is allocated, so a mismatch is one line instead of a load_state_dict trace.
    problem = shape_mismatch(
        {n: tuple(t.shape) for n, t in loaded.state.items()}, loaded.model_config
    )
    if problem:
        raise EvalInputError(
            f"{loaded.kind} tensors do not match its model config: {problem} "
            "(written by another pgolf version?)"
        )
    model = GPT(loaded.model_config, init_weights=False)
    model.load_state_dict(loaded.state, strict=True)
    return model.float().eval()


def check_tokenizer(loaded: LoadedArtifact, tokenizer_path: str | Path | None) -> ByteTable:
    """Byte tables of the tokenizer after checking it against the artifact (sha256, vocab)."""
    if tokenizer_path is None:
        raise TokenizerMismatch("a tokenizer is required: pass --tokenizer PATH/TO/fineweb_*.model")
    sp = load_tokenizer(tokenizer_path)
    vocab = int(sp.vocab_size())
    recorded = loaded.tokenizer or {}
    # Vocab first: a different vocab size is the more telling message than a hash.
    for where, n in (
        ("artifact's tokenizer", recorded.get("vocab_size")),
        ("model", loaded.model_config.vocab_size),
    ):
        if n is not None and int(n) != vocab:
            raise TokenizerMismatch(
                f"{tokenizer_path}: vocab size {vocab} but the {where} has {n}; "
                "pass the tokenizer the model was trained with"
            )
    want_sha = recorded.get("sha256")
    if want_sha and sha256_file(tokenizer_path) != want_sha:
        raise TokenizerMismatch(
            f"{tokenizer_path}: sha256 differs from the artifact's tokenizer ({want_sha[:12]}…); "
            "pass the tokenizer the model was trained with"
        )
    return ByteTable.from_processor(sp)


def load_val(
    data_dir: str | Path, vocab_size: int, window: int, max_tokens: int | None
) -> np.ndarray:
    """The val stream (fineweb_val_*.bin in order), checked to fill at least one window."""
    list_shards(data_dir, "val")  # a clear DataError when there is no val split
    tokens = load_split(data_dir, "val", vocab_size=vocab_size, max_tokens=max_tokens)
    if tokens.size < window + 1:
        limited = f" (after --max-tokens {max_tokens})" if max_tokens else ""
        raise ValTooShort(
            f"{data_dir}: val split has {tokens.size} tokens{limited}, fewer than one window "
            f"needs ({window} + 1); lower eval.window or use a longer val split"
        )
    return tokens
