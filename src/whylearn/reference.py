"""Published beside measured: the ``reference`` block of an experiment, checked against its run.

Each experiment yaml declares what the literature reports, at the top level::

    reference:
      - quantity: test/acc          # a key of the run's summary.json
        published: 0.68             # a number, or [low, high]
        source: "Greydanus 2020, mnist1d README, baseline table (MLP)"
        tolerance: 0.02             # absolute
        relation: approx            # optional: approx (default) | at_least | at_most
        note: "..."                 # optional: how this set-up departs from the published one
    # or, when there is no published number:
    reference: {none: "why there is no published number for this set-up"}

(An experiment whose ``defaults`` parent declares a list writes ``reference: [{none: "..."}]``:
OmegaConf cannot merge a mapping onto a list.)

Verdicts (``tol`` = tolerance; a single number p is the range [p, p]):

    approx     pass iff  low - tol <= measured <= high + tol
    at_least   pass iff  measured >= low - tol
    at_most    pass iff  measured <= high + tol

and ``not_measured`` when the run's summary has no number under ``quantity`` (the entry says why).

Optional fields beyond the format above:
  - ``when: {config.key: value or [values]}``: the entry applies only to runs whose composed config
    has those values (e.g. a published number for 20% label noise only); entries that do not apply
    are left out of the run's block.
  - ``figure``: a figure file name (stem, e.g. ``accuracy``) or a list of them on which the published
    value is drawn (:func:`draw`); ``axis``: ``y`` (a horizontal line, default) or ``x`` (a vertical
    line, e.g. a step count); ``panel``: the index of the axes in that figure (default 0);
    ``label``: the legend text (default "published: <value> (<source>)"); ``panel`` may be a list.

The run (:func:`whylearn.experiment.run`) validates the block before anything is written
(:func:`from_config`), activates it so that every figure saved through
:func:`whylearn.analysis.plotting.save_figure` draws its published values
(:func:`activate`, :func:`draw_active`), writes the evaluated block into summary.json
(:func:`evaluate`) and prints it (:func:`report_lines`). ``whylearn-analyze fidelity``
collects the blocks of every run under a folder into one table.

This module is pure: no Lightning, no Hydra; configs are read through OmegaConf only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

REQUIRED = ("quantity", "published", "source", "tolerance")
OPTIONAL = ("relation", "note", "when", "figure", "axis", "panel", "label")
ALLOWED_KEYS = REQUIRED + OPTIONAL
RELATIONS = ("approx", "at_least", "at_most")
AXES = ("y", "x")
VERDICTS = ("pass", "fail", "not_measured")
COLORS = ("crimson", "darkviolet", "darkgoldenrod", "teal")  # published lines, one colour per entry of a figure


class ReferenceBlockError(ValueError):
    """A malformed ``reference`` block; the message names the key and what is allowed."""


def _plain(block: Any) -> Any:
    """OmegaConf containers -> plain Python (resolved); anything else as it is."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return block
    if isinstance(block, (DictConfig, ListConfig)):
        return OmegaConf.to_container(block, resolve=True)
    return block


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))


def _published_range(published: Any, where: str) -> tuple[float, float]:
    if _is_number(published):
        return float(published), float(published)
    if isinstance(published, (list, tuple)) and len(published) == 2 and all(_is_number(v) for v in published):
        low, high = float(published[0]), float(published[1])
        if low > high:
            raise ReferenceBlockError(f"{where}.published: the range [low, high] needs low <= high, got {list(published)}")
        return low, high
    raise ReferenceBlockError(f"{where}.published must be a number or [low, high] (two numbers), got {published!r}")


