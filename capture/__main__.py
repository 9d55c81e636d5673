"""``python -m tapwatch.capture`` runs the ``tapwatch`` command line."""

from tapwatch.capture.cli import main

main()
