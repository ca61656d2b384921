"""The schema of whylearn's configs: types, ranges and allowed values, checked before anything is written.

Each main group (``trainer``, ``data``, ``model``, ``optimizer``, ``scheduler``, ``task``) and the
top level (``seed``, ``threads``, ``progress`` ...) has a dataclass below: a field's annotation is its
type, its metadata the allowed range (``ge``, ``gt``, ``le``, ``lt``) and a note. The groups are
polymorphic (an SGD config has ``momentum``, an Adam config ``betas``; an MLP ``hidden``, a GPT
``n_layer``), so a schema field is checked where the composed config has that key, and keys the
schema does not list are left to the object they configure (which names them when it refuses).
A field means the same in every option of its group (e.g. ``model.dropout`` is a probability for
every model).

:func:`validate` checks a composed config and raises :class:`ConfigError` naming every bad key, its
value and what is allowed. It runs

- in :class:`ValidateConfig`, a Hydra callback (``conf/hydra/default.yaml``) whose ``on_run_start``
  runs after composition and *before* Hydra creates the run folder: a bad value creates no folder,
  no ``.hydra/``, no W&B run; it also checks a resume (:func:`whylearn.runs.resume.plan_resume`) there;
- at the start of :func:`whylearn.experiment.run` (for configs composed in Python).

In a multirun, ``on_multirun_start`` checks the config before the sweep folder exists; a value
that only one job of the sweep has is checked when that job starts (its folder then records the
failure, as for any failing job).

Why not closed Hydra structured configs (``ConfigStore`` schemas in the defaults lists): they refuse
every key they do not list, so each option of each group (12 datamodules, 11 models, 11 tasks)
would need a full dataclass, and a new constructor argument would need two edits. The dataclasses
here are the same declaration, open.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from whylearn.runs import identity
from whylearn.runs.resume import plan_resume, planned_run_dir

Auto = Literal["auto"]
PROGRESS = ("auto", "rich", "tqdm", "lines", "none")
# Lightning's accepted precision values (lightning.fabric.connector._PRECISION_INPUT)
PRECISION = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true", "bf16-mixed",
             "32-true", "64-true", 64, 32, 16, "64", "32", "16", "bf16")


class ConfigError(ValueError):
    """A composed config holds values of the wrong type or out of range; the message names each key."""


def _f(*, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
       length: int | None = None, note: str = "") -> Any:
    return field(default=None, metadata={"ge": ge, "gt": gt, "le": le, "lt": lt, "length": length, "note": note})


@dataclass
class TopSchema:
    seed: int = _f(ge=0, le=2**32 - 1, note="seeds torch, numpy, random and the data")
    threads: int | None = _f(ge=1, note="torch.set_num_threads; null: torch's default")
    progress: Literal[PROGRESS] = _f()  # type: ignore[valid-type]
    test_after_fit: bool = _f()
    task_name: str = _f(note="names the run folder")
    ckpt_path: str | None = _f(note="null | last | fresh | a checkpoint file")
    optimized_metric: str | None = _f()
    tags: list = _f()


@dataclass
class TrainerSchema:
    """``lightning.pytorch.Trainer`` arguments (the ones with a range; see Lightning's docs)."""

    max_epochs: int | None = _f(ge=-1, note="-1: no limit")
    min_epochs: int | None = _f(ge=0)
    max_steps: int = _f(ge=-1, note="-1: no limit")
    min_steps: int | None = _f(ge=0)
    devices: int | str | list = _f(ge=-1, note="-1: all")
    num_nodes: int = _f(ge=1)
    precision: Literal[PRECISION] | None = _f()  # type: ignore[valid-type]
    check_val_every_n_epoch: int | None = _f(ge=1)
    val_check_interval: int | float | None = _f(gt=0)
    num_sanity_val_steps: int = _f(ge=-1, note="-1: all")
    log_every_n_steps: int | None = _f(ge=1)
    limit_train_batches: int | float | None = _f(ge=0, note="a fraction in [0, 1] or a number of batches")
    limit_val_batches: int | float | None = _f(ge=0, note="a fraction in [0, 1] or a number of batches")
    limit_test_batches: int | float | None = _f(ge=0, note="a fraction in [0, 1] or a number of batches")
    accumulate_grad_batches: int = _f(ge=1)
    gradient_clip_val: int | float | None = _f(ge=0)
    fast_dev_run: bool | int = _f(ge=0)
    deterministic: bool | Literal["warn"] | None = _f()
    benchmark: bool | None = _f()
    enable_checkpointing: bool | None = _f()
    enable_model_summary: bool | None = _f()
    accelerator: str = _f()
    strategy: str = _f()


@dataclass
class OptimizerSchema:
    """``torch.optim`` arguments (SGD, Adam, AdamW ...)."""

    lr: float = _f(ge=0)  # torch allows 0 (nothing moves), not below
    weight_decay: float = _f(ge=0)
    momentum: float = _f(ge=0, le=1)
    dampening: float = _f(ge=0, le=1)
    nesterov: bool = _f()
    betas: list[float] = _f(ge=0, lt=1, length=2)
    eps: float = _f(gt=0)
    amsgrad: bool = _f()


@dataclass
class SchedulerSchema:
    total_steps: Auto | int | None = _f(ge=1, note="auto: the run's planned optimizer steps")
    warmup_steps: int = _f(ge=0)
    min_lr_ratio: float = _f(ge=0, le=1)
    warmup_style: Literal["linear", "nanogpt", "nanda"] = _f()
    step_size: int = _f(ge=1)
    gamma: float = _f(gt=0)


@dataclass
class DataSchema:
    batch_size: int | Literal["full"] = _f(ge=1, note="full: full-batch gradient descent, where the data allows it")
    eval_batch_size: int = _f(ge=1)
    steps_per_chunk: int = _f(ge=1)
    num_samples: int | None = _f(ge=1)
    train_split: float = _f(gt=0, lt=1)
    val_size: int | float = _f(ge=0, note="a fraction below 1 or a number of samples")
    train_size: int | None = _f(ge=1)
    label_noise: float = _f(ge=0, le=1, note="the fraction of training labels replaced")
    seed: int = _f(ge=0, le=2**32 - 1)
    data_seed: int = _f(ge=0, le=2**32 - 1)
    num_workers: int = _f(ge=0)
    download: bool = _f()
    block_size: Auto | int | None = _f(ge=1)


@dataclass
class ModelSchema:
    input_size: Auto | int | None = _f(ge=1, note="auto: from the data")
    num_classes: Auto | int | None = _f(ge=1, note="auto: from the data")
    in_channels: Auto | int | None = _f(ge=1, note="auto: from the data")
    vocab_size: Auto | int | None = _f(ge=1, note="auto: from the data")
    block_size: Auto | int | None = _f(ge=1, note="auto: from the data")
    hidden: list[int] | None = _f(ge=1, note="the width of each hidden layer")
    width: int | None = _f(ge=1)
    depth: int | None = _f(ge=0)
    k: int = _f(ge=1, note="the width multiplier k")
    n_layer: int = _f(ge=1)
    n_head: int = _f(ge=1)
    n_embd: int = _f(ge=1)
    d_mlp: int | None = _f(ge=1)
    dropout: float = _f(ge=0, lt=1, note="a probability")
    init_scale: float = _f(ge=0, note="a multiplier on the default initialization")
    bias: bool = _f()


@dataclass
class TaskSchema:
    log_every_n_steps: int = _f(ge=1)
    gradient_clip_val: int | float | None = _f(gt=0, note="null: no clipping")
    scheduler_interval: Literal["step", "epoch"] = _f()
    num_classes: Auto | int | None = _f(ge=1, note="auto: from the data")


GROUPS: dict[str, type] = {"trainer": TrainerSchema, "optimizer": OptimizerSchema, "scheduler": SchedulerSchema,
                           "data": DataSchema, "model": ModelSchema, "task": TaskSchema}


# -- checking one value ------------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float))


def _in_range(v: float, meta: dict) -> bool:
    return not ((meta["ge"] is not None and v < meta["ge"]) or (meta["gt"] is not None and v <= meta["gt"])
                or (meta["le"] is not None and v > meta["le"]) or (meta["lt"] is not None and v >= meta["lt"]))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _range_text(meta: dict) -> str:
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return " and ".join(f"{w} {_num(meta[k])}" for k, w in words.items() if meta[k] is not None)


def _ok(value: Any, tp: Any, meta: dict) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_ok(value, a, meta) for a in args)
    if tp is type(None):
        return value is None
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return _is_int(value) and _in_range(value, meta)
    if tp is float:
        return _is_number(value) and _in_range(float(value), meta)
    if tp is str:
        return isinstance(value, str) and value != ""
    if tp is list or origin is list:
        if not isinstance(value, (list, tuple)):
            return False
        if meta["length"] is not None and len(value) != meta["length"]:
            return False
        return not args or all(_ok(v, args[0], meta) for v in value)
    raise TypeError(f"schema type {tp!r} not handled")


