"""Fine-tune a model package on local chips: the ``train --init`` step of the adaptation loop.

Packages ship ONNX only. Rather than add a second copy of the weights (a PyTorch state dict) to
every package, the networks are **rebuilt from the ONNX initializers**: our architectures
(:mod:`minewatch.models.arch`) export every BatchNorm folded into the preceding convolution, so the
patch graph holds, per convolution/linear layer, one weight and one bias, in layer order. The
architecture is recognised by the shapes of that sequence; each folded (W, b) is loaded as the
convolution weight W and a BatchNorm that is the identity plus b (running mean 0, variance 1,
scale √(1+ε), shift b), which computes exactly the exported function. The rebuilt network is checked
against ONNX Runtime on real chips before any training (max |Δlogit| < 1e-4). So the shipped
default (an ensemble: one sub-graph per member) and any package ``minewatch train`` wrote can be
fine-tuned, with nothing added to the package format; converted Keras models cannot (one-line error).

Fine-tuning (defaults sized for 50–500 local labels on 2 CPU cores, minutes):

* batches of :attr:`FinetuneConfig.batch_size`, a quarter local chips (reshuffled every pass), the
  rest a fresh **replay** sample of the original training chips (the base's own training split,
  never its validation split), so the network does not forget the regions it knew;
* BatchNorm layers keep their statistics frozen (eval mode): tens of local chips cannot estimate
  them, and frozen statistics keep the rebuilt identity exact; their scale and shift still learn;
* SGD with Nesterov momentum (see :attr:`FinetuneConfig.optimizer` for why not AdamW), lr 3e-3,
  warm-up + cosine, the base's augmentations
  (dihedral, shifts, brightness/contrast, the L1C→L2A atmosphere), no class weighting;
* a fixed number of passes over the local chips (no early stopping: there is no local validation
  set to select on); then the weights are pulled a quarter of the way back toward the base
  (:attr:`FinetuneConfig.keep`); an ensemble is fine-tuned member by member (member k with seed
  ``seed + k``) and merged again.

The threshold is re-set F0.5-optimal on the base's validation split (never trained on by the base
nor the fine-tune) and the card carries the figures there, on optional held-out local chips
(``--eval-chips``), before and after, and the digests of the chips used.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from minewatch.atomic import sha256_file
from minewatch.chips import ChipSet
from minewatch.errors import MinewatchError
from minewatch.grid import STEP_PX
from minewatch.models import arch as archs
from minewatch.models.package import PATCH_GRAPH, ModelCard, ModelPackage, load_package
from minewatch.train import metrics
from minewatch.train.augment import AugmentConfig, augment_batch

REBUILD_MAX_DIFF = 1e-4


def default_threads() -> int:
    """Every core this process may run on (``train`` used one before; ``--threads`` overrides)."""
    from minewatch.scheduling import cores

    return max(1, cores())


@dataclass
class FinetuneConfig:
    """Everything that determines a fine-tuning run (recorded in the card)."""

    epochs: int = 20
    """Passes over the local chips."""
    batch_size: int = 64
    local_share: float = 0.25
    """Share of each batch drawn from the local chips; the rest is replay (0 with no replay chips)."""
    lr: float = 3e-3
    weight_decay: float = 0.0
    label_smoothing: float = 0.05
    warmup_frac: float = 0.1
    seed: int = 0
    threads: int = field(default_factory=default_threads)
    freeze_bn: bool = True
    keep: float = 0.3
    """Weight-space interpolation back toward the base after fine-tuning: the result is
    ``keep · θ_base + (1 − keep) · θ_finetuned`` (0 = plain fine-tune). Averaging the weights of a
    model and its fine-tuned copy keeps much of the gain on the new data while giving back what was
    forgotten elsewhere (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models", WiSE-FT);
    exact here because BatchNorm statistics are frozen, so both share them.

    The defaults ``lr`` 3e-3, ``local_share`` 0.25, ``hard_share`` 0.25, ``keep`` 0.3, ``distill``
    0 were chosen by a rule written down before its figures (the most local mines found at 99 %
    specificity with 100 local labels, among recipes losing at most 0.0035 validation AP elsewhere: a
    margin under the 0.01 goal, set from how much more the previous choice forgot on the reported
    groups) on two development groups that share no place with the reported ones: the Tapajós basin
    and the rest of ``test_region_large``, each left out of a 45-epoch base
    (``scripts/finetune_logo.py`` round ``ratio``, docs/models.md). Earlier rounds chose keep 0 (under
    the full 0.01) and keep 0.25 without hard not-mines (under 0.004).
    ``--keep 0`` finds more local mines and forgets more elsewhere; ``--keep 0.5`` the other way."""
    distill: float = 0.0
    """Weight of a distillation term on the replay part of every batch: the mean Huber loss (δ = 1:
    half the squared difference up to one logit, linear beyond) between the network's logits and the
    base network's logits on the same (augmented) replay chips, added to the usual loss (hard labels
    on every chip). Replay with labels alone lets the decision function drift wherever the labels
    are already met (a local set of only mines pushes every uncertain chip up); matching the base's
    logits holds the scores the base gave other regions, the tail of high-scoring not-mines that
    sets the 99 %-specificity threshold included. It is
    dark experience replay (Buzzega et al. 2020, "DER++"), here with the base as the fixed teacher.
    On the shipped ``fcn`` member (100 Peru mines, lr 3e-3, 20 passes) weights 0.3 and 1 cut the
    mean logit change on 1,500 other chips from 1.05 to 0.21 and 0.18; at 3 the loss jumped about,
    at 10 it diverged (a one-line error, never a written package): keep ``lr × distill`` ≤ 3e-3.
    Not the default: on the Tapajós development group (docs/models.md) every weight tried kept the
    validation AP of other regions within 0.001 of the base, but found fewer of the group's mines
    than the plain fine-tune pulled a quarter back (0.80 against 0.84 with 100 labels).
    While distilling, dropout is off: the term compares the network's function with the base's, and
    dropout noise on one side only makes it unreachable. Huber rather than the squared logit error of
    DER: a squared error's gradient grows with the error it corrects, and on an untrained
    ``mwnet-tiny`` (lr 3e-3, weight 1) it fed on itself to NaN within five steps; Huber's is bounded
    by the weight. 0 = off. Costs one forward pass of the base per batch."""
    max_drift: float | None = None
    """Choose the keep per fine-tune (per ensemble member) instead of fixing it: the least keep of
    :data:`KEEP_GRID`, at or above ``keep``, whose :func:`score_drift` on :data:`GUARD_SIZE` chips of
    the replay pool is at most this (the largest keep of the grid if none is). The drift needs no
    label: it is how far the fine-tune moved the base's scores of other regions' chips. A fixed keep
    pulls every fine-tune back by the same share however far it went; a budget pulls back a
    fine-tune that moved other regions a lot (on the reported groups, Peru's 100 mines cost 2.5 times
    the validation AP Napo–Caquetá's did at the same keep) and leaves one that did not.
    None = the fixed ``keep``. Needs replay chips. Costs scoring the guard chips once per keep.
    Not the default: on the two development groups of round ``guard`` (docs/models.md) the group
    whose fine-tunes drifted most did not forget more, and at equal validation AP lost a budget found
    no more mines than a fixed keep."""
    hard_share: float = 0.25
    """Share of the replay part of every batch drawn from the replay pool's hardest not-mines: the
    :data:`HARD_FRACTION` of its not-mines the base scores highest (the rest of the replay part is
    drawn from the whole pool, as always). A review of mines alone teaches "more of this is a mine";
    what that breaks elsewhere first is the tail of high-scoring not-mines that sets the 99 %
    specificity threshold, and a uniform replay sample holds few of them. 0 = off. Costs scoring the
    replay pool with the base once: 6 s (``s2d``) and 9 s (``fcn``) for the 11,993 shared chips on 2
    CPU cores, measured 2026-12-07."""
    optimizer: str = "sgd"
    """``sgd`` (momentum 0.9, Nesterov) or ``adamw``. Adam's first steps move every weight by about
    the learning rate whatever its gradient: on the rebuilt default (fcn member, 10 steps on 59 demo
    chips + replay, 800 validation chips) AdamW at 3e-4 / 1e-4 / 3e-5 cost 0.030 / 0.005 / 0.001
    validation AP, SGD at 1e-3 none (+0.001), at 3e-3 0.005 (measured 2026-12-01)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# ONNX → PyTorch


def _layers(model: nn.Module) -> list[tuple[nn.Module, nn.BatchNorm2d | None]]:
    """(conv or linear, the BatchNorm right after it or None) in module order."""
    mods = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))]
    out: list[tuple[nn.Module, nn.BatchNorm2d | None]] = []
    for i, m in enumerate(mods):
        if isinstance(m, nn.BatchNorm2d):
            continue
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        out.append((m, nxt if isinstance(nxt, nn.BatchNorm2d) else None))
    return out


