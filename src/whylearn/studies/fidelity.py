"""``whylearn-analyze fidelity``: published beside measured, one table over every run under a folder.

    whylearn-analyze fidelity outputs
    whylearn-analyze fidelity outputs --all --write-docs docs/experiments.md

Every ``summary.json`` under the folder is one run; its ``reference`` block (written by the run, see
:mod:`whylearn.reference`) gives each published value with the run's measured value and verdict.
Runs written before the block existed are evaluated here from their ``config.yaml`` (the resolved
config, which holds the block) and their summary. Runs of the same experiment and setting (the
Hydra overrides other than the seed, paths and the like) are one row: the mean ± sd of the measured
values over the seeds, the verdict of the mean and how many single runs passed. ``--all`` adds a
row for every experiment config of the package that has no run under the folder ("not run"), so
the table covers every experiment. ``--write-docs FILE`` replaces the section between the markers
:data:`BEGIN` and :data:`END` of ``FILE`` (docs/experiments.md) with the table.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whylearn import reference

BEGIN = "<!-- fidelity-table:begin -->"
END = "<!-- fidelity-table:end -->"
# overrides that do not change what a run measures: they do not split runs into separate rows
IGNORED_OVERRIDES = ("seed", "experiment", "paths.", "hydra.", "threads", "logger", "progress", "trainer.accelerator",
                     "trainer.devices", "task_name", "tags", "ckpt_path", "callbacks.model_checkpoint")
COLUMNS = ("experiment", "setting", "quantity", "published", "measured", "verdict", "source", "note")


@dataclass
class Run:
    """One run found under the folder: where, which experiment, its setting, seed, status and block."""

    path: Path
    experiment: str
    setting: str
    seed: Any
    status: str
    block: Any
    recomputed: bool = False


@dataclass
class Row:
    """One line of the table: an entry of a block over the runs of one experiment and setting."""

    experiment: str
    setting: str
    quantity: str = "-"
    published: str = "-"
    measured: list[float] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    seeds: list[Any] = field(default_factory=list)
    source: str = ""
    note: str = ""
    entry: dict | None = None
    kind: str = "entry"   # entry | none | missing | not_run

    @property
    def verdict(self) -> str:
        """The verdict of the mean over the runs (``pass`` | ``fail`` | ``not_measured``), or what the row is."""
        if self.kind == "none":
            return "no published number"
        if self.kind == "missing":
            return "no reference block"
        if self.kind == "not_run":
            return "not run"
        if not self.measured:
            return "not_measured"
        v = reference.verdict(self.entry, statistics.fmean(self.measured))
        runs = len(self.verdicts)
        if runs > 1:
            passed = sum(x == "pass" for x in self.verdicts)
            return f"{v} ({passed}/{runs} runs pass)"
        return v

    def measured_text(self) -> str:
        if self.kind != "entry":
            return "-"
        if not self.measured:
            return "-"
        if len(self.measured) == 1:
            return reference.format_value(self.measured[0]) + self._seeds_text()
        mean, sd = statistics.fmean(self.measured), statistics.stdev(self.measured)
        return f"{reference.format_value(mean)} ± {sd:.2g}" + self._seeds_text()

    def _seeds_text(self) -> str:
        n = len(self.measured)
        missing = len(self.verdicts) - n
        text = " (1 seed)" if n == 1 else f" ({n} seeds)"
        return text + (f", {missing} not measured" if missing else "")

    def cells(self) -> dict[str, str]:
        return {"experiment": self.experiment, "setting": self.setting or "default", "quantity": self.quantity,
                "published": self.published, "measured": self.measured_text(), "verdict": self.verdict,
                "source": self.source, "note": self.note}


def _overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    from omegaconf import OmegaConf

    return [str(o) for o in OmegaConf.load(path)]


def setting_of(overrides: list[str]) -> str:
    """The overrides that change what a run measures, sorted and joined (the seed, paths ... left out).

    The fields of one callback are written together, ``callbacks.early_stop(mode=max, monitor=val/acc)``
    (its ``_target_`` left out), so that an added callback stays one readable item of the setting."""
    kept, grouped = [], {}
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if any(key == ign.rstrip(".") or key.startswith(ign.rstrip(".") + ".") for ign in IGNORED_OVERRIDES):
            continue
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "callbacks" and not o.startswith("~"):
            fields = grouped.setdefault(parts[1], [])
            if parts[2] != "_target_":
                fields.append(f"{parts[2]}={value}")
            continue
        kept.append(o.lstrip("+"))
    kept += [f"callbacks.{name}({', '.join(sorted(fields))})" for name, fields in grouped.items()]
    return ", ".join(sorted(kept))


def load_run(run_dir: Path) -> Run:
    """Read one run folder (summary.json, config.yaml, .hydra/overrides.yaml)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    cfg = None
    if (run_dir / "config.yaml").is_file():
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(run_dir / "config.yaml")
    experiment = (cfg.get("experiment_name") or cfg.get("task_name")) if cfg is not None else None
    overrides = _overrides(run_dir)
    if not experiment:
        experiment = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), run_dir.name)
    recomputed = False
    if "reference" in summary:
        block = summary["reference"]
    elif cfg is not None:  # a run from before the reference blocks: evaluate it now from its resolved config
        try:
            block = reference.evaluate(reference.from_config(cfg), summary)
        except reference.ReferenceBlockError as e:  # an older block format: one row says so, the table goes on
            block = {"invalid": f"its config.yaml's block is not valid today: {e}"}
        recomputed = True
    else:
        block = None
    return Run(run_dir, str(experiment), setting_of(overrides), summary.get("seed"), str(summary.get("status", "?")),
               block, recomputed)


