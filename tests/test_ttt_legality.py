"""TTT legality, two ways, for every TTT mode.

1. Token-read audit: the val stream handed to the evaluator is a tensor subclass that logs
   every read made outside scoring, and the scorer is wrapped to log which targets are
   scored. Every TTT read (inputs and targets of every optimizer step, and any other look
   at the stream) must be of a position already scored (or position 0, which is never a
   target). This sees a step that trains one token too far, which (2) cannot.
2. Perturbation: two streams equal up to t, different after, give bit-identical NLLs for
   every target <= t.

A mutation check proves (1) has teeth: shifting each mode's training-sequence end by one
token makes the audit fail. LoRA runs rows of documents side by side
(``ttt_lora_batch_docs``), each with its own adapters: every check runs with 1 and 4 rows,
and a second mutation (a row trained on the next row's sequences, which are scored, so
the audit cannot see it) must fail (2). The report's ``compliant`` flag is static per mode;
the last test asserts it is true exactly for the modes that pass the audit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_helpers import eval_cfg, noisy_tiny_model, random_stream, tokenizer_fixture  # noqa: F401
from torch.optim.optimizer import register_optimizer_step_pre_hook

from pgolf.config.eval import TTT_MODES
from pgolf.data.bpb import ByteTable
from pgolf.eval import engine, ttt, ttt_lora, ttt_phased
from pgolf.eval.engine import run_eval
from pgolf.eval.score import Scorer
from pgolf.runtime import Dist

# Small chunks and a few documents (BOS every 97 tokens) so every mode resets, pauses and
# steps many times within 400 tokens; high learning rates so adaptation shows in scores.
MODES = {
    "two-phase": dict(
        ttt_chunk_tokens=48,
        ttt_phase1_chunks=3,
        ttt_phase2_from_chunk=2,
        ttt_phase1_lr=0.05,
        ttt_phase2_lr=0.2,
        ttt_phase2_blocks=2,
    ),
    "lora": dict(
        ttt_lora_chunk_tokens=16, ttt_lora_rank=2, ttt_lora_lr=0.05, ttt_lora_batch_docs=4
    ),
    "phased": dict(
        ttt_chunk_tokens=48, ttt_phases=3, ttt_phased_prefix_tokens=200, ttt_phased_lr=0.05
    ),
    "phased-lora": dict(
        ttt_lora_chunk_tokens=16,
        ttt_lora_rank=2,
        ttt_lora_lr=0.05,
        ttt_lora_min_doc_tokens=20,
        ttt_lora_batch_docs=4,
        ttt_phases=2,
        ttt_phased_prefix_tokens=150,
        ttt_phased_lr=0.05,
    ),
    "pre-train-on-val": dict(ttt_chunk_tokens=48, ttt_phase2_lr=0.2),
}
COMMON = dict(ttt_seq_len=32, ttt_micro_batch=2, ttt_phased_batch_seqs=3, ttt_phased_epochs=1)
# Every check of a LoRA mode runs one row (the stream in order) and four side by side.
CASES = [
    ("two-phase", {}),
    ("lora", {}),
    ("lora", {"ttt_lora_batch_docs": 1}),
    ("phased", {}),
    # A prefix past the split capped (the record presets cap at 40 %): all pauses inside it.
    ("phased", {"ttt_phased_prefix_tokens": 10_000, "ttt_phased_prefix_max_frac": 0.6}),
    ("phased-lora", {}),
    ("phased-lora", {"ttt_lora_batch_docs": 1}),
]
# Tensor properties that reveal nothing about token values.
METADATA = {"device", "dtype", "shape", "ndim", "is_cuda", "numel", "size", "dim", "__len__"}


def mode_cfg(mode: str, **extra):
    return eval_cfg(ttt=mode, **COMMON, **{**MODES[mode], **extra})


class LeakError(AssertionError):
    pass


class Audit:
    """Which positions are known (scored, or 0) and what TTT read; raises on a leak."""

    def __init__(self, n: int) -> None:
        self.known = np.zeros(n, dtype=bool)
        self.known[0] = True
        self.scoring = False
        self.reads = 0
        self.steps = 0
        self.max_read = 0

    def read(self, positions: np.ndarray) -> None:
        if self.scoring or positions.size == 0:
            return
        self.reads += 1
        self.max_read = max(self.max_read, int(positions.max()))
        unknown = positions[~self.known[positions]]
        if unknown.size:
            frontier = int(np.flatnonzero(~self.known)[0]) - 1
            raise LeakError(
                f"TTT read position {int(unknown.min())} while targets <= {frontier} were scored"
            )

    def scored(self, windows) -> None:
        for s, lo, hi in zip(windows.starts, windows.lo, windows.hi, strict=True):
            self.known[s + lo + 1 : s + hi + 1] = True


AUDIT: Audit | None = None


class AuditedStream(torch.Tensor):
    """The val stream; reports every read of its values (not of derived tensors) to AUDIT."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunctionSubclass():
            if args and type(args[0]) is AuditedStream:
                AUDIT.read(_positions(func, args))
            return func(*args, **kwargs)


