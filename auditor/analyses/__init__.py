"""Pure analyses over the arrays one forward pass produced: no TensorFlow, no plotting, no I/O.

Each module has one public ``compute_*`` function returning a frozen result dataclass with
``to_dict()`` (JSON primitives only, NaN as ``None``) and ``from_dict()``.
"""
