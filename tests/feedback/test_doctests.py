"""The examples in the memory layer's docstrings run (the package is not in testpaths)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["feedback.store", "feedback.learner", "feedback.rewards", "feedback.grades"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
