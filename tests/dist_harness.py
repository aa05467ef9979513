"""Real multi-process gloo groups for exactness tests (no mocks).

``run_workers(fn, world_size, *args)`` spawns ``world_size`` processes that join a gloo process
group on a free loopback port, calls ``fn(rank, world_size, *args)`` in each and returns the
per-rank return values (which must be picklable: convert tensors with ``.tolist()`` or keep them
as CPU tensors). A failure in any worker re-raises in the parent with the worker's traceback.
"""

from __future__ import annotations

import os
import pickle
import socket
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world_size: int, port: int, fn: Callable[..., Any], args: tuple, queue: Any) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
        # plain pickle bytes: tensors are copied, not shared through fds that die with the worker
        queue.put((rank, "ok", pickle.dumps(fn(rank, world_size, *args))))
    except BaseException:  # noqa: BLE001 - report everything to the parent
        queue.put((rank, "error", traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_workers(fn: Callable[..., Any], world_size: int = 2, *args: Any) -> list[Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_entry, args=(r, world_size, port, fn, args, queue)) for r in range(world_size)]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    for _ in procs:
        rank, status, value = queue.get(timeout=300)
        if status == "error":
            for p in procs:
                p.kill()
            raise RuntimeError(f"worker {rank} failed:\n{value}")
        results[rank] = pickle.loads(value)
    for p in procs:
        p.join(timeout=60)
    return [results[r] for r in range(world_size)]