def _describe(tp: Any, meta: dict) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    rng = _range_text(meta)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a, meta) for a in args)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return f"one of {list(args)}" if len(args) > 1 else repr(args[0])
    if tp is bool:
        return "true or false"
    if tp is int:
        return f"an integer {rng}".rstrip()
    if tp is float:
        return f"a number {rng}".rstrip()
    if tp is str:
        return "a non-empty string"
    if tp is list or origin is list:
        n = f"{meta['length']} " if meta["length"] is not None else ""
        if not args:
            return "a list"
        item = _describe(args[0], meta).removeprefix("an ").removeprefix("a ")
        return f"a list of {n}{item.replace('integer', 'integers').replace('number', 'numbers')}"
    return str(tp)


def _hints(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema, globalns=globals())


def _check_node(node: Any, schema: type, prefix: str, errors: list[str]) -> None:
    if not isinstance(node, DictConfig):
        return
    hints = _hints(schema)
    for f in fields(schema):
        if f.name not in node or OmegaConf.is_interpolation(node, f.name):
            continue  # an interpolation's source is checked where it is set (e.g. data.seed: ${seed})
        try:
            value = node[f.name]
        except MissingMandatoryValue:
            continue  # ??? : Hydra itself says "Missing mandatory value" when it is read
        except OmegaConfBaseException:
            continue  # an interpolation only the running job can resolve (e.g. ${hydra:runtime.output_dir})
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value
        if isinstance(value, DictConfig) or _ok(value, hints[f.name], f.metadata):
            continue
        note = f" ({f.metadata['note']})" if f.metadata["note"] else ""
        shown = repr(value)
        errors.append(f"{prefix}{f.name}={shown}: expected {_describe(hints[f.name], f.metadata)}{note}")


