"""The dense columns' int64 parse (``criteo_fields.dense_to_int64``) against arrow's cast: the SWAR path
(values of up to 8 digits, a leading minus included) and the cast it falls back to (longer values)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from terarec.data_pipeline.criteo_fields import dense_is_integer, dense_to_int64


def _cast(column: pa.Array) -> pa.Array:
    """The reference: empty (or null) -> null, anything else parsed by arrow."""
    column = pc.fill_null(column, "")
    return pc.cast(pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column), pa.int64())


def _values(rng: np.random.Generator, rows: int, digits: int, minus: float, null: float) -> list[str | None]:
    values: list[str | None] = []
    for _ in range(rows):
        length = int(rng.integers(0, digits + 1))
        value = "".join(rng.choice(list("0123456789"), length)) if length else ""
        values.append(None if rng.random() < null else ("-" + value if value and rng.random() < minus else value))
    return values


@pytest.mark.parametrize("digits", [1, 3, 8, 9, 18])
@pytest.mark.parametrize("minus", [0.0, 0.1])
def test_dense_parse_equals_arrows_cast(digits: int, minus: float) -> None:
    rng = np.random.default_rng(digits)
    for _ in range(20):
        values = _values(rng, int(rng.integers(0, 200)), digits, minus, null=0.02)
        column = pa.array(values, pa.string())
        assert dense_is_integer(column).sum() == len(values) - column.null_count  # valid input, as prepare passes
        for part in (column, column.slice(3), column.slice(1, max(len(values) - 5, 0))):  # offsets not at 0
            parsed = dense_to_int64(part)
            assert parsed.equals(_cast(part)) and parsed.null_count == _cast(part).null_count


def test_dense_parse_extremes() -> None:
    values = ["", "0", "00000000", "99999999", "-99999999", "-0", "12345678", "-1", "", "7", "999999999999999999"]
    for column in (pa.array(values[:-1]), pa.array(values)):  # SWAR (8 digits at most), arrow's cast (18)
        assert dense_to_int64(column).to_pylist() == [None if v == "" else int(v) for v in column.to_pylist()]
    assert dense_to_int64(pa.array(["", ""])).to_pylist() == [None, None]
    assert dense_to_int64(pa.array([], pa.string())).to_pylist() == []
