"""Criteo's raw fields (all-string arrow columns) -> typed values, read on arrow's raw buffers.

Labels and dense integers are validated with a few numpy passes over the bytes instead of a regex
per column; dense values of up to 8 digits are parsed 4 or 8 bytes at a time (SWAR, ``_parse_digits``),
not by arrow's per-value cast. Categorical ids: Criteo's fields are either empty or exactly 8 hex digits, and arrow
stores a string column as one contiguous byte buffer, so in the usual case the non-empty values'
bytes are back to back: they are read as little-endian uint16 digit pairs, mapped through a
65536-entry table (pair -> byte value, or 0xFFFF for a non-hex pair) and the 4 bytes of each id
are read as one big-endian uint32. No per-value gather, no Python loop. Columns holding values of
any other length take the general (gather) path; those rows are rejected anyway. ``convert_block``
applies them to one CSV block: the typed table of its good rows (``OUTPUT_SCHEMA``) and why the others fail.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from terarec.data_pipeline.criteo_layout import DENSE_NAMES, LABEL, SPARSE_NAMES

HEX_DIGITS = 8
DENSE_DIGITS = 18  # at most 18 digits (and an optional minus): every such value fits int64
_INVALID = 255
HEX_ALPHABET = b"0123456789abcdef"  # the lowercase digits the raw logs write
_NIBBLE = np.full(256, _INVALID, np.uint8)  # byte -> its hex value; 255 for a non-hex byte
for _i, _c in enumerate(HEX_ALPHABET):
    _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _NIBBLE[_c] = 10 + _i


def _pair_table() -> np.ndarray:
    """uint16 (first char | second char << 8, as read little-endian) -> byte value, 0xFFFF if not hex."""
    first, second = np.meshgrid(np.arange(256), np.arange(256), indexing="xy")  # index = first + 256 * second
    high, low = _NIBBLE[first].astype(np.uint16), _NIBBLE[second].astype(np.uint16)
    table = (high << 4) | low
    table[(high == _INVALID) | (low == _INVALID)] = 0xFFFF
    return table.ravel()


_PAIR = _pair_table()
_PAIR_ARROW = pa.array(_PAIR)  # the same table for arrow's take
_NON_BYTE = np.uint64(0xFF00FF00FF00FF00)  # any of the 4 pair values of an id above 255: not hex


def _buffers(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets of length n + 1, data bytes) of a non-null string array: views of arrow's buffers, the
    offsets int32 as arrow stores them (no widening copy: 53 columns a block)."""
    offsets = np.frombuffer(column.buffers()[1], np.int32)[column.offset : column.offset + len(column) + 1]
    data = column.buffers()[2]
    return offsets, (np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8))