STUDY_FREE = ("data", "model", "task", "optimizer", "scheduler")


def _check_study(cfg: DictConfig, errors: list[str]) -> None:
    """A study (``study:``, :mod:`whylearn.studies.base`) configures its own data and models: a data, model,
    task, optimizer or scheduler node beside it would be ignored, and a study has no checkpoint to resume."""
    try:
        study = cfg.get("study")
    except OmegaConfBaseException:
        return
    if study is None:
        return
    if not isinstance(study, DictConfig) or "_target_" not in study:
        errors.append(f"study={study!r}: expected a node with a _target_ (a callable; Hydra _partial_: true)")
        return
    given = [k for k in STUDY_FREE if cfg.get(k)]  # scheduler: none is an empty node
    if given:
        errors.append(f"{', '.join(given)}: a study (study._target_={study._target_}) takes no {'/'.join(given)} "
                      f"node; it configures its own under study.* (select {', '.join(f'{k}=null' for k in given)})")
    if cfg.get("ckpt_path") is not None:
        errors.append(f"ckpt_path={cfg.ckpt_path!r}: a study does not resume from a checkpoint; expected null")


def validate(cfg: DictConfig) -> None:
    """Check the values of ``cfg`` against the schemas of this module.

    Raises:
        ConfigError: naming each bad key with its value and what is allowed, e.g.
            ``trainer.max_epochs='abc': expected an integer >= -1 or null (-1: no limit)``.
    """
    errors: list[str] = []
    _check_node(cfg, TopSchema, "", errors)
    _check_study(cfg, errors)
    for group, schema in GROUPS.items():
        try:
            node = cfg.get(group)
        except OmegaConfBaseException:
            continue
        _check_node(node, schema, f"{group}.", errors)
    if errors:
        head = "invalid config value" if len(errors) == 1 else f"{len(errors)} invalid config values"
        raise ConfigError(f"{head}:\n  " + "\n  ".join(errors))


