"""Studies: experiments made of many training runs (arms x seeds, pruning rounds), and tables over runs.

Above tasks and callbacks (which they train and measure with), below the run lifecycle and the entry
points (``tests/test_import_layers.py``).

Each study module keeps its science in plain functions: ``run_seed(cfg, seed)`` trains and measures one
arm for one seed from a plain config (nested dicts with Hydra ``_target_`` nodes) and returns plain
numbers; ``study(out_dir, ...)`` runs the arms and seeds, aggregates mean and standard deviation, and
draws the figures. ``whylearn-train experiment=<name>`` runs a study as the experiment's ``study:`` node
names it (:mod:`whylearn.studies.base`, the Study protocol: no outer ``Trainer.fit``, no placeholder data or
model), through the run every training run takes (:func:`whylearn.experiment.run`), so it leaves
``config.yaml``, ``summary.json``, ``figures/``, its CSV and its W&B run like any other.

- :mod:`whylearn.studies.base`: the Study protocol (:class:`~whylearn.studies.base.StudyRun`,
  :class:`~whylearn.studies.base.StudyResult`, :func:`~whylearn.studies.base.call_study`).

- :mod:`whylearn.studies.adversarial`: accuracy against the L-infinity budget, natural vs adversarial training.
- :mod:`whylearn.studies.lottery`: iterative magnitude pruning with rewinding, winning tickets vs random reinit.
- :mod:`whylearn.studies.regularization`: explicit regularizers on true and random labels (Zhang et al. 2017).
- :mod:`whylearn.studies.kepler`: Kepler's sample inefficiency, a forecaster trained per number of observations.
- :mod:`whylearn.studies.fidelity`: published beside measured over every run under a folder (``whylearn-analyze fidelity``).
"""
