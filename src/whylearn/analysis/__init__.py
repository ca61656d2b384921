"""The instruments: pure computations on models, tensors and arrays, below tasks and callbacks.

Hessian-vector products and sharpness (:mod:`~whylearn.analysis.hessian`), loss landscapes
(:mod:`~whylearn.analysis.landscape`), linear regions (:mod:`~whylearn.analysis.regions`), kernels,
dimensions and geometry, Fisher information, attention and smoothness measurements, adversarial attacks
and pruning masks, the training losses (:mod:`~whylearn.analysis.losses`), statistics over seeds, the
classic learning rules' sweeps, and the plotting helpers. They import only ``data``, ``models``,
``loggers`` and ``reference`` (``tests/test_import_layers.py``); what trains or loads runs lives above:
tasks and callbacks use these, studies (:mod:`whylearn.studies`) combine runs, ``whylearn-landscape``
(:mod:`whylearn.cli.landscape`) applies them to a saved checkpoint.
"""
