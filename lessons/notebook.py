"""Small helpers the chapters use: seeding, and showing package code from its source."""

from __future__ import annotations

import inspect
import random

import numpy as np
import torch


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch so a notebook prints the same numbers on every run; returns a generator."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class SourceCode:
    """The source of a class or function, shown highlighted in Jupyter and on the site, as plain text elsewhere."""

    def __init__(self, obj: object) -> None:
        self.name = getattr(obj, "__qualname__", repr(obj))
        self.code = inspect.getsource(obj)

    def __repr__(self) -> str:
        return self.code

    def _repr_html_(self) -> str:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer

        return highlight(self.code, PythonLexer(), HtmlFormatter(noclasses=True, nobackground=True))


def show_source(obj: object) -> SourceCode:
    """Display the source of ``obj`` from the ``lessons`` package, so a chapter never pastes a large class."""
    return SourceCode(obj)
