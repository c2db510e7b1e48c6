"""Process-level facts shared by train and eval: ranks, devices, process groups.

Only launcher facts come from the environment (RANK, WORLD_SIZE, LOCAL_RANK and
LOCAL_WORLD_SIZE, as torchrun sets them; CUDA_VISIBLE_DEVICES; PGOLF_COLLECTIVE_TIMEOUT_S, how
long this cluster may take to answer a collective; PGOLF_CPU_THREADS and OMP_NUM_THREADS, the
CPU threads a process may use). Nothing here runs at import time.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import time

import torch
import torch.distributed as dist

from pgolf.errors import ConfigError

TIMEOUT_ENV = "PGOLF_COLLECTIVE_TIMEOUT_S"
# A collective (or the rendezvous) that waits longer than this fails instead of hanging.
# torch's defaults are 10 min (NCCL) and 30 min (gloo), longer than the whole 600-s
# training budget; the slowest legitimate wait is a peer finishing its compile or rank 0
# writing a checkpoint, seconds to a couple of minutes.
DEFAULT_TIMEOUT_S = 300.0
# NCCL settings that turn a timed-out or failed collective into a dead process (which
# torchrun sees and ends the job) instead of a rank spinning forever: async error handling
# tears the process down; the heartbeat monitor kills it if the watchdog itself is stuck.
NCCL_ENV = {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "TORCH_NCCL_ENABLE_MONITORING": "1"}
THREADS_ENV = "PGOLF_CPU_THREADS"


@dataclasses.dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(local_rank: int = 0, want: str = "auto") -> torch.device:
    if want == "cpu" or (want == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if want not in ("auto", "cuda"):
        return torch.device(want)
    return torch.device("cuda", local_rank)


def collective_timeout() -> datetime.timedelta:
    """The bound on any one collective: PGOLF_COLLECTIVE_TIMEOUT_S, else DEFAULT_TIMEOUT_S."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return datetime.timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < 86_400:
        raise ConfigError(
            f"{TIMEOUT_ENV}={raw!r}: expected seconds in (0, 86400), e.g. {TIMEOUT_ENV}=600"
        )
    return datetime.timedelta(seconds=seconds)


def _machine_gpus() -> int:
    """GPUs the driver sees on this machine, whatever CUDA_VISIBLE_DEVICES hides (0: none)."""
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def cpu_share(env: dict[str, str] | None = None, cores: int | None = None, gpus: int = -1) -> int:
    """CPU threads this process may use without starving its neighbours on the machine.

    Two processes that each take every core (torch's intra-op pool, Inductor's compile
    workers, the packer's codec threads) both run several times slower: seen on a 2-GPU
    machine running two jobs side by side, whose pack stage went from 27-42 s to 140 s. So:
    the cores this process may run on (taskset/cgroup affinity), split between the ranks of
    this job on the machine (LOCAL_WORLD_SIZE) and, when CUDA_VISIBLE_DEVICES shows only
    some of the machine's GPUs, scaled to that share (one job per GPU gets its GPU's share).
    PGOLF_CPU_THREADS overrides. ``cores``/``gpus``: for tests.
    """
    env = os.environ if env is None else env
    raw = env.get(THREADS_ENV)
    if raw:
        n = int(raw) if raw.strip().isdigit() else 0
        if n < 1:
            raise ConfigError(f"{THREADS_ENV}={raw!r}: expected a whole number of threads >= 1")
        return n
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
        cores = cores or os.cpu_count() or 1
    share = cores / max(1, int(env.get("LOCAL_WORLD_SIZE", "1") or 1))
    gpus = _machine_gpus() if gpus < 0 else gpus
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if gpus > 0 and visible is not None and "LOCAL_WORLD_SIZE" not in env:
        shown = len([v for v in visible.split(",") if v.strip()])
        if 0 < shown < gpus:
            share = share * shown / gpus
    return max(1, int(share))


def limit_cpu_threads() -> int:
    """Size Inductor's compile workers and torch's intra-op pool to cpu_share().

    An OMP_NUM_THREADS below the share still bounds the intra-op pool (torchrun sets 1 for
    several ranks), but not the compile workers: those are processes, and one each would
    make a multi-rank warm-up several times longer. Returns the share.
    """
    n = cpu_share()
    omp = os.environ.get("OMP_NUM_THREADS", "")
    torch.set_num_threads(min(n, int(omp)) if omp.isdigit() and int(omp) > 0 else n)
    try:
        import torch._inductor.config as inductor_config

        inductor_config.compile_threads = n
    except ImportError:  # a torch build without Inductor: nothing to size
        pass
    return n


def init(want_device: str = "auto") -> Dist:
    """Read launcher variables, pick the device and join the process group when world > 1.

    NCCL on GPUs, gloo on CPU (tests run 2 gloo processes on a laptop-class machine). Every
    collective is bounded by collective_timeout(), so a hung or vanished peer ends the run.
    """
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = pick_device(local, want_device)
    limit_cpu_threads()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        timeout = collective_timeout()
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        if backend == "nccl":
            # Read when the process group is built; a user's own setting wins.
            for key, value in NCCL_ENV.items():
                os.environ.setdefault(key, value)
        dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
    return Dist(rank=rank, world_size=world, local_rank=local, device=device)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        # Leave together: a gloo rank that tears the group down while a peer is still
        # connected aborts that peer ("terminate called without an active exception", seen in
        # the 2-process eval test about 1 run in 5). Callers run this in `finally`: when an
        # exception is on its way out, peers may never arrive, so skip the barrier.
        if sys.exc_info()[0] is None:
            dist.barrier()
        gloo = dist.get_backend() == "gloo"
        dist.destroy_process_group()
        if gloo:
            # The barrier does not close the race: a rank that exits right after its own
            # teardown can still abort a peer mid-teardown (seen once in a CI run of the
            # rank-failure test). A moment's wait lets every peer finish tearing down first.
            time.sleep(0.25)


def set_mix_order_reduction(enabled: bool) -> None:
    """Switch Inductor's mix-order reductions (see TrainConfig.inductor_mix_order_reduction).

    Process-wide, like every torch._inductor.config setting; it affects graphs compiled
    after the call. Older torch builds without the option are left as they are.
    """
    import torch._inductor.config as inductor_config

    if hasattr(inductor_config.triton, "mix_order_reduction"):
        inductor_config.triton.mix_order_reduction = enabled
