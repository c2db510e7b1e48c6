"""Process-level facts shared by train and eval: ranks, devices, process groups.

Only launcher facts come from the environment (RANK, WORLD_SIZE, LOCAL_RANK, as
torchrun sets them, and PGOLF_COLLECTIVE_TIMEOUT_S, how long this cluster may take to
answer a collective). Nothing here runs at import time.
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


def init(want_device: str = "auto") -> Dist:
    """Read launcher variables, pick the device and join the process group when world > 1.

    NCCL on GPUs, gloo on CPU (tests run 2 gloo processes on a laptop-class machine). Every
    collective is bounded by collective_timeout(), so a hung or vanished peer ends the run.
    """
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = pick_device(local, want_device)
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
