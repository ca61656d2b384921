"""whylearn's Hydra configs, shipped inside the package so that an installed wheel runs.

Entry points compose them from ``pkg://whylearn.conf``; the repository's top-level
``conf/`` is a link to this folder. Add a folder of your own configs in front with
``--config-dir <dir>`` (or ``hydra.searchpath=[file:///abs/dir]``): an
``experiment/my_run.yaml`` there is found as ``experiment=my_run``.
"""
