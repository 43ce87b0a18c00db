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
PAIR_TABLE = pa.array(_PAIR)  # the same table for arrow's take
_NON_BYTE = np.uint64(0xFF00FF00FF00FF00)  # any of the 4 pair values of an id above 255: not hex


def _nulls_as_empty(column: pa.Array) -> pa.Array:
    """A string column with its nulls (if any) as empty strings: what :func:`_buffers` reads."""
    return pc.fill_null(column, "") if column.null_count else column


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
    pairs = pc.take(PAIR_TABLE, pa.array(data.view("<u2")), boundscheck=False).to_numpy()
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
    column = _nulls_as_empty(column)
    ids = np.empty(len(column), np.uint32) if out is None else out
    return ids, _decode_hex_buffers(*_buffers(column), ids[None])


def _decode_hex_buffers(offsets: np.ndarray, data: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``decode_hex`` on (offsets, data bytes) of k columns of n values, column after column (one
    column, or ``join_strings``' join): writes the (k, n) ids, returns the (k * n,) bad mask."""
    columns, n = ids.shape
    flat = ids.reshape(-1)
    lengths = np.diff(offsets)
    full = lengths == HEX_DIGITS
    filled = int(np.count_nonzero(full))
    not_hex: np.ndarray | None
    bad: np.ndarray
    # lengths are >= 0: the bytes are 8 per full value exactly when every other value is empty
    if int(offsets[-1]) - int(offsets[0]) != HEX_DIGITS * filled:
        bad = (lengths != 0) & ~full
        decoded, not_hex = _decode_gather(offsets, data, full)
        flat.fill(0)
        flat[full] = decoded
    else:  # only empty and 8-byte values: the 8-byte ones are contiguous in the data buffer
        bad = np.zeros(len(flat), bool)
        decoded, not_hex = _decode_packed(data[offsets[0] : offsets[-1]])
        # column c's ids are decoded[start:end], its bytes / 8; scattered only where it has empty values
        ends = (offsets[n::n] - offsets[0]) // HEX_DIGITS if n else np.zeros(columns, np.int32)
        start = 0
        for c, end in enumerate(ends.tolist()):
            if end - start == n:  # no empty value: no scatter
                ids[c] = decoded[start:end]  # (the byte swap of the big-endian view, in the one copy)
            else:
                ids[c].fill(0)
                ids[c][full[c * n : (c + 1) * n]] = decoded[start:end]
            start = end
    if not_hex is not None and not_hex.any():
        bad[np.flatnonzero(full)[not_hex]] = True
        flat[bad] = 0
    return bad


def decode_labels(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Label strings -> (int8 labels, bad-row mask): exactly "0" or "1" is good, anything else bad (label 0)."""
    offsets, data = _buffers(_nulls_as_empty(column))
    first = data[np.minimum(offsets[:-1], max(len(data) - 1, 0))] if len(data) else np.zeros(len(column), np.uint8)
    digit = first - np.uint8(ord("0"))  # uint8: wraps for bytes below "0"
    bad = (np.diff(offsets) != 1) | (digit > 1)
    return np.where(bad, 0, digit).astype(np.int8), bad


def dense_is_integer(column: pa.Array) -> np.ndarray:
    """(n,) bool: the value is empty or an optional minus then 1 to 18 digits (a null is not)."""
    offsets, data = _buffers(_nulls_as_empty(column))
    ok, _ = _integer_check(offsets, data[offsets[0] : offsets[-1]], np.diff(offsets))
    if column.null_count:
        ok &= column.is_valid().to_numpy(zero_copy_only=False)
    return ok


def _integer_check(offsets: np.ndarray, values: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ok, signed) of the values ``lengths[i]`` bytes each, back to back in ``values`` (``offsets``: as
    arrow's, from any start): ok (n,) bool as ``dense_is_integer``; signed: the indices of the good
    values that start with a minus."""
    # the usual column is digits only: two reductions, no byte-sized temporaries
    ok = lengths <= DENSE_DIGITS  # right for the values of digits only
    signed = np.zeros(0, np.intp)
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
        signed = signed[ok[signed]]
    return ok, signed


def dense_to_int64(column: pa.Array) -> pa.Array:
    """Validated dense strings (``dense_is_integer``) -> int64 with empty values null. Values of at most
    ``SWAR_DIGITS`` digits (the usual Criteo column) are parsed by ``_parse_digits``; a column with longer
    ones by arrow's cast, on the string buffers reused with a validity bitmap marking empty values null."""
    column = _nulls_as_empty(column)
    offsets, data = _buffers(column)
    lengths = np.diff(offsets)
    values = data[offsets[0] : offsets[-1]]
    parsed = _parse_digits(offsets, values, lengths, _integer_check(offsets, values, lengths)[1])
    if parsed is not None:
        return int64_columns(parsed, lengths > 0, 1)[0]
    present = lengths > 0
    # packed from bit ``column.offset % 8`` so that arrow's buffers are reused as they are, offset included
    shift = column.offset % 8
    if shift:
        present = np.concatenate([np.zeros(shift, bool), present])
    validity = pa.py_buffer(np.packbits(present, bitorder="little"))
    offsets_buffer = column.buffers()[1].slice(4 * (column.offset - shift))  # the whole buffer unless sliced
    raw = pa.StringArray.from_buffers(len(column), offsets_buffer, column.buffers()[2], validity, offset=shift)
    return pc.cast(raw, pa.int64())


def int64_columns(parsed: np.ndarray, present: np.ndarray, columns: int) -> list[pa.Array]:
    """(columns * n,) int64 values and their presence, column after column -> ``columns`` int64 arrays of
    n values, absent values null (buffers shared with ``parsed``: no copy)."""
    present = present.reshape(columns, -1)
    n = present.shape[1]
    validity = np.packbits(present, axis=1, bitorder="little")
    values = pa.py_buffer(parsed)
    # null counts left to arrow (a popcount of the bitmap when asked): numpy's count along an axis
    # converts every bool to an intp first
    return [
        pa.Array.from_buffers(pa.int64(), n, [pa.py_buffer(validity[c]), values.slice(8 * c * n, 8 * n)])
        for c in range(columns)
    ]


def join_strings(columns: list[pa.Array]) -> tuple[np.ndarray, np.ndarray]:
    """Non-null string columns of n values each -> (offsets, bytes) of one column of their
    ``len(columns) * n`` values, column after column: the numpy passes that follow run once per block,
    not once per column (each call costs thousands of instructions whatever its size)."""
    n = len(columns[0]) if columns else 0
    parts = [_buffers(column) for column in columns]
    sizes = [int(o[-1]) - int(o[0]) for o, _ in parts]
    offsets = np.empty(len(columns) * n + 1, np.int32)
    offsets[0] = 0
    values = np.empty(sum(sizes), np.uint8)
    base = 0
    for c, ((column_offsets, data), size) in enumerate(zip(parts, sizes)):
        np.subtract(column_offsets, int(column_offsets[0]) - base, out=offsets[c * n : (c + 1) * n + 1])
        values[base : base + size] = data[column_offsets[0] : column_offsets[-1]]
        base += size
    return offsets, values


# the low nibbles of a value's last min(k, 4) digits in the little-endian 4-byte word that ends with it
# (k = 0..8: a longer value's first digits come from the word before)
_NIBBLES = pa.array([0x0F0F0F0F & ~((1 << 8 * (4 - min(k, 4))) - 1) for k in range(9)], pa.uint32())
SWAR_DIGITS = 8  # digits a value may have for ``_parse_digits``: two 4-byte words


def _parse_digits(
    offsets: np.ndarray, values: np.ndarray, lengths: np.ndarray, signed: np.ndarray
) -> np.ndarray | None:
    """Validated integers (``_integer_check``'s ok values; ``signed``: those with a minus) of at most
    ``SWAR_DIGITS`` digits -> (n,) int64, empty -> 0; None when a value has more digits or a byte is
    above "9" (not validated). ``values``: value i is the ``lengths[i]`` bytes ending at
    ``offsets[i + 1] - offsets[0]``.

    Per value the 4 bytes that end with it are one little-endian uint32 (gathered by arrow's take from
    the overlapping words of the bytes), the bytes before its digits masked off and the digits summed in
    two multiply-shift-add rounds (SWAR); values of 5 to 8 digits add their first digits the same way
    from the 4 bytes before. A dozen vectorised uint32 passes per value whatever its length, against
    arrow's cast at ~100 instructions a value (callgrind)."""
    if not len(values):
        return np.zeros(len(lengths), np.int64)
    if values.max() > ord("9"):
        return None
    digits = lengths
    if len(signed):  # the minus is not a digit: the mask leaves it out
        digits = lengths.copy()
        digits[signed] -= 1
    longest = int(digits.max())
    if longest > SWAR_DIGITS:
        return None
    padded = np.zeros(len(values) + 4, np.uint8)  # 4 bytes before the first value: every word in bounds
    padded[4:] = values
    words = pa.array(
        np.ascontiguousarray(np.ndarray((len(values) + 1,), "<u4", padded, 0, (1,)))
    )  # [e]: bytes e-4..e-1
    ends = offsets[1:] - offsets[0] if offsets[0] else offsets[1:]
    parsed = _swar4(words, ends, digits).astype(np.int64)
    if longest > 4:  # the few longer values: their first 1 to 4 digits, from the word before
        longer = np.flatnonzero(digits > 4)
        parsed[longer] += _swar4(words, ends[longer] - 4, digits[longer] - 4).astype(np.int64) * 10000
    if len(signed):
        parsed[signed] = -parsed[signed]
    return parsed


def _swar4(words: pa.Array, ends: np.ndarray, digits: np.ndarray) -> np.ndarray:
    """The last ``min(digits[i], 4)`` digits before byte ``ends[i]`` as (n,) uint32: the word ending there
    (arrow's take: ~3x fewer instructions than numpy's), masked, then two SWAR rounds."""
    word: np.ndarray = pc.take(words, pa.array(ends), boundscheck=False).to_numpy()
    return four_digits(np.bitwise_and(word, pc.take(_NIBBLES, pa.array(digits), boundscheck=False).to_numpy()))


def four_digits(word: np.ndarray) -> np.ndarray:
    """uint32 words of four digit values (0..9) in bytes 0..3, byte 0 the most significant -> their number
    (0..9999), in place: two multiply-shift-add rounds (SWAR)."""
    high = np.right_shift(word, np.uint32(8))  # digit pairs into bytes 0 and 2
    word *= np.uint32(10)
    word += high
    word &= np.uint32(0x00FF00FF)
    np.right_shift(word, np.uint32(16), out=high)  # then the two pairs into the low 16 bits
    word *= np.uint32(100)
    word += high
    word &= np.uint32(0x0000FFFF)
    return word


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
    # the 13 dense columns checked (and, below, parsed) as one column of 13 * n values
    dense = [batch.column(i) for i in range(1, 1 + len(DENSE_NAMES))]
    dense = [_nulls_as_empty(col) for col in dense]
    offsets, values = join_strings(dense)
    lengths = np.diff(offsets)
    integer, signed = _integer_check(offsets, values, lengths)
    integer = integer.reshape(len(DENSE_NAMES), n)
    for i in range(len(DENSE_NAMES)):
        if batch.column(1 + i).null_count:  # a null is not an integer
            integer[i] &= batch.column(1 + i).is_valid().to_numpy(zero_copy_only=False)
    if not integer.all():
        for i, name in enumerate(DENSE_NAMES):
            flag(~integer[i], f"{name} is not an integer")
    # the 26 id columns decoded as one column of 26 * n values, straight into the block's id array
    sparse = [batch.column(1 + len(DENSE_NAMES) + j) for j in range(len(SPARSE_NAMES))]
    ids = np.empty((len(SPARSE_NAMES), n), np.uint32)
    not_hex = _decode_hex_buffers(*join_strings([_nulls_as_empty(col) for col in sparse]), ids).reshape(
        len(SPARSE_NAMES), n
    )
    if not_hex.any():
        for j, name in enumerate(SPARSE_NAMES):
            flag(not_hex[j], f"{name} is not 8 hex digits")
    parsed = None
    if bad.any():  # the usual block has no bad row: no filtering copies
        keep = pa.array(~bad)
        labels, dense, ids = labels[~bad], [pc.filter(col, keep) for col in dense], ids[:, ~bad]
    else:
        parsed = _parse_digits(offsets, values, lengths, signed)
    columns = [pa.array(labels)]
    if parsed is not None:
        columns += int64_columns(parsed, lengths > 0, len(DENSE_NAMES))
    else:  # bad rows filtered out (or values too long for the SWAR parse): column by column
        columns += [dense_to_int64(col) for col in dense]
    columns += [pa.array(row) for row in ids]
    return pa.Table.from_arrays(columns, schema=OUTPUT_SCHEMA), bad, reasons, ids