def _member_params(graph: Any, prefix: str) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(weight, bias) of every Conv/Gemm node of one member, first appearance order (a TTA graph
    runs the same initializers eight times)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in graph.initializer}
    seen: set[str] = set()
    out = []
    for n in graph.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul") or not n.name.startswith(prefix) and not (n.input and n.input[0].startswith(prefix)):
            continue
        w = n.input[1] if len(n.input) > 1 else None
        if w is None or w not in inits or w in seen:
            continue
        seen.add(w)
        arr = numpy_helper.to_array(inits[w])
        if n.op_type == "Gemm" and not any(a.name == "transB" and a.i == 1 for a in n.attribute):
            arr = arr.T
        if n.op_type == "MatMul":
            arr = arr.T
        b = numpy_helper.to_array(inits[n.input[2]]) if len(n.input) > 2 and n.input[2] in inits else None
        out.append((arr, b))
    return out


def _match_arch(params: list[tuple[np.ndarray, np.ndarray | None]], in_bands: int, hint: str = "") -> tuple[str, nn.Module]:
    shapes = [tuple(w.shape) for w, _ in params]
    names = sorted(archs.ARCHS, key=lambda a: (a not in hint, a))  # the card's architecture first
    for name in names:
        m = archs.build(name, in_bands)
        if [tuple(layer.weight.shape) for layer, _ in _layers(m)] == shapes:
            return name, m
    raise MinewatchError(hint or "--init", "cannot fine-tune: the graph is not one of minewatch's own architectures (converted Keras models ship no trainable form)")


