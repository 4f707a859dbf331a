"""Shared set-up for every test process.

``make test`` runs the unit tests in one process per core (pytest-xdist). Each process then keeps PyTorch to one
thread: two workers that each spread their convolutions over every core would fight over the same cores and both run
slower. Tests that measure a thread count set it themselves.
"""

import os

import torch


def pytest_configure(config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
