"""Shared setup for the evaluation tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_torch_thread() -> Iterator[None]:
    """Run torch single-threaded in these tests (restored afterwards).

    The problems here are tiny (digits, a few hundred rows), so intra-op threads buy nothing, while
    on a busy 2-core machine every parallel op waits at an OpenMP barrier for a descheduled thread:
    the same test then runs 10-50x slower. One thread keeps timings stable; results are unchanged
    in kind (every assertion is a tolerance or a determinism check within one setting).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