@torch.no_grad()
def _load_folded(model: nn.Module, params: list[tuple[np.ndarray, np.ndarray | None]]) -> None:
    for (layer, bn), (w, b) in zip(_layers(model), params, strict=True):
        layer.weight.copy_(torch.as_tensor(np.array(w)))  # a copy: ONNX initializers are read-only views
        bias = torch.zeros(w.shape[0]) if b is None else torch.as_tensor(np.array(b))
        if bn is None:
            if layer.bias is None:
                raise MinewatchError("--init", "graph has a bias where the architecture has none")
            layer.bias.copy_(bias)
        else:
            if layer.bias is not None:
                layer.bias.zero_()
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0)
            bn.weight.fill_(math.sqrt(1.0 + bn.eps))
            bn.bias.copy_(bias)


@dataclass
class Member:
    name: str
    arch: str
    model: nn.Module
    tta: bool
    config: dict[str, Any]
    """The member's training config (its validation split, augmentations), from the card."""
    max_diff: float


def _member_info(card: ModelCard) -> list[dict[str, Any]]:
    ens = card.training.get("ensemble_of")
    if ens:
        return [{"architecture": m.get("architecture", ""), "config": m.get("config") or {}} for m in ens]
    return [{"architecture": card.architecture, "config": card.training.get("config") or {}}]


def rebuild_members(pkg: ModelPackage, sample: np.ndarray) -> list[Member]:
    """PyTorch networks equal to each member of ``pkg`` (checked against ONNX Runtime on ``sample``)."""
    import onnx

    from minewatch.train.export import torch_patch_logits

    m = onnx.load(str(pkg.path / PATCH_GRAPH))
    n_members = len(pkg.card.members)
    info = _member_info(pkg.card)
    if len(info) != n_members:
        info = [{"architecture": "", "config": {}}] * n_members
    ref = pkg.logits(sample.astype(np.float32))
    out = []
    for k in range(n_members):
        prefix = f"m{k}/" if n_members > 1 else ""
        params = _member_params(m.graph, prefix)
        if not params:
            raise MinewatchError(pkg.path / PATCH_GRAPH, f"member {k}: no convolution weights found")
        name, model = _match_arch(params, len(pkg.card.spec.bands), info[k]["architecture"])
        _load_folded(model, params)
        model.eval()
        tta = "TTA" in info[k]["architecture"]
        diff = float(np.abs(torch_patch_logits(model, sample.astype(np.float32), tta)[:, 0] - ref[:, k]).max())
        if not diff < REBUILD_MAX_DIFF:
            raise MinewatchError(pkg.path / PATCH_GRAPH, f"member {k}: rebuilt {name} differs from the graph by {diff:.2e}; cannot fine-tune it")
        out.append(Member(pkg.card.members[k], name, model, tta, info[k]["config"], diff))
    return out


