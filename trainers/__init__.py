"""The training pipeline and its algorithms: pure ML, no gRPC, no SQL, nothing else of ours.

A trainer runs on any Ray node with only its inputs: a validated
:class:`trainers.spec.TrainingSpec` and the ports of :mod:`trainers.ports` (a
``DataSource``, a ``Reporter`` and a ``ModelRegistry``).

- ``spec/``: the configuration (``model.py``: TrainingSpec and its canonical form;
  ``checks.py``: one checker per section)
- ``pipeline.py``: the five steps; ``preparation.py``: features, task, chronological split;
  ``evaluation.py``: metrics, backtest, scoring a saved model; ``ports.py``: the protocols
- ``algorithms/``: one module per algorithm family, each declaring what it needs
- ``features.py``, ``metrics.py``, ``errors.py``, ``local.py`` (in-memory ports)
"""
