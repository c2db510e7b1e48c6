"""1 vs 2 gloo ranks: the same score (fp64 summation noise only), every token counted once."""

from __future__ import annotations

import numpy as np
import pytest
from eval_helpers import (  # noqa: F401
    REPO,
    noisy_tiny_model,
    random_stream,
    read_report,
    run_eval_processes,
    tokenizer_fixture,
    write_fp32_artifact,
    write_val,
)

FAST = ["--preset", "tiny", "--set", "eval.window=32", "--set", "eval.stride=8",
        "--set", "eval.device=cpu", "--set", "eval.batch_windows=3",
        "--set", "eval.ttt_chunk_tokens=64", "--set", "eval.ttt_seq_len=32",
        "--set", "eval.ttt_micro_batch=1", "--set", "eval.ttt_phase1_chunks=2",
        "--set", "eval.ttt_phase2_from_chunk=1", "--set", "eval.ttt_phase2_lr=0.05"]  # fmt: skip


@pytest.mark.parametrize("ttt", ["none", "two-phase"])
def test_one_and_two_ranks_agree(tmp_path, tokenizer, ttt):
    # 403 tokens: windows and TTT sequences do not split evenly over 2 ranks.
    tokens = random_stream(403, seed=11)
    data = write_val(tmp_path / "data", tokens)
    art = write_fp32_artifact(tmp_path / "m.pgolf", noisy_tiny_model(), tokenizer)
    results = {}
    for world in (1, 2):
        report, nll = tmp_path / f"r{world}.json", tmp_path / f"n{world}.npy"
        args = [str(art), "--data", str(data), "--tokenizer", str(tokenizer), "--ttt", ttt,
                "--report", str(report), "--save-token-nll", str(nll), *FAST]  # fmt: skip
        procs = run_eval_processes(args, world, REPO)
        for p in procs:
            assert p.returncode == 0, p.stderr
        assert "val_bpb:" in procs[0].stdout
        assert all(p.stdout.strip() == "" for p in procs[1:])  # rank 0 alone reports
        results[world] = (read_report(report), np.load(nll))
    (r1, n1), (r2, n2) = results[1], results[2]
    assert r2["world_size"] == 2
    assert r1["tokens_scored"] == r2["tokens_scored"] == len(tokens) - 1 == n2.size
    assert r1["bytes_scored"] == r2["bytes_scored"]
    assert r2["val_loss"] == pytest.approx(r1["val_loss"], rel=1e-6)
    assert r2["val_bpb"] == pytest.approx(r1["val_bpb"], rel=1e-6)
    np.testing.assert_allclose(n2, n1, rtol=1e-4, atol=1e-5)
    if ttt == "none":
        np.testing.assert_allclose(n2, n1, rtol=1e-6, atol=1e-6)
