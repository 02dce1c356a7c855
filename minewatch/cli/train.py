"""``minewatch train``: chips → a trained, evaluated model package (needs the ``[train]`` extra)."""

from __future__ import annotations

import click

from minewatch.errors import MinewatchError


@click.command("train")
@click.option("--chips", "chips_dirs", required=True, multiple=True, type=click.Path(), help="Chip dataset folder (chips.npz + chips.csv [+ bands.json]); with --init repeatable: the local chips to fine-tune on.")
@click.option("--init", "init", default=None, help="Fine-tune this model package (a folder, or 'default') instead of training from scratch.")
@click.option("--replay", default=None, type=click.Path(), help="With --init: the original training chips to mix in (default: the ones the card names, else the shared chips).")
@click.option("--no-replay", is_flag=True, help="With --init: fine-tune on the local chips only.")
@click.option("--keep", default=None, type=click.FloatRange(0, 1, max_open=True),
              help="With --init: interpolate the fine-tuned weights back toward the base by this share (0 = plain fine-tune) [default: the FinetuneConfig default, see docs/models.md].")
@click.option("--distill", default=None, type=click.FloatRange(min=0),
              help="With --init: weight of holding the base's scores on the replay chips (logit distillation; 0 = off) [default: the FinetuneConfig default, see docs/models.md].")
@click.option("--hard-share", default=None, type=click.FloatRange(0, 1),
              help="With --init: share of the replay chips drawn from the tenth of their not-mines the base scores highest (0 = off) [default: the FinetuneConfig default, see docs/models.md].")
@click.option("--max-drift", default=None, type=click.FloatRange(min=0),
              help="With --init: pick the keep per fine-tune, the least (at or above --keep) that moves the base's scores of replay chips by at most this [default: the FinetuneConfig default, see docs/models.md].")
@click.option("--eval-chips", multiple=True, type=click.Path(), help="With --init: held-out local chips to measure before/after (never trained on; repeatable).")
@click.option("--arch", default="mwnet", show_default=True, help="Architecture: cnn100k, mwnet-tiny, mwnet-s, mwnet, mwnet-w, mwnet-s2d, mwnet-s2d-w.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(), help="Model package folder (also holds the resumable checkpoint).")
@click.option("--bands", default=None, help="Expected bands, comma-separated (e.g. B4,B3,B2); checked against the chips.")
@click.option("--epochs", default=None, type=click.IntRange(1), help="Epochs [default: 30; with --init: 20 passes over the local chips].")
@click.option("--batch-size", default=None, type=click.IntRange(2), help="[default: 128; with --init: 64, a quarter local, the rest replay].")
@click.option("--lr", default=None, type=click.FloatRange(min=0, min_open=True), help="Peak learning rate (AdamW, warm-up + cosine) [default: 3e-3 (AdamW); with --init: 3e-3 (SGD, Nesterov momentum)].")
@click.option("--weight-decay", default=0.02, show_default=True, type=click.FloatRange(min=0))
@click.option("--patience", default=8, show_default=True, type=click.IntRange(1), help="Early stopping: epochs without a better validation AP.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of initialisation, batch order and augmentation (and of the split unless --split-seed).")
@click.option("--split-seed", default=None, type=int, help="Seed of the site-level train/validation split (default: --seed). Give ensemble members one split seed.")
@click.option("--val-fraction", default=0.15, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--holdout-region", multiple=True, type=click.Path(), help="Polygon file: chips inside are never trained on and are reported separately (repeatable).")
@click.option("--holdout-source", multiple=True, help="Source name or glob: held out of training, reported separately (repeatable).")
@click.option("--atmosphere-p", default=0.4, show_default=True, type=click.FloatRange(0, 1), help="Share of each batch given the L1C→L2A atmospheric augmentation.")
@click.option("--ema", default=0.0, show_default=True, type=click.FloatRange(0, 1, max_open=True), help="Weight EMA decay (0 = off).")
@click.option("--tta/--no-tta", default=False, show_default=True, help="Put dihedral test-time augmentation inside the exported graphs.")
@click.option("--workers", "threads", default=None, type=click.IntRange(1), help="CPU threads for training, like --workers elsewhere [default: every core this process may use].")
@click.option("--threads", "threads_old", default=None, type=click.IntRange(1), hidden=True, help="Old spelling of --workers.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"], case_sensitive=False), default="auto", show_default=True,
              help="Where PyTorch trains: auto = a CUDA GPU when PyTorch sees one, else the CPU.")
