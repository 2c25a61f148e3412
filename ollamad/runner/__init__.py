"""The runner: one child process per loaded model, and the daemon's handle on it.

The child (``python -m ollamad.runner``, :mod:`ollamad.runner.child`) is the only code in the
project that imports ``llama_cpp``; the daemon talks to it through :mod:`ollamad.runner.handle`.
This package file imports nothing, so that neither side pays for the other's dependencies: the
child never imports trio, the daemon never imports llama_cpp.
"""
