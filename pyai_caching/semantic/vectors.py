"""numpy, loaded on first use, and the vector helpers every index shares (pure).

numpy is an optional dependency (`pip install 'pyai-caching[semantic]'`): it is imported when the first
`SemanticCache` is built, never by `import pyai_caching`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vector = npt.NDArray[np.float32]

__all__ = ["EPSILON", "from_bytes", "normalize", "numpy", "to_bytes"]

EPSILON: Final = 1e-6
"""Float32 rounding: two identical prompts must reach a threshold of 1.0."""

_np: Any = None


def numpy() -> Any:
    """The numpy module; `ImportError` naming the extra to install when it is missing."""
    global _np
    if _np is None:
        try:
            import numpy
        except ImportError:
            raise ImportError(
                "SemanticCache needs numpy for its vector search: pip install 'pyai-caching[semantic]'"
            ) from None
        _np = numpy
    return _np


def normalize(values: Any) -> Vector | None:
    """The unit vector of `values` as float32, or `None` unless it is one finite, non-zero, non-empty vector."""
    np = numpy()
    try:
        vector = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if vector.ndim != 1 or vector.size == 0 or not np.all(np.isfinite(vector)):
        return None
    norm = float(np.linalg.norm(vector))
    if not norm > 0:
        return None
    result: Vector = (vector / norm).astype(np.float32)
    return result


def to_bytes(vector: Vector) -> bytes:
    """The vector as little-endian float32 bytes (the stored form, and what an item's signature covers)."""
    data: bytes = vector.astype("<f4").tobytes()
    return data


def from_bytes(data: bytes, dim: int) -> Vector | None:
    """A vector stored by `to_bytes`, or `None` unless it has `dim` dimensions."""
    np = numpy()
    try:
        vector: Vector = np.frombuffer(data, dtype="<f4").astype(np.float32)
    except ValueError:  # a length that is not a multiple of 4
        return None
    return vector if vector.shape == (dim,) else None
