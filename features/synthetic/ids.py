"""Vectorized construction of identifier and label columns as Arrow string arrays.

Building millions of Python strings is the slowest and most memory-hungry part of a naive
generator; here ids are written digit by digit into one byte buffer and wrapped as an Arrow
`string` array without any per-row Python.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa


def id_width(max_value: int, minimum: int = 6) -> int:
    """Number of digits needed to write integers up to `max_value` (at least `minimum`)."""
    return max(minimum, len(str(max(int(max_value), 0))))


def fixed_width_ids(prefix: str, numbers: np.ndarray, width: int) -> pa.StringArray:
    """Strings `prefix + zero-padded number`, e.g. `c000042`, for non-negative integers."""
    numbers = np.asarray(numbers, dtype=np.int64)
    n = len(numbers)
    head = prefix.encode("ascii")
    row = len(head) + width
    buf = np.empty((n, row), dtype=np.uint8)
    buf[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    rest = numbers.copy()
    for pos in range(row - 1, len(head) - 1, -1):
        buf[:, pos] = (rest % 10).astype(np.uint8) + ord("0")
        rest //= 10
    offsets = np.arange(0, (n + 1) * row, row, dtype=np.int32 if n * row < 2**31 else np.int64)
    arr_type = pa.string() if offsets.dtype == np.int32 else pa.large_string()
    return pa.Array.from_buffers(
        arr_type, n, [None, pa.py_buffer(offsets), pa.py_buffer(buf.reshape(-1))]
    )


def labels(codes: np.ndarray, values: tuple[str, ...] | list[str]) -> pa.Array:
    """String labels `values[code]`; a negative code gives a null."""
    codes = np.asarray(codes)
    mask = codes < 0
    indices = pa.array(np.where(mask, 0, codes).astype(np.int32), mask=mask if mask.any() else None)
    dictionary = pa.array(list(values), type=pa.string())
    return pa.DictionaryArray.from_arrays(indices, dictionary).dictionary_decode()


def arrow_column(arr: pa.Array) -> pd.api.extensions.ExtensionArray:
    """An Arrow array as a pandas column without copying."""
    return pd.arrays.ArrowExtensionArray(arr)


def seconds_to_datetime(seconds: np.ndarray) -> np.ndarray:
    """Epoch seconds as `datetime64[ns]` (the contract's timestamp dtype)."""
    return np.asarray(seconds, dtype=np.int64).astype("datetime64[s]").astype("datetime64[ns]")
