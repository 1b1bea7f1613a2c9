"""The reliability suite (issue 4): faults, bad input and attacks, each a test.

The suite lives in its own folder without ``__init__.py``; ``tests/`` is put on the
path here so its ``helpers`` package imports. The ``home`` fixture is tests/conftest.py's:
every test gets its own ``tmp_path`` home and every server its own free port, so
``pytest -n 2`` is safe.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))

from helpers.servers import HostileTarget  # noqa: E402


@pytest.fixture
def target():
    t = HostileTarget()
    yield t
    t.close()
