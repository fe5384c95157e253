"""Sphinx configuration of the skbert documentation.

Build (from the repository root)::

    pip install -e ".[docs]"
    SKBERT_DATA=../shared/data python -m sphinx -W --keep-going -b html docs docs/_build/html

The build runs offline: the gallery executes on the bundled default model
and on the data sets in ``SKBERT_DATA``. Links to other projects' docs
(intersphinx) need the network and are opt-in with
``SKBERT_DOCS_INTERSPHINX=1``. ``-D plot_gallery=0`` skips running the
gallery (a quick build of the text).
"""

import os
import re
import sys
from datetime import date
from pathlib import Path

import skbert

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "sphinxext"))

# Sphinx runs this file, and sphinx-gallery runs each example, from inside
# their own folders: make a relative SKBERT_DATA absolute against the folder
# the build was started from (the repository root in the documented command).
_data = os.environ.get("SKBERT_DATA")
if _data and not os.path.isabs(os.path.expanduser(_data)):
    _bases = [os.environ.get("PWD"), str(ROOT)]
    _candidates = [Path(b, _data).resolve() for b in _bases if b]
    _found = [c for c in _candidates if c.is_dir()]
    os.environ["SKBERT_DATA"] = str((_found or _candidates)[0])

# -- Project -----------------------------------------------------------------
project = "skbert"
author = "skbert developers"
copyright = f"{date.today().year}, {author}"
release = skbert.__version__
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]
templates_path = ["_templates"]
# Files included by other pages (e.g. benchmark tables) are not pages of their own.
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "sg_execution_times.rst", "_*.rst"]
default_role = "literal"
pygments_style = "sphinx"

autosummary_generate = True
autodoc_default_options = {"members": True}
autodoc_typehints = "none"

# numpydoc renders the Parameters / Attributes sections; autodoc's member
# listing (in the class template) documents the methods.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# Linking parameter types needs the other projects' inventories, as numpydoc
# writes them as intersphinx references (python:iterable, numpy:array_like).
INTERSPHINX = os.environ.get("SKBERT_DOCS_INTERSPHINX") == "1"
numpydoc_xref_param_type = INTERSPHINX
numpydoc_xref_aliases = {
    "BertVectorizer": "skbert.BertVectorizer",
    "BertClassifier": "skbert.BertClassifier",
    "Bunch": "sklearn.utils.Bunch",
    "ndarray": "numpy.ndarray",
    "DataFrame": "pandas.DataFrame",
    "RandomState": "numpy.random.RandomState",
}
numpydoc_xref_ignore = {
    "of", "or", "and", "shape", "default", "optional", "array-like",
    "iterable", "path-like", "sequence", "instance", "None", "n_samples",
    "n_features", "n_features_out", "n_classes", "n_selected_layers", "object",
}

# -- Intersphinx (opt-in: needs the network) ---------------------------------
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable", None),
    "scipy": ("https://docs.scipy.org/doc/scipy", None),
    "sklearn": ("https://scikit-learn.org/stable", None),
    "torch": ("https://docs.pytorch.org/docs/stable", None),
    "transformers": ("https://huggingface.co/docs/transformers/main/en", None),
    "pandas": ("https://pandas.pydata.org/docs", None),
    "matplotlib": ("https://matplotlib.org/stable", None),
}
if INTERSPHINX:
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_timeout = 30

# -- HTML --------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"skbert {release}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 8,
    "secondary_sidebar_items": ["page-toc", "sourcelink"],
}
html_sidebars = {"changelog": [], "install": [], "security": []}
html_show_sourcelink = True

# -- sphinx-gallery ----------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"(__init__|_helpers?)\.py",
    "within_subsection_order": "gallery_order.GalleryOrder",
    "doc_module": ("skbert",),
    "reference_url": {"skbert": None},
    "backreferences_dir": "generated/backreferences",
    "image_scrapers": ("matplotlib",),
    "remove_config_comments": True,
    "min_reported_time": 0,
    "show_memory": False,
    "download_all_examples": False,
    "matplotlib_animations": False,
}


# -- Hooks -------------------------------------------------------------------
def _skip_member(app, what, name, obj, skip, options):
    """Leave out scikit-learn's metadata-routing methods.

    ``set_fit_request`` and friends (added to estimator classes by
    scikit-learn) and ``get_metadata_routing`` are of no use with skbert's
    estimators, and their docstrings refer to scikit-learn's own user guide.
    """
    if name.startswith("set_") and name.endswith("_request"):
        return True
    if name == "get_metadata_routing":
        return True
    return skip


_ROLE_WITH_TARGET = re.compile(r":(?:ref|term|doc):`([^`<]*?)\s*<[^`>]*>`", re.DOTALL)
_ROLE = re.compile(r":(?:ref|term|doc):`([^`]*)`")


def _plain_sklearn_refs(app, what, name, obj, options, lines):
    """Turn cross-references in inherited scikit-learn docstrings into text.

    Methods inherited from scikit-learn (``get_params``, ``set_output``,
    ``score``, ...) refer to labels and glossary terms of scikit-learn's own
    documentation, which resolve only through intersphinx.
    """
    module = getattr(obj, "__module__", None) or ""
    if INTERSPHINX or not module.startswith("sklearn"):
        return
    text = "\n".join(lines)
    text = _ROLE.sub(r"\1", _ROLE_WITH_TARGET.sub(r"\1", text))
    lines[:] = text.split("\n")


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
    app.connect("autodoc-process-docstring", _plain_sklearn_refs)
