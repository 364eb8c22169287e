"""The training pipeline and its algorithms: pure ML, no gRPC, no SQL, nothing else of ours.

A trainer runs on any Ray node with only its inputs: a validated
:class:`trainers.spec.TrainingSpec`, a :class:`trainers.pipeline.DataSource`, a
:class:`trainers.pipeline.Reporter` and a :class:`trainers.pipeline.ModelRegistry`.
"""
