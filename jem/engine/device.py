"""Where and how fast a worker computes: its device, its CPU threads, and the two speed switches.

``train.precision`` (bf16 autocast of the forward pass, loss included, as the VICReg/Barlow Twins
reference code does) and ``train.memory_format`` (channels_last model and views) are both ``auto``
by default. ``precision: auto`` is bf16 on GPU workers and fp32 on the CPU (bf16 pays only where
the CPU has it natively: set it there). ``memory_format: auto`` is channels_last on every device:
measured on this project's 2-core AVX-512 EPYC, one thread, fp32, interleaved rounds, a training
step of VICReg runs 1.21-1.27x faster in channels_last with the small CNN on 28 px 1-channel
images, 1.21x on 32 px RGB, and 1.18x with the CIFAR ResNet-18 (``python -m benchmarks.step``);
on GPUs channels_last is what tensor cores want. The layout actually used is recorded in
``metrics/pretrain.json`` (``memory_format``, ``precision``, ``threads``).
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from jem.config import TrainConfig


def worker_device(tcfg: TrainConfig) -> torch.device:
    """The Ray Train worker's GPU when ``train.use_gpu``, else the CPU."""
    if tcfg.use_gpu:
        import ray.train.torch

        return ray.train.torch.get_device()
    return torch.device("cpu")


def configure_threads(cpus: float) -> None:
    """Intra-op threads = the worker's CPUs (Ray's ``cpus_per_worker``, at least 1), one inter-op
    thread (the loop never runs ops concurrently), so workers sharing a node do not oversubscribe it."""
    torch.set_num_threads(max(1, int(cpus)))
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel region
        torch.set_num_interop_threads(1)


def speed_settings(tcfg: TrainConfig, device: torch.device) -> tuple[bool, bool]:
    """(bf16 autocast, channels_last) from ``train.precision`` / ``train.memory_format``: ``auto``
    precision is bf16 on CUDA devices and fp32 on the CPU; ``auto`` memory format is channels_last
    everywhere (the module docstring says why)."""
    gpu = device.type == "cuda"
    amp = tcfg.precision == "bf16" or (tcfg.precision == "auto" and gpu)
    channels_last = tcfg.memory_format in ("channels_last", "auto")
    if amp and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn("train.precision=bf16 on a CPU without native bf16 (AVX512-BF16 or AMX): autocast is emulated "
                      "there and about 10x slower than fp32; use train.precision=fp32 (or auto) on this machine",
                      RuntimeWarning, stacklevel=2)
    return amp, channels_last


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX). Where torch cannot
    tell, assume it does (no warning rather than a wrong one)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True
