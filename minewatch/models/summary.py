"""The figures of a model card that a reader needs, with what each means.

A card holds everything (``minewatch models show --json``: about 1,600 lines for the shipped
ensemble); a person deciding whether to trust a map needs about ten numbers. One function picks
them so ``minewatch models show`` and the report's model card say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Figure:
    """One headline figure: a label, its value as text, and one sentence on what it means."""

    label: str
    value: str
    meaning: str


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _pct(v: Any) -> str:
    x = _num(v)
    return "–" if x is None else f"{x * 100:.0f} %"


def headline(card: dict[str, Any]) -> list[Figure]:
    """The card's headline figures (only those it has), on validation data the model never trained on."""
    m = card.get("metrics") or {}
    val = m.get("val") if isinstance(m.get("val"), dict) else {}
    out: list[Figure] = []
    n, npos = val.get("n"), val.get("n_pos")
    where = f" ({n:,} validation chips, {npos:,} mines)" if isinstance(n, int) and isinstance(npos, int) else ""
    if _num(val.get("ap")) is not None:
        out.append(Figure("Average precision (validation)", f"{val['ap']:.3f}",
                          f"ranking quality from 0 to 1 on chips from sites never seen in training{where}"))  # fmt: skip
    if _num(val.get("sensitivity")) is not None:
        out.append(Figure("Mines found at the threshold", _pct(val["sensitivity"]),
                          f"share of validation mines scored above the decision threshold ({_num(card.get('threshold')) or 0:.3f})"))  # fmt: skip
    if _num(val.get("specificity")) is not None:
        out.append(Figure("Non-mines correctly rejected", _pct(val["specificity"]),
                          "share of validation non-mine chips scored below the threshold; the rest are false alarms"))  # fmt: skip
    if _num(val.get("sens_at_spec99")) is not None:
        out.append(Figure("Mines found at 99 % specificity", _pct(val["sens_at_spec99"]),
                          "with a stricter threshold that lets through only 1 in 100 non-mines (used for isolated patches)"))  # fmt: skip
    levels = {str(k).upper(): v for k, v in (card.get("validated_levels") or {}).items() if isinstance(v, dict)}
    l2a = levels.get("L2A") or {}
    trained = str((card.get("spec") or {}).get("level", "")).upper()
    if trained != "L2A" and _num(l2a.get("ap")) is not None:
        sim = "simulated " if l2a.get("simulated") else ""
        out.append(Figure(f"Average precision on {sim}L2A", f"{l2a['ap']:.3f}",
                          f"the same validation chips converted to surface reflectance ({'a physical simulation, not real L2A chips' if sim else 'real L2A'}); "
                          f"the account-free imagery is L2A, the model was trained on {trained or 'another level'}"))  # fmt: skip
    sel = m.get("selection") or {}
    chosen = (sel.get("candidates") or {}).get(sel.get("chosen")) or {}
    if _num(chosen.get("heldout_sens_threshold")) is not None:
        out.append(Figure("Mines found in places left out of training", _pct(chosen["heldout_sens_threshold"]),
                          f"re-trained with whole regions held out, at its own threshold ({_pct(chosen.get('heldout_sens_spec99'))} at 99 % specificity): "
                          "what to expect in a new region"))  # fmt: skip
    return out


def summary_lines(card: dict[str, Any], where: str = "") -> list[str]:
    """One screen: what the model is, its inputs, threshold, headline figures, members."""
    spec = card.get("spec") or {}
    members = card.get("members") or []
    lines = [
        f"{card.get('name', '?')}: {card.get('architecture', '')}" + (f"  [{where}]" if where else ""),
        f"  input       bands {','.join(spec.get('bands', []))}, {spec.get('level', '?')} (trained on), "
        f"{card.get('patch_px', '?')} px patches ({(card.get('patch_px') or 0) * 10} m) every {card.get('step_px', '?')} px",
        f"  threshold   {_num(card.get('threshold')) or 0:.3f} (a patch scoring at least this is called mining)"
        + (f"; isolated patches {(card.get('metrics') or {}).get('val_threshold_spec99'):.3f}"
           if _num((card.get('metrics') or {}).get('val_threshold_spec99')) is not None else ""),
        f"  levels      validated on {', '.join(sorted(map(str, (card.get('validated_levels') or {}).keys()))) or 'none recorded'}",
        f"  members     {len(members)}: {', '.join(map(str, members))}",
    ]
    figs = headline(card)
    if figs:
        lines.append("  figures     (on data the model never trained on)")
        w = max(len(f.label) for f in figs)
        for f in figs:
            lines.append(f"    {f.label:<{w}}  {f.value:>6}  {f.meaning}")
    else:
        lines.append("  figures     none in the card (evaluate it with: minewatch evaluate --model … --chips …)")
    t = card.get("training") or {}
    if t.get("chips"):
        lines.append(f"  trained on  {t['chips']}" + (f" (sha256 {str(t['chips_sha256'])[:12]}…)" if t.get("chips_sha256") else ""))
    lines.append("  everything: minewatch models show NAME --json")
    return lines


__all__ = ["Figure", "headline", "summary_lines"]
