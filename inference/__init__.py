"""tapwatch.inference: ONNX workers that turn window entries into verdicts.

:mod:`~tapwatch.inference.worker` holds the loop (:class:`~tapwatch.inference.worker.Worker`, on any bus),
:mod:`~tapwatch.inference.model` tapwatch's one ONNX Runtime loader (every session, every checked model),
:mod:`~tapwatch.inference.service` and :mod:`~tapwatch.inference.cli` the ``tapwatch worker`` service.
Importing this package imports nothing else.
"""