def find_runs(root: str | Path) -> list[Run]:
    """Every run (a folder holding summary.json) under ``root``, in path order.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; pass the outputs folder of your runs (e.g. outputs)")
    return [load_run(p.parent) for p in sorted(root.rglob("summary.json"))]


def experiment_blocks(conf_dir: str | Path | None = None) -> dict[str, Any]:
    """``{experiment: reference block}`` of every experiment yaml (the package's conf/experiment by default),
    following a ``defaults`` parent when the experiment declares no block of its own."""
    from omegaconf import OmegaConf

    conf_dir = Path(conf_dir) if conf_dir is not None else Path(__file__).parents[1] / "conf" / "experiment"
    raw = {p.stem: OmegaConf.load(p) for p in sorted(conf_dir.glob("*.yaml"))}

    def block_of(name: str, depth: int = 0) -> Any:
        c = raw[name]
        if "reference" in c or depth > 5:
            return OmegaConf.to_container(c, resolve=False).get("reference")
        parents = [d for d in c.get("defaults", []) if isinstance(d, str) and d in raw]
        return block_of(parents[0], depth + 1) if parents else None

    return {name: block_of(name) for name in raw}


def build_rows(runs: list[Run], all_experiments: dict[str, Any] | None = None) -> list[Row]:
    """Group the runs by experiment and setting; one row per entry (or per block without entries)."""
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for r in runs:
        setting = r.setting + ("" if r.status == "completed" else f" [{r.status}]")
        groups[(r.experiment, setting.strip())].append(r)
    rows: list[Row] = []
    nones: dict[str, list[tuple[str, Any, str]]] = defaultdict(list)  # experiment -> (setting, seed, why)
    for (experiment, setting), members in sorted(groups.items()):
        by_entry: dict[str, Row] = {}
        for r in members:
            block = r.block
            if block is None:
                by_entry.setdefault("__missing__", Row(experiment, setting, kind="missing")).seeds.append(r.seed)
                continue
            if isinstance(block, dict) and "invalid" in block:
                row = by_entry.setdefault("__invalid__", Row(experiment, setting, kind="missing", note=block["invalid"]))
                row.seeds.append(r.seed)
                continue
            if isinstance(block, dict):
                nones[experiment].append((setting, r.seed, str(block.get("none"))))
                continue
            for e in block:
                key = json.dumps({k: e.get(k) for k in ("quantity", "published", "tolerance", "relation")}, sort_keys=True)
                row = by_entry.get(key)
                if row is None:
                    row = Row(experiment, setting, e["quantity"], reference.describe_published(e), source=e["source"],
                              note=e.get("note", ""), entry=dict(e))
                    by_entry[key] = row
                row.verdicts.append(e.get("verdict", "not_measured"))
                row.seeds.append(r.seed)
                m = e.get("measured")
                if isinstance(m, (int, float)) and math.isfinite(m):
                    row.measured.append(float(m))
        rows.extend(by_entry.values())
    for experiment, found in nones.items():  # runs without a published number: one row per experiment
        settings = sorted({f for f, _, _ in found})
        what = f"{len(found)} run{'s' * (len(found) > 1)}" + (f" in {len(settings)} settings" if len(settings) > 1 else "")
        one = settings[0] if len(settings) == 1 else what
        row = Row(experiment, one, kind="none", note=found[0][2])
        row.seeds = [seed for _, seed, _ in found]
        rows.append(row)
    rows.sort(key=lambda r: (r.experiment, r.setting))
    if all_experiments is not None:
        seen = {r.experiment for r in runs}
        for name, block in sorted(all_experiments.items()):
            if name in seen:
                continue
            try:
                block = reference.validate(block)
            except reference.ReferenceBlockError as e:
                rows.append(Row(name, "", kind="missing", note=f"invalid block: {e}"))
                continue
            if block is None:
                rows.append(Row(name, "", kind="missing"))
            elif isinstance(block, dict):
                rows.append(Row(name, "", kind="none", note=block["none"]))
            else:
                for e in block:
                    when = e.get("when")
                    setting = ", ".join(f"{k}={v}" for k, v in when.items()) if when else ""
                    rows.append(Row(name, setting, e["quantity"], reference.describe_published(e), source=e["source"],
                                    note=e.get("note", ""), entry=e, kind="not_run"))
        rows.sort(key=lambda r: (r.experiment, r.setting))
    return rows


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(rows: list[Row], columns: tuple[str, ...] = COLUMNS) -> str:
    """The rows as a markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for r in rows:
        cells = r.cells()
        lines.append("| " + " | ".join(_escape(cells[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def counts(rows: list[Row]) -> dict[str, int]:
    """How many rows have each verdict (by the verdict's first word)."""
    out: dict[str, int] = defaultdict(int)
    for r in rows:
        out[r.verdict.split(" (")[0]] += 1
    return dict(out)


def write_docs(path: str | Path, table: str, command: str = "whylearn-analyze fidelity RUNS --write-docs FILE") -> Path:
    """Replace the text between :data:`BEGIN` and :data:`END` in ``path`` with ``table``.

    Raises:
        FileNotFoundError: no such file. ValueError: the markers are missing or out of order (nothing is written).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; --write-docs needs the markdown file holding the markers")
    text = path.read_text()
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i:
        raise ValueError(f"{path} has no section between {BEGIN!r} and {END!r} (both lines, in that order); "
                         f"add them where the table belongs")
    body = f"{BEGIN}\n<!-- generated by `{command}`; do not edit by hand -->\n\n{table}\n"
    path.write_text(text[:i] + body + text[j:])
    return path


def fidelity(root: str | Path, all_experiments: bool = False, conf_dir: str | Path | None = None) -> list[Row]:
    """The table's rows for the runs under ``root`` (plus every experiment without a run if ``all_experiments``)."""
    runs = find_runs(root)
    return build_rows(runs, experiment_blocks(conf_dir) if all_experiments else None)


def add_parser(sub) -> None:
    """Register ``fidelity`` on an argparse subparsers object (``whylearn-analyze``)."""
    p = sub.add_parser("fidelity", help="published beside measured: one table over all runs under a folder",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="a folder holding runs (e.g. outputs); searched recursively for summary.json")
    p.add_argument("--all", action="store_true", help="also list every experiment config without a run (\"not run\")")
    p.add_argument("--conf-dir", default=None, help="experiment configs for --all (default: the package's)")
    p.add_argument("--write-docs", default=None, metavar="FILE",
                   help=f"replace the section between {BEGIN} and {END} of FILE with the table")
    p.add_argument("--strict", action="store_true", help="exit with status 1 if any row fails")


def main(args) -> int:
    """Run the subcommand for parsed ``args``; print the table and the verdict counts."""
    import sys

    try:
        rows = fidelity(args.root, args.all, args.conf_dir)
    except (FileNotFoundError, reference.ReferenceBlockError) as e:
        print(f"whylearn-analyze fidelity: {e}", file=sys.stderr)
        return 2
    table = markdown(rows)
    print(table)
    n = counts(rows)
    print("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(n.items())) + f" ({len(rows)} rows)")
    if args.write_docs:
        command = "whylearn-analyze fidelity RUNS" + (" --all" if args.all else "") + f" --write-docs {args.write_docs}"
        try:
            write_docs(args.write_docs, table, command)
        except (FileNotFoundError, ValueError) as e:
            print(f"whylearn-analyze fidelity: {e}", file=sys.stderr)
            return 2
        print(f"wrote the table into {args.write_docs}")
    return 1 if args.strict and n.get("fail", 0) else 0
