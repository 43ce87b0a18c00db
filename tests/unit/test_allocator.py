"""Importing terarec before pyarrow sets how long arrow's allocator keeps freed memory (terarec/__init__.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest

from terarec import ARROW_PURGE_DELAY_ENV, ARROW_PURGE_DELAY_MS

# mimalloc prints its options at start-up when verbose: the delay it actually uses, not just our env
_PROBE = "import terarec, pyarrow as pa; pa.allocate_buffer(16)"


def _mimalloc_options(env_delay: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != ARROW_PURGE_DELAY_ENV}
    env["MIMALLOC_VERBOSE"] = "1"
    if env_delay is not None:
        env[ARROW_PURGE_DELAY_ENV] = env_delay
    return subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True).stderr


needs_mimalloc = pytest.mark.skipif(
    pa.default_memory_pool().backend_name != "mimalloc", reason="arrow's default pool here is not mimalloc"
)


@needs_mimalloc
def test_terarec_import_sets_arrows_purge_delay() -> None:
    assert f"option 'purge_delay': {ARROW_PURGE_DELAY_MS}" in _mimalloc_options(None)


@needs_mimalloc
def test_a_users_own_purge_delay_is_kept() -> None:
    assert "option 'purge_delay': 250" in _mimalloc_options("250")
