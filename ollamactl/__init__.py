"""ollamactl: the command-line client of ollamad."""

from ollamad import __version__

__all__ = ["__version__"]
