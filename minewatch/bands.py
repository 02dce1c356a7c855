"""Band sets and renderings: how digital numbers (DN) become a model's input.

The labelled chips are Sentinel-2 L1C bands B4, B3, B2 rendered as ``uint8 = clip(DN/3000, 0, 1)*255``
(Earth Genome, Amazon Mining Watch). A model is only valid on imagery rendered the same way, so the
rendering travels with chip datasets (``bands.json``) and model cards, and ``render`` is the single
place where DN become model input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

S2_BANDS_12 = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"]
S2_BANDS_13 = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
RGB_BANDS = ["B4", "B3", "B2"]


@dataclass(frozen=True)
class Rendering:
    """DN → model input.

    ``kind="uint8_clip"``: ``round(clip(DN/scale, 0, 1) * 255)`` (as float32 0..255 for the model);
    ``kind="linear"``: ``DN * scale + offset`` as float32 (e.g. ``scale=1e-4`` for reflectance).
    """

    kind: str = "uint8_clip"
    scale: float = 3000.0
    offset: float = 0.0

    def apply(self, dn: np.ndarray) -> np.ndarray:
        """Render DN (any numeric dtype, bands last) to float32 model input."""
        x = np.asarray(dn, dtype=np.float32)
        if self.kind == "uint8_clip":
            return np.round(np.clip(x / self.scale, 0.0, 1.0) * 255.0).astype(np.float32)
        if self.kind == "linear":
            return (x * self.scale + self.offset).astype(np.float32)
        raise ValueError(f"unknown rendering kind {self.kind!r}")

    def invert(self, x: np.ndarray) -> np.ndarray:
        """Approximate DN from rendered values (exact below saturation for ``uint8_clip``)."""
        x = np.asarray(x, dtype=np.float32)
        if self.kind == "uint8_clip":
            return x / 255.0 * self.scale
        return (x - self.offset) / self.scale


@dataclass(frozen=True)
class BandSpec:
    """Which bands, in which order, rendered how; the contract between data and model."""

    bands: list[str] = field(default_factory=lambda: list(RGB_BANDS))
    rendering: Rendering = field(default_factory=Rendering)
    level: str = "L1C"
    """Processing level the pixels come from: ``L1C`` (top of atmosphere) or ``L2A`` (surface)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BandSpec:
        r = d.get("rendering", {})
        return cls(bands=list(d.get("bands", RGB_BANDS)), rendering=Rendering(**r), level=d.get("level", "L1C"))

    def check_compatible(self, other: BandSpec, where: str) -> None:
        """Raise a one-line error when two band specs disagree (bands, order or rendering)."""
        from minewatch.errors import MinewatchError

        if self.bands != other.bands:
            raise MinewatchError(where, f"band mismatch: model expects {self.bands}, data has {other.bands}")
        if self.rendering != other.rendering:
            raise MinewatchError(where, f"rendering mismatch: model expects {self.rendering}, data has {other.rendering}")


DEFAULT_RGB_SPEC = BandSpec()