def validate(block: Any, where: str = "reference") -> list[dict[str, Any]] | dict[str, str] | None:
    """Check a ``reference`` block and return it as plain Python (a list of entries, ``{"none": why}`` or None).

    Raises:
        ReferenceBlockError: naming the offending key (``reference[i].key``) and what is allowed.
    """
    block = _plain(block)
    if block is None:
        return None
    if (isinstance(block, list) and len(block) == 1 and isinstance(block[0], Mapping) and "none" in block[0]
            and not set(block[0]) & set(REQUIRED)):
        block = block[0]  # [{none: why}]: the form an experiment uses when its defaults parent declares a list
    if isinstance(block, Mapping):
        if set(block) != {"none"}:
            raise ReferenceBlockError(
                f"{where} as a mapping must be exactly {{none: \"why there is no published number\"}}; got keys "
                f"{sorted(block)}; otherwise give a list of entries with keys {list(REQUIRED)} (optional: {list(OPTIONAL)})")
        why = block["none"]
        if not isinstance(why, str) or not why.strip():
            raise ReferenceBlockError(f"{where}.none must be a non-empty string saying why there is no published number, "
                                      f"got {why!r}")
        return {"none": why}
    if not isinstance(block, Sequence) or isinstance(block, str) or not block:
        raise ReferenceBlockError(f"{where} must be a non-empty list of entries or {{none: \"why\"}}, got {block!r}")
    entries = []
    for i, entry in enumerate(block):
        at = f"{where}[{i}]"
        if not isinstance(entry, Mapping):
            raise ReferenceBlockError(f"{at} must be a mapping with keys {list(REQUIRED)}, got {entry!r}")
        unknown = sorted(set(entry) - set(ALLOWED_KEYS))
        if unknown:
            raise ReferenceBlockError(f"{at}: unknown key {unknown[0]!r}; allowed: {list(ALLOWED_KEYS)}")
        missing = [k for k in REQUIRED if k not in entry or entry[k] is None]
        if missing:
            raise ReferenceBlockError(f"{at}: missing key {missing[0]!r}; required: {list(REQUIRED)}")
        if not isinstance(entry["quantity"], str) or not entry["quantity"]:
            raise ReferenceBlockError(f"{at}.quantity must be a summary.json key (a non-empty string), got {entry['quantity']!r}")
        _published_range(entry["published"], at)
        if not isinstance(entry["source"], str) or not entry["source"].strip():
            raise ReferenceBlockError(f"{at}.source must name the paper and its table/figure/equation, got {entry['source']!r}")
        tol = entry["tolerance"]
        if not _is_number(tol) or tol < 0:
            raise ReferenceBlockError(f"{at}.tolerance must be a number >= 0 (absolute), got {tol!r}")
        relation = entry.get("relation", "approx")
        if relation not in RELATIONS:
            raise ReferenceBlockError(f"{at}.relation: unknown relation {relation!r}; allowed: {list(RELATIONS)}")
        for key in ("note", "label"):
            if key in entry and not isinstance(entry[key], str):
                raise ReferenceBlockError(f"{at}.{key} must be a string, got {entry[key]!r}")
        when = entry.get("when")
        if when is not None and (not isinstance(when, Mapping) or not when
                                 or not all(isinstance(k, str) for k in when)):
            raise ReferenceBlockError(f"{at}.when must be a mapping {{config.key: value or [values]}}, got {when!r}")
        fig = entry.get("figure")
        if fig is not None and not (isinstance(fig, str) or (isinstance(fig, Sequence) and fig
                                                             and all(isinstance(f, str) for f in fig))):
            raise ReferenceBlockError(f"{at}.figure must be a figure name (file stem) or a list of them, got {fig!r}")
        if entry.get("axis", "y") not in AXES:
            raise ReferenceBlockError(f"{at}.axis: unknown axis {entry['axis']!r}; allowed: {list(AXES)}")
        panel = entry.get("panel", 0)
        panels = panel if isinstance(panel, (list, tuple)) and panel else [panel]
        if not all(isinstance(q, int) and not isinstance(q, bool) and q >= 0 for q in panels):
            raise ReferenceBlockError(f"{at}.panel must be an integer >= 0 (the axes' index in the figure) or a list "
                                      f"of them, got {panel!r}")
        entries.append(dict(entry))
    return entries


def _matches(actual: Any, wanted: Any) -> bool:
    options = wanted if isinstance(wanted, (list, tuple)) else [wanted]
    for w in options:
        if _is_number(actual) and _is_number(w) and not isinstance(actual, bool) and not isinstance(w, bool):
            if math.isclose(float(actual), float(w), rel_tol=1e-9, abs_tol=1e-12):
                return True
        elif actual == w or (actual is not None and str(actual) == str(w)):
            return True
    return False


def applies(entry: Mapping[str, Any], cfg: Any) -> bool:
    """Whether ``entry``'s ``when`` conditions hold in the composed config ``cfg`` (True without ``when``)."""
    when = entry.get("when")
    if not when:
        return True
    from omegaconf import DictConfig, OmegaConf

    conf = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(_plain(cfg))
    return all(_matches(_plain(OmegaConf.select(conf, key, default=None)), wanted) for key, wanted in when.items())


def from_config(cfg: Any) -> list[dict[str, Any]] | dict[str, str] | None:
    """The validated ``reference`` block of a composed run config, keeping the entries that apply to it.

    Raises:
        ReferenceBlockError: a malformed block (before the run writes anything).
    """
    block = validate(cfg.get("reference") if hasattr(cfg, "get") else None)
    if isinstance(block, list):
        kept = [e for e in block if applies(e, cfg)]
        if not kept:
            return {"none": "no entry of the reference block applies to this run's config (their `when` conditions: "
                            + "; ".join(str(e.get("when")) for e in block) + ")"}
        return kept
    return block


def verdict(entry: Mapping[str, Any], measured: Any) -> str:
    """``pass`` | ``fail`` | ``not_measured`` of one (validated) entry for a measured value."""
    if isinstance(measured, bool):
        measured = float(measured)
    if not _is_number(measured) or (isinstance(measured, float) and math.isinf(measured)):
        return "not_measured"
    low, high = _published_range(entry["published"], "reference")
    tol = float(entry["tolerance"])
    relation = entry.get("relation", "approx")
    eps = 1e-12 * max(1.0, abs(low), abs(high))  # a value exactly at the edge passes despite float rounding
    ok_low = measured >= low - tol - eps
    ok_high = measured <= high + tol + eps
    passed = ok_low if relation == "at_least" else ok_high if relation == "at_most" else (ok_low and ok_high)
    return "pass" if passed else "fail"


