"""Utilities for developers of estimators that take texts: see :mod:`skbert.utils.estimator_checks`."""
