"""Fixtures more than one test module shares."""

from __future__ import annotations

import pytest

from tests.containertools import build_image, engine_problem


@pytest.fixture(scope="session")
def image_built() -> float:
    """The image, built once per session from this checkout; the seconds the build took. Where
    no container engine can run, every test using it is skipped for that one reason."""
    problem = engine_problem()
    if problem is not None:
        pytest.skip(f"image tests: no container engine can run here: {problem}")
    return build_image()
