"""The embedding table as bundle files: float32, float16, or int8 with one float32 scale per row."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import OptionError
from .options import DTYPES



@dataclass
class EncodedVectors:
    """Arrays to write (bundle path → array), the manifest `embeddings` object and the table the runtime sees."""

    arrays: dict
    spec: dict
    dequantised: np.ndarray  # float32 [V, dim]


def quantise_int8(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8: scale = max|row| / 127 (0 for an all-zero row, e.g. padding)."""
    table = np.asarray(table, dtype=np.float32)
    scales = (np.abs(table).max(axis=1) / 127.0).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0).astype(np.float32)
    q = np.clip(np.rint(table / safe[:, None]), -127, 127).astype(np.int8)
    return q, scales


def encode(table: np.ndarray, dtype: str) -> EncodedVectors:
    """Encode the float32 table `[V, dim]` in `dtype` as docs/bundle.md "Vectors" specifies."""
    if dtype not in DTYPES:
        raise OptionError(f"vectors dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    table = np.ascontiguousarray(table, dtype=np.float32)
    dim = int(table.shape[1])
    if dtype == "int8":
        q, scales = quantise_int8(table)
        return EncodedVectors({"vectors.int8.npy": q, "vectors.scales.npy": scales},
                              {"dim": dim, "dtype": "int8", "file": "vectors.int8.npy",
                               "scales": "vectors.scales.npy"},
                              q.astype(np.float32) * scales[:, None])
    stored = table.astype(dtype)
    return EncodedVectors({"vectors.npy": stored}, {"dim": dim, "dtype": dtype, "file": "vectors.npy", "scales": None},
                          stored.astype(np.float32))
