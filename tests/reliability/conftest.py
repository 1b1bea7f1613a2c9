"""The reliability suite (issue 4): faults, bad input and attacks, each a test.

The suite lives in its own folder without ``__init__.py``; the shared helpers
of ``tests/`` (``daemon_helpers``, the fake clock of ``test_daemon_loop``) are
made importable here. Every test gets its own ``tmp_path`` home and every
server its own free port, so ``pytest -n 2`` is safe.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))

from rel_helpers import HostileTarget  # noqa: E402


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def target():
    t = HostileTarget()
    yield t
    t.close()
