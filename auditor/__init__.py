"""wbc-audit: versioned trustworthiness reports for Keras image classifiers.

The package is importable without TensorFlow: only :mod:`auditor.model` loads it.
"""

__version__ = "0.1.0"

#: Version of the layout of ``audit.json``. Bump on any incompatible change.
SCHEMA_VERSION = 1
