"""The training loop: site-split chips → trained network → evaluated, packaged model.

Design choices (and why):

* **Deterministic and resumable.** Every epoch draws its order, augmentations and dropout masks from
  generators seeded by ``(seed, epoch)``, CPU kernels run with a fixed thread count and
  ``torch.use_deterministic_algorithms``; the full state (weights, optimiser, schedule, EMA, best
  weights, history) is checkpointed atomically after every epoch, so a killed run restarted with the
  same command continues where it stopped and ends with the same weights as an uninterrupted run.
* **Selection on validation average precision** (the detector is used at a high-precision
  threshold, AP summarises the whole precision–recall curve), with early stopping (patience).
* **Class weighting** (positive weight = negatives/positives) so the ~1:3 mine share does not bias
  the network towards "not a mine"; light label smoothing because some labels are noisy.
* **Threshold** = the F0.5-optimal threshold on the validation set (precision weighted over recall:
  false alarms cost reviewers more than a missed patch of a mine that is detected elsewhere).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from minewatch.atomic import atomic_path, sha256_file, write_json_atomic
from minewatch.chips import ChipSet
from minewatch.errors import MinewatchError
from minewatch.grid import STEP_PX
from minewatch.models import arch as archs
from minewatch.models.store import copy_package, write_package  # noqa: F401  (re-exported for scripts and tests)
from minewatch.train import metrics
from minewatch.train.augment import AugmentConfig, augment_batch, simulate_l2a
from minewatch.train.scorecard import (  # noqa: F401  (re-exported: scripts and tests import them from here)
    Split,
    card_figures,
    group_rates,
    holdout_report,
    load_region,
    make_split,
    summarize,
)

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"


@dataclass
class TrainConfig:
    """Everything that determines a training run (recorded in the checkpoint and the card)."""

    arch: str = "mwnet"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.02
    label_smoothing: float = 0.05
    pos_weight: float | None = None
    """BCE positive-class weight; None = n_negative / n_positive of the training set."""
    patience: int = 8
    seed: int = 0
    split_seed: int | None = None
    """Seed of the site-level train/val split; None = ``seed``. Ensemble members trained with different
    ``seed`` and one ``split_seed`` share one validation set, so the ensemble can be selected and scored on it."""
    val_fraction: float = 0.15
    warmup_epochs: float = 1.0
    ema_decay: float = 0.0
    """Exponential moving average of the weights (0 = off); the EMA weights are evaluated and kept."""
    threads: int = 1
    """CPU threads. 1 by default: on a shared machine a second thread waiting for a busy core makes
    every op slower (measured 3.2 vs 8.5 ms/chip for mwnet), and one thread is trivially deterministic."""
    deterministic: bool = True
    device: str = "cpu"
    """``cpu``, ``cuda`` or ``auto`` (CUDA when PyTorch sees a GPU, else CPU); see :func:`resolve_device`.
    Not part of the checkpoint signature (nor ``threads``): a run may resume on another device."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    tta: bool = False
    """Dihedral test-time augmentation inside the exported graphs (export only: not in the checkpoint signature)."""

    @property
    def split_seed_(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["split_seed"] is None:  # keep the signature of runs made before the field existed
            del d["split_seed"]
        if d["device"] == "cpu":  # likewise
            del d["device"]
        d["augment"] = self.augment.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        aug = d.pop("augment", {})
        for k in ("aot550_range", "angstrom_range", "sun_zenith_range", "view_zenith_range", "ozone_range", "correction_strength"):
            if k in aug:
                aug[k] = tuple(aug[k])
        return cls(**d, augment=AugmentConfig(**aug))


def resolve_device(name: str) -> str:
    """``auto`` → ``cuda`` when PyTorch sees a GPU, else ``cpu``; ``cuda`` without one is an error."""
    name = (name or "cpu").lower()
    if name not in ("auto", "cpu", "cuda"):
        raise MinewatchError("--device", f"must be auto, cpu or cuda, got {name!r}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise MinewatchError("--device cuda", f"PyTorch {torch.__version__} sees no CUDA GPU (a CPU build, or no driver): use --device cpu or auto")
    return name


def device_description(device: str, threads: int) -> str:
    """One line naming the device that trains: the GPU's name, or the CPU threads."""
    if device == "cuda":
        return f"cuda ({torch.cuda.get_device_name(0)}, PyTorch {torch.__version__})"
    return f"cpu ({threads} thread{'s' if threads != 1 else ''}, PyTorch {torch.__version__})"


UNSIGNED = ("tta", "device", "threads")
"""Settings a checkpoint may be resumed under with another value: they change where and how fast
the run goes, not what it computes (``tta`` is applied at export only), up to floating-point
rounding: another thread count or device may sum in another order (a 6-epoch ``mwnet-tiny`` run
resumed at epoch 3 on 2 threads instead of 1 ended at validation AP 0.5503 against 0.5506)."""


def _signature(config: dict[str, Any], n_train: int | None, n_val: int | None, data: Any) -> dict[str, Any]:
    """What a checkpoint must match to be resumed (older checkpoints recorded ``threads``; ignored)."""
    return {"config": {k: v for k, v in config.items() if k not in UNSIGNED}, "n_train": n_train, "n_val": n_val, "data": data}


def setup_torch(threads: int, deterministic: bool) -> None:
    """Fixed thread count and deterministic kernels: the same seed gives the same weights on CPU."""
    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    # Filling every new tensor with NaN (the deterministic-mode default) costs ~30% on CPU and is
    # only a debugging aid; results do not depend on it.
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]


def _to_nchw(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def predict_logits(model: nn.Module, pixels: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Eval-mode logits (N,) for rendered chips N×H×W×C (uint8 or float), on the model's device."""
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(pixels), batch_size):
        x = _to_nchw(pixels[i : i + batch_size]).float().to(dev).contiguous(memory_format=torch.channels_last)
        out.append(model(x).float().reshape(len(x), -1).mean(1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    return float(metrics.average_precision(np.asarray(y), np.asarray(score)))


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of the network as it is now, in eval mode, with no gradients (an EMA's shadow, a
    distillation teacher)."""
    out = copy.deepcopy(model).eval()
    for p in out.parameters():
        p.requires_grad_(False)
    return out


class _EMA:
    """Exponential moving average of parameters; buffers (BatchNorm statistics) are copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = frozen_copy(model)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for pe, pm in zip(self.model.parameters(), model.parameters(), strict=True):
            pe.mul_(d).add_(pm.detach(), alpha=1 - d)
        for be, bm in zip(self.model.buffers(), model.buffers(), strict=True):
            be.copy_(bm)


@dataclass
class TrainResult:
    model: nn.Module
    """The selected network (best validation AP), eval mode."""
    best_epoch: int
    best_ap: float
    epochs_run: int
    history: list[dict[str, Any]]
    stopped_early: bool
    train_seconds: float


def _lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f


def train_model(
    train: ChipSet,
    val: ChipSet,
    cfg: TrainConfig,
    workdir: str | Path,
    progress: bool = True,
    stop_after_epoch: int | None = None,
    data_digest: str = "",
) -> TrainResult:
    """Train ``cfg.arch`` on ``train``, select on ``val`` AP; checkpoint/resume in ``workdir``.

    ``stop_after_epoch`` ends this call after that many completed epochs (as a kill would); calling
    again with the same arguments resumes from the checkpoint.
    """
    from tqdm.auto import tqdm

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    if device == "cuda" and cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS needs it set before use
    setup_torch(cfg.threads, cfg.deterministic)
    in_bands = train.pixels.shape[-1]
    torch.manual_seed(cfg.seed)
    model = archs.build(cfg.arch, in_bands).to(device).to(memory_format=torch.channels_last)
    n_pos = int(train.labels.sum())
    n_neg = len(train) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise MinewatchError("--chips", f"training set needs mines and not-mines (has {n_pos} mines, {n_neg} not-mines)")
    pos_weight = cfg.pos_weight if cfg.pos_weight is not None else n_neg / n_pos
    steps_per_epoch = max(1, len(train) // cfg.batch_size)  # drop the ragged last batch (BatchNorm needs >1 sample)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)))
    ema = _EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None

    state: dict[str, Any] = {"epoch": 0, "best_ap": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": [], "seconds": 0.0}
    best_state: dict[str, torch.Tensor] | None = None
    ckpt_path = workdir / CHECKPOINT
    signature = _signature(cfg.to_dict(), len(train), len(val), data_digest)
    if ckpt_path.exists():
        try:
            ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        except Exception as e:  # a corrupt checkpoint is a user-facing problem, not a crash
            raise MinewatchError(ckpt_path, f"unreadable checkpoint ({e.__class__.__name__}); delete it to start over") from None
        old = ck.get("signature") or {}
        if _signature(old.get("config") or {}, old.get("n_train"), old.get("n_val"), old.get("data")) != signature:
            raise MinewatchError(ckpt_path, "checkpoint was made with different settings or data; use another --out or delete it")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        if ema is not None:
            ema.model.load_state_dict(ck["ema"])
        best_state = ck["best_state"]
        state = ck["state"]

    x_train = _to_nchw(train.pixels)
    y_train = torch.from_numpy(train.labels.astype(np.float32))
    val_l2a = simulate_l2a(val.pixels) if val.pixels.shape[-1] == 3 and val.spec.bands == ["B4", "B3", "B2"] else None
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))
    eps = cfg.label_smoothing

    start_epoch = state["epoch"]
    finished = state.get("finished", False)
    bar = tqdm(total=cfg.epochs, initial=start_epoch, desc=f"train {cfg.arch}", unit="epoch", disable=not progress or finished)
    epoch = start_epoch
    while not finished and epoch < cfg.epochs:
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            bar.close()
            raise KeyboardInterrupt(f"stopped after epoch {epoch} (stop_after_epoch)")
        t0 = time.time()
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)
        model.train()
        order = torch.randperm(len(train), generator=g)
        tot, nb = 0.0, 0
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x = augment_batch(x_train[idx].float(), cfg.augment, g).to(device).contiguous(memory_format=torch.channels_last)
            y = (y_train[idx] * (1 - eps) + 0.5 * eps).to(device)
            logits = model(x).reshape(-1)
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(model, epoch * steps_per_epoch + b)
            tot += loss.item()
            nb += 1
        epoch += 1
        scored = ema.model if ema is not None else model
        ap = average_precision(val.labels, predict_logits(scored, val.pixels))
        rec: dict[str, Any] = {"epoch": epoch, "loss": tot / max(1, nb), "val_ap": ap, "lr": sched.get_last_lr()[0]}
        if val_l2a is not None:
            rec["val_ap_sim_l2a"] = average_precision(val.labels, predict_logits(scored, val_l2a))
        state["seconds"] += time.time() - t0
        rec["seconds"] = state["seconds"]
        state["history"].append(rec)
        if ap > state["best_ap"]:
            state.update(best_ap=ap, best_epoch=epoch, bad_epochs=0)
            best_state = {k: v.detach().clone() for k, v in scored.state_dict().items()}
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        if state["bad_epochs"] >= cfg.patience or epoch >= cfg.epochs:
            state["finished"] = True
            state["stopped_early"] = epoch < cfg.epochs
            finished = True
        ck = {
            "signature": signature,
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
            "ema": ema.model.state_dict() if ema is not None else None,
            "best_state": best_state,
            "state": state,
        }
        with atomic_path(ckpt_path) as tmp:
            torch.save(ck, tmp)
        write_json_atomic(workdir / HISTORY, state["history"])
        bar.update(1)
        bar.set_postfix(loss=f"{rec['loss']:.3f}", val_ap=f"{ap:.4f}", best=f"{state['best_ap']:.4f}")
    bar.close()

    final = archs.build(cfg.arch, in_bands)  # on the CPU: export and scoring run there
    assert best_state is not None
    final.load_state_dict({k: v.cpu() for k, v in best_state.items()})
    final.eval()
    return TrainResult(
        model=final,
        best_epoch=state["best_epoch"],
        best_ap=state["best_ap"],
        epochs_run=state["epoch"],
        history=state["history"],
        stopped_early=bool(state.get("stopped_early", False)),
        train_seconds=state["seconds"],
    )


# ----------------------------------------------------------------------------------------------
# The whole job: chips → package


def train_package(
    chips: ChipSet,
    cfg: TrainConfig,
    out: str | Path,
    holdout_regions: list[str | Path] = (),  # type: ignore[assignment]
    holdout_sources: list[str] = (),  # type: ignore[assignment]
    progress: bool = True,
    name: str | None = None,
    stop_after_epoch: int | None = None,
    extra_notes: str = "",
) -> Path:
    """Split, train (resumably, in ``out``), evaluate through ONNX Runtime and write the package."""
    from minewatch.models.package import ModelCard, load_package
    from minewatch.train.export import export_package_graphs

    out = Path(out)
    if cfg.arch not in archs.ARCHS:
        raise MinewatchError("--arch", f"unknown architecture {cfg.arch!r} (choose from {', '.join(archs.ARCHS)})")
    digest = sha256_file(chips.path / "chips.npz") if chips.path is not None and (chips.path / "chips.npz").exists() else ""
    split = make_split(chips, cfg.val_fraction, cfg.split_seed_, holdout_regions, holdout_sources)
    train, val = chips.subset(split.train), chips.subset(split.val)
    if val.labels.sum() == 0 or val.labels.sum() == len(val):
        raise MinewatchError("--val-fraction", "validation set needs both mines and not-mines; use more chips or a larger fraction")
    t0 = time.time()
    res = train_model(train, val, cfg, out, progress=progress, stop_after_epoch=stop_after_epoch, data_digest=digest)

    model = res.model
    fcn = archs.fcn_of(model)
    # The FCN graph's head runs on the 24 px detection lattice only (see arch._StridedHead).
    fcn_stride = STEP_PX if fcn is not None else None
    patch_onnx, fcn_onnx, max_diff = export_package_graphs(model, chips.pixels.shape[-1], val.pixels[:64], tta=cfg.tta, fcn_out_stride=fcn_stride)

    # Score through ONNX Runtime: the numbers in the card are what users' runs get.
    import tempfile

    from minewatch.models.package import save_package

    arch_desc = cfg.arch + (" + dihedral TTA (8 views, mean logit, inside the graphs)" if cfg.tta else "")
    card = ModelCard(name=name or out.name, spec=chips.spec, architecture=arch_desc, fcn_stride=fcn_stride)
    with tempfile.TemporaryDirectory(dir=out) as tmpd:
        save_package(tmpd, card, patch_onnx, fcn_onnx)
        pkg = load_package(tmpd)
        threshold, card_metrics, validated = card_figures(pkg, chips, split, f"val_fraction={cfg.val_fraction}, seed={cfg.split_seed_}")
        card_metrics["onnx_vs_torch_max_abs_diff"] = max_diff

    card.threshold = threshold
    card.metrics = card_metrics
    card.validated_levels = validated
    l2a = card_metrics.get("val_sim_l2a")
    n_pos_tr = int(train.labels.sum())
    card.training = {
        "chips": chips.path.name if chips.path else None,  # a name, not a machine path (chips_sha256 identifies the data)
        "chips_sha256": digest,
        "n_chips": len(chips),
        "n_train": len(train),
        "n_train_pos": n_pos_tr,
        "n_val": len(val),
        "n_val_pos": int(val.labels.sum()),
        "n_holdout": int(sum(len(v) for v in split.holdouts.values())),
        "holdout_regions": [Path(r).name for r in holdout_regions],  # names: cards carry no machine paths
        "device": device_description(resolve_device(cfg.device), cfg.threads),
        "holdout_sources": list(holdout_sources),
        "seed": cfg.seed,
        "epochs_run": res.epochs_run,
        "best_epoch": res.best_epoch,
        "stopped_early": res.stopped_early,
        "train_seconds": round(res.train_seconds, 1),
        "seconds_this_call": round(time.time() - t0, 1),  # a resumed/re-exported run: only this call
        "augmentations": cfg.augment.describe(),
        "config": cfg.to_dict(),
        "params": archs.n_params(model),
        "torch": torch.__version__,
        "threshold_rule": "F0.5-optimal on the validation set",
        "date": dt.date.today().isoformat(),
    }
    if l2a is not None:
        card.notes = (
            (
                f"L2A: trained with a physically based L1C→L2A atmospheric augmentation on {cfg.augment.atmosphere_p:.0%} of each batch "
                "(per-band path reflectance and transmittance of random tropical atmospheres removed in DN space, then re-rendered). "
                if cfg.augment.atmosphere_p > 0
                else "L2A: no atmospheric augmentation. "
            )
            + "The L2A figures are measured on a simulated-L2A copy of the validation set (validated_levels.L2A.how), not on real L2A chips. "
            + extra_notes
        ).strip()
    else:
        card.notes = extra_notes
    card.metrics = metrics.json_safe(card.metrics)
    card.validated_levels = metrics.json_safe(card.validated_levels)
    write_package(out, card, patch_onnx, fcn_onnx)
    return out


def read_history(workdir: str | Path) -> list[dict[str, Any]]:
    p = Path(workdir) / HISTORY
    return json.loads(p.read_text()) if p.exists() else []