def evaluate(block: Any, summary: Mapping[str, Any]) -> list[dict[str, Any]] | dict[str, str] | None:
    """The block for summary.json: each entry with ``measured`` (summary[quantity] or None) and its ``verdict``.

    ``block`` is what :func:`from_config` returned (or a raw block, validated here).
    """
    block = validate(block)
    if not isinstance(block, list):
        return block
    out = []
    for entry in block:
        value = summary.get(entry["quantity"])
        measured = float(value) if isinstance(value, bool) else value if _is_number(value) else None
        row = {k: entry[k] for k in ALLOWED_KEYS if k in entry and k not in ("figure", "axis", "panel", "label")}
        row.setdefault("relation", "approx")
        row["measured"] = measured
        row["verdict"] = verdict(entry, measured)
        if row["verdict"] == "not_measured":
            row["why"] = (f"summary has no number under {entry['quantity']!r}" if value is None
                          else f"summary[{entry['quantity']!r}] = {value!r} is not a finite number")
        out.append(row)
    return out


def format_value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4g}"
    return str(v)


def describe_published(entry: Mapping[str, Any]) -> str:
    """The published value with its relation and tolerance, e.g. ``0.68 ± 0.02`` or ``>= 0.99 (tol 0)``."""
    pub, tol = format_value(entry["published"]), format_value(entry["tolerance"])
    relation = entry.get("relation", "approx")
    if relation == "at_least":
        return f">= {pub} (tol {tol})"
    if relation == "at_most":
        return f"<= {pub} (tol {tol})"
    return f"{pub} ± {tol}"


def report_lines(block: Any) -> list[str]:
    """Lines for the run report: one per entry, published beside measured, with the verdict and source."""
    if block is None:
        return ["  reference:   none declared (add a `reference` block to the experiment; see whylearn.reference)"]
    if isinstance(block, Mapping):
        return [f"  reference:   no published number: {block.get('none')}"]
    lines = ["  reference (published beside measured):"]
    for e in block:
        line = (f"    {e['verdict'].upper():<12} {e['quantity']}: measured {format_value(e.get('measured'))}, "
                f"published {describe_published(e)}  [{e['source']}]")
        if e.get("note"):
            line += f"  note: {e['note']}"
        if e.get("why"):
            line += f"  ({e['why']})"
        lines.append(line)
    return lines


# -- figures ---------------------------------------------------------------------------------------------------------
_ACTIVE: list[dict[str, Any]] = []


def activate(block: Any) -> None:
    """Make ``block``'s entries the ones :func:`draw_active` draws (the current run's; None or none-blocks clear it)."""
    global _ACTIVE
    block = validate(block)
    _ACTIVE = list(block) if isinstance(block, list) else []


def active() -> list[dict[str, Any]]:
    """The entries activated for the current run."""
    return list(_ACTIVE)


def _figures_of(entry: Mapping[str, Any]) -> list[str]:
    fig = entry.get("figure")
    return [] if fig is None else [fig] if isinstance(fig, str) else list(fig)


def entries_for(block: Iterable[Mapping[str, Any]] | None, figure: str) -> list[Mapping[str, Any]]:
    """The entries of ``block`` that ask to be drawn on the figure named ``figure`` (file stem)."""
    return [e for e in (block or []) if figure in _figures_of(e)]


def draw(ax, entry: Mapping[str, Any], color: str = "crimson") -> None:
    """Draw one entry's published value on matplotlib axes ``ax``: a dashed line (or a shaded band for a
    [low, high] range) across the axes, horizontal for ``axis: y``, vertical for ``axis: x``, labelled."""
    low, high = _published_range(entry["published"], "reference")
    label = entry.get("label") or f"published: {format_value(entry['published'])} ({entry['source']})"
    if len(label) > 70:
        label = label[:67] + "..."
    vertical = entry.get("axis", "y") == "x"
    if low == high:
        (ax.axvline if vertical else ax.axhline)(low, color=color, ls="--", lw=1.2, label=label)
    else:
        (ax.axvspan if vertical else ax.axhspan)(low, high, color=color, alpha=0.15, label=label)


def draw_entries(fig, block: Iterable[Mapping[str, Any]] | None, figure: str) -> int:
    """Draw on ``fig`` every entry of ``block`` that names ``figure``; refresh the legends. Returns how many."""
    if not isinstance(block, Iterable) or isinstance(block, Mapping):  # None or a {none: ...} block
        return 0
    axes = list(fig.axes)
    n = 0
    for i, entry in enumerate(entries_for(block, figure)):
        panel = entry.get("panel", 0)
        for q in panel if isinstance(panel, (list, tuple)) else [panel]:
            if q >= len(axes):
                continue
            draw(axes[q], entry, color=COLORS[i % len(COLORS)])
            axes[q].legend(fontsize=7)
            n += 1
    return n


def draw_active(fig, figure: str) -> int:
    """Draw the current run's published values that name ``figure`` (see :func:`activate`)."""
    return draw_entries(fig, _ACTIVE, figure) if _ACTIVE else 0
