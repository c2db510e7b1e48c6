"""CPU threads per process: two jobs on one machine must not both take every core."""

from __future__ import annotations

import pytest
import torch

from pgolf import runtime
from pgolf.errors import ConfigError


def share(env, cores=16, gpus=2):
    return runtime.cpu_share(env, cores=cores, gpus=gpus)


def test_one_process_takes_the_cores_it_may_run_on():
    assert share({}) == 16
    assert share({"CUDA_VISIBLE_DEVICES": "0,1"}) == 16  # every GPU of the machine visible


def test_ranks_of_one_job_split_the_machine():
    assert share({"LOCAL_WORLD_SIZE": "2"}) == 8
    assert share({"LOCAL_WORLD_SIZE": "8"}, cores=128, gpus=8) == 16
    # torchrun's ranks each see one GPU through LOCAL_RANK, not CUDA_VISIBLE_DEVICES: no
    # second division
    assert share({"LOCAL_WORLD_SIZE": "2", "CUDA_VISIBLE_DEVICES": "0,1"}) == 8


def test_jobs_side_by_side_get_their_gpus_share():
    # two bench variants on a 2-GPU machine, one GPU each: half the cores each
    assert share({"CUDA_VISIBLE_DEVICES": "1"}) == 8
    assert share({"CUDA_VISIBLE_DEVICES": "0,1,2"}, cores=64, gpus=4) == 48
    assert share({"CUDA_VISIBLE_DEVICES": "0"}, cores=2, gpus=0) == 2  # no driver: no scaling
    assert share({"CUDA_VISIBLE_DEVICES": "0"}, cores=1, gpus=8) == 1  # never below one


def test_an_explicit_setting_wins_and_a_bad_one_is_refused():
    assert share({"PGOLF_CPU_THREADS": "5", "LOCAL_WORLD_SIZE": "2"}) == 5
    assert share({"OMP_NUM_THREADS": "1"}) == 16  # bounds the intra-op pool only (below)
    for bad in ("0", "-2", "many"):
        with pytest.raises(ConfigError, match="PGOLF_CPU_THREADS"):
            share({"PGOLF_CPU_THREADS": bad})


def test_limit_sizes_inductor_to_the_share_and_torch_to_omp_at_most(monkeypatch):
    import torch._inductor.config as inductor_config

    before = torch.get_num_threads(), inductor_config.compile_threads
    try:
        monkeypatch.setenv("PGOLF_CPU_THREADS", "2")
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert runtime.limit_cpu_threads() == 2
        assert torch.get_num_threads() == 2 and inductor_config.compile_threads == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as torchrun sets it for several ranks
        assert runtime.limit_cpu_threads() == 2
        assert torch.get_num_threads() == 1 and inductor_config.compile_threads == 2
    finally:
        torch.set_num_threads(before[0])
        inductor_config.compile_threads = before[1]