# ----------------------------------------------------------------------------------------------
# The loop


def finetune_model(model: nn.Module, local: ChipSet, replay: ChipSet | None, cfg: FinetuneConfig, augment: AugmentConfig, progress: bool = False) -> dict[str, Any]:
    """Fine-tune ``model`` in place; returns what was done (steps, seconds, chips seen)."""
    from minewatch.train.loop import frozen_copy, predict_logits, setup_torch

    if len(local) == 0:
        raise MinewatchError("--chips", "no local chips to fine-tune on")
    if not 0.0 <= cfg.keep < 1.0:
        raise MinewatchError("--keep", f"must be in [0, 1), got {cfg.keep}")
    if not (cfg.distill >= 0.0 and math.isfinite(cfg.distill)):
        raise MinewatchError("--distill", f"must be a finite number >= 0, got {cfg.distill}")
    if cfg.max_drift is not None and not (cfg.max_drift >= 0.0 and math.isfinite(cfg.max_drift)):
        raise MinewatchError("--max-drift", f"must be a finite number >= 0, got {cfg.max_drift}")
    if cfg.max_drift is not None and not (replay is not None and len(replay)):
        raise MinewatchError("--max-drift", "measures the drift on the replay chips: it needs replay (drop --no-replay)")
    if not 0.0 <= cfg.hard_share <= 1.0:
        raise MinewatchError("--hard-share", f"must be in [0, 1], got {cfg.hard_share}")
    setup_torch(cfg.threads, True)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()} if (cfg.keep or cfg.max_drift is not None) else {}
    guard = guard_chips(replay) if cfg.max_drift is not None else None  # type: ignore[arg-type]
    guard_base = predict_logits(model, guard) if guard is not None else None
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    n_loc = max(1, round(cfg.batch_size * (cfg.local_share if replay is not None and len(replay) else 1.0)))
    n_rep = cfg.batch_size - n_loc if replay is not None and len(replay) else 0
    hard = hardest_negatives(model, replay) if (cfg.hard_share and n_rep) else None  # type: ignore[arg-type]
    n_hard = round(n_rep * cfg.hard_share) if hard is not None and len(hard) else 0
    spe = max(1, math.ceil(len(local) / n_loc))
    total = cfg.epochs * spe
    warm = max(1, int(cfg.warmup_frac * total))
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    else:
        raise MinewatchError("--optimizer", f"must be adamw or sgd, got {cfg.optimizer!r}")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / max(1, total - warm)))))
    x_loc = torch.from_numpy(np.ascontiguousarray(local.pixels)).permute(0, 3, 1, 2)
    y_loc = torch.from_numpy(local.labels.astype(np.float32))
    if n_rep:
        assert replay is not None
        x_rep = torch.from_numpy(np.ascontiguousarray(replay.pixels)).permute(0, 3, 1, 2)
        y_rep = torch.from_numpy(replay.labels.astype(np.float32))
    loss_fn = nn.BCEWithLogitsLoss()
    eps = cfg.label_smoothing
    t0 = time.time()
    losses = []
    model.to(memory_format=torch.channels_last)
    teacher = frozen_copy(model) if cfg.distill and n_rep else None
    frozen = (nn.BatchNorm2d,) * cfg.freeze_bn + (nn.Dropout,) * (teacher is not None)  # kept in eval mode
    for epoch in range(cfg.epochs):
        model.train()
        for mod in model.modules():
            if isinstance(mod, frozen):
                mod.eval()
        order = torch.randperm(len(local), generator=g)
        order = torch.cat([order, torch.randperm(len(local), generator=g)])  # the last batch wraps around
        tot = 0.0
        for b in range(spe):
            idx = order[b * n_loc : (b + 1) * n_loc]
            xs, ys = [x_loc[idx]], [y_loc[idx]]
            if n_rep:
                ridx = torch.randint(len(replay), (n_rep - n_hard,), generator=g)  # type: ignore[arg-type]
                if n_hard:  # the hard part last: the batch keeps its local / replay order
                    ridx = torch.cat([ridx, hard[torch.randint(len(hard), (n_hard,), generator=g)]])  # type: ignore[index]
                xs.append(x_rep[ridx])
                ys.append(y_rep[ridx])
            x = augment_batch(torch.cat(xs).float(), augment, g).contiguous(memory_format=torch.channels_last)
            y = torch.cat(ys) * (1 - eps) + 0.5 * eps
            z = model(x).reshape(-1)
            loss = loss_fn(z, y)
            if teacher is not None:  # hold the base's scores on the replay chips (after the local ones)
                with torch.no_grad():
                    zt = teacher(x[n_loc:]).reshape(-1)
                loss = loss + cfg.distill * nn.functional.huber_loss(z[n_loc:], zt, delta=1.0)
            value = loss.item()
            if not math.isfinite(value):  # never hand on a network that diverged
                raise MinewatchError("--lr", f"fine-tuning diverged (loss {value} at step {epoch * spe + b + 1} of {total}): lower --lr" + (" or --distill" if teacher is not None else ""))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += value
        losses.append(tot / spe)
        if progress:
            print(f"  fine-tune epoch {epoch + 1}/{cfg.epochs}: loss {losses[-1]:.4f}", flush=True)
    model.eval()
    model.to(memory_format=torch.contiguous_format)
    keep, drifts = cfg.keep, {}
    if guard is not None and guard_base is not None and cfg.max_drift is not None:
        tuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for k in (k for k in KEEP_GRID if k >= cfg.keep):
            model.load_state_dict(tuned)
            interpolate_(model, start, k)
            drifts[k] = score_drift(guard_base, predict_logits(model, guard))
        keep = keep_for_drift(drifts, cfg.max_drift)
        model.load_state_dict(tuned)
    if keep:
        interpolate_(model, start, keep)
    out = {"steps": total, "local_per_batch": n_loc, "replay_per_batch": n_rep, "hard_per_batch": n_hard, "seconds": round(time.time() - t0, 1), "loss_per_epoch": [round(v, 4) for v in losses], "keep": keep}
    if drifts:
        out["drift_by_keep"] = {f"{k:g}": round(v, 5) for k, v in drifts.items()}
    return out


