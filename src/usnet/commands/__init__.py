"""Subcommands of the ``usnet`` command, one module each (see :mod:`usnet.cli`)."""
