"""uniPort tests run single-threaded: tiny minibatch OT solves thrash with 2 OpenMP threads on a loaded box."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
