"""Read and write chip datasets.

A chip dataset is a folder with ``chips.npz`` (``rgb`` or ``pixels``: N×H×W×C, ``label``: N),
``chips.csv`` (one row per chip, same order: ``chip, source, label, start_date, end_date, clear, cell,
lon, lat`` and any extra columns) and an optional ``bands.json`` (a :class:`~minewatch.bands.BandSpec`).
Without ``bands.json``, an ``rgb`` array means Sentinel-2 L1C B4,B3,B2 rendered ``clip(DN/3000,0,1)*255``
— exactly the layout of the shared real chips.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from minewatch.atomic import atomic_path, write_json_atomic
from minewatch.bands import DEFAULT_RGB_SPEC, BandSpec
from minewatch.errors import MinewatchError


@dataclass
class ChipSet:
    """Chips in memory: pixels N×H×W×C (rendered model input values), labels N, metadata N rows."""

    pixels: np.ndarray
    labels: np.ndarray
    meta: pd.DataFrame
    spec: BandSpec
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> ChipSet:
        idx = np.asarray(idx)
        return ChipSet(self.pixels[idx], self.labels[idx], self.meta.iloc[idx].reset_index(drop=True), self.spec, self.path)


def load_chips(folder: str | Path) -> ChipSet:
    """Load a chip dataset folder, validating shapes, labels and values (one-line errors)."""
    folder = Path(folder)
    npz_path, csv_path = folder / "chips.npz", folder / "chips.csv"
    if not folder.is_dir():
        raise MinewatchError(folder, "chip dataset folder not found")
    if not npz_path.exists():
        raise MinewatchError(npz_path, "missing: a chip dataset needs chips.npz")
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            keys = set(z.files)
            key = "pixels" if "pixels" in keys else "rgb" if "rgb" in keys else None
            if key is None:
                raise MinewatchError(npz_path, f"no 'pixels' or 'rgb' array (found {sorted(keys)})")
            if "label" not in keys:
                raise MinewatchError(npz_path, "no 'label' array")
            pixels, labels = z[key], z["label"]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise MinewatchError(npz_path, f"unreadable npz ({e.__class__.__name__}: {e})") from None
    if pixels.ndim != 4:
        raise MinewatchError(npz_path, f"'{key}' must be N×H×W×C, got shape {pixels.shape}")
    if labels.shape != (pixels.shape[0],):
        raise MinewatchError(npz_path, f"'label' has shape {labels.shape}, expected ({pixels.shape[0]},)")
    if not np.isin(labels, (0, 1)).all():
        raise MinewatchError(npz_path, "'label' must contain only 0 and 1")
    if np.issubdtype(pixels.dtype, np.floating) and not np.isfinite(pixels).all():
        raise MinewatchError(npz_path, f"'{key}' contains NaN or infinite values")

    spec = DEFAULT_RGB_SPEC
    bands_path = folder / "bands.json"
    if bands_path.exists():
        try:
            spec = BandSpec.from_dict(json.loads(bands_path.read_text()))
        except (ValueError, TypeError) as e:
            raise MinewatchError(bands_path, f"invalid bands.json ({e})") from None
    if len(spec.bands) != pixels.shape[-1]:
        raise MinewatchError(npz_path, f"{pixels.shape[-1]} channels but bands.json names {len(spec.bands)} bands {spec.bands}")

    if csv_path.exists():
        meta = pd.read_csv(csv_path)
        if len(meta) != len(labels):
            raise MinewatchError(csv_path, f"{len(meta)} rows but chips.npz holds {len(labels)} chips")
        if "label" in meta and not (meta["label"].to_numpy() == labels).all():
            raise MinewatchError(csv_path, "'label' column disagrees with chips.npz")
    else:
        meta = pd.DataFrame({"chip": np.arange(len(labels)), "source": folder.name, "cell": np.arange(len(labels))})
    return ChipSet(pixels, labels.astype(np.uint8), meta, spec, folder)


def save_chips(chips: ChipSet, folder: str | Path) -> Path:
    """Write a chip dataset folder atomically (each file via temp + rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = "rgb" if chips.spec == DEFAULT_RGB_SPEC and chips.pixels.dtype == np.uint8 else "pixels"
    with atomic_path(folder / "chips.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **{key: chips.pixels, "label": chips.labels})
    with atomic_path(folder / "chips.csv") as tmp:
        chips.meta.to_csv(tmp, index=False)
    write_json_atomic(folder / "bands.json", chips.spec.to_dict())
    return folder