def _positions(func, args) -> np.ndarray:
    this = args[0]
    n = this.numel()
    if func is torch.Tensor.__getitem__:
        return torch.arange(n)[args[1]].reshape(-1).numpy()
    name = getattr(func, "__name__", "")
    if name == "__get__":
        name = getattr(getattr(func, "__self__", None), "__name__", "")
    # Anything else (a copy, a comparison, a sum...) reads the whole stream.
    return np.zeros(0, dtype=np.int64) if name in METADATA else np.arange(n)


@pytest.fixture
def audited(monkeypatch):
    """Run the evaluator with the audit on; yields a function that returns its Audit."""
    global AUDIT

    def stream(tokens, device):
        global AUDIT
        AUDIT = Audit(len(tokens))
        return torch.as_tensor(np.asarray(tokens, dtype=np.int64)).as_subclass(AuditedStream)

    original = Scorer.score

    def score(self, windows):
        AUDIT.scoring = True
        try:
            return original(self, windows)
        finally:
            AUDIT.scoring = False
            AUDIT.scored(windows)

    def count_step(optimizer, args, kwargs):
        AUDIT.steps += 1

    adam = ttt_lora.LoraTTT._adam  # LoRA's batched Adam is not a torch optimizer

    def lora_step(self, live):
        AUDIT.steps += 1
        adam(self, live)

    monkeypatch.setattr(engine, "device_stream", stream)
    monkeypatch.setattr(ttt_lora.LoraTTT, "_adam", lora_step)
    monkeypatch.setattr(Scorer, "score", score)
    handle = register_optimizer_step_pre_hook(count_step)
    yield lambda: AUDIT
    handle.remove()
    AUDIT = None


def run(tokens, table, cfg, model=None):
    model = model or noisy_tiny_model()
    return run_eval(model, tokens, table, cfg, Dist(), keep_token_nll=True)


def audit_passes(cfg, table) -> bool:
    try:
        run(random_stream(400, seed=3), table, cfg)
    except LeakError:
        return False
    return True


@pytest.mark.parametrize(("mode", "extra"), CASES)
def test_ttt_reads_only_scored_tokens(tokenizer, audited, mode, extra):
    table = ByteTable.from_model(tokenizer)
    tokens = random_stream(400, seed=3)
    run(tokens, table, mode_cfg(mode, **extra))
    audit = audited()
    # Not vacuous: the mode stepped many times and read up to late in the stream.
    assert audit.steps >= 3 and audit.reads >= 3
    assert audit.max_read > 200  # phased stops reading at its prefix (200 targets)
    assert audit.known.all()  # and everything got scored


MODULES = {"two-phase": ttt, "lora": ttt_lora, "phased": ttt_phased, "phased-lora": ttt_lora}


@pytest.mark.parametrize(("mode", "extra"), CASES)
def test_off_by_one_training_window_is_caught(tokenizer, audited, monkeypatch, mode, extra):
    """Mutation: training sequences end one token after the last scored target."""
    module = MODULES[mode]
    original = module.train_starts
    monkeypatch.setattr(module, "train_starts", lambda c0, c1, n: original(c0, c1 + 1, n))
    table = ByteTable.from_model(tokenizer)
    with pytest.raises(LeakError):
        run(random_stream(400, seed=3), table, mode_cfg(mode, **extra))


def perturbed(t: int) -> tuple[np.ndarray, np.ndarray]:
    """Two streams equal up to position t, different after."""
    a = random_stream(400, seed=1)
    b = a.copy()
    b[t + 1 :] = random_stream(400 - t - 1, seed=2, bos_every=53)
    return a, b


@pytest.mark.parametrize(("mode", "extra"), CASES)
@pytest.mark.parametrize("t", [50, 233])
def test_future_tokens_never_change_past_scores(tokenizer, mode, extra, t):
    table = ByteTable.from_model(tokenizer)
    a, b = perturbed(t)
    nll_a = run(a, table, mode_cfg(mode, **extra)).token_nll()
    nll_b = run(b, table, mode_cfg(mode, **extra)).token_nll()
    np.testing.assert_array_equal(nll_a[:t], nll_b[:t])  # entry i is target i+1


@pytest.mark.parametrize("mode", ["lora", "phased-lora"])
def test_a_row_learning_from_the_next_row_is_caught(tokenizer, audited, monkeypatch, mode):
    """Mutation: each row steps on the next row's sequences. Those tokens are scored (the
    rows advance together), so the audit passes, but a row's scores now depend on later
    text, which the perturbation check sees."""
    step = ttt_lora.LoraTTT._step

    def shifted(self, seqs):
        if seqs := [(j - 1, s, n) for j, s, n in seqs if j > 0]:
            step(self, seqs)

    monkeypatch.setattr(ttt_lora.LoraTTT, "_step", shifted)
    table = ByteTable.from_model(tokenizer)
    a, b = perturbed(233)
    run(a, table, mode_cfg(mode))  # the audit passes
    assert audited().steps > 3
    nll_a = run(a, table, mode_cfg(mode)).token_nll()
    nll_b = run(b, table, mode_cfg(mode)).token_nll()
    assert not np.array_equal(nll_a[:233], nll_b[:233])


def test_compliant_flag_matches_the_audit(tokenizer, audited):
    """The report's compliant flag is exactly "passes the audit", for every mode there is."""
    table = ByteTable.from_model(tokenizer)
    for mode in TTT_MODES:
        cfg = mode_cfg(mode) if mode in MODES else eval_cfg(ttt=mode)
        assert cfg.compliant == audit_passes(cfg, table), mode
