"""L1C top-of-atmosphere → L2A surface-reflectance physics for RGB chips (NumPy only).

Why: the labelled chips are L1C, the account-free imagery is L2A. A first-order radiative model
(Rayleigh + Ångström aerosol + ozone, single scattering) gives the per-band path reflectance and
transmittance of an atmosphere, ``SR = (TOA − ρ_path)/T``. Training samples random atmospheres
(:mod:`minewatch.train.augment`); evaluation uses fixed ones (:func:`simulate_l2a`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Sentinel-2A MSI central wavelengths (nm) of the RGB chip bands, in chip order B4, B3, B2
# (ESA Sentinel-2 MSI spectral response, S2A).
RGB_WAVELENGTH_NM = {"B4": 664.6, "B3": 559.8, "B2": 492.4}
# Ozone (Chappuis band) absorption coefficients, (atm-cm)^-1, typical values at these bands.
OZONE_K = {"B4": 0.05, "B3": 0.10, "B2": 0.02}


def rayleigh_optical_depth(wavelength_nm: np.ndarray | float) -> np.ndarray:
    """Sea-level Rayleigh optical depth, Hansen & Travis (1974) eq. 2.29: ∝ λ^-4 with a dispersion term."""
    lam = np.asarray(wavelength_nm, dtype=np.float64) / 1000.0
    return 0.008569 * lam**-4 * (1 + 0.0113 * lam**-2 + 0.00013 * lam**-4)


@dataclass(frozen=True)
class Atmosphere:
    """One atmosphere + geometry; defaults are the fixed reference used for the simulated-L2A set.

    Defaults: aerosol optical depth at 550 nm 0.15 and Ångström exponent 1.3 (background
    Amazonian aerosol outside the burning season, e.g. AERONET Manaus/Alta Floresta climatologies;
    Ångström 1929 typical continental α≈1.3), single-scattering albedo 0.9 and Henyey–Greenstein
    asymmetry 0.65 (typical continental/biomass aerosol), 260 DU ozone (tropics), sun zenith 35°,
    view zenith 5° in backscatter geometry (relative azimuth 0°), typical of Sentinel-2 at 10° S.
    """

    aot550: float = 0.15
    angstrom: float = 1.3
    ssa: float = 0.9
    asymmetry: float = 0.65
    ozone_du: float = 260.0
    sun_zenith: float = 35.0
    view_zenith: float = 5.0
    rel_azimuth: float = 0.0

    def path_and_transmittance(self, bands: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per-band path reflectance ρ_path and two-way total transmittance T (single scattering).

        ρ_path = [τ_R·P_R(Θ) + ω·τ_a·P_HG(Θ)] / (4·μs·μv);
        T = exp(−(τ_R/2 + (1 − ω·(1+g)/2)·τ_a + τ_O3)·m), m = 1/μs + 1/μv: the direct beam plus the
        forward-scattered half of Rayleigh (Gordon et al. 1983 diffuse-transmittance approximation)
        and the forward fraction (1+g)/2 of aerosol scattering reach the sensor. A first-order model, good to ~10-20% of a full radiative
        transfer code for these thin tropical atmospheres — enough to produce the *look* of L2A.
        """
        lam = np.array([RGB_WAVELENGTH_NM[b] for b in bands])
        tau_r = rayleigh_optical_depth(lam)
        tau_a = self.aot550 * (lam / 550.0) ** (-self.angstrom)
        tau_o = np.array([OZONE_K[b] for b in bands]) * self.ozone_du / 1000.0
        mus, muv = math.cos(math.radians(self.sun_zenith)), math.cos(math.radians(self.view_zenith))
        cos_theta = -mus * muv + math.sin(math.radians(self.sun_zenith)) * math.sin(math.radians(self.view_zenith)) * math.cos(
            math.radians(self.rel_azimuth)
        )
        p_r = 0.75 * (1 + cos_theta**2)
        g = self.asymmetry
        p_a = (1 - g * g) / (1 + g * g - 2 * g * cos_theta) ** 1.5
        path = (tau_r * p_r + self.ssa * tau_a * p_a) / (4 * mus * muv)
        m = 1 / mus + 1 / muv
        trans = np.exp(-(tau_r / 2 + (1 - self.ssa * (1 + g) / 2) * tau_a + tau_o) * m)
        return path, trans


REFERENCE_ATMOSPHERE = Atmosphere()
HAZY_ATMOSPHERE = Atmosphere(aot550=0.4, angstrom=1.6, sun_zenith=45.0)
"""A harsher check: AOT550 0.4 with a fine-mode (smoke-like, α 1.6) aerosol, as in the Amazon
burning season, and a low sun (45°)."""


def simulate_l2a(rgb: np.ndarray, bands: list[str] | None = None, atmosphere: Atmosphere = REFERENCE_ATMOSPHERE, scale: float = 3000.0) -> np.ndarray:
    """Simulated-L2A version of rendered L1C chips (N×H×W×C uint8 or float) with a fixed atmosphere.

    The same arithmetic as the training transform (:func:`minewatch.train.augment.atmospheric_correction`,
    float32, round half to even) in NumPy, so evaluation needs no PyTorch. Returns uint8.
    """
    bands = bands or ["B4", "B3", "B2"]
    path, trans = atmosphere.path_and_transmittance(bands)
    toa = np.asarray(rgb, dtype=np.float32) * np.float32(scale / 255.0 / 1e4)
    sr = (toa - path.astype(np.float32)) / trans.astype(np.float32)
    out = np.clip(sr * np.float32(1e4 / scale), 0.0, 1.0) * np.float32(255.0)
    return np.round(out).astype(np.uint8)
