"""Shared fixtures: clusters of real processes, torn down after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backends import backend  # noqa: F401 - the fixture, for every test module
from tests.harness import ClusterUnderTest


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., ClusterUnderTest]]:
    """``make_cluster(**sections)`` -> a ClusterUnderTest whose processes die with the test."""
    made: list[ClusterUnderTest] = []

    def factory(**sections: dict[str, Any]) -> ClusterUnderTest:
        sub = tmp_path / f"cluster{len(made)}"
        sub.mkdir()
        cluster = ClusterUnderTest(sub, **sections)
        made.append(cluster)
        return cluster

    yield factory
    for cluster in made:
        cluster.close()
