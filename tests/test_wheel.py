"""whylearn as users install it (issue 14, finding 4): a wheel in a fresh virtual environment, outside the repository.

The wheel is built from a copy of the sources (pyproject.toml, README.md, src/) and installed with pip
into a new environment without network access: ``--no-index``; torch, Lightning, Hydra ... come from
this interpreter's site-packages, made visible to the new environment by a ``.pth`` file (nothing is
downloaded again). Every command runs from a fresh folder outside the repository with no PYTHONPATH,
so only the installed wheel (and the configs inside it) can be found.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WHYLEARN_ROOT")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true")
    return env


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed: (its bin/ folder, the wheel)."""
    tmp = tmp_path_factory.mktemp("wheel")
    copy = tmp / "source"
    copy.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, copy / name)
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"), str(copy)],
                   check=True, capture_output=True, text=True)
    (wheel,) = (tmp / "dist").glob("whylearn-*.whl")
    env_dir = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies already installed here, visible there (after the environment's own site-packages)
    Path(purelib, "_whylearn_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([*pip, "--python", str(py), "install", "--no-index", "--no-build-isolation", str(wheel)],
                   check=True, capture_output=True, text=True, env=_env())
    where = subprocess.run([str(py), "-c", "import whylearn; print(whylearn.__file__)"], cwd=tmp,
                           capture_output=True, text=True, check=True, env=_env()).stdout.strip()
    assert Path(where).is_relative_to(env_dir), f"whylearn imported from {where}, not from the wheel"
    return env_dir / "bin", wheel


def test_the_wheel_carries_every_config(venv):
    """Every yaml of conf/ (the repository's view of the configs) is inside the wheel, under whylearn/conf/."""
    _, wheel = venv
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".yaml")}
    configs = {f"whylearn/conf/{p.relative_to(ROOT / 'conf').as_posix()}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert len(configs) > 50
    assert configs <= shipped, f"{len(configs - shipped)} configs missing from the wheel: {sorted(configs - shipped)[:5]}"


def _train(venv, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([str(venv[0] / "whylearn-train"), *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, f"whylearn-train {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_the_wheel_trains_from_any_folder(venv, tmp_path):
    _train(venv, tmp_path, "experiment=mnist1d_mlp", "debug=fast_dev_run")
    (summary,) = tmp_path.glob("outputs/debug/runs/*/summary.json")
    assert json.loads(summary.read_text())["status"] == "completed"
    assert (summary.parent / "config.yaml").read_text().count("whylearn.models.MLP") == 1


def _readme_user_experiment() -> str:
    """The user's experiment file exactly as README.md writes it (the heredoc of "Your own configs")."""
    text = (ROOT / "README.md").read_text()
    head = "cat > my_configs/experiment/my_run.yaml <<'EOF'\n"
    start = text.index(head) + len(head)
    return text[start:text.index("\nEOF\n", start) + 1]


def test_the_wheel_runs_a_two_job_sweep_with_a_users_own_config_folder(venv, tmp_path):
    """Two jobs: whylearn's experiment and one of the user's own, from their folder (README "Your own configs")."""
    (tmp_path / "my_configs" / "experiment").mkdir(parents=True)
    (tmp_path / "my_configs" / "experiment" / "my_run.yaml").write_text(_readme_user_experiment())
    _train(venv, tmp_path, "-m", "--config-dir", "my_configs", "experiment=mnist1d_mlp,my_run", "debug=fast_dev_run")
    (sweep,) = tmp_path.glob("outputs/debug/multiruns/*/sweep_summary.json")
    report = json.loads(sweep.read_text())
    assert report["completed"] == 2 and report["failed"] == 0
    params = {j["overrides"]: json.loads((sweep.parent / j["job"] / "summary.json").read_text())["params"]
              for j in report["jobs"]}
    mlp = (40 * 256 + 256) + (256 * 256 + 256) + (256 * 10 + 10)  # whylearn's 40-256-256-10 (mnist1d quickstart)
    mine = (40 * 32 + 32) + (32 * 32 + 32) + (32 * 10 + 10)  # the user's hidden: [32, 32]
    assert params == {"- experiment=mnist1d_mlp - debug=fast_dev_run": mlp, "- experiment=my_run - debug=fast_dev_run": mine}
