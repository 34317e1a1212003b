"""``python -m benmm`` is the ``benmm`` command."""

from benmm.cli.app import main

main()
