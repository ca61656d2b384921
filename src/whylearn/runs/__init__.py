"""The run lifecycle: a run's folder and identity, resume and preemption, checkpoint loading, multiruns.

- :mod:`whylearn.runs.identity`: who a run is (SLURM job key, run folder name, W&B run id) and the config resolvers;
  light, so that ``import whylearn`` can register them.
- :mod:`whylearn.runs.checkpoints`: reading checkpoints safely (weights only), with errors that say what is wrong.
- :mod:`whylearn.runs.resume`: deciding, before anything is written, whether a run starts fresh or resumes.
- :mod:`whylearn.runs.record`: carrying a resume out; the run's account (fit time, segments) across resumes.
- :mod:`whylearn.runs.preemption`: a signal saves ``last.ckpt`` at the next chunk boundary; SLURM requeues.
- :mod:`whylearn.runs.multirun`: a failing job of a multirun leaves the others; the report at its end.
"""
