"""Reading a finished multirun back: job folders in launch order, the overrides Hydra recorded, typed as Hydra types them.

One reader (``whylearn.runs.multirun.job_folders`` / ``job_overrides``) serves ``whylearn-analyze`` and
``scripts/lr_stability_report.py``; these tests pin what a value means when it is read back.
"""

from __future__ import annotations

import json
import math

import pytest
from omegaconf import OmegaConf

from whylearn.runs.multirun import job_folders, job_overrides, parse_override_value


def _job(folder, overrides, summary=None):
    (folder / ".hydra").mkdir(parents=True)
    # as Hydra writes it: OmegaConf.save of the list of override strings (quotes YAML needs included)
    OmegaConf.save(OmegaConf.create(list(overrides)), folder / ".hydra" / "overrides.yaml")
    (folder / "summary.json").write_text(json.dumps(summary or {"status": "completed"}))
    return folder


@pytest.mark.parametrize(("text", "value"), [
    ("0.3", 0.3), ("3e-1", 0.3), ("1", 1), ("1.0", 1.0), ("true", True), ("False", False), ("null", None),
    ("none", "none"), ("batch", "batch"), ("'batch'", "batch"), ('"batch"', "batch"), ("'1'", "1"),
    ("[64,64]", "[64,64]"), ("[64, 64]", "[64,64]"), ("'a: b'", "a: b"),
])
def test_a_value_reads_back_as_hydra_typed_it(text, value):
    got = parse_override_value(text)
    assert got == value and type(got) is type(value)


def test_a_value_the_grammar_refuses_is_named():
    with pytest.raises(ValueError, match=r"'0.1,0.2' is not one value"):
        parse_override_value("0.1,0.2")  # a sweep, not a value
    with pytest.raises(ValueError, match=r"'\$\{' is not one value"):
        parse_override_value("${")


def test_job_overrides_keys_values_and_errors(tmp_path):
    job = _job(tmp_path / "0_x", ["optimizer.lr=3e-1", "+model.bias=true", "~callbacks.early_stop",
                                  "data.name='a: b'", "model.hidden=[64,64]", "seed=0", "model.norm='batch'"])
    assert job_overrides(job) == {"optimizer.lr": 0.3, "model.bias": True, "callbacks.early_stop": None,
                                  "data.name": "a: b", "model.hidden": "[64,64]", "seed": 0, "model.norm": "batch"}
    assert isinstance(job_overrides(job)["seed"], int)
    assert job_overrides(tmp_path) == {}  # no .hydra/overrides.yaml: nothing was overridden
    (job / ".hydra" / "overrides.yaml").write_text("- seed=0\n- optimizer.lr=0.1,0.2\n")
    with pytest.raises(ValueError, match=r"overrides.yaml: 'optimizer.lr=0.1,0.2' is not one key=value override"):
        job_overrides(job)
    (job / ".hydra" / "overrides.yaml").write_text("seed: 0\n")
    with pytest.raises(ValueError, match="is not a list of overrides"):
        job_overrides(job)


def test_job_folders_in_launch_order_at_any_depth(tmp_path):
    for date in ("2026-12-01", "2026-12-02"):
        for n in (0, 2, 10):
            _job(tmp_path / date / f"{n}_seed={n}", [f"seed={n}"])
    (tmp_path / "2026-12-01" / "multirun.yaml").write_text("{}")
    (tmp_path / "2026-12-01" / "10_seed=10" / "csv").mkdir()  # a job's own subfolders are not jobs
    got = [str(p.relative_to(tmp_path)) for p in job_folders(tmp_path)]
    assert got == ["2026-12-01/0_seed=0", "2026-12-02/0_seed=0", "2026-12-01/2_seed=2", "2026-12-02/2_seed=2",
                   "2026-12-01/10_seed=10", "2026-12-02/10_seed=10"]  # 2 before 10: numbers, not text
    assert job_folders(tmp_path / "2026-12-01" / "2_seed=2") == [tmp_path / "2026-12-01" / "2_seed=2"]
    assert job_folders(tmp_path / "missing") == []


def test_analyze_groups_and_selects_values_as_hydra_typed_them(tmp_path):
    """whylearn-analyze reads the same values: 3e-1 and 0.3 are one setting, 'true' a bool, '1' quoted a string."""
    from whylearn.cli.analyze import _select, load_sweep, stats_table

    for i, (lr, acc) in enumerate([("0.3", 0.5), ("3e-1", 0.7), ("1.0", 0.2), ("1", 0.4)]):
        _job(tmp_path / f"{i}_lr", [f"optimizer.lr={lr}", f"seed={i}", "model.bias=true", "data.name='1'"],
             {"status": "completed", "test/acc": acc})
    rows, swept = load_sweep(tmp_path)
    assert swept == ["optimizer.lr", "seed"]
    assert [r["optimizer.lr"] for r in rows] == [0.3, 0.3, 1.0, 1]
    assert rows[0]["model.bias"] is True and rows[0]["data.name"] == "1"
    assert [r["job"] for r in _select(rows, ["optimizer.lr=0.3"])] == ["0_lr", "1_lr"]
    assert [r["job"] for r in _select(rows, ["optimizer.lr=3e-1", "seed=1"])] == ["1_lr"]
    with pytest.raises(ValueError, match=r"group 'optimizer.lr=0.1,0.2': '0.1,0.2' is not one value"):
        _select(rows, ["optimizer.lr=0.1,0.2"])
    groups = stats_table(tmp_path, ["test/acc"], by=["optimizer.lr"])["groups"]
    assert [(g["optimizer.lr"], g["test/acc"]["n"]) for g in groups] == [(0.3, 2), (1.0, 2)]
    assert math.isclose(groups[0]["test/acc"]["mean"], 0.6)
