"""Column transforms of the loader: dense fill + ``log1p`` and modulo reduction of raw ids.

These run on every row of every epoch, so each is written for throughput on numpy arrays (see
``benchmarks/loader_bench.py``), with the reasons for each choice beside it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import torch

# log1p of the integers 0..65535, correctly rounded to float32. Criteo-style dense features are
# counts, almost all small: a table lookup costs ~1.5 ns a value against ~4 ns for torch.log1p.
_LOG1P_TABLE_SIZE = 1 << 16
_LOG1P_TABLE = np.log1p(np.arange(_LOG1P_TABLE_SIZE, dtype=np.float64)).astype(np.float32)
# torch runs an elementwise op of fewer elements than its grain size (at::internal::GRAIN_SIZE)
# on the calling thread; a larger one starts an OpenMP team per calling thread, and the loader
# calls from up to 2 prefetch threads per stream. Chunks of this size (a multiple of every vector
# width) keep it serial and give the values of a serial call, bit for bit.
_TORCH_SERIAL_CHUNK = 32768


def pooled_empty(shape: tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
    """``np.empty`` from arrow's memory pool (mimalloc/jemalloc), which keeps freed pages mapped:
    the loader's per-batch arrays, allocated by glibc from worker threads, page-faulted on every
    batch instead (~2x the cost of filling them)."""
    kind = np.dtype(dtype)
    count = int(np.prod(shape))
    array: np.ndarray = np.frombuffer(pa.allocate_buffer(count * kind.itemsize), kind, count=count)
    return array.reshape(shape)


def filled(column: pa.ChunkedArray | pa.Array, fill: float) -> np.ndarray:
    """A numeric column as numpy, nulls filled (zero-copy when there are none)."""
    if column.null_count:
        column = pc.fill_null(column, fill)
    values: np.ndarray = column.to_numpy()
    return values


def dense_columns(
    table: pa.Table, names: list[str], fill: float, transform: str, perm: np.ndarray | None
) -> np.ndarray:
    """Dense columns -> feature-major ``F x rows`` float32 (contiguous column writes; a batch's
    values of one feature are one contiguous slice), rows in ``perm`` order when given.

    Nulls become ``fill``; ``transform="log1p"`` maps x to log(1 + max(x, 0)) (DLRM's transform).
    """
    columns = pooled_empty((len(names), table.num_rows), np.float32)
    dense_into([table.column(name) for name in names], fill, transform, columns)
    if perm is None:
        return columns
    permuted = pooled_empty(columns.shape, np.float32)
    np.take(columns, perm, axis=1, out=permuted, mode="clip")  # clip: no bounds pass
    return permuted


def dense_into(columns: list[pa.Array] | list[pa.ChunkedArray], fill: float, transform: str, out: np.ndarray) -> None:
    """``F`` equal-length dense columns -> ``out[j]`` (``F x rows`` float32, rows contiguous),
    transformed as ``dense_columns`` says."""
    for j, column in enumerate(columns):
        if pa.types.is_integer(column.type):
            _integer_column(column, fill, transform, out=out[j])
        else:
            out[j] = filled(column, fill)
            if transform == "log1p":  # torch's log1p is vectorised; numpy's float32 one is ~5x slower
                log1p_serial(out[j])


def log1p_serial(values: np.ndarray) -> None:
    """``values`` (1-D float32, contiguous) -> log(1 + max(x, 0)) in place, by torch's vectorised
    kernel on this thread only (see ``_TORCH_SERIAL_CHUNK``)."""
    tensor = torch.from_numpy(values)
    for start in range(0, len(values), _TORCH_SERIAL_CHUNK):
        torch.log1p_(tensor[start : start + _TORCH_SERIAL_CHUNK].clamp_(min=0.0))


def _integer_column(column: pa.ChunkedArray | pa.Array, fill: float, transform: str, out: np.ndarray) -> None:
    """An integer column -> float32 ``out``, nulls read as ``fill`` (which may be fractional).

    Values are read straight from arrow's buffers (no filled copy); null slots, whatever their
    buffer holds, are overwritten last. ``log1p`` is a table lookup (negatives clip to entry 0 =
    0.0); the rare values past the table are computed in float64.
    """
    null_value = np.log1p(max(fill, 0.0)) if transform == "log1p" else fill
    row = 0
    for chunk in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
        end = row + len(chunk)
        values = _raw_values(chunk)
        if transform == "log1p":
            np.take(_LOG1P_TABLE, values, out=out[row:end], mode="clip")
            if len(values) and values.max() >= _LOG1P_TABLE_SIZE:
                large = np.flatnonzero(values >= _LOG1P_TABLE_SIZE)
                out[row + large] = np.log1p(values[large].astype(np.float64))
        else:
            out[row:end] = values
        if chunk.null_count:
            valid = _validity(chunk)
            if null_value == 0.0:  # a multiply by 0/1 (values are finite) is ~3x cheaper than a scatter
                np.multiply(out[row:end], valid, out=out[row:end])
            else:
                out[row + np.flatnonzero(valid == 0)] = null_value
        row = end


def _validity(chunk: pa.Array) -> np.ndarray:
    """A chunk's validity bitmap as uint8 0/1 per row (~20x cheaper than ``is_null()``)."""
    bitmap = np.frombuffer(chunk.buffers()[0], np.uint8)
    return np.unpackbits(bitmap, count=chunk.offset + len(chunk), bitorder="little")[chunk.offset :]


def _raw_values(chunk: pa.Array) -> np.ndarray:
    """The values buffer of a primitive arrow array as numpy, null slots unspecified."""
    dtype = np.dtype(chunk.type.to_pandas_dtype())
    return np.frombuffer(chunk.buffers()[1], dtype, count=chunk.offset + len(chunk))[chunk.offset :]


def reduce_ids(ids: np.ndarray, modulus: int) -> np.ndarray:
    """Raw ids -> ``ids mod modulus`` in ``[0, modulus)``, in the ids' dtype; the input itself when
    every id is already in range (a min/max is ~10x cheaper than a modulo)."""
    if not len(ids) or (ids.max() < modulus and (ids.dtype.kind == "u" or ids.min() >= 0)):
        return ids
    if modulus > np.iinfo(ids.dtype).max:  # e.g. negative int8 ids for a 1000-row table
        ids = ids.astype(np.int64)
    # floor division by a scalar runs through libdivide, ~6x faster than np.remainder (a hardware
    # division per value); floor semantics also map negative ids into [0, modulus)
    divisor = ids.dtype.type(modulus)
    reduced: np.ndarray = ids // divisor
    reduced *= divisor
    np.subtract(ids, reduced, out=reduced)
    return reduced
