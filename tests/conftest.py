"""Suite-wide settings: one intra-op thread (tiny models run fastest so, and results repeat)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread_session():
    """Before any fixture of any scope builds or measures a model."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_thread():
    """Again for each test: a command under test may have set another count (--threads)."""
    torch.set_num_threads(1)
