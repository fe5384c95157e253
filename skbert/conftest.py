"""Doctest set-up: docstring examples run on a tiny offline model."""

import importlib.util

import pytest

from ._testing import make_tiny_model


@pytest.fixture(autouse=True, scope="session")
def _tiny_model_namespace(doctest_namespace, tmp_path_factory):
    doctest_namespace["tiny_model"] = str(
        make_tiny_model(tmp_path_factory.mktemp("doctest-tiny"), "bert")
    )


# The engine modules' examples need their engine: collected only where installed.
collect_ignore = [
    f"engines/{name}.py"
    for name, packages in (
        ("dask", ("dask", "distributed", "pandas", "pyarrow")),  # dask.dataframe needs pyarrow
        ("ray", ("ray", "pandas")),
        ("spark", ("pyspark", "pandas", "pyarrow")),
    )
    if any(importlib.util.find_spec(package) is None for package in packages)
]
