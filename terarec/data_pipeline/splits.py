"""Time-ordered train / valid / eval splits shared by ``prepare criteo|movielens|taobao`` and ``synth``:
the checks of ``--eval-fraction`` and ``--valid-fraction`` and the global row-count cut of Criteo's files."""

from __future__ import annotations

import numpy as np

from terarec.data_pipeline.schema import DatasetError


def check_eval_fraction(eval_fraction: float) -> None:
    """``--eval-fraction`` must leave train rows: ``0 <= eval < 1``."""
    if not 0.0 <= eval_fraction < 1.0:
        raise DatasetError(f"--eval-fraction must be in [0, 1), got {eval_fraction}")


def check_valid_fraction(valid_fraction: float, eval_fraction: float) -> None:
    """``--valid-fraction`` must leave train rows: ``0 <= valid < 1 - eval``."""
    if not 0.0 <= valid_fraction < 1.0 - eval_fraction:
        raise DatasetError(
            f"--valid-fraction must be in [0, 1 - eval fraction) = [0, {1 - eval_fraction:g}), got {valid_fraction}"
        )


def split_lines(counts: list[int], eval_rows: int, valid_rows: int) -> tuple[list[int], list[int]]:
    """Per file (``counts``: its lines, files in time order), the last line of train and of valid when
    the last ``eval_rows`` lines of all files go to eval and the ``valid_rows`` before them to valid."""
    total = sum(counts)
    before = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)

    def local(cut: int) -> list[int]:  # a global line count -> each file's own line number
        return [int(min(max(cut - b, 0), n)) for b, n in zip(before, counts)]

    return local(total - eval_rows - valid_rows), local(total - eval_rows)