HARD_FRACTION = 0.1
"""The share of the replay pool's not-mines, highest base score first, that ``hard_share`` draws from."""


def hardest_negatives(model: nn.Module, replay: ChipSet, fraction: float = HARD_FRACTION) -> torch.Tensor:
    """Indices into ``replay`` of its not-mines the model scores highest (``fraction`` of them, at least one)."""
    from minewatch.train.loop import predict_logits

    neg = np.flatnonzero(replay.labels == 0)
    if not len(neg):
        return torch.zeros(0, dtype=torch.long)
    z = predict_logits(model, replay.pixels[neg])
    k = max(1, round(fraction * len(neg)))
    return torch.from_numpy(neg[np.argsort(-z, kind="stable")[:k]].astype(np.int64))


KEEP_GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8)
"""The keeps a drift budget (:attr:`FinetuneConfig.max_drift`) chooses from."""
GUARD_SIZE, GUARD_SEED = 512, 7
"""How many replay-pool chips the drift is measured on, and the seed that draws them (fixed: the
same chips for every fine-tune of one pool)."""


def guard_chips(replay: ChipSet, size: int = GUARD_SIZE, seed: int = GUARD_SEED) -> np.ndarray:
    """A fixed sample of the replay pool's pixels (all of it when smaller) to measure drift on."""
    n = len(replay)
    idx = np.arange(n) if n <= size else np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    return replay.pixels[idx]


@torch.no_grad()
def interpolate_(model: nn.Module, base_state: dict[str, torch.Tensor], keep: float) -> None:
    """``model ← keep · base + (1 − keep) · model``, floating-point tensors only (counters stay)."""
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            v.mul_(1.0 - keep).add_(base_state[k].to(v.dtype), alpha=keep)


def score_drift(base_logits: np.ndarray, logits: np.ndarray) -> float:
    """How far a fine-tune moved the scores of chips it was not meant to change, without labels.

    The mean absolute change of each chip's logit net of the median change (a shift common to every
    chip reorders nothing: the 99 %-specificity threshold is re-derived on validation), in units of
    the standard deviation of the base's logits (so it reads the same for networks whose logits
    differ in scale). 0 = the same ranking and spacing as the base."""
    base = np.asarray(base_logits, np.float64).ravel()
    tuned = np.asarray(logits, np.float64).ravel()
    spread = float(np.std(base)) if base.size else 0.0
    if base.size == 0 or tuned.size != base.size or not spread > 0.0:  # sizes before subtracting: one logit would broadcast
        raise ValueError("score_drift: needs two equal, non-empty sets of logits, the base's not all equal")
    d = tuned - base
    return float(np.mean(np.abs(d - np.median(d))) / spread)