def without_hydra(config: DictConfig) -> DictConfig:
    """A shallow view of a composed config without its ``hydra`` node."""
    cfg = OmegaConf.masked_copy(config, [k for k in config.keys() if k != "hydra"])
    cfg._set_parent(config)  # interpolations into hydra (e.g. ${hydra:...}) resolve as before
    return cfg


def compose_run(overrides: list[str], output_dir: str | Path, root_dir: str | Path | None = None,
                config_name: str = "train") -> DictConfig:
    """The config ``whylearn-train <overrides>`` would run, composed in Python (benchmarks, tests, notebooks) for
    :func:`whylearn.experiment.run`.

    Hydra's compose API over the package's ``conf/``; ``HydraConfig`` set as in a run, so ``${hydra:...}``
    interpolations resolve; the run folder is ``output_dir`` (``paths.output_dir``), ``paths.root_dir`` is
    ``root_dir`` when given, ``progress`` is ``none`` unless an override sets it; the ``hydra`` node is removed.
    Clears Hydra's global state first (a composed config of an earlier call stays valid).

    Raises:
        hydra.errors.MissingConfigException, hydra.errors.ConfigCompositionException: an unknown config or key
            (Hydra's messages name it).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(Path(__file__).resolve().parent / "conf")):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        if root_dir is not None:
            cfg.paths.root_dir = str(root_dir)
        if not any(str(o).lstrip("+~").startswith("progress=") for o in overrides):
            cfg.progress = "none"
        del cfg.hydra
    return cfg


class Refused(SystemExit):
    """The config (or a resume) was refused before anything was written: exit status 1, the message on stderr.

    A ``SystemExit`` because Hydra turns an ordinary exception of a callback into a warning and goes on."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        super().__init__(f"{type(error).__name__}: {error}\n(refused before anything was written)")


class ValidateConfig(Callback):
    """Hydra callback: :func:`validate` and :func:`whylearn.runs.resume.plan_resume` after composition, before
    Hydra creates the run folder (``on_run_start``) or the sweep folder (``on_multirun_start``).

    Raises:
        Refused: wrapping :class:`ConfigError`, a checkpoint error, :class:`whylearn.runs.resume.ResumeRefused`,
            :class:`whylearn.runs.resume.RunFolderInUse` or a missing checkpoint.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            validate(config)
            if "trainer" in config:  # whylearn-train (whylearn-eval checks its checkpoint itself)

                plan_resume(config, planned_run_dir(config))
        except (ValueError, OSError, RuntimeError) as e:
            raise Refused(e) from e

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            validate(config)
        except ConfigError as e:
            raise Refused(e) from e
        identity.SWEEP_COMMON_OVERRIDES[:] = [str(o) for o in config.hydra.overrides.task]