def _decode_packed(data: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Back-to-back 8-byte hex values (k * 8 bytes) -> (k big-endian ids (a ``>u4`` view), k not-hex
    flags or None when every pair is hex)."""
    # (k * 4,) byte values, 0xFFFF where a pair is not hex. arrow's take reads the uint16 indices as
    # they are; numpy's take first widens them to intp (8 bytes written and read again per pair):
    # 2.5x fewer instructions for the lookup (callgrind), a third of them for the whole decode
    if data.ctypes.data % 2:  # a sliced column starting at an odd byte: arrow wants aligned uint16
        data = data.copy()
    # no bounds check: every uint16 indexes the 65536-entry table
    pairs = pc.take(_PAIR_ARROW, pa.array(data.view("<u2")), boundscheck=False).to_numpy()
    # one reduction in the usual all-hex case instead of a masked uint64 temporary and a comparison
    not_hex = (pairs.view(np.uint64) & _NON_BYTE) != 0 if len(pairs) and pairs.max() > 0xFF else None
    return pairs.astype(np.uint8).view(">u4"), not_hex


def _decode_gather(offsets: np.ndarray, data: np.ndarray, full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The general path: gathers the bytes of the 8-character values ``full`` wherever they lie."""
    starts = offsets[:-1][full]
    digits = _NIBBLE[data[starts[:, None] + np.arange(HEX_DIGITS)]]
    weights = (16 ** np.arange(HEX_DIGITS - 1, -1, -1)).astype(np.uint64)
    return (digits.astype(np.uint64) @ weights).astype(np.uint32), (digits == _INVALID).any(axis=1)


def decode_hex(column: pa.Array, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """8-hex-digit strings (either case) -> (uint32 ids, bad-row mask), both of shape (n,).

    Empty or null -> id 0 (torchrec's convention), not bad; any other length or a non-hex digit ->
    id 0 and bad. ``out``: a (n,) uint32 array the ids are written to (and returned), e.g. a row of
    a block's id array: the decoded ids are copied once, straight into it."""
    if column.null_count:
        column = pc.fill_null(column, "")
    ids = np.empty(len(column), np.uint32) if out is None else out
    offsets, data = _buffers(column)
    lengths = np.diff(offsets)
    full = lengths == HEX_DIGITS
    filled = int(np.count_nonzero(full))
    decoded: np.ndarray
    not_hex: np.ndarray | None
    # lengths are >= 0: the bytes are 8 per full value exactly when every other value is empty
    if int(offsets[-1]) - int(offsets[0]) != HEX_DIGITS * filled:
        bad = (lengths != 0) & ~full
        decoded, not_hex = _decode_gather(offsets, data, full)
    else:  # only empty and 8-byte values: the 8-byte ones are contiguous in the data buffer
        bad = np.zeros(len(column), bool)
        decoded, not_hex = _decode_packed(data[offsets[0] : offsets[-1]])
    if filled == len(column):  # no empty value: no scatter
        ids[:] = decoded  # (the byte swap of the big-endian view, in the one copy)
    else:
        ids.fill(0)
        ids[full] = decoded
    if not_hex is not None and not_hex.any():
        bad[np.flatnonzero(full)[not_hex]] = True
        ids[bad] = 0
    return ids, bad


def decode_labels(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Label strings -> (int8 labels, bad-row mask): exactly "0" or "1" is good, anything else bad (label 0)."""
    offsets, data = _buffers(pc.fill_null(column, "") if column.null_count else column)
    first = data[np.minimum(offsets[:-1], max(len(data) - 1, 0))] if len(data) else np.zeros(len(column), np.uint8)
    digit = first - np.uint8(ord("0"))  # uint8: wraps for bytes below "0"
    bad = (np.diff(offsets) != 1) | (digit > 1)
    return np.where(bad, 0, digit).astype(np.int8), bad


def dense_is_integer(column: pa.Array) -> np.ndarray:
    """(n,) bool: the value is empty or an optional minus then 1 to 18 digits (a null is not)."""
    offsets, data = _buffers(pc.fill_null(column, "") if column.null_count else column)
    lengths = np.diff(offsets)
    values = data[offsets[0] : offsets[-1]]
    # the usual column is digits only: two reductions, no byte-sized temporaries
    ok = lengths <= DENSE_DIGITS  # right for the values of digits only
    if len(values) and (values.min() < ord("0") or values.max() > ord("9")):
        # the few non-digit bytes (e.g. the minus of I2's -1): a minus that starts a value of 2 to 19
        # bytes is fine once; any other makes its value bad
        where = np.flatnonzero((values - np.uint8(ord("0"))) > 9)
        starts = offsets[:-1] - offsets[0]
        row = np.searchsorted(starts, where, side="right") - 1  # the (non-empty) value holding the byte
        leading_minus = (values[where] == ord("-")) & (starts[row] == where)
        signed = row[leading_minus]
        ok[signed] = (lengths[signed] >= 2) & (lengths[signed] <= DENSE_DIGITS + 1)
        ok[row[~leading_minus]] = False
    if column.null_count:
        ok &= column.is_valid().to_numpy(zero_copy_only=False)
    return ok


def dense_to_int64(column: pa.Array) -> pa.Array:
    """Validated dense strings (``dense_is_integer``) -> int64 with empty values null. Values of at most
    ``SWAR_DIGITS`` digits (the usual Criteo column) are parsed by ``_parse_digits``; a column with longer
    ones by arrow's cast, on the string buffers reused with a validity bitmap marking empty values null."""
    if column.null_count:
        column = pc.fill_null(column, "")
    offsets, data = _buffers(column)
    lengths = np.diff(offsets)
    present = lengths > 0
    parsed = _parse_digits(offsets, data[offsets[0] : offsets[-1]], lengths, present)
    if parsed is not None:
        validity = pa.py_buffer(np.packbits(present, bitorder="little"))
        nulls = len(column) - int(np.count_nonzero(present))
        return pa.Array.from_buffers(pa.int64(), len(column), [validity, pa.py_buffer(parsed)], null_count=nulls)
    # packed from bit ``column.offset % 8`` so that arrow's buffers are reused as they are, offset included
    shift = column.offset % 8
    if shift:
        present = np.concatenate([np.zeros(shift, bool), present])
    validity = pa.py_buffer(np.packbits(present, bitorder="little"))
    offsets_buffer = column.buffers()[1].slice(4 * (column.offset - shift))  # the whole buffer unless sliced
    raw = pa.StringArray.from_buffers(len(column), offsets_buffer, column.buffers()[2], validity, offset=shift)
    return pc.cast(raw, pa.int64())


SWAR_DIGITS = 8  # digits a value may have for ``_parse_digits``: one 8-byte word
# (shift, scale, mask) of the SWAR rounds: digit pairs into bytes 0, 2, 4, 6; quads into 16-bit lanes 0
# and 2; all 8 digits into the low 32 bits. A 4-byte word takes the first two (masks cut to 32 bits)
_ROUNDS = [(8, 10, 0x00FF00FF00FF00FF), (16, 100, 0x0000FFFF0000FFFF), (32, 10000, 0x00000000FFFFFFFF)]
# per word width: digits of a value -> the low nibbles of those digits in the word that ends with it
_NIBBLES = {
    width: pa.array(
        [0x0F0F0F0F0F0F0F0F & ((1 << 8 * width) - 1) & ~((1 << 8 * (width - k)) - 1) for k in range(width + 1)],
        pa.uint32() if width == 4 else pa.uint64(),
    )
    for width in (4, 8)
}


def _parse_digits(
    offsets: np.ndarray, values: np.ndarray, lengths: np.ndarray, present: np.ndarray
) -> np.ndarray | None:
    """Validated integers of at most ``SWAR_DIGITS`` digits -> (n,) int64 (empty -> 0), or None when a
    value has more digits. ``values``: the column's bytes, value i the ``lengths[i]`` bytes ending at
    ``offsets[i + 1] - offsets[0]``; ``present``: ``lengths > 0``.

    Per value, the 4 bytes (8 when a value of the column has more than 4 digits) that end with it are
    one little-endian word, gathered by arrow's take from the column's overlapping words; the bytes
    before its digits are masked off (its minus too) and the digits summed in two or three
    multiply-shift-add rounds (SWAR): about a dozen vectorised passes per value whatever its length,
    against arrow's cast at ~100 instructions a value (callgrind)."""
    if not len(values) or values.max() > ord("9"):
        return None
    # 8 bytes before the first value (every word in bounds) and one after (a start index for empty values)
    padded = np.zeros(len(values) + 9, np.uint8)
    padded[8:-1] = values
    negative = None
    if values.min() < ord("0"):  # validated: a minus that starts its value (e.g. I2's -1)
        negative = (padded.take(offsets[:-1] - (offsets[0] - 8)) == ord("-")) & present
        lengths = lengths - negative
    longest = int(lengths.max())
    if longest > SWAR_DIGITS:
        return None
    width = 4 if longest <= 4 else 8
    dtype = np.dtype(f"<u{width}")
    words = np.ndarray((len(values) + 1,), dtype, padded, 8 - width, (1,))  # words[e]: the bytes ending at e
    # arrow's take: ~4x fewer instructions than numpy's, which also copies the strided words first
    ends = pa.array(offsets[1:] - offsets[0])
    gathered = pc.take(pa.array(np.ascontiguousarray(words)), ends, boundscheck=False).to_numpy()
    digits = pc.take(_NIBBLES[width], pa.array(lengths), boundscheck=False).to_numpy()
    word = np.bitwise_and(gathered, digits)  # the digits right-aligned in the word, zeros before them
    high = np.empty_like(word)
    for shift, scale, keep in _ROUNDS[: 2 if width == 4 else 3]:  # pairs, then quads, then all 8
        np.right_shift(word, dtype.type(shift), out=high)
        word *= dtype.type(scale)
        word += high
        word &= dtype.type(keep & ((1 << 8 * width) - 1))
    parsed: np.ndarray = word.astype(np.int64) if width == 4 else word.view(np.int64)
    if negative is not None:
        np.negative(parsed, out=parsed, where=negative)
    return parsed


def field_text(column: pa.Array, row: int) -> str:
    """A raw field for the rejects file; bytes that are not UTF-8 (never checked) become U+FFFD."""
    if not column[row].is_valid:
        return ""
    offsets = np.frombuffer(column.buffers()[1], np.int32)[column.offset + row : column.offset + row + 2]
    data = column.buffers()[2]
    return bytes(data[offsets[0] : offsets[1]]).decode("utf-8", "replace") if data is not None else ""


# label and ids are never null (a missing id is 0): non-nullable columns carry no definition levels
OUTPUT_SCHEMA = pa.schema(
    [pa.field(LABEL, pa.int8(), nullable=False)]
    + [pa.field(n, pa.int64()) for n in DENSE_NAMES]
    + [pa.field(n, pa.uint32(), nullable=False) for n in SPARSE_NAMES]
)


def convert_block(batch: pa.RecordBatch) -> tuple[pa.Table, np.ndarray, list[str], np.ndarray]:
    """All-string block -> typed table of the good rows, bad-row mask, per-row reasons, and the good
    rows' categorical ids as one (26, good rows) uint32 array (for the distinct counts)."""
    n = batch.num_rows
    bad = np.zeros(n, bool)
    reasons = [""] * n

    def flag(mask: np.ndarray, what: str) -> None:
        if not mask.any():  # the usual case: 40 columns a block, no bad value
            return
        for i in np.flatnonzero(mask & ~bad):
            reasons[i] = what
        bad[mask] = True

    labels, not_label = decode_labels(batch.column(0))
    flag(not_label, "label is not 0 or 1")
    dense = []
    for i, name in enumerate(DENSE_NAMES, start=1):
        col = batch.column(i)
        flag(~dense_is_integer(col), f"{name} is not an integer")
        dense.append(col)
    ids = np.empty((len(SPARSE_NAMES), n), np.uint32)
    for j, name in enumerate(SPARSE_NAMES):
        _, mask = decode_hex(batch.column(1 + len(DENSE_NAMES) + j), out=ids[j])
        flag(mask, f"{name} is not 8 hex digits")
    if bad.any():  # the usual block has no bad row: no filtering copies
        keep = pa.array(~bad)
        labels, dense, ids = labels[~bad], [pc.filter(col, keep) for col in dense], ids[:, ~bad]
    columns = [pa.array(labels)]
    columns += [dense_to_int64(col) for col in dense]
    columns += [pa.array(row) for row in ids]
    return pa.Table.from_arrays(columns, schema=OUTPUT_SCHEMA), bad, reasons, ids
