"""ollamad: a local LLM service with an Ollama-compatible store and API.

Kept import-free on purpose: ollamactl imports ``ollamad.protocol`` and must start fast.
"""

__version__ = "0.1.0"
