"""Batch augmentations for training, applied to rendered chips on the fly (torch, N×C×H×W, 0..255).

Label-preserving transforms of a 48 px chip:

* the 8 dihedral transforms (a mine seen from above has no "up");
* small integer shifts with reflect padding (the detector sees mines anywhere in a patch, on a
  24 px lattice);
* brightness/contrast (composite-to-composite exposure differences);
* an *atmospheric* transform for L1C→L2A robustness (:func:`atmospheric_correction`): the chips are
  L1C top-of-atmosphere reflectance with its blue haze, the account-free imagery is L2A surface
  reflectance. Instead of ad-hoc colour jitter we simulate the physics in DN space: undo the
  rendering (``DN ≈ rgb/255*3000``), remove a band-dependent path reflectance and divide by a
  band-dependent transmittance, ``SR = (TOA − ρ_path)/T``, with atmospheres sampled over realistic
  tropical ranges, then re-render. It is applied to only part of each batch so the model learns
  both looks of the same scene.

Randomness comes only from the ``torch.Generator`` passed in, so a training epoch is reproducible
from its seed (needed for resumable, deterministic training).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

# The physics is torch-free (evaluation uses it without the train extra); re-exported here.
from minewatch.train.atmosphere import (  # noqa: F401
    HAZY_ATMOSPHERE,
    OZONE_K,
    REFERENCE_ATMOSPHERE,
    RGB_WAVELENGTH_NM,
    Atmosphere,
    rayleigh_optical_depth,
    simulate_l2a,
)


def atmospheric_correction(
    x: torch.Tensor, path: torch.Tensor, trans: torch.Tensor, scale: float = 3000.0, quantize: bool = True
) -> torch.Tensor:
    """Rendered L1C (N×C×H×W, 0..255) → rendered surface reflectance with per-sample atmospheres.

    ``path``/``trans``: N×C reflectance and transmittance. DN = x/255·scale; SR = (DN/1e4 − path)/T;
    re-rendered with the same uint8 clip. Pixels saturated in L1C (255) stay an underestimate: the
    information above DN 3000 is gone, as it is in the real chips.
    """
    toa = x * (scale / 255.0 / 1e4)
    sr = (toa - path[:, :, None, None]) / trans[:, :, None, None]
    out = torch.clamp(sr * (1e4 / scale), 0.0, 1.0) * 255.0
    return torch.round(out) if quantize else out


@dataclass
class AugmentConfig:
    """What to apply and how strongly; recorded in the model card."""

    dihedral: bool = True
    shift_px: int = 4
    brightness: float = 0.10
    """Multiplicative gain range ±brightness (shared by all channels)."""
    contrast: float = 0.10
    """Contrast stretch about the chip mean ±contrast."""
    offset: float = 6.0
    """Additive offset range ±offset rendered units (shared by all channels)."""
    atmosphere_p: float = 0.4
    """Fraction of each batch given the L1C→L2A atmospheric transform (0 disables)."""
    aot550_range: tuple[float, float] = (0.03, 0.6)
    angstrom_range: tuple[float, float] = (0.6, 2.0)
    sun_zenith_range: tuple[float, float] = (15.0, 50.0)
    view_zenith_range: tuple[float, float] = (0.0, 12.0)
    ozone_range: tuple[float, float] = (220.0, 300.0)
    correction_strength: tuple[float, float] = (0.7, 1.15)
    """Fraction of the path reflectance removed: <1 under-corrects, >1 over-corrects (AOT errors)."""
    bands: list[str] = field(default_factory=lambda: ["B4", "B3", "B2"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> list[str]:
        out = []
        if self.dihedral:
            out.append("dihedral8")
        if self.shift_px:
            out.append(f"shift±{self.shift_px}px(reflect)")
        if self.brightness or self.contrast or self.offset:
            out.append(f"brightness±{self.brightness:g},contrast±{self.contrast:g},offset±{self.offset:g}")
        if self.atmosphere_p:
            out.append(
                f"atmospheric L1C→L2A p={self.atmosphere_p:g} (AOT550 {self.aot550_range}, Ångström {self.angstrom_range}, "
                f"SZA {self.sun_zenith_range}, strength {self.correction_strength})"
            )
        return out


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def dihedral_view(x: torch.Tensor, k: int) -> torch.Tensor:
    """Dihedral transform ``k`` (0..7) of NCHW ``x``: bit0 transpose, bit1 flip W, bit2 flip H."""
    if k & 1:
        x = x.transpose(2, 3)
    if k & 2:
        x = x.flip(3)
    if k & 4:
        x = x.flip(2)
    return x


def dihedral(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Apply dihedral transform ``k[i]`` (0..7) to sample i (square chips)."""
    out = torch.empty_like(x)
    for kk in range(8):
        idx = torch.nonzero(k == kk).flatten()
        if len(idx):
            out[idx] = dihedral_view(x[idx], kk)
    return out


def shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, max_px: int) -> torch.Tensor:
    """Translate each sample by (dy, dx) px with reflect padding (no new content invented)."""
    if max_px <= 0:
        return x
    h, w = x.shape[-2:]
    padded = torch.nn.functional.pad(x, (max_px,) * 4, mode="reflect")
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        y0, x0 = max_px + int(dy[i]), max_px + int(dx[i])
        out[i] = padded[i, :, y0 : y0 + h, x0 : x0 + w]
    return out


def sample_atmospheres(cfg: AugmentConfig, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """N random tropical atmospheres → (path N×C, transmittance N×C) as float32 tensors."""
    u = torch.rand(n, 7, generator=g).numpy().astype(np.float64)

    def lerp(col: int, rng: tuple[float, float]) -> np.ndarray:
        return rng[0] + (rng[1] - rng[0]) * u[:, col]

    # log-uniform AOT: clean days are common, hazy days rarer but present
    lo, hi = np.log(cfg.aot550_range[0]), np.log(cfg.aot550_range[1])
    aot = np.exp(lo + (hi - lo) * u[:, 0])
    paths, transes = [], []
    for i in range(n):
        atm = Atmosphere(
            aot550=float(aot[i]),
            angstrom=float(lerp(1, cfg.angstrom_range)[i]),
            sun_zenith=float(lerp(2, cfg.sun_zenith_range)[i]),
            view_zenith=float(lerp(3, cfg.view_zenith_range)[i]),
            ozone_du=float(lerp(4, cfg.ozone_range)[i]),
            rel_azimuth=float(180.0 * u[i, 5]),
        )
        p, t = atm.path_and_transmittance(cfg.bands)
        strength = cfg.correction_strength[0] + (cfg.correction_strength[1] - cfg.correction_strength[0]) * u[i, 6]
        paths.append(p * strength)
        transes.append(t)
    return torch.tensor(np.array(paths), dtype=torch.float32), torch.tensor(np.array(transes), dtype=torch.float32)


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Augment a batch of rendered chips N×C×H×W (float, 0..255); randomness from ``g`` only."""
    n = x.shape[0]
    x = x.float()
    if cfg.atmosphere_p > 0 and set(cfg.bands) <= set(RGB_WAVELENGTH_NM):
        sel = torch.rand(n, generator=g) < cfg.atmosphere_p
        idx = torch.nonzero(sel).flatten()
        if len(idx):
            path, trans = sample_atmospheres(cfg, len(idx), g)
            x = x.clone()
            x[idx] = atmospheric_correction(x[idx], path, trans)
    if cfg.dihedral:
        x = dihedral(x, torch.randint(0, 8, (n,), generator=g))
    if cfg.shift_px:
        s = cfg.shift_px
        x = shift(x, torch.randint(-s, s + 1, (n,), generator=g), torch.randint(-s, s + 1, (n,), generator=g), s)
    if cfg.brightness or cfg.contrast or cfg.offset:
        gain = _uniform(g, n, 1 - cfg.brightness, 1 + cfg.brightness)[:, None, None, None]
        con = _uniform(g, n, 1 - cfg.contrast, 1 + cfg.contrast)[:, None, None, None]
        off = _uniform(g, n, -cfg.offset, cfg.offset)[:, None, None, None]
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * con + mean) * gain + off
        x = x.clamp(0.0, 255.0)
    return x