@click.option("--name", default=None, help="Model name in the card (default: the --out folder name).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(
    chips_dirs: tuple[str, ...],
    init: str | None,
    replay: str | None,
    no_replay: bool,
    keep: float | None,
    distill: float | None,
    max_drift: float | None,
    hard_share: float | None,
    eval_chips: tuple[str, ...],
    arch: str,
    out_dir: str,
    bands: str | None,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    weight_decay: float,
    patience: int,
    seed: int,
    split_seed: int | None,
    val_fraction: float,
    holdout_region: tuple[str, ...],
    holdout_source: tuple[str, ...],
    atmosphere_p: float,
    ema: float,
    tta: bool,
    threads: int | None,
    threads_old: int | None,
    device: str,
    name: str | None,
    quiet: bool,
) -> None:
    """Train a mine classifier on a chip dataset and write a model package.

    Site-level train/validation split, optional geographic or per-source hold-outs, augmentation,
    class weighting, early stopping on validation average precision. Interrupted runs resume from
    the checkpoint in --out when the same command is run again.
    """
    try:
        import torch  # noqa: F401
    except ImportError:
        raise MinewatchError("minewatch train", "needs PyTorch: pip install -e '.[train]'") from None
    from minewatch.chips import load_chips
    from minewatch.models.arch import ARCHS
    from minewatch.train.augment import AugmentConfig
    from minewatch.train.loop import TrainConfig, train_package

    from minewatch.train.finetune import default_threads

    threads = threads or threads_old or default_threads()
    from minewatch.train.loop import device_description, resolve_device

    dev = resolve_device(device)
    if init is not None:
        if dev == "cuda":
            raise MinewatchError("--device cuda", "fine-tuning (--init) runs on the CPU; drop --device or use --device cpu")
        _finetune(init, chips_dirs, out_dir, replay, no_replay, eval_chips, bands, epochs, batch_size, lr, seed, threads, name, quiet, keep, distill, max_drift, hard_share)
        return
    if replay is not None or no_replay or eval_chips or keep is not None or distill is not None or max_drift is not None or hard_share is not None:
        raise MinewatchError("--replay/--no-replay/--eval-chips/--keep/--distill/--max-drift/--hard-share", "only with --init (fine-tuning)")
    if len(chips_dirs) > 1:
        raise MinewatchError("--chips", "give one chip dataset to train from scratch (several only with --init)")
    chips_dir = chips_dirs[0]
    epochs, batch_size, lr = epochs or 30, batch_size or 128, lr or 3e-3
    if arch not in ARCHS:
        raise MinewatchError("--arch", f"unknown architecture {arch!r} (choose from {', '.join(ARCHS)})")
    chips = load_chips(chips_dir)
    if bands is not None:
        want = [b.strip() for b in bands.split(",") if b.strip()]
        if want != chips.spec.bands:
            raise MinewatchError(chips_dir, f"--bands {','.join(want)} but the chips hold {len(chips.spec.bands)} bands {','.join(chips.spec.bands)}")
    aug = AugmentConfig(atmosphere_p=atmosphere_p if chips.spec.bands == ["B4", "B3", "B2"] else 0.0, bands=list(chips.spec.bands))
    cfg = TrainConfig(
        arch=arch,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        patience=patience,
        seed=seed,
        split_seed=split_seed,
        val_fraction=val_fraction,
        ema_decay=ema,
        threads=threads,
        device=dev,
        augment=aug,
        tta=tta,
    )
    from minewatch.runs import DirectRun, abs_path

    out_dir = str(abs_path(out_dir))
    params = {"arch": arch, "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "patience": patience,
              "seed": seed, "split_seed": split_seed, "val_fraction": val_fraction, "atmosphere_p": atmosphere_p, "ema": ema,
              "tta": tta, "holdout_source": list(holdout_source), "name": name}  # fmt: skip
    inputs = {"chips": abs_path(chips_dir), "holdout_region": [abs_path(r) for r in holdout_region]}
    with DirectRun(out_dir, "train", params, inputs) as run:  # resumes from the checkpoint a killed run left
        if not quiet:
            click.echo(f"training on {device_description(dev, threads)}", err=True)
        out = train_package(chips, cfg, str(run.target), list(holdout_region), list(holdout_source), progress=not quiet, name=name)
    from minewatch.models.package import load_package

    card = load_package(out).card
    v = card.metrics["val"]
    click.echo(
        f"wrote {out}: val AP {v['ap']:.4f}, ROC AUC {v['roc_auc']:.4f}, threshold {card.threshold:.3f} "
        f"(sens {v['sensitivity']:.3f}, spec {v['specificity']:.3f}), sens@spec0.99 {v['sens_at_spec99']:.3f}"
    )
    for hname, h in card.metrics.get("holdouts", {}).items():
        parts = [f"{k} {val:.3f}" for k, val in h.items() if k.startswith(("sensitivity", "specificity")) and val is not None]
        click.echo(f"  hold-out {hname}: n={h['n']} " + ", ".join(parts))


