"""Shared fixtures: paths to the real data samples in ../shared/data (never copied into the repo)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def shared_sample(relative: str) -> Path:
    """Path of a file under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data sample {path} is absent (../shared/data is not beside this checkout)")
    return path


@pytest.fixture
def criteo_10k() -> Path:
    return shared_sample("criteo_kaggle_10k/train_10k.tsv")


@pytest.fixture
def movielens_dir() -> Path:
    return shared_sample("movielens_100k")


@pytest.fixture
def taobao_csv() -> Path:
    return shared_sample("taobao_userbehavior_head/UserBehavior_head.csv")
