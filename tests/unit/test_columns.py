"""Loader column transforms: dense fill + log1p and id reduction, against plain numpy references."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from terarec.data_pipeline.columns import dense_columns, pooled_empty, reduce_ids


def _reference_log1p(values: list, fill: float) -> np.ndarray:
    """log(1 + max(x, 0)) in float64, nulls as ``fill``, rounded once to float32."""
    x = np.array([fill if v is None else v for v in values], np.float64)
    return np.log1p(np.maximum(x, 0.0)).astype(np.float32)


VALUES = [0, 1, None, -5, 65535, 65536, 3_000_000_000, None, 7, 12345]


@pytest.mark.parametrize("arrow_type", [pa.int64(), pa.int32(), pa.uint64(), pa.uint32()])
@pytest.mark.parametrize("fill", [0.0, 2.0, 0.5])
def test_integer_log1p_is_exact_with_nulls_negatives_and_large_values(arrow_type: pa.DataType, fill: float) -> None:
    values = [v for v in VALUES if not (pa.types.is_unsigned_integer(arrow_type) and v is not None and v < 0)]
    if arrow_type.bit_width == 32:
        values = [v for v in values if v is None or abs(v) < 2**31]
    table = pa.table({"x": pa.array(values, arrow_type)})
    out = dense_columns(table, ["x"], fill, "log1p", None)
    assert out.dtype == np.float32 and out.shape == (1, len(values))
    np.testing.assert_array_equal(out[0], _reference_log1p(values, fill))  # table lookup == float64 log1p


def test_sliced_and_chunked_columns_read_their_own_rows() -> None:
    """Slices carry a non-zero offset into arrow's buffers and bitmaps; windows concatenate chunks."""
    base = pa.array(VALUES * 3, pa.int64())
    column = pa.chunked_array([base.slice(3, 11), base.slice(17, 9)])
    table = pa.table({"x": column})
    expected = _reference_log1p(VALUES * 3, 1.0)
    np.testing.assert_array_equal(
        dense_columns(table, ["x"], 1.0, "log1p", None)[0], np.concatenate([expected[3:14], expected[17:26]])
    )


def test_untransformed_integers_keep_a_fractional_fill() -> None:
    table = pa.table({"x": pa.array([1, None, -4], pa.int64())})
    np.testing.assert_array_equal(dense_columns(table, ["x"], 0.5, "none", None)[0], [1.0, 0.5, -4.0])


def test_float_columns_and_permutation() -> None:
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(2, 50)) * 100
    table = pa.table({"a": pa.array(raw[0], pa.float32()), "b": pa.array(raw[1].round(), pa.int64())})
    perm = rng.permutation(50)
    out = dense_columns(table, ["a", "b"], 0.0, "log1p", perm)
    assert out.shape == (2, 50)
    torch_reference = torch.log1p(torch.from_numpy(raw[0].astype(np.float32)).clamp(min=0)).numpy()
    np.testing.assert_allclose(out[0], torch_reference[perm], rtol=1e-6)
    np.testing.assert_array_equal(out[1], np.log1p(np.maximum(raw[1].round(), 0)).astype(np.float32)[perm])


@pytest.mark.parametrize("dtype", [np.uint32, np.int64, np.uint64])
def test_reduce_ids_is_a_modulo(dtype: type) -> None:
    rng = np.random.default_rng(1)
    high = 2**32 if dtype == np.uint32 else 2**62
    ids = rng.integers(0, high, 10_000, dtype=np.uint64).astype(dtype)
    if dtype == np.int64:
        ids[::7] *= -1
    for modulus in (1, 3, 1000, 40_000_000):
        reduced = reduce_ids(ids, modulus)
        assert reduced.dtype == ids.dtype
        np.testing.assert_array_equal(reduced, np.mod(ids, dtype(modulus)))
        assert reduced.min() >= 0 and reduced.max() < modulus


def test_reduce_ids_in_range_is_zero_copy_and_small_types_widen() -> None:
    ids = np.arange(10, dtype=np.uint32)
    assert reduce_ids(ids, 10) is ids
    np.testing.assert_array_equal(reduce_ids(np.array([-3, 5, 7], np.int8), 1000), [997, 5, 7])


def test_pooled_empty_is_writable_and_sized() -> None:
    a = pooled_empty((3, 4), np.float32)
    a[:] = 1.5
    assert a.shape == (3, 4) and a.flags.writeable and float(torch.from_numpy(a).sum()) == 18.0
    assert pooled_empty((5, 0), np.float32).shape == (5, 0)


def test_float_log1p_runs_serially_in_the_calling_thread_with_the_values_of_a_serial_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loader's prefetch threads call this: a torch op above its grain size (32768 elements)
    would start an OpenMP team in each of them. Values are those of a one-thread torch.log1p_."""
    x = (np.random.default_rng(0).standard_normal(100_003) * 1e3).astype(np.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = torch.log1p_(torch.from_numpy(x.copy()).clamp_(min=0.0)).numpy()
    finally:
        torch.set_num_threads(threads)
    sizes: list[int] = []
    log1p_ = torch.log1p_

    def counted(tensor: torch.Tensor) -> torch.Tensor:
        sizes.append(tensor.numel())
        return log1p_(tensor)

    monkeypatch.setattr(torch, "log1p_", counted)
    out = dense_columns(pa.table({"x": pa.array(x)}), ["x"], 0.0, "log1p", None)
    assert np.array_equal(out[0].view(np.int32), serial.view(np.int32))  # bit for bit
    assert sum(sizes) == len(x) and max(sizes) <= 32768
