"""Doctest set-up: docstring examples run on a tiny offline model."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _tiny_model_namespace(doctest_namespace, tmp_path_factory):
    from skbert._testing import make_tiny_model

    doctest_namespace["tiny_model"] = str(
        make_tiny_model(tmp_path_factory.mktemp("doctest-tiny"), "bert")
    )