def _finetune(init: str, chips_dirs: tuple[str, ...], out_dir: str, replay: str | None, no_replay: bool, eval_chips: tuple[str, ...],
              bands: str | None, epochs: int | None, batch_size: int | None, lr: float | None, seed: int, threads: int,
              name: str | None, quiet: bool, keep: float | None = None, distill: float | None = None, max_drift: float | None = None,
              hard_share: float | None = None) -> None:  # fmt: skip
    from minewatch.chips import load_chips
    from minewatch.models.package import load_package
    from minewatch.train.finetune import FinetuneConfig, finetune_package

    if replay is not None and no_replay:
        raise MinewatchError("--replay/--no-replay", "give one of them")
    if no_replay and hard_share:
        raise MinewatchError("--hard-share", "draws from the replay chips: it needs replay (drop --no-replay)")
    local = [load_chips(d) for d in chips_dirs]
    if bands is not None:
        want = [b.strip() for b in bands.split(",") if b.strip()]
        for c in local:
            if want != c.spec.bands:
                raise MinewatchError(c.path, f"--bands {','.join(want)} but the chips hold {','.join(c.spec.bands)}")
    given = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "keep": keep, "distill": distill, "max_drift": max_drift, "hard_share": hard_share}
    cfg = FinetuneConfig(seed=seed, threads=threads, **{k: v for k, v in given.items() if v is not None})  # the rest: FinetuneConfig's defaults
    from minewatch.runs import DirectRun, abs_local, abs_path

    params = {"init": init, "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": seed, "no_replay": no_replay, "name": name, "keep": cfg.keep, "distill": cfg.distill, "max_drift": cfg.max_drift, "hard_share": cfg.hard_share}
    inputs = {"init": abs_local(init), "chips": [abs_path(c) for c in chips_dirs], "replay": abs_path(replay) if replay else None,
              "eval_chips": [abs_path(e) for e in eval_chips]}  # fmt: skip
    with DirectRun(abs_path(out_dir), "train", params, inputs) as run:
        out = finetune_package(init, local, str(run.target), cfg, replay_dir=replay, no_replay=no_replay, eval_sets=[load_chips(e) for e in eval_chips],
                               name=name, progress=not quiet, log=lambda s: click.echo(s, err=True))  # fmt: skip
    card = load_package(out).card
    ft = card.training["finetune"]
    v = card.metrics.get("val")
    line = f"wrote {out}: fine-tuned {card.training['init']['name']} on {ft['n_local']} local chips ({ft['n_local_pos']} mines)"
    if v:
        b = card.metrics.get("base_val") or {}
        line += f"; validation AP {v['ap']:.4f} (base {b.get('ap') or float('nan'):.4f}), sens@spec0.99 {v['sens_at_spec99']:.3f}, threshold {card.threshold:.3f}"
    click.echo(line)
    for m in ft.get("members", []):
        if "drift_by_keep" in m:  # --max-drift: the keep each member ended with, and why
            drift = m["drift_by_keep"][format(m["keep"], "g")]
            click.echo(f"  member {m['member']}: keep {m['keep']:g} (score drift {drift:.4f}, budget {cfg.max_drift:g})")
    for k, e in card.metrics.get("local_eval", {}).items():
        f, b = e["finetuned"], e["base"]
        parts = [f"{m} {f[m]:.3f} (base {b[m]:.3f})" for m in f if m.startswith(("sensitivity", "specificity", "ap")) and f.get(m) is not None and b.get(m) is not None]
        click.echo(f"  local {k}: n={f['n']} " + ", ".join(parts))
