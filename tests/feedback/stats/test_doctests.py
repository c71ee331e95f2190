"""The examples in the stats modules' docstrings run (feedback is not in testpaths)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["feedback.stats", "feedback.stats.bins", "feedback.stats.plan",
           "feedback.stats.window"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_run_title() -> None:
    from feedback.tracking import run_title

    assert run_title(2, "train", ["challenger"]) == "policy v2 (train, challenger)"
    assert run_title(7, "snapshot") == "policy v7 (snapshot)"
