"""Cloud masking, harmonisation and the per-pixel median: pure numpy on in-memory blocks.

Everything here takes arrays and returns arrays; :mod:`minewatch.imagery.load` feeds it Dask blocks
(one spatial chunk, all observations) through :func:`composite_block`.

Conventions: DN are ``uint16`` with 0 = nodata; stacks are ``(time, band, y, x)``; masks are
``(time, y, x)`` booleans, True = clear (usable).

An observation is *usable* at a pixel when its cloud mask says clear **and** every output band has
data there (DN > 0 after harmonisation). The composite is the per-band median over usable
observations, rounded half-to-even to an integer DN (exactly ``numpy.round(numpy.nanmedian(...))``);
pixels with no usable observation are 0 (nodata). The clear count is the number of usable
observations per pixel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

from minewatch.imagery.plan import MASK_S2CLOUDLESS, MASK_SCENE, MASK_SCL, MASK_THRESHOLD, S2CLOUDLESS_BANDS

SCL_CLEAR = (4, 5, 6, 7, 11)
"""Sen2Cor scene classes kept as clear: 4 vegetation, 5 not vegetated (bare soil, sand: mining
sites), 6 water (mining ponds), 7 unclassified, 11 snow/ice. Dropped: 0 no data, 1 saturated or
defective, 2 dark area / topographic shadow, 3 cloud shadow, 8 cloud medium probability, 9 cloud
high probability, 10 thin cirrus."""

THRESHOLD_BLUE = 1800
"""Fallback L1C rule: a pixel is cloud when blue (B2) DN > 1800 (TOA reflectance 0.18) …"""
THRESHOLD_WHITENESS = 0.85
"""… and blue ≥ 0.85 × red (B4): clouds are white or bluish, bright sand and tailings are red-shifted."""
THRESHOLD_CIRRUS = 120
"""… or, when B10 is loaded, cirrus DN > 120 (TOA reflectance 0.012, Sen2Cor's thin-cirrus floor)."""

S2CLOUDLESS_THRESHOLD = 0.4
S2CLOUDLESS_AVERAGE_OVER = 4
S2CLOUDLESS_DILATION = 2


def harmonise(dn: np.ndarray, offset: int) -> np.ndarray:
    """Subtract the baseline offset from valid DN, clamping at 1 so that 0 stays nodata.

    ``dn`` uint16 of any shape; returns uint16 of the same shape (a new array unless offset is 0).
    """
    dn = np.asarray(dn)
    if offset == 0:
        return dn
    if dn.dtype != np.uint16:
        out = dn.astype(np.int32) - int(offset)
        np.maximum(out, 1, out=out)
        out[dn == 0] = 0
        return out.astype(np.uint16)
    out = np.maximum(dn, np.uint16(offset + 1))  # uint16 throughout: max(d - off, 1) without a wider copy
    out -= np.uint16(offset)
    out[dn == 0] = 0
    return out


def scl_clear(scl: np.ndarray, clear_classes: Sequence[int] = SCL_CLEAR) -> np.ndarray:
    """True where the Scene Classification Layer holds a clear class."""
    return np.isin(scl, np.asarray(clear_classes, dtype=scl.dtype if scl.dtype.kind in "iu" else np.int64))


def scene_mask_clear(mask: np.ndarray) -> np.ndarray:
    """True where a catalog's scene cloud mask is 0 (clear); any non-zero class (opaque cloud,
    cirrus, …) is not clear. Nodata in the mask itself reads as clear: the band data decide."""
    return np.asarray(mask) == 0


def threshold_clear(blue: np.ndarray, red: np.ndarray, cirrus: np.ndarray | None = None) -> np.ndarray:
    """The documented fallback L1C cloud rule on harmonised TOA DN: True where clear.

    cloud = (B2 > :data:`THRESHOLD_BLUE` and B2 ≥ :data:`THRESHOLD_WHITENESS` × B4)
    or (B10 > :data:`THRESHOLD_CIRRUS`). It catches bright opaque cloud and thin cirrus; it does
    not detect cloud shadows (the median over many observations is what removes them) and may
    miss thin cloud over dark forest — prefer the SCL (L2A) or s2cloudless where available.
    """
    b = np.asarray(blue, dtype=np.float32)
    r = np.asarray(red, dtype=np.float32)
    cloud = (b > THRESHOLD_BLUE) & (b >= THRESHOLD_WHITENESS * r)
    if cirrus is not None:
        cloud |= np.asarray(cirrus) > THRESHOLD_CIRRUS
    return ~cloud


def s2cloudless_available() -> bool:
    """True when the optional ``s2cloudless`` package (LightGBM) imports cleanly."""
    try:
        import s2cloudless  # noqa: F401
    except Exception:  # ImportError, or a broken binary dependency (lightgbm, OpenCV)
        return False
    return True


def s2cloudless_clear(stack: np.ndarray) -> np.ndarray:
    """True where s2cloudless says clear. ``stack``: (time, 10, y, x) harmonised L1C DN in
    :data:`~minewatch.imagery.plan.S2CLOUDLESS_BANDS` order; nodata pixels come out clear (the
    band data exclude them anyway)."""
    from s2cloudless import S2PixelCloudDetector

    det = S2PixelCloudDetector(
        threshold=S2CLOUDLESS_THRESHOLD,
        average_over=S2CLOUDLESS_AVERAGE_OVER,
        dilation_size=S2CLOUDLESS_DILATION,
        all_bands=False,
    )
    refl = np.moveaxis(stack, 1, -1).astype(np.float32) / 10000.0
    return ~det.get_cloud_masks(refl).astype(bool)


def median_composite(stack: np.ndarray, clear: np.ndarray, overwrite: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel median of usable observations and their count.

    Parameters
    ----------
    stack : (T, B, Y, X) uint16 harmonised DN, 0 = nodata.
    clear : (T, Y, X) bool, True where the cloud mask says clear.
    overwrite : reuse ``stack``'s memory for the sort (it is left scrambled); saves one copy.

    Returns
    -------
    median : (B, Y, X) uint16, 0 where no observation is usable.
    count : (Y, X) uint16 number of usable observations.

    Cost: one uint16 sort along time; memory 1 × the stack with ``overwrite`` (2 × without). It is
    exact: equal to ``round(nanmedian)`` (half to even) of the same values, without floating point.
    """
    stack = np.asarray(stack, dtype=np.uint16)
    usable = np.asarray(clear, dtype=bool) & (stack > 0).all(axis=1)
    count = usable.sum(axis=0, dtype=np.int64)
    if stack.shape[0] == 0:
        return np.zeros(stack.shape[1:], np.uint16), np.zeros(stack.shape[2:], np.uint16)
    filled = stack if overwrite else stack.copy()
    unusable = ~usable
    for b in range(filled.shape[1]):
        filled[:, b][unusable] = np.iinfo(np.uint16).max
    filled.sort(axis=0)  # unusable (max) values sort to the end
    n = count[None]
    lo_i = np.maximum(n - 1, 0) // 2
    hi_i = np.minimum(n // 2, filled.shape[0] - 1)
    med = np.empty(filled.shape[1:], np.uint16)
    for b in range(filled.shape[1]):  # band by band: small temporaries
        fb = filled[:, b]
        lo = np.take_along_axis(fb, lo_i, axis=0)[0].astype(np.uint32)
        hi = np.take_along_axis(fb, hi_i, axis=0)[0].astype(np.uint32)
        s = lo + hi
        half = s // 2
        mb = half + ((s % 2) & (half % 2))  # .5 rounds to the even neighbour, like numpy.round
        mb[count == 0] = 0
        med[b] = mb
    return med, count.astype(np.uint16)


@functools.lru_cache(maxsize=None)
def merge_exchange_pairs(n: int) -> tuple[tuple[int, int], ...]:
    """Comparators (i, j), i < j, of Batcher's merge-exchange sorting network for ``n`` keys
    (Knuth, TAOCP vol. 3, 5.2.2, Algorithm M). Valid for any ``n`` (no padding to a power of two);
    20 keys need 97 comparators, each one vectorised min/max over a whole block of pixels."""
    if n < 2:
        return ()
    t = (n - 1).bit_length()
    pairs: list[tuple[int, int]] = []
    p = 1 << (t - 1)
    while p > 0:
        q, r, d = 1 << (t - 1), 0, p
        while True:
            pairs.extend((i, i + d) for i in range(n - d) if i & p == r)
            if q == p:
                break
            d, q, r = q - p, q >> 1, p
        p >>= 1
    return tuple(pairs)


NETWORK_MAX_OBSERVATIONS = 96
"""Above this many observations :func:`median_composite_network` hands over to the sort of
:func:`median_composite` (the network's comparator count grows as n·log²n)."""


NETWORK_PLANE_VALUES = 1 << 15
"""Values per observation plane the network works on at a time (64 KiB of uint16: L1/L2-resident; 2**13..2**18 measured, this was fastest)."""


def median_composite_network(stack: np.ndarray, clear: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same result as :func:`median_composite`, bit for bit, several times faster.

    Why: sorting a short time axis with ``ndarray.sort(axis=0)`` walks strided memory one pixel
    at a time. Here each observation is one contiguous (B, Y, X) plane and a sorting network
    compares whole planes with ``numpy.minimum``/``maximum`` (SIMD, no Python per pixel, GIL
    released), swapping buffers instead of copying. Unusable values are set to 65535 first, so
    they sort to the end, and the median is read at ranks ``(n-1)//2`` and ``n//2`` of the ``n``
    usable ones, rounded half to even in integers. Memory: 1 × the stack plus one plane.
    """
    stack = np.asarray(stack, dtype=np.uint16)
    n_t = stack.shape[0]
    if n_t == 0 or n_t > NETWORK_MAX_OBSERVATIONS:
        return median_composite(stack, clear)
    n_b, n_y, n_x = stack.shape[1:]
    rows_per_block = max(1, NETWORK_PLANE_VALUES // max(1, n_b * n_x))
    if n_y > rows_per_block:  # keep each plane in the CPU caches: the network makes ~100 passes over it
        med = np.empty((n_b, n_y, n_x), np.uint16)
        count = np.empty((n_y, n_x), np.uint16)
        for y0 in range(0, n_y, rows_per_block):
            y1 = min(y0 + rows_per_block, n_y)
            med[:, y0:y1], count[y0:y1] = median_composite_network(stack[:, :, y0:y1], np.asarray(clear)[:, y0:y1])
        return med, count
    usable = np.asarray(clear, dtype=bool) & (stack > 0).all(axis=1)
    count = usable.sum(axis=0, dtype=np.uint16)
    top = np.uint16(np.iinfo(np.uint16).max)
    rows = [np.where(usable[t][None], stack[t], top) for t in range(n_t)]
    spare = np.empty_like(rows[0])
    for i, j in merge_exchange_pairs(n_t):
        np.minimum(rows[i], rows[j], out=spare)
        np.maximum(rows[i], rows[j], out=rows[j])
        rows[i], spare = spare, rows[i]
    n = count.astype(np.intp)
    lo_i = np.maximum(n - 1, 0) // 2
    hi_i = np.minimum(n // 2, n_t - 1)
    lo = np.zeros(rows[0].shape, np.uint32)
    hi = np.zeros(rows[0].shape, np.uint32)
    for k in range(n_t):  # gather ranks plane by plane: no (T, B, Y, X) index array
        if (lo_i == k).any():
            np.copyto(lo, rows[k], where=(lo_i == k)[None])
        if (hi_i == k).any():
            np.copyto(hi, rows[k], where=(hi_i == k)[None])
    s = lo + hi
    half = s >> 1
    med = (half + (s & half & 1)).astype(np.uint16)  # .5 rounds to the even neighbour
    med[:, count == 0] = 0
    return med, count


def clear_mask(
    method: str,
    data: dict[str, np.ndarray],
) -> np.ndarray:
    """The (T, Y, X) clear mask of one block for a mask ``method``.

    ``data`` maps canonical band names (and ``SCL`` / ``CLOUDMASK``) to harmonised (T, Y, X) arrays.
    """
    if method == MASK_SCL:
        return scl_clear(data["SCL"])
    if method == MASK_SCENE:
        return scene_mask_clear(data["CLOUDMASK"])
    if method == MASK_S2CLOUDLESS:
        return s2cloudless_clear(np.stack([data[b] for b in S2CLOUDLESS_BANDS], axis=1))
    if method == MASK_THRESHOLD:
        return threshold_clear(data["B2"], data["B4"], data.get("B10"))
    raise ValueError(f"unknown cloud-mask method {method!r}")


def composite_block(
    block: np.ndarray,
    load_bands: Sequence[str],
    out_bands: Sequence[str],
    offsets: Sequence[int],
    method: str,
    median: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> np.ndarray:
    """Composite one spatial block: harmonise, mask, median, count.

    ``block``: (T, L, Y, X) uint16 for the ``load_bands`` (outputs and mask inputs); ``offsets``:
    harmonisation offset per observation (length T). Returns (len(out_bands) + 1, Y, X) uint16: the
    median bands then the clear count as the last plane (one array, so one Dask output).
    Memory: ``block`` plus one (T, len(out_bands), Y, X) uint16 working stack. ``median``: the
    kernel (default :func:`median_composite_network`; :func:`median_composite` gives the same
    values, and is what the pre-2026-12 path ran).
    """
    block = np.asarray(block)
    if block.shape[0] != len(offsets):
        raise ValueError(f"{block.shape[0]} observations but {len(offsets)} offsets")
    index = {b: i for i, b in enumerate(load_bands)}

    def harmonised(band: str) -> np.ndarray:
        raw = block[:, index[band]]
        if band in ("SCL", "CLOUDMASK"):
            return raw  # classes, not reflectance: never shifted
        out = np.empty(raw.shape, np.uint16)
        for t, off in enumerate(offsets):
            out[t] = harmonise(raw[t], off)
        return out

    needed = {MASK_SCL: ("SCL",), MASK_SCENE: ("CLOUDMASK",), MASK_THRESHOLD: ("B2", "B4", "B10"), MASK_S2CLOUDLESS: S2CLOUDLESS_BANDS}
    if method not in needed:
        raise ValueError(f"unknown cloud-mask method {method!r}")
    mask_data = {b: harmonised(b) for b in needed[method] if b in index}
    clear = clear_mask(method, mask_data)
    del mask_data
    stack = np.empty((block.shape[0], len(out_bands), *block.shape[2:]), np.uint16)
    for i, b in enumerate(out_bands):
        stack[:, i] = harmonised(b)
    if median is None:
        med, count = median_composite_network(stack, clear)
    else:
        med, count = median(stack, clear)
    out = np.empty((len(out_bands) + 1, *block.shape[2:]), np.uint16)
    out[:-1] = med
    out[-1] = count
    return out
