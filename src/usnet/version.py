"""usnet's version, in a module of its own so that any floor of the package can read it without
importing the package's top (``usnet/__init__.py`` imports nearly everything)."""

__version__ = "0.1.0"
