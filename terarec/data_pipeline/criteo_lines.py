"""Blocks of well-formed raw Criteo lines -> typed columns, without a CSV reader.

pyarrow's CSV reader finds every field of a line and copies it into one of 40 string columns, which
``criteo_fields`` then reads back: about half of ``prepare criteo``'s CPU time. A Criteo line has a
fixed shape (40 tab-separated fields: a label of one digit, 13 dense integers, 26 ids of 0 or 8 hex
digits), so a block of whole lines is cut into fields with one numpy pass (the positions of its
bytes below 11: its tabs and newlines), and each field is read straight from the block as the 8
bytes at its start, gathered as uint64 from a strided view whose elements overlap (no per-field
copy), then checked and decoded with SWAR passes and the hex pair table of ``criteo_fields``.

Only blocks in which every row is good take this path: ``convert_lines`` returns None for a block
with anything else (a wrong field count, an empty line, CR or CRLF line ends, another control byte, a bad
value, a dense value longer than 8 bytes) and the caller parses that block with the CSV reader and
``convert_block``, which name its bad rows. The rows written are the same either way
(tests/unit/test_criteo_lines.py: both paths against each other and a plain-Python reference).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from terarec.data_pipeline.criteo_fields import HEX_DIGITS, OUTPUT_SCHEMA, PAIR_TABLE, four_digits, int64_columns
from terarec.data_pipeline.criteo_layout import DENSE_NAMES, SPARSE_NAMES
from terarec.data_pipeline.schema import DatasetError

FIELDS = 1 + len(DENSE_NAMES) + len(SPARSE_NAMES)
LINE_BLOCKS = 4  # a Criteo line is a few hundred bytes: no line end in this many blocks, it is not Criteo text
PAD = 8  # spare bytes after a block's lines: an 8-byte read at any field's start stays in the buffer
DENSE_BYTES = 8  # the longest dense value (minus included) this path reads; longer ones: the CSV path
_TAB, _NEWLINE, _CR, _MINUS = 9, 10, 13, ord("-")
BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark
_BYTES = np.uint64(0x0101010101010101)  # times a byte value: that byte in all 8 lanes
_HIGH = _BYTES * np.uint64(0x80)
_ASCII_ZEROS = _BYTES * np.uint64(ord("0"))
_ABOVE_NINE = _BYTES * np.uint64(0x80 - ord(":"))  # + this sets a lane's high bit iff the byte > "9"
_FROM_ZERO = _BYTES * np.uint64(0x80 - ord("0"))  # + this sets a lane's high bit iff the byte >= "0"
_NIBBLES = _BYTES * np.uint64(0x0F)
_HEX_ZEROS = np.uint64(int.from_bytes(b"0" * HEX_DIGITS, "little"))
# by length L (0..8): the low L bytes of a uint64 (a value's bytes, read little-endian from its start),
# and the shift that moves them to the top (the bytes below become leading zero digits)
_LOW_BYTES = pa.array(np.array([(1 << 8 * k) - 1 for k in range(9)], np.uint64))
_ALIGN = pa.array(np.array([8 * (8 - k) for k in range(9)], np.uint64))


def line_blocks(path: str, stream: pa.NativeFile, block_bytes: int) -> Iterator[tuple[np.ndarray, int]]:
    """The (decompressed) input as blocks of whole lines, ``block_bytes`` read at a time: (buffer, size),
    ``buffer[:size]`` the lines, each ending with a newline (or a CR, see below; a newline is added to a last
    line without one), and ``PAD`` spare bytes after them (``convert_lines`` reads 8 bytes at any field's start)."""
    carry = np.zeros(0, np.uint8)  # the unfinished line of the last read
    while chunk := stream.read(block_bytes):
        data = np.frombuffer(chunk, np.uint8)
        cut = _last_line_end(chunk, carry_ends_with_cr=bool(len(carry)) and carry[-1] == _CR)
        if cut is None:
            carry = np.concatenate([carry, data])
            if len(carry) > LINE_BLOCKS * block_bytes:
                raise DatasetError(f"{path}: no line end in {len(carry):,} bytes; is it Criteo's tab-separated text?")
            continue
        yield _padded(carry, data[:cut]), len(carry) + cut
        carry = data[cut:]
    if len(carry):
        yield _padded(carry, np.array([ord("\n")], np.uint8)), len(carry) + 1


def _last_line_end(chunk: bytes, carry_ends_with_cr: bool) -> int | None:
    """Where to cut a read: after its last newline; in a file of CR line ends (old Mac text), which only the
    CSV reader takes as line ends (such blocks fail ``convert_lines``' checks), after its last CR that does
    not end the read (a newline may follow it: a CRLF is one line end), or at 0 when the carry before it
    ends with a CR (this read has no newline, so that CR is a line end); None: no line end yet."""
    cut = (chunk.rfind(b"\n") + 1) or (chunk.rfind(b"\r", 0, len(chunk) - 1) + 1)
    return cut if cut else (0 if carry_ends_with_cr else None)


def reader_lines(block: np.ndarray, first: bool) -> tuple[np.ndarray, int]:
    """A block of whole lines (``line_blocks``) -> (the line of the block, 1-based, of each line the CSV
    reader numbers as a row, the block's line count). Lines end as the reader ends them (a newline, CRLF
    or a lone CR) and are counted as ``raw_files.count_lines`` counts them; the reader skips empty lines
    without numbering them, and drops a UTF-8 BOM at the start of the file (``first``: this block)."""
    newline, cr = block == ord("\n"), block == ord("\r")
    crlf = cr[:-1] & newline[1:]
    ends = np.flatnonzero(newline | (cr & ~np.append(crlf, False)))  # the byte that ends each line
    starts = np.concatenate([[0], ends[:-1] + 1])
    if first and bytes(block[:3]) == BOM and len(ends):
        starts[0] = min(3, int(ends[0]))
    stops = ends - np.append(False, crlf)[ends]  # a CRLF's line stops at its CR
    return np.flatnonzero(stops > starts) + 1, len(ends)


def _padded(head: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """``head`` then ``tail`` in one new buffer with ``PAD`` zero bytes after them."""
    buffer = np.empty(len(head) + len(tail) + PAD, np.uint8)
    buffer[: len(head)] = head
    buffer[len(head) : len(head) + len(tail)] = tail
    buffer[len(head) + len(tail) :] = 0
    return buffer


def convert_lines(buffer: np.ndarray, size: int) -> tuple[pa.Table, np.ndarray] | None:
    """``buffer[:size]``: whole raw lines, each ending with a newline, and ``PAD`` more bytes after them
    -> (the typed table (``OUTPUT_SCHEMA``) of its rows, their ids as one (26, rows) uint32 array), or
    None unless every line is a good row (then the CSV path handles the block)."""
    data = buffer[:size]
    ends = np.flatnonzero(data < 11)  # tabs and newlines; another byte below 11 breaks the pattern below
    if not len(ends) or len(ends) % FIELDS:
        return None
    rows = len(ends) // FIELDS
    separators = _take(pa.array(data), ends).reshape(rows, FIELDS)
    if not ((separators[:, :-1] == _TAB).all() and (separators[:, -1] == _NEWLINE).all()):
        return None
    # field by field (rows of (FIELDS, rows) arrays): each feature's gather below is one contiguous index
    last = np.ascontiguousarray(ends.reshape(rows, FIELDS).T)  # the byte after each field (its separator)
    starts = np.empty_like(last)
    np.add(last[:-1], 1, out=starts[1:])
    starts[0, 0] = 0
    np.add(last[-1, :-1], 1, out=starts[0, 1:])  # a line starts after the previous line's newline
    lengths = last - starts
    words = np.ndarray((size,), "<u8", buffer, 0, (1,))  # [i]: the 8 bytes from byte i, little-endian
    dense, sparse = slice(1, 1 + len(DENSE_NAMES)), slice(1 + len(DENSE_NAMES), FIELDS)
    labels = _labels(data, starts[0], lengths[0])
    if labels is None:  # each check returns at the first refusal: the CSV path reads the block anyway
        return None
    values = _dense(words, starts[dense], lengths[dense])
    if values is None:
        return None
    ids = _ids(words, starts[sparse], lengths[sparse])
    if ids is None:
        return None
    columns = [pa.array(labels), *int64_columns(*values, len(DENSE_NAMES)), *(pa.array(row) for row in ids)]
    return pa.Table.from_arrays(columns, schema=OUTPUT_SCHEMA), ids


def _labels(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray | None:
    """(rows,) int8 labels, or None unless every label is exactly "0" or "1"."""
    digit = data[starts] - np.uint8(ord("0"))  # uint8: wraps for bytes below "0"
    if (lengths != 1).any() or digit.max() > 1:
        return None
    labels: np.ndarray = digit.view(np.int8)
    return labels


def _dense(words: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(features, rows) field starts and lengths -> ((features * rows,) int64 values, their presence),
    column after column; None unless every value is empty or an optional minus then digits, at most
    ``DENSE_BYTES`` bytes in all."""
    if lengths.max() > DENSE_BYTES:
        return None
    value = words[starts]  # (features, rows) uint64: the value's bytes first, then whatever follows
    signed = np.flatnonzero((value.ravel() & np.uint64(0xFF)) == _MINUS)  # an empty value starts with a tab
    if len(signed):
        if (lengths.ravel()[signed] < 2).any():  # "-" alone
            return None
        value.ravel()[signed] ^= np.uint64(_MINUS ^ ord("0"))  # the minus read as a leading zero
    low = _take(_LOW_BYTES, lengths)
    value &= low
    digits = value | (_ASCII_ZEROS & ~low)  # the bytes after the value as "0": all 8 must be digits
    if (digits & _HIGH).any() or (((digits + _ABOVE_NINE) | ~(digits + _FROM_ZERO)) & _HIGH).any():
        return None
    value <<= _take(_ALIGN, lengths)  # right-aligned: the bytes shifted in are leading zeros
    value &= _NIBBLES
    parsed = four_digits(value.view(np.uint32)).reshape(*value.shape, 2).astype(np.int64)
    numbers = parsed[..., 0] * 10000 + parsed[..., 1]  # the first four digits, then the last four
    if len(signed):
        numbers.ravel()[signed] *= -1
    return numbers.ravel(), (lengths > 0).ravel()


def _ids(words: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray | None:
    """(features, rows) field starts and lengths -> (features, rows) uint32 ids (empty: 0), or None
    unless every value is empty or exactly 8 hex digits."""
    empty = lengths == 0
    if not (empty | (lengths == HEX_DIGITS)).all():
        return None
    value = words[starts]
    if empty.any():
        value[empty] = _HEX_ZEROS  # id 0, like an empty field
    # arrow's take on the uint16 digit pairs (see criteo_fields._decode_packed): 0xFFFF where not hex
    pairs = pc.take(PAIR_TABLE, pa.array(value.view("<u2").ravel()), boundscheck=False).to_numpy()
    if pairs.max() > 0xFF:
        return None
    ids: np.ndarray = pairs.astype(np.uint8).view(">u4").astype(np.uint32).reshape(starts.shape)
    return ids


def _take(values: pa.Array, indices: np.ndarray) -> np.ndarray:
    """``values[indices]`` (indices in bounds) in ``indices``' shape, read-only: arrow's take costs a
    quarter of numpy's fancy indexing per element here (callgrind)."""
    taken: np.ndarray = pc.take(values, pa.array(indices.ravel()), boundscheck=False).to_numpy()
    return taken.reshape(indices.shape)
