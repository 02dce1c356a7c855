"""Score rendered rasters with one or more model packages (a run-time ensemble), ONNX Runtime only.

Why its own loader: a Dask worker must use as many ONNX Runtime threads as it has cores to itself,
not all the machine's (two workers × all cores each oversubscribe the CPU and spin-wait), so the
sessions are created here with an explicit thread count; the graphs, card and scoring maths are
:class:`minewatch.models.package.ModelPackage`'s own.

Several packages form an ensemble at run time: they must share the patch size and step (one
lattice); each may read its own bands with its own rendering. Every member of every package is kept
as a column and the ensemble ``score`` is the mean of all member probabilities.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from minewatch.errors import MinewatchError
from minewatch.models.package import ModelCard, ModelPackage, load_package, resolve_package_path


PRECISIONS = ("auto", "fp32", "int8")


class ThreadedPackage(ModelPackage):
    """A :class:`ModelPackage` whose ONNX Runtime sessions use ``threads`` intra-op threads, and
    its int8 graphs (:mod:`minewatch.models.quantize`) when ``precision`` is ``int8``."""

    def __init__(self, path: Path, card: ModelCard, threads: int | None = None, precision: str = "fp32") -> None:
        super().__init__(path, card)
        self.threads = threads
        self.precision = precision
        self._int8: dict[str, str] | None = None
        if precision == "int8":
            from minewatch.models.quantize import int8_graphs

            self._int8 = int8_graphs(card) or _explicit_int8(path, card)

    @cached_property
    def patch_session(self) -> Any:
        if self._int8 is None:
            return super().patch_session
        f = self.path / self._int8["patch"]
        return self._check_graph(self._session(f), f)

    @cached_property
    def fcn_session(self) -> Any:
        if self._int8 is None:
            return super().fcn_session
        f = self.path / self._int8["fcn"]
        return self._check_graph(self._session(f), f)

    def _session(self, path: Path) -> Any:  # type: ignore[override]
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
            opts.inter_op_num_threads = 1
            if self.threads < (os.cpu_count() or 1):
                # sharing the machine with other workers: sleep instead of spinning between ops
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        from minewatch.models.package import ort_providers

        try:
            return ort.InferenceSession(str(path), opts, providers=ort_providers())
        except Exception as e:  # onnxruntime raises its own exception types
            raise MinewatchError(path, f"not a loadable ONNX graph ({str(e).splitlines()[0][:200]})") from None


def _explicit_int8(path: Path, card: ModelCard) -> dict[str, str]:
    """int8 asked for by name: the graphs must exist and be current, even if the rule said fp32."""
    q = (card.metrics or {}).get("quantized") or {}
    made = q.get("made_from") or {}
    if not q or any(card.checksums.get(k) != v for k, v in made.items()):
        raise MinewatchError(path, "no current int8 graphs in this package (python -m minewatch.models.quantize PACKAGE CHIPS)")
    return dict(q["graphs"])


def resolve_precision(card: ModelCard, precision: str = "auto") -> str:
    """``auto`` → ``int8`` when the card's quantized graphs passed their quality rule and are
    current (:func:`minewatch.models.quantize.int8_graphs`), else ``fp32``."""
    from minewatch.models.quantize import int8_graphs

    if precision not in PRECISIONS:
        raise MinewatchError("--precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "int8" if int8_graphs(card) else "fp32"
    return precision


_CACHE: dict[tuple[str, int | None, str], ThreadedPackage] = {}


def load_scoring_package(name_or_path: str | Path, threads: int | None = None, precision: str = "auto") -> ThreadedPackage:
    """Load (once per process, thread count and precision) a package for scoring."""
    base_key = str(resolve_package_path(name_or_path).resolve())
    base = None
    if precision == "auto":
        base = load_package(name_or_path)
        precision = resolve_precision(base.card, precision)
    elif precision not in PRECISIONS:
        raise MinewatchError("--precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    key = (base_key, threads, precision)
    pkg = _CACHE.get(key)
    if pkg is None:
        base = base or load_package(name_or_path)
        pkg = ThreadedPackage(base.path, base.card, threads, precision)
        _CACHE[key] = pkg
    return pkg


def _slug(s: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", s).strip("_") or "m"


def member_columns(cards: Sequence[ModelCard]) -> list[str]:
    """``score_<member>`` for one package; ``score_<model>_<member>`` for several (made unique)."""
    cols: list[str] = []
    for i, card in enumerate(cards):
        for m in card.members:
            base = f"score_{_slug(m)}" if len(cards) == 1 else f"score_{_slug(card.name)}_{_slug(m)}"
            name, k = base, 2
            while name in cols:
                name, k = f"{base}_{k}", k + 1
            cols.append(name)
        del i
    return cols


@dataclass
class Scorer:
    """The models of one detection run, scoring DN rasters on their common lattice."""

    packages: list[ModelPackage]

    def __post_init__(self) -> None:
        if not self.packages:
            raise MinewatchError("--model", "give at least one model")
        first = self.packages[0].card
        for p in self.packages[1:]:
            if (p.card.patch_px, p.card.step_px) != (first.patch_px, first.step_px):
                raise MinewatchError(
                    p.path, f"patch {p.card.patch_px}/{p.card.step_px} px differs from {first.name!r} ({first.patch_px}/{first.step_px} px): an ensemble needs one lattice"
                )

    @classmethod
    def load(cls, models: Sequence[str | Path], threads: int | None = None, precision: str = "auto") -> Scorer:
        return cls([load_scoring_package(m, threads, precision) for m in models])

    @property
    def precisions(self) -> list[str]:
        """Per package: ``int8`` (quantized graphs) or ``fp32``."""
        return [getattr(p, "precision", "fp32") for p in self.packages]

    @property
    def patch_px(self) -> int:
        return self.packages[0].card.patch_px

    @property
    def step_px(self) -> int:
        return self.packages[0].card.step_px

    @property
    def bands(self) -> list[str]:
        """Union of the bands every model needs, in first-seen order (the order the tile is read in)."""
        out: list[str] = []
        for p in self.packages:
            for b in p.card.spec.bands:
                if b not in out:
                    out.append(b)
        return out

    @property
    def columns(self) -> list[str]:
        return member_columns([p.card for p in self.packages])

    @property
    def has_fast_path(self) -> bool:
        return all(p.has_fast_path for p in self.packages)

    def score(self, dn: np.ndarray, keep: np.ndarray, fast: bool | None = None) -> tuple[np.ndarray, str]:
        """Member probabilities N×M of the kept lattice cells (row-major order) of a DN raster.

        ``dn`` is (H, W, C) in :attr:`bands` order; ``keep`` the R×C cells to score. ``fast``: True
        runs each model's fully-convolutional graph over the whole raster, False cuts and scores the
        kept patches in batches, None chooses per model: the fast graph when it exists and at least a
        quarter of the cells are kept (below that, scoring the few patches costs less). Returns the
        scores and the path used (``fcn``, ``patch`` or ``mixed``).
        """
        rows, cols = np.nonzero(keep)
        outs, paths = [], set()
        all_bands = self.bands
        for pkg in self.packages:
            idx = [all_bands.index(b) for b in pkg.card.spec.bands]
            x = pkg.card.spec.rendering.apply(dn[..., idx])
            use_fast = fast
            if use_fast is None:
                use_fast = pkg.has_fast_path and keep.mean() >= 0.25
            if use_fast:
                grid = pkg.score_tile(x, fast=True)  # M×R×C
                probs = grid[:, : keep.shape[0], : keep.shape[1]][:, rows, cols].T
                paths.add("fcn")
            else:
                probs = self._score_cells(pkg, x, rows, cols)
                paths.add("patch")
            outs.append(probs.reshape(len(rows), -1))
        path = paths.pop() if len(paths) == 1 else "mixed"
        return np.concatenate(outs, axis=1).astype(np.float32), path

    def _score_cells(self, pkg: ModelPackage, x: np.ndarray, rows: np.ndarray, cols: np.ndarray, batch: int = 256) -> np.ndarray:
        p, s = pkg.card.patch_px, pkg.card.step_px
        out = np.zeros((len(rows), len(pkg.card.members)), dtype=np.float32)
        for i in range(0, len(rows), batch):
            r, c = rows[i : i + batch] * s, cols[i : i + batch] * s
            patches = np.stack([x[a : a + p, b : b + p] for a, b in zip(r, c, strict=True)])
            out[i : i + batch] = pkg.score_patches(patches, batch_size=batch)
        return out