def keep_for_drift(drift_by_keep: dict[float, float], budget: float) -> float:
    """The least pull back toward the base (``keep``) whose :func:`score_drift` is within ``budget``;
    the largest keep offered when none is."""
    if not drift_by_keep:
        raise ValueError("keep_for_drift: no keep measured")
    ok = [k for k, v in drift_by_keep.items() if v <= budget]
    return min(ok) if ok else max(drift_by_keep)


# ----------------------------------------------------------------------------------------------
# The job: package + local chips → fine-tuned package


def concat_chips(sets: list[ChipSet]) -> ChipSet:
    import pandas as pd

    first = sets[0]
    for s in sets[1:]:
        first.spec.check_compatible(s.spec, str(s.path))
        if s.pixels.shape[1:] != first.pixels.shape[1:]:
            raise MinewatchError(str(s.path), f"chips are {s.pixels.shape[1:]}, {first.path} holds {first.pixels.shape[1:]}")
    metas = []
    for s in sets:
        m = s.meta.copy()
        m["chip_set"] = str(s.path) if s.path else ""
        if "cell" in m:  # sites stay distinct across chip sets
            m["cell"] = m["chip_set"] + ":" + m["cell"].astype(str)
        metas.append(m)
    return ChipSet(np.concatenate([s.pixels for s in sets]), np.concatenate([s.labels for s in sets]), pd.concat(metas, ignore_index=True), first.spec, first.path)


def chip_hashes(pixels: np.ndarray) -> np.ndarray:
    """One 64-bit content hash per chip (its bytes): finds the same chip in two datasets."""
    import hashlib

    return np.array([int.from_bytes(hashlib.blake2b(np.ascontiguousarray(p).tobytes(), digest_size=8).digest(), "little") for p in pixels], dtype=np.uint64)


def _digest(c: ChipSet) -> dict[str, Any]:
    npz = c.path / "chips.npz" if c.path is not None else None
    return {"path": str(c.path) if c.path else None, "chips_sha256": sha256_file(npz) if npz is not None and npz.exists() else None, "n": len(c), "n_pos": int(c.labels.sum())}


def _local_figures(pkg: ModelPackage, chips: ChipSet, thresholds: dict[str, float]) -> dict[str, Any]:
    from minewatch.train.scorecard import ensemble_score, holdout_report

    return holdout_report(chips.labels, ensemble_score(pkg, chips.pixels), thresholds)


def resolve_replay(card: ModelCard, replay: str | Path | None) -> Path | None:
    """The chips a package was trained on (for replay and its validation split), or None."""
    from minewatch.config import shared_data_dir

    if replay is not None:
        return Path(replay)
    for cand in (card.training.get("chips"), *(m.get("chips") for m in card.training.get("ensemble_of", []) if isinstance(m, dict))):
        if cand and (Path(cand) / "chips.npz").exists():
            return Path(cand)
    shared = shared_data_dir() / "s2_rgb_chips"
    return shared if (shared / "chips.npz").exists() else None


