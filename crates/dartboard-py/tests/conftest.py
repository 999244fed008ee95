"""Paths the tests need, passed in by tests/tests/python_wheel.rs (which `cargo xtask
test` runs after installing the wheel): the real all-MiniLM-L6-v2, the tiny
fixtures, the STS data and the `dartboard` binary. A missing one fails the test
with the command that provides it; nothing is skipped."""

import os
from pathlib import Path

import pytest


def _path(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        pytest.fail(f"{var} is not set: run these tests through `cargo xtask test` (tests/tests/python_wheel.rs)")
    path = Path(value)
    if not path.exists():
        pytest.fail(f"{var}={value} does not exist: run `cargo xtask test`, which generates it")
    return path


@pytest.fixture(scope="session")
def minilm() -> Path:
    return _path("DARTBOARD_TEST_MINILM")


@pytest.fixture(scope="session")
def tiny() -> Path:
    return _path("DARTBOARD_TEST_TINY")


@pytest.fixture(scope="session")
def dartboard_bin() -> Path:
    return _path("DARTBOARD_BIN")


@pytest.fixture(scope="session")
def sts_texts() -> list:
    """The first 500 distinct sentences of STS-B dev, in file order."""
    import csv

    path = _path("DARTBOARD_DATA_DIR") / "stsbenchmark" / "sts-dev.csv"
    seen, texts = set(), []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            for text in row[5:7]:
                if text not in seen:
                    seen.add(text)
                    texts.append(text)
    return texts[:500]


def min_cosine(a, b) -> float:
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min())
