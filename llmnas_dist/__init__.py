"""llmnas-dist: LLM-driven neural architecture search as a parametric Cross-Entropy method.

This package holds the algorithm and the CLI; it never imports ray, so every piece runs in a
plain unit test.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llmnas-dist")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"
