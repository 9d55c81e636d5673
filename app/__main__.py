"""``python -m tapwatch.app`` runs the ``tapwatch`` command line."""

from tapwatch.app.cli import main

main()