def finetune_package(
    init: str | Path,
    local_sets: list[ChipSet],
    out: str | Path,
    cfg: FinetuneConfig | None = None,
    replay_dir: str | Path | None = None,
    no_replay: bool = False,
    eval_sets: list[ChipSet] = (),  # type: ignore[assignment]
    name: str | None = None,
    progress: bool = True,
    log: Any = print,
) -> Path:
    """Fine-tune every member of package ``init`` on ``local_sets`` (+ replay) and write a package to ``out``."""
    from minewatch.chips import load_chips
    from minewatch.models.ensemble import write_ensemble
    from minewatch.models.store import write_package
    from minewatch.train.export import export_package_graphs
    from minewatch.train.scorecard import card_figures, make_split, trained_split

    cfg = cfg or FinetuneConfig()
    if no_replay and cfg.distill:
        raise MinewatchError("--distill", "holds the base's scores on the replay chips: it needs replay (drop --no-replay)")
    if no_replay and cfg.max_drift is not None:
        raise MinewatchError("--max-drift", "measures the drift on the replay chips: it needs replay (drop --no-replay)")
    if no_replay and cfg.hard_share:  # nothing to draw from: the card records what ran
        cfg = FinetuneConfig(**{**cfg.to_dict(), "hard_share": 0.0})
    base = load_package(init)
    out = Path(out)
    local = concat_chips(list(local_sets))
    base.card.spec.check_compatible(local.spec, str(local.path))
    if local.pixels.shape[1:3] != (base.card.patch_px, base.card.patch_px):
        raise MinewatchError(str(local.path), f"chips are {local.pixels.shape[1]}×{local.pixels.shape[2]} px, the model scores {base.card.patch_px} px patches")
    if local.spec.level != base.card.spec.level:
        log(f"note: local chips are {local.spec.level}, the model was trained on {base.card.spec.level}")
    replay_path = None if no_replay else resolve_replay(base.card, replay_dir)
    if replay_path is None and not no_replay:
        raise MinewatchError("--replay", "the original training chips were not found (give --replay DIR, or --no-replay to fine-tune on local chips only)")
    replay_all = load_chips(replay_path) if replay_path is not None else None
    if replay_all is not None:
        base.card.spec.check_compatible(replay_all.spec, str(replay_path))
    infos = _member_info(base.card)
    split_of = trained_split(infos[0]["config"]) if infos else None
    split = None
    if replay_all is not None:
        vf, seed = split_of or (0.15, 0)
        hr = [r for r in base.card.training.get("holdout_regions", []) if Path(r).exists()]
        split = make_split(replay_all, vf, seed, hr, list(base.card.training.get("holdout_sources", [])))
        split.holdouts = {}  # the fine-tune may have trained on those places: not reported as never seen
    local_h = chip_hashes(local.pixels)
    for es in eval_sets:
        both = int(np.isin(chip_hashes(es.pixels), local_h).sum())
        if both:
            raise MinewatchError(str(es.path), f"{both} of its chips are also fine-tuning chips (--chips): held-out figures need chips the model never trained on")
    n_val_dropped = 0
    if split is not None and replay_all is not None:
        # a local chip that is also an original chip (e.g. the shared chips re-cut): never in replay or validation
        same = np.isin(chip_hashes(replay_all.pixels), local_h)
        if same.any():
            n_val_dropped = int(same[split.val].sum())
            split.train, split.val = split.train[~same[split.train]], split.val[~same[split.val]]
            log(f"note: {int(same.sum())} local chip(s) are also original chips; left out of replay and validation ({n_val_dropped} from validation)")
    sample = (replay_all.subset(split.val).pixels[:64] if split is not None else local.pixels[:64]).astype(np.float32)
    members = rebuild_members(base, sample)
    replay_train = replay_all.subset(split.train) if (replay_all is not None and split is not None) else None

    out.mkdir(parents=True, exist_ok=True)
    runs = []
    pkgs = []
    tmp = tempfile.TemporaryDirectory(dir=out, prefix=".finetune-")
    try:
        for k, mem in enumerate(members):
            aug_d = dict(mem.config.get("augment") or {})
            if aug_d:
                from minewatch.train.loop import TrainConfig

                aug = TrainConfig.from_dict({"augment": aug_d}).augment
            else:  # no recorded recipe: the default augmentations for these bands
                aug = AugmentConfig(atmosphere_p=0.3 if local.spec.bands == ["B4", "B3", "B2"] else 0.0, bands=list(local.spec.bands))
            mcfg = FinetuneConfig(**{**cfg.to_dict(), "seed": cfg.seed + k})
            log(f"fine-tuning member {mem.name} ({mem.arch}) on {len(local)} local chips" + (f" + replay from {len(replay_train)} original training chips" if replay_train is not None else ""))
            run = finetune_model(mem.model, local, replay_train, mcfg, aug, progress=progress)
            fcn = archs.fcn_of(mem.model)
            stride = STEP_PX if fcn is not None else None
            patch_onnx, fcn_onnx, diff = export_package_graphs(mem.model, local.pixels.shape[-1], sample, tta=mem.tta, fcn_out_stride=stride)
            mcard = ModelCard(
                name=mem.name, spec=base.card.spec, architecture=mem.arch + (" + dihedral TTA (8 views, mean logit, inside the graphs)" if mem.tta else ""),
                fcn_stride=stride, threshold=0.5,
                training={"config": mem.config, "finetune": {**run, "config": mcfg.to_dict(), "rebuilt_max_abs_diff": mem.max_diff}, "onnx_vs_torch_max_abs_diff": diff},
            )  # fmt: skip
            pdir = Path(tmp.name) / f"member{k}"
            write_package(pdir, mcard, patch_onnx, fcn_onnx)
            pkgs.append(load_package(pdir))
            runs.append({"member": mem.name, "arch": mem.arch, **run})
        if len(pkgs) > 1:
            write_ensemble(pkgs, Path(tmp.name) / "merged", name=name or out.name, members=[m.name for m in members])
            final = load_package(Path(tmp.name) / "merged")
        else:
            final = pkgs[0]
        card = final.card
        card.name = name or out.name
        thresholds: dict[str, float] = {}
        if split is not None and replay_all is not None:
            vf, seed = split_of or (0.15, 0)
            threshold, figs, validated = card_figures(final, replay_all, split, f"val_fraction={vf}, seed={seed} (the base model's validation split)")
            card.threshold, card.metrics, card.validated_levels = threshold, figs, validated
            thresholds = {"threshold": threshold, "spec99": figs["val_threshold_spec99"]}
            base_val = base.card.metrics.get("val") or {}
            card.metrics["base_val"] = {k: base_val.get(k) for k in ("ap", "sens_at_spec99", "sensitivity", "specificity", "threshold")}
        else:
            card.threshold = base.card.threshold
            card.metrics = {"note": "no replay chips: no validation split; threshold kept from the base model"}
            thresholds = {"threshold": card.threshold}
        local_eval: dict[str, Any] = {}
        base_thresholds = {"threshold": base.card.threshold, **({"spec99": base.card.metrics["val_threshold_spec99"]} if "val_threshold_spec99" in base.card.metrics else {})}
        for es in eval_sets:
            key = str(es.path) if es.path else f"eval{len(local_eval)}"
            local_eval[key] = {"finetuned": _local_figures(final, es, thresholds), "base": _local_figures(base, es, base_thresholds), **_digest(es)}
        card.metrics["local_eval"] = local_eval
        card.training = {
            **card.training,
            "init": {"path": str(base.path), "name": base.card.name, "checksums": base.card.checksums, "val": card.metrics.get("base_val")},
            "finetune": {
                "local_chips": [_digest(s) for s in local_sets],
                "n_local": len(local),
                "n_local_pos": int(local.labels.sum()),
                "replay": None if replay_train is None else {"chips": str(replay_path), "pool": len(replay_train), "how": "fresh random sample every batch from the base's training split"},
                "val_chips_dropped_as_local": n_val_dropped,
                "config": cfg.to_dict(),
                "members": runs,
                "date": dt.date.today().isoformat(),
            },
            "config": infos[0]["config"] if len(members) == 1 else None,
            "threshold_rule": "F0.5-optimal on the base model's validation split (ensemble mean score)" if split is not None else "kept from the base model",
        }
        if len(members) == 1:
            card.training["params"] = archs.n_params(members[0].model)
        card.notes = (
            f"Fine-tuned from {base.card.name} on {len(local)} local chips ({int(local.labels.sum())} mines)"
            + (" with replay of its original training chips" if replay_train is not None else " without replay")
            + ". Validation figures: the base model's validation split (other regions; never trained on by the base or the fine-tune). "
            + ("Local figures (metrics.local_eval): held-out local chips given with --eval-chips, never trained on." if eval_sets else "No held-out local chips were given (--eval-chips): no local figure.")
        )
        card.metrics = metrics.json_safe(card.metrics)
        card.validated_levels = metrics.json_safe(card.validated_levels)
        # write: shared weights + graphs + card (last); stale files of an older package go
        from minewatch.models.package import FCN_GRAPH

        patch_b = (final.path / PATCH_GRAPH).read_bytes()
        fcn_b = (final.path / FCN_GRAPH).read_bytes() if (final.path / FCN_GRAPH).exists() else None
        _write_final(final.path, out, card, patch_b, fcn_b)
    finally:
        tmp.cleanup()
    return out


def _write_final(src: Path, out: Path, card: ModelCard, patch_b: bytes, fcn_b: bytes | None) -> None:
    """Copy the finished package (graphs refer to their shared weights file by name) into ``out``."""
    from minewatch.models.store import copy_package

    from minewatch.atomic import write_json_atomic
    from minewatch.models.package import CARD

    write_json_atomic(src / CARD, card.to_dict())
    copy_package(src, out)
    # the card's checksums were computed for src; identical bytes were copied
    load_package(out)
