"""The one rule for a mask, wherever one enters (the OBS solve, the witness, the lowering, a request):
boolean, or integers that are all 0 or 1."""

from __future__ import annotations

import numpy as np


def as_bool_mask(mask, *, where: str = "") -> np.ndarray:
    """``mask`` as a bool array; ``ValueError`` (prefixed by ``where``, e.g. ``"layer 'fc1': "``) for other
    values. Shapes are the caller's to check: only it knows what the mask must cover."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask
    if (
        not (np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating))
        or not np.isin(mask, (0, 1)).all()
    ):
        raise ValueError(
            f"{where}mask must be boolean or 0/1, got dtype {mask.dtype} with values {np.unique(mask)[:5].tolist()}"
        )
    return mask.astype(bool)
