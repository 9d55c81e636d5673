"""tapwatch.app: the ``tapwatch`` command line and the embedded all-stages pipeline (``detect``/``run``).

The top floor of the installed package: it wires every stage below it (capture, bus, inference, alerting,
models) and is imported by none of them.
"""
