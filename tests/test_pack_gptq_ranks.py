"""GPTQ calibration shared by the ranks of a multi-GPU run (2 gloo ranks on CPU here): each rank
generates its rows of the calibration set and the Hessians are summed, giving every rank those
of the whole set, as one process would."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pgolf.config import resolve
from pgolf.pack import gptq

REPO = Path(__file__).resolve().parents[1]


def _tiny():
    from pgolf.model import GPT

    run = resolve("tiny")
    torch.manual_seed(5)
    state = GPT(run.model).state_dict()
    # gptq_embed on: the head's Hessian (collected by another path) is shared too
    cfg = dataclasses.replace(run.pack, gptq="on", gptq_samples=5, gptq_seq_len=12, gptq_embed=True)
    return run, state, cfg


def test_a_rows_subset_is_those_rows_of_the_whole_set():
    run, state, cfg = _tiny()
    model = gptq.calibration_model(state, run.model)
    whole = gptq.sample_tokens(model, 5, 12, run.model.bos_id, seed=7)
    part = gptq.sample_tokens(model, 5, 12, run.model.bos_id, seed=7, rows=[1, 4])
    assert whole.shape == (5, 12) and torch.equal(part, whole[[1, 4]])
    assert not torch.equal(whole[0], whole[1])  # rows are not one sequence repeated
    assert torch.equal(whole, gptq.sample_tokens(model, 5, 12, run.model.bos_id, seed=7))


RANK_SCRIPT = """
import dataclasses, sys
import torch
from safetensors.torch import load_file, save_file
from pgolf import runtime
from pgolf.config import resolve
from pgolf.pack import gptq
d = runtime.init("cpu")
run = resolve("tiny")
cfg = dataclasses.replace(
    run.pack, gptq="on", gptq_samples=int(sys.argv[2]), gptq_seq_len=12, gptq_embed=True
)
h = gptq.calibrate(load_file(sys.argv[1]), run.model, cfg, d=d)
save_file({k: v.contiguous() for k, v in h.items()}, f"{sys.argv[3]}.{d.rank}")
runtime.shutdown()
"""


def _two_ranks(tmp_path: Path, state, samples: int) -> list[dict[str, torch.Tensor]]:
    ckpt = tmp_path / "state.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, ckpt)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    out = tmp_path / "h"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_SCRIPT, str(ckpt), str(samples), str(out)],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r), "PGOLF_CPU_THREADS": "1"},
        )
        for r in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=600) == 0
    return [load_file(f"{out}.{r}") for r in range(2)]


def test_two_ranks_sum_to_the_hessians_of_one(tmp_path):
    run, state, cfg = _tiny()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks run on one thread each: the same sums
    try:
        wanted = {
            n: gptq.calibrate(state, run.model, dataclasses.replace(cfg, gptq_samples=n))
            for n in (5, 1)
        }
    finally:
        torch.set_num_threads(threads)
    for samples in (5, 1):  # 1 sample: rank 1 has no rows and contributes zeros
        ranks = _two_ranks(tmp_path, state, samples)
        want = wanted[samples]
        assert set(ranks[0]) == set(ranks[1]) == set(want)
        assert "tok_emb.weight" in want  # the tied head's Hessian
        for name, h in want.items():
            assert torch.equal(ranks[0][name], ranks[1][name]), name  # every rank: the same
            torch.testing.assert_close(ranks[0][name], h, rtol=1e-9, atol=1e-9, msg=name)


def test_sampling_allows_tf32_only_while_it_runs():
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    with gptq._tf32_matmuls():
        assert matmul.allow_tf32
    assert matmul.allow_tf32 == before


def test_pack_under_torchrun_calibrates_on_every_rank_and_rank_0_packs(tmp_path):
    from pgolf.checkpoint import save_checkpoint
    from pgolf.format import load_artifact
    from pgolf.pack.synthetic import random_state
    from pgolf.pipeline import plan

    run = resolve("tiny")
    ckpt = tmp_path / "run"
    tok = {"path": "x.model", "sha256": "ab" * 32, "vocab_size": run.model.vocab_size}
    save_checkpoint(ckpt, random_state(run.model, seed=4), run, tokenizer=tok)
    sets = ["pack.code_bytes=0", "pack.gptq=on", "pack.gptq_samples=4", "pack.gptq_seq_len=16"]
    args = ["pack", str(ckpt), "-o", str(tmp_path / "a.pgolf"), "--preset", "tiny"]
    for s in sets:
        args += ["--set", s]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PGOLF_CPU_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    res = subprocess.run(
        [*cmd, "-m", "pgolf.cli", *args, "--no-progress"], env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert res.stdout.count("calibration ranks:2") == 1  # logged once, by rank 0
    assert res.stdout.count("pack artifact:") == 1  # rank 0 alone packs
    assert set(load_artifact(tmp_path / "a.pgolf").state) == set(random_state(run.model, seed=4))
    # the pipeline runs its pack stage this way on several GPUs when GPTQ is on
    p = plan.PipelineInputs(out=tmp_path / "r", nproc=2)
    assert "--nproc_per_node=2" in plan.pack_stage(p, (), tmp_path, gptq_on=True).command
    assert "--nproc_per_node=2" not in plan.pack_stage(p, (), tmp_path).command
