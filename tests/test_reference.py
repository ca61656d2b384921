"""Published beside measured: the reference block (whylearn.reference) and `whylearn-analyze fidelity`."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from omegaconf import OmegaConf, open_dict  # noqa: E402

from conftest import ROOT, compose  # noqa: E402
from whylearn import reference  # noqa: E402
from whylearn.cli.analyze import main as analyze_main  # noqa: E402
from whylearn.studies import fidelity  # noqa: E402

GOOD = {"quantity": "test/acc", "published": 0.68, "source": "Greydanus 2020, README baselines (MLP)", "tolerance": 0.02}


# -- the block's format ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("block, message", [
    ([{**GOOD, "tolerence": 0.1}], r"reference\[0\]: unknown key 'tolerence'; allowed: \['quantity', 'published'"),
    ([{k: v for k, v in GOOD.items() if k != "source"}], r"reference\[0\]: missing key 'source'; required"),
    ([GOOD, {**GOOD, "relation": "about"}], r"reference\[1\]\.relation: unknown relation 'about'; allowed: "
                                            r"\['approx', 'at_least', 'at_most'\]"),
    ([{**GOOD, "published": [0.7, 0.6]}], r"reference\[0\]\.published: the range \[low, high\] needs low <= high"),
    ([{**GOOD, "published": "68%"}], r"reference\[0\]\.published must be a number or \[low, high\]"),
    ([{**GOOD, "tolerance": -0.1}], r"reference\[0\]\.tolerance must be a number >= 0"),
    ([{**GOOD, "axis": "z"}], r"reference\[0\]\.axis: unknown axis 'z'; allowed: \['y', 'x'\]"),
    ({"none": ""}, r"reference\.none must be a non-empty string"),
    ({"nothing": "x"}, r"reference as a mapping must be exactly \{none: "),
    ([], r"reference must be a non-empty list of entries or \{none"),
])
def test_a_malformed_block_names_the_key_and_what_is_allowed(block, message):
    with pytest.raises(reference.ReferenceBlockError, match=message):
        reference.validate(block)


def test_valid_blocks_come_back_as_plain_python():
    assert reference.validate(OmegaConf.create([GOOD])) == [GOOD]
    assert reference.validate({"none": "no published number for a 1000-image subset"}) == {
        "none": "no published number for a 1000-image subset"}
    # the list form of `none` (an experiment whose defaults parent declares a list cannot merge a mapping onto it)
    assert reference.validate([{"none": "why"}]) == {"none": "why"}
    assert reference.validate(None) is None


@pytest.mark.parametrize("entry, measured, expected", [
    (GOOD, 0.68, "pass"), (GOOD, 0.70, "pass"), (GOOD, 0.66, "pass"), (GOOD, 0.7001, "fail"), (GOOD, 0.626, "fail"),
    ({**GOOD, "published": [0.1, 0.2], "tolerance": 0.01}, 0.205, "pass"),
    ({**GOOD, "published": [0.1, 0.2], "tolerance": 0.01}, 0.085, "fail"),
    ({**GOOD, "published": 0.99, "tolerance": 0.0, "relation": "at_least"}, 1.0, "pass"),
    ({**GOOD, "published": 0.99, "tolerance": 0.0, "relation": "at_least"}, 0.98, "fail"),
    ({**GOOD, "published": 0.75, "tolerance": 0.0, "relation": "at_most"}, 0.5, "pass"),
    ({**GOOD, "published": 0.75, "tolerance": 0.0, "relation": "at_most"}, 1.0, "fail"),
    (GOOD, None, "not_measured"), (GOOD, float("nan"), "not_measured"), (GOOD, "n/a", "not_measured"),
])
def test_verdicts_follow_the_stated_relation_and_tolerance(entry, measured, expected):
    assert reference.verdict(entry, measured) == expected


def test_evaluate_reads_the_summary_and_says_why_a_value_is_missing():
    block = [GOOD, {**GOOD, "quantity": "grok/cleanup_step", "published": 13000, "tolerance": 2000}]
    out = reference.evaluate(block, {"test/acc": 0.69})
    assert [e["verdict"] for e in out] == ["pass", "not_measured"]
    assert out[0]["measured"] == 0.69 and out[0]["relation"] == "approx"
    assert "no number under 'grok/cleanup_step'" in out[1]["why"]


def test_when_keeps_only_the_entries_that_apply_to_the_config():
    block = [{**GOOD, "when": {"data.label_noise": 0.2, "model.width": [3, 12]}}, {**GOOD, "quantity": "train/acc"}]
    cfg = OmegaConf.create({"reference": block, "data": {"label_noise": 0.2}, "model": {"width": 12}})
    assert [e["quantity"] for e in reference.from_config(cfg)] == ["test/acc", "train/acc"]
    cfg.model.width = 64
    assert [e["quantity"] for e in reference.from_config(cfg)] == ["train/acc"]
    only = OmegaConf.create({"reference": block[:1], "data": {"label_noise": 0.0}, "model": {"width": 3}})
    assert "no entry of the reference block applies" in reference.from_config(only)["none"]


def test_published_values_are_drawn_on_the_figures_that_name_them(tmp_path):
    from whylearn.analysis.plotting import save_figure

    lines = [{**GOOD, "figure": "accuracy"}, {**GOOD, "quantity": "memorization", "published": 1400, "axis": "x",
                                              "figure": ["accuracy"], "panel": 1},
             {**GOOD, "quantity": "range", "published": [0.1, 0.2], "figure": "accuracy"},
             {**GOOD, "quantity": "elsewhere", "published": 0.5, "figure": "loss"},
             {**GOOD, "quantity": "both panels", "published": 9400, "axis": "x", "figure": "accuracy", "panel": [0, 1]}]
    reference.activate(lines)
    try:
        fig, (a0, a1) = plt.subplots(1, 2)
        a0.plot([0, 1], [0, 1])
        save_figure(fig, tmp_path / "accuracy.png")
    finally:
        reference.activate(None)
    ys = [ln.get_ydata()[0] for ln in a0.get_lines()[1:] if ln.get_xdata()[0] != ln.get_xdata()[1]]
    xs0 = [ln.get_xdata()[0] for ln in a0.get_lines()[1:] if ln.get_xdata()[0] == ln.get_xdata()[1]]
    xs = [ln.get_xdata()[0] for ln in a1.get_lines()]
    assert ys == [0.68] and xs == [1400, 9400] and xs0 == [9400]  # the loss figure's entry is not drawn here
    assert len(a0.patches) == 1  # the [low, high] range as a band
    assert any("published" in t.get_text() for t in a0.get_legend().get_texts())
    # with no active block nothing is drawn
    fig, ax = plt.subplots()
    save_figure(fig, tmp_path / "accuracy2.png")
    assert not ax.get_lines()


# -- in a run ----------------------------------------------------------------------------------------------------------
SMALL = ["experiment=mnist1d_mlp", "data.num_samples=1000", "trainer.max_epochs=2", "logger=csv",
         "callbacks.model_checkpoint.every_n_epochs=1"]


def test_a_run_writes_published_beside_measured_and_reports_it(tmp_path, caplog):
    from whylearn.experiment import run

    cfg = compose(SMALL, tmp_path)
    block = [dict(GOOD), {**GOOD, "quantity": "train/acc", "published": 0.0, "tolerance": 0.0, "relation": "at_least"},
             {**GOOD, "quantity": "no/such/key"}, {**GOOD, "quantity": "val/acc", "when": {"data.label_noise": 0.5}}]
    with open_dict(cfg):
        cfg.reference = block
    with caplog.at_level("INFO", logger="whylearn"):
        summary = run(cfg)
    on_disk = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    ref = on_disk["reference"]
    assert [e["quantity"] for e in ref] == ["test/acc", "train/acc", "no/such/key"]  # the `when` entry does not apply
    assert ref[0]["measured"] == summary["test/acc"]
    assert ref[0]["verdict"] == ("pass" if abs(summary["test/acc"] - 0.68) <= 0.02 else "fail")
    assert ref[1]["verdict"] == "pass" and ref[2]["verdict"] == "not_measured"
    report = caplog.text
    assert "published beside measured" in report and "test/acc: measured" in report and "NOT_MEASURED" in report


def test_a_malformed_block_stops_the_run_before_anything_is_written(tmp_path):
    from whylearn.experiment import run

    cfg = compose(SMALL, tmp_path)
    with open_dict(cfg):
        cfg.reference = [{**GOOD, "relation": "roughly"}]
    with pytest.raises(reference.ReferenceBlockError, match=r"reference\[0\]\.relation: unknown relation 'roughly'"):
        run(cfg)
    assert not Path(cfg.paths.output_dir).exists()


def test_every_experiment_declares_a_valid_reference_block(tmp_path):
    """Every experiment states what the literature reports, or says why there is no published number."""
    experiments = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    missing = []
    for name in experiments:
        cfg = compose([f"experiment={name}"], tmp_path)
        try:
            block = reference.validate(cfg.get("reference"))
        except reference.ReferenceBlockError as e:
            raise AssertionError(f"experiment={name}: {e}") from e
        if block is None:
            missing.append(name)
    assert not missing, f"experiments without a reference block: {missing}"


# -- whylearn-analyze fidelity -----------------------------------------------------------------------------------------
def _fake_run(folder: Path, experiment: str, seed: int, summary: dict, overrides: list[str], block=None,
              with_block: bool = True) -> None:
    folder.mkdir(parents=True)
    cfg = {"experiment_name": experiment, "task_name": experiment, "seed": seed, "reference": block}
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
    full = {"seed": seed, "status": "completed", **summary}
    if with_block:
        full["reference"] = reference.evaluate(reference.from_config(OmegaConf.create(cfg)), full)
    (folder / "summary.json").write_text(json.dumps(full))


def test_fidelity_prints_one_table_over_all_runs(tmp_path, capsys):
    accs = [0.67, 0.70, 0.72]
    for i, acc in enumerate(accs):  # three seeds of one setting, in a multirun layout
        _fake_run(tmp_path / "mnist1d_mlp" / "multiruns" / "d" / str(i), "mnist1d_mlp", i, {"test/acc": acc},
                  [f"seed={i}", "experiment=mnist1d_mlp", "paths.data_dir=x"], [GOOD])
    _fake_run(tmp_path / "mnist1d_mlp" / "runs" / "wide", "mnist1d_mlp", 0, {"test/acc": 0.75},
              ["experiment=mnist1d_mlp", "model.hidden=[512,512]"], [GOOD])
    # a run from before the blocks: evaluated from its config.yaml
    _fake_run(tmp_path / "old" / "runs" / "a", "random_labels", 0, {"test/acc": 0.11},
              ["experiment=random_labels"], [{**GOOD, "published": 0.1}], with_block=False)
    _fake_run(tmp_path / "pca" / "runs" / "a", "pca", 0, {}, ["experiment=pca"], {"none": "a sanity check, no paper number"})
    assert analyze_main(["fidelity", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("| mnist1d_mlp")]
    assert len(rows) == 2
    three = next(r for r in rows if "| default |" in r)
    mean, sd = statistics.fmean(accs), statistics.stdev(accs)
    assert f"{mean:.4g} ± {sd:.2g} (3 seeds)" in three
    assert "pass (2/3 runs pass)" in three  # the mean passes; 0.72 alone does not
    wide = next(r for r in rows if "model.hidden=[512,512]" in r)
    assert "0.75 (1 seed)" in wide and "| fail |" in wide
    assert "| random_labels | default | test/acc | 0.1 ± 0.02 | 0.11 (1 seed) | pass |" in out
    assert "| pca | default |" in out and "no published number" in out and "a sanity check" in out
    # --strict fails on a failing row; a missing folder is a clear error
    assert analyze_main(["fidelity", str(tmp_path), "--strict"]) == 1
    assert analyze_main(["fidelity", str(tmp_path / "nosuch")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_a_run_whose_old_block_is_invalid_today_is_one_row_and_the_table_goes_on(tmp_path, capsys):
    _fake_run(tmp_path / "old" / "a", "kepler", 0, {"x": 1.0}, ["experiment=kepler"],
              [{"quantity": "x", "published": 1.0, "source": "a paper, Table 1"}], with_block=False)  # no tolerance
    _fake_run(tmp_path / "new" / "a", "mnist1d_mlp", 0, {"test/acc": 0.69}, ["experiment=mnist1d_mlp"], [GOOD])
    assert analyze_main(["fidelity", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| kepler | default | - | - | - | no reference block |" in out and "missing key 'tolerance'" in out
    assert "| mnist1d_mlp | default | test/acc | 0.68 ± 0.02 | 0.69 (1 seed) | pass |" in out


def test_the_setting_leaves_out_seed_and_paths_and_writes_each_callback_as_one_item():
    seeds = [fidelity.setting_of([f"seed={s}", "experiment=grokking", "paths.data_dir=x", "threads=1",
                                  "+callbacks.early_stop._target_=lightning.pytorch.callbacks.EarlyStopping",
                                  "+callbacks.early_stop.monitor=val/acc", "+callbacks.early_stop.mode=max",
                                  "trainer.max_steps=100"]) for s in (0, 1)]
    assert seeds[0] == seeds[1] == "callbacks.early_stop(mode=max, monitor=val/acc), trainer.max_steps=100"
    other = fidelity.setting_of(["+callbacks.early_stop.monitor=val/loss", "trainer.max_steps=100"])
    assert other != seeds[0]  # another callback field is another setting
    assert fidelity.setting_of(["seed=3", "paths.root_dir=y"]) == ""


def test_fidelity_all_lists_every_experiment_and_writes_the_docs_section(tmp_path, capsys):
    runs = tmp_path / "outputs"
    _fake_run(runs / "a", "mnist1d_mlp", 0, {"test/acc": 0.69}, ["experiment=mnist1d_mlp"], [GOOD])
    docs = tmp_path / "experiments.md"
    docs.write_text(f"# title\n\nbefore\n\n{fidelity.BEGIN}\nold table\n{fidelity.END}\n\nafter\n")
    assert analyze_main(["fidelity", str(runs), "--all", "--write-docs", str(docs)]) == 0
    text = docs.read_text()
    assert "old table" not in text and text.startswith("# title\n\nbefore\n") and text.endswith(f"{fidelity.END}\n\nafter\n")
    assert "| mnist1d_mlp | default | test/acc | 0.68 ± 0.02 | 0.69 (1 seed) | pass |" in text
    experiments = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    for name in experiments:  # every experiment of the package has a row, run or not
        assert f"| {name} |" in text, name
    bad = tmp_path / "nomarkers.md"
    bad.write_text("no markers\n")
    assert analyze_main(["fidelity", str(runs), "--write-docs", str(bad)]) == 2
    assert bad.read_text() == "no markers\n"
    assert "has no section between" in capsys.readouterr().err


def test_fidelity_cli_over_a_real_run(tmp_path):
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")}
    train = [sys.executable, "-m", "whylearn.cli.train", *SMALL, f"paths.root_dir={tmp_path}"]
    res = subprocess.run(train, capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "published beside measured" in res.stdout + res.stderr
    summary = json.loads(next((tmp_path / "outputs").rglob("summary.json")).read_text())
    res = subprocess.run([sys.executable, "-m", "whylearn.cli.analyze", "fidelity", str(tmp_path / "outputs")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    acc = reference.format_value(summary["test/acc"])
    assert f"| mnist1d_mlp | data.num_samples=1000, trainer.max_epochs=2 | test/acc | 0.68 ± 0.02 | {acc} (1 seed) |" \
        in res.stdout
