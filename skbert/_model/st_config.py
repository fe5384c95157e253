"""A model's own sentence-transformers configuration, read without sentence-transformers.

A model published for sentence-transformers carries, next to its weights, the
description of how its authors turn token vectors into one embedding:

``modules.json``
    The module pipeline: a ``Transformer``, then usually a ``Pooling``, any
    number of ``Dense`` layers and optionally a ``Normalize`` (L2
    normalisation). Any other module (``LayerNorm``, ``WeightedLayerPooling``,
    ...) or module option that skbert does not reproduce is recorded in
    ``unsupported``, with what to do about it.
``<pooling path>/config.json``
    The pooling modes (``cls``, ``mean``, ``max``, ``mean_sqrt_len_tokens``,
    ``weightedmean``, ``lasttoken``, alone or several, concatenated in the
    order sentence-transformers uses; the legacy ``pooling_mode_*_token``
    booleans or the newer ``pooling_mode`` key) and ``include_prompt``.
``<dense path>/config.json`` and weights
    ``in_features``, ``out_features``, ``bias``, ``activation_function`` (a
    ``torch.nn`` module) of a ``Dense`` layer; its weights
    (``model.safetensors``, or ``pytorch_model.bin`` with
    ``use_safetensors=False``) are read by :func:`load_dense_layers`.
``sentence_bert_config.json``
    ``max_seq_length`` and ``do_lower_case`` of the ``Transformer`` module,
    and the options of sentence-transformers 6 (``modality_config``: a
    ``"message"`` entry means every text is rendered through the
    tokenizer's chat template; ``transformer_task``, ``processing_kwargs``,
    ...), which must be the plain text defaults.
``config_sentence_transformers.json``
    Named ``prompts``, ``default_prompt_name`` and ``similarity_fn_name``.

The files are read from the model's local folder (or the bundled default
model), or for a hub id from its snapshot in the local Hugging Face cache,
downloading them there like ``from_pretrained`` does for the weights when
they are not cached yet and the hub is reachable. Nothing here imports
sentence-transformers or torch.
"""

import json
import logging
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..exceptions import ModelConfigWarning
from . import backend as _backend

logger = logging.getLogger(__name__)

__all__ = [
    "ModelConfigWarning",
    "SentenceTransformersConfig",
    "DenseLayer",
    "read_st_config",
    "check_supported",
    "plain_model_problems",
    "default_pooling",
    "load_dense_layers",
    "apply_dense",
    "auto_max_length",
    "prompt_token_count",
    "position_limit",
    "ST_POOLING_MODES",
    "ST_CONFIG_FILES",
]

#: sentence-transformers' pooling modes and the skbert poolings that equal them.
ST_POOLING_MODES = {
    "cls": "cls",
    "mean": "mean",
    "max": "max",
    "mean_sqrt_len_tokens": "mean_sqrt_len",
    "weightedmean": "weighted_mean",
    "lasttoken": "last_token",
}
#: The legacy boolean keys of a Pooling config, in the order sentence-transformers
#: concatenates the modes they switch on.
_LEGACY_MODE_KEYS = (
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_max_tokens", "max"),
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
    ("pooling_mode_weightedmean_tokens", "weightedmean"),
    ("pooling_mode_lasttoken", "lasttoken"),
)
#: Top-level files of the configuration (module configs live in subfolders).
ST_CONFIG_FILES = (
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)


@dataclass(frozen=True)
class DenseLayer:
    """A ``Dense`` module of a sentence-transformers pipeline (its configuration)."""

    #: Folder of the module, relative to the model's root (``"2_Dense"``).
    path: str
    in_features: int
    out_features: int
    bias: bool = True
    #: Dotted name of a ``torch.nn`` module class (``"torch.nn.modules.activation.Tanh"``).
    activation: str = "torch.nn.modules.activation.Tanh"
    use_residual: bool = False


@dataclass(frozen=True)
class SentenceTransformersConfig:
    """What a model's sentence-transformers files say about its embeddings."""

    #: The skbert pooling equal to the model's Pooling module ("+"-joined
    #: for several modes, e.g. ``"max+mean"``), or None (no Pooling module).
    pooling: str | None = None
    #: The raw pooling modes, as sentence-transformers concatenates them.
    pooling_modes: tuple = ()
    #: False when the Pooling module leaves prompt tokens out of pooling.
    include_prompt: bool = True
    #: The Dense layers after the Pooling module, in order.
    dense: tuple = ()
    #: Whether the pipeline ends with L2 normalisation (a Normalize module).
    normalize: bool = False
    max_seq_length: int | None = None
    do_lower_case: bool = False
    prompts: dict = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = None
    #: What of the pipeline skbert does not reproduce: one sentence each,
    #: naming the module (or option) and what to do.
    unsupported: tuple = ()

    @property
    def unsupported_modules(self):
        """Alias of :attr:`unsupported` (the name of earlier versions)."""
        return self.unsupported


def _module_kind(type_name):
    """``"sentence_transformers.models.Pooling"`` -> ``"Pooling"``."""
    return str(type_name).rsplit(".", 1)[-1]


def _pooling_modes(config):
    mode = config.get("pooling_mode")
    if mode is not None:
        return (mode,) if isinstance(mode, str) else tuple(mode)
    modes = tuple(name for key, name in _LEGACY_MODE_KEYS if config.get(key, False))
    return modes or ("mean",)


def _skbert_pooling(modes):
    """The skbert pooling equal to sentence-transformers' ``modes``, or None."""
    names = [ST_POOLING_MODES.get(mode) for mode in modes]
    if not names or None in names:
        return None
    if len(names) == 1:
        return names[0]
    if names == ["mean", "max"]:
        return "mean_max"
    return "+".join(names)


#: sentence_bert_config.json file names sentence-transformers tries, in order.
_TRANSFORMER_CONFIGS = (
    "sentence_bert_config.json",
    "sentence_roberta_config.json",
    "sentence_distilbert_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)
#: The plain-text modality of a feature-extraction Transformer module.
_PLAIN_TEXT = {"method": "forward", "method_output_name": "last_hidden_state"}
#: Loading arguments of a Transformer module that do not change what it computes.
_HARMLESS_KWARGS = {"trust_remote_code", "revision", "cache_dir", "local_files_only", "token",
                    "subfolder"}


def _transformer_problems(config):
    """What of a Transformer module's options skbert does not reproduce."""
    problems = []
    task = config.get("transformer_task")
    if task not in (None, "feature-extraction"):
        problems.append(
            f"Transformer: transformer_task={task!r} (skbert reproduces "
            "'feature-extraction' models only)."
        )
    modality = config.get("modality_config")
    if modality is not None:
        if "message" in modality:
            problems.append(
                "Transformer: modality_config has a 'message' entry, so "
                "sentence-transformers renders every text through the tokenizer's "
                "chat template (and a prompt as a system message); skbert does not "
                "render chat templates. Encode with sentence-transformers, or remove "
                "the 'message' entry from sentence_bert_config.json if the model "
                "was trained on plain texts."
            )
        others = {k: v for k, v in modality.items() if k != "message"}
        text = {k: v for k, v in dict(others.get("text") or {}).items() if k != "format"}
        if set(others) != {"text"} or text != _PLAIN_TEXT:
            problems.append(
                f"Transformer: modality_config {others!r} (skbert reads the plain "
                f"text modality {{'text': {_PLAIN_TEXT!r}}} only)."
            )
    output = config.get("module_output_name")
    if output not in (None, "token_embeddings"):
        problems.append(
            f"Transformer: module_output_name={output!r} (skbert pools token embeddings)."
        )
    if config.get("processing_kwargs"):
        problems.append(
            f"Transformer: processing_kwargs={config['processing_kwargs']!r} change how "
            "texts are tokenised; skbert does not apply them."
        )
    for names in (("model_args", "model_kwargs"), ("tokenizer_args", "processor_kwargs"),
                  ("config_args", "config_kwargs")):
        for name in names:
            extra = sorted(set(config.get(name) or {}) - _HARMLESS_KWARGS)
            if extra:
                problems.append(
                    f"Transformer: {name} sets {', '.join(extra)}, which skbert does "
                    "not apply when loading the model."
                )
    return problems


def _dense_layer(prefix, config):
    """A :class:`DenseLayer` from a Dense module's config, or why not."""
    try:
        layer = DenseLayer(
            path=prefix.rstrip("/"),
            in_features=int(config["in_features"]),
            out_features=int(config["out_features"]),
            bias=bool(config.get("bias", True)),
            activation=str(config.get("activation_function")
                           or "torch.nn.modules.activation.Tanh"),
            use_residual=bool(config.get("use_residual", False)),
        )
    except (KeyError, TypeError, ValueError):
        return None, f"Dense ({prefix.rstrip('/') or '.'}): its config.json lacks in_features/out_features."
    for key in ("module_input_name", "module_output_name"):
        if config.get(key) not in (None, "sentence_embedding"):
            return None, (
                f"Dense ({layer.path}): {key}={config[key]!r} (skbert applies Dense "
                "layers to the pooled sentence embedding only)."
            )
    if not layer.activation.startswith("torch."):
        return None, (
            f"Dense ({layer.path}): activation_function={layer.activation!r} is not "
            "a torch.nn module (sentence-transformers itself needs trust_remote_code "
            "for it)."
        )
    return layer, None


def parse_st_config(read):
    """Build a :class:`SentenceTransformersConfig` from a file reader.

    Parameters
    ----------
    read : callable
        ``read(relative_path)`` returns the parsed JSON of a file of the
        model, or None when the file does not exist.

    Returns
    -------
    config : SentenceTransformersConfig or None
        None when the model has no ``modules.json`` (sentence-transformers
        then builds a mean pooling, or a last-token one for a causal language
        model: see :func:`default_pooling`; and renders texts through the
        tokenizer's chat template if it has one: see
        :func:`plain_model_problems`).
    """
    modules = read("modules.json")
    if not isinstance(modules, list):
        return None
    values = {"dense": []}
    problems = []
    stage = "transformer"  # then "pooling", "dense", "normalize": the order skbert reproduces
    for i, module in enumerate(sorted(modules, key=lambda m: int(m.get("idx", 0)))):
        kind = _module_kind(module.get("type", ""))
        path = str(module.get("path", "") or "")
        prefix = f"{path}/" if path else ""
        if kind == "Transformer" and i == 0:
            bert = {}
            for name in _TRANSFORMER_CONFIGS:
                bert = read(f"{prefix}{name}") or {}
                if bert:
                    break
            if bert.get("max_seq_length") is not None:
                values["max_seq_length"] = int(bert["max_seq_length"])
            values["do_lower_case"] = bool(bert.get("do_lower_case", False))
            problems += _transformer_problems(bert)
            continue
        if i == 0:
            problems.append(
                f"{kind} ({path or '.'}): the pipeline does not start with a "
                "Transformer module, so skbert has no encoder to run."
            )
            continue
        if kind == "Pooling" and stage == "transformer":
            pooling = read(f"{prefix}config.json") or {}
            modes = _pooling_modes(pooling)
            values["pooling_modes"] = modes
            values["pooling"] = _skbert_pooling(modes)
            values["include_prompt"] = bool(pooling.get("include_prompt", True))
            if values["pooling"] is None:
                problems.append(
                    f"Pooling ({path or '.'}): mode(s) {list(modes)} (skbert knows "
                    f"{', '.join(ST_POOLING_MODES)})."
                )
            stage = "pooling"
        elif kind == "Dense" and stage in ("pooling", "dense"):
            layer, problem = _dense_layer(prefix, read(f"{prefix}config.json") or {})
            if problem:
                problems.append(problem)
            else:
                values["dense"].append(layer)
            stage = "dense"
        elif kind == "Normalize" and stage in ("pooling", "dense"):
            values["normalize"] = True
            stage = "normalize"
        elif kind == "Dropout" and stage in ("pooling", "dense"):
            pass  # the identity at inference
        else:
            problems.append(
                f"{kind} ({path or '.'}): skbert reproduces Transformer, Pooling, "
                "Dense and Normalize modules only, in that order."
            )
    extra = read("config_sentence_transformers.json") or {}
    prompts = extra.get("prompts") or {}
    values["prompts"] = {str(k): str(v) for k, v in prompts.items() if v is not None}
    values["default_prompt_name"] = extra.get("default_prompt_name") or None
    values["similarity_fn_name"] = extra.get("similarity_fn_name") or None
    # A Dense layer that cannot be reproduced leaves the others meaningless.
    dense_problem = any(problem.startswith("Dense") for problem in problems)
    values["dense"] = () if dense_problem else tuple(values["dense"])
    values["unsupported"] = tuple(problems)
    return SentenceTransformersConfig(**values)


# ------------------------------------------------------------------ files
_LOCK = threading.Lock()
_HUB_CONFIGS = {}


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise OSError(f"Cannot read the sentence-transformers file {path}: {exc}") from exc


def _hub_reader(repo, revision):
    """Read files of a hub model from the local cache, downloading when allowed."""

    def read(relative):
        try:
            from huggingface_hub import hf_hub_download, try_to_load_from_cache
        except ImportError:  # pragma: no cover - a dependency of transformers
            return None
        try:
            found = try_to_load_from_cache(repo, relative, revision=revision)
        except Exception:  # noqa: BLE001 - an unusable cache means "not known"
            found = None
        if isinstance(found, str):
            return _read_json(found)
        if found is not None:  # cached as known to be missing
            return None
        try:
            return _read_json(hf_hub_download(repo, relative, revision=revision))
        except Exception:  # noqa: BLE001 - missing file, offline, no access
            return None

    return read


def read_st_config(spec):
    """The sentence-transformers configuration of the model named by ``spec``.

    Parameters
    ----------
    spec : skbert._model.backend.ModelSpec

    Returns
    -------
    config : SentenceTransformersConfig or None
        None when the model has no sentence-transformers files.
    """
    path = _backend.resolve_model(spec)
    if Path(path).is_dir():
        # Small files, read afresh: a folder changed in place is followed.
        return parse_st_config(lambda rel: _read_json(os.path.join(path, rel)))
    key = (path, spec.revision)
    with _LOCK:
        if key in _HUB_CONFIGS:
            return _HUB_CONFIGS[key]
    config = parse_st_config(_hub_reader(path, spec.revision))
    with _LOCK:
        _HUB_CONFIGS[key] = config
    return config


def plain_model_problems(spec):
    """What sentence-transformers does to a model without ``modules.json`` that
    skbert does not reproduce.

    Without ``modules.json`` sentence-transformers builds a Transformer module
    whose modalities it infers from the tokenizer: one with a chat template
    gets the ``"message"`` modality, and every text (a prompt as a system
    message) is then rendered through the chat template before tokenising.
    """
    tokenizer = _backend.load_tokenizer(spec)
    if getattr(tokenizer, "chat_template", None):
        problem = (
            "Transformer: the model has no modules.json and its tokenizer has a chat "
            "template, so sentence-transformers renders every text through the chat "
            "template (and a prompt as a system message); skbert does not render "
            "chat templates. Encode with sentence-transformers, or give the model a "
            "modules.json whose Transformer reads plain texts (sentence-transformers "
            "then does not use the template either) if it was trained on plain texts."
        )
        return (problem,)
    return ()


def default_pooling(spec):
    """The pooling sentence-transformers gives a model without ``modules.json``.

    ``"last_token"`` for a causal language model (its first architecture a
    ``...ForCausalLM`` whose config does not set ``is_causal=False``), as
    sentence-transformers builds it; ``"mean"`` otherwise.
    """
    config = _backend.load_config(spec)
    architectures = getattr(config, "architectures", None) or ()
    if (architectures and str(architectures[0]).endswith("ForCausalLM")
            and getattr(config, "is_causal", True)):
        return "last_token"
    return "mean"


def check_supported(spec, config, on_unsupported="raise"):
    """Raise (or warn) when ``config`` holds what skbert does not reproduce.

    Parameters
    ----------
    spec : skbert._model.backend.ModelSpec
    config : SentenceTransformersConfig or None
    on_unsupported : {"raise", "warn"}, default="raise"
        "warn" turns the ValueError into a :class:`ModelConfigWarning`; the
        features then follow the supported modules only.
    """
    problems = config.unsupported if config is not None else plain_model_problems(spec)
    if not problems:
        return
    what = " ".join(problems)
    if on_unsupported == "warn":
        warnings.warn(
            f"Model {spec.name!r} has sentence-transformers modules or options that "
            f"skbert does not reproduce, ignored as on_unsupported='warn' asks: {what} "
            "The features differ from SentenceTransformer.encode.",
            ModelConfigWarning,
            stacklevel=4,
        )
        return
    raise ValueError(
        f"Model {spec.name!r} has sentence-transformers modules or options that "
        f"skbert does not reproduce: {what} Its features would differ from "
        "SentenceTransformer.encode, so skbert refuses them. Pass "
        "on_unsupported='warn' to use the supported modules only, knowingly."
    )


def _model_file(spec, relative):
    """Local path of the file ``relative`` of the model, or None when it has none."""
    path = _backend.resolve_model(spec)
    if Path(path).is_dir():
        full = os.path.join(path, relative)
        return full if os.path.isfile(full) else None
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of transformers
        return None
    found = try_to_load_from_cache(path, relative, revision=spec.revision)
    if isinstance(found, str):
        return found
    if found is not None:
        return None
    try:
        return hf_hub_download(path, relative, revision=spec.revision)
    except Exception:  # noqa: BLE001 - missing file, offline, no access
        return None


def load_dense_layers(spec, config):
    """The Dense layers of ``config`` as float32 torch modules (weights read from disk).

    safetensors weights are read as data; a ``pytorch_model.bin`` only with
    ``spec.use_safetensors`` False (pickle can run code), and then with
    ``torch.load(weights_only=True)``.

    Returns
    -------
    layers : list of torch.nn.Module
        Each maps ``(n, in_features)`` to ``(n, out_features)``.
    """
    import importlib

    import torch

    layers = []
    for dense in config.dense:
        safe = _model_file(spec, f"{dense.path}/model.safetensors")
        if safe is not None:
            from safetensors.torch import load_file

            state = load_file(safe)
        else:
            pickled = _model_file(spec, f"{dense.path}/pytorch_model.bin")
            if pickled is None:
                raise OSError(
                    f"The Dense module {dense.path!r} of model {spec.name!r} has no "
                    "weights (neither model.safetensors nor pytorch_model.bin)."
                )
            if spec.use_safetensors:
                raise OSError(
                    f"The Dense module {dense.path!r} of model {spec.name!r} has its "
                    "weights in pytorch_model.bin only. skbert loads safetensors only "
                    "by default because pickle weights can run arbitrary code when "
                    "loaded. If you trust this model, pass use_safetensors=False to "
                    "opt in."
                )
            state = torch.load(pickled, map_location="cpu", weights_only=True)
        module_name, _, class_name = dense.activation.rpartition(".")
        activation = getattr(importlib.import_module(module_name), class_name, None)
        if not (isinstance(activation, type) and issubclass(activation, torch.nn.Module)):
            raise ValueError(
                f"The Dense module {dense.path!r} of model {spec.name!r} names "
                f"activation_function={dense.activation!r}, which is not a torch.nn "
                "module class."
            )
        linear = torch.nn.Linear(dense.in_features, dense.out_features, bias=dense.bias)
        wanted = {"linear.weight": linear.weight}
        if dense.bias:
            wanted["linear.bias"] = linear.bias
        residual = None
        if dense.use_residual and dense.in_features != dense.out_features:
            residual = torch.nn.Linear(dense.in_features, dense.out_features, bias=False)
            wanted["residual.weight"] = residual.weight
        with torch.no_grad():
            for key, param in wanted.items():
                if key not in state or tuple(state[key].shape) != tuple(param.shape):
                    raise ValueError(
                        f"The weights of the Dense module {dense.path!r} of model "
                        f"{spec.name!r} lack {key!r} of shape {tuple(param.shape)}."
                    )
                param.copy_(state[key].float())
        layers.append(_DenseModule(linear, activation(), dense.use_residual, residual))
    return layers


def _DenseModule(linear, activation, use_residual, residual):  # noqa: N802 - torch built lazily
    import torch

    class DenseModule(torch.nn.Module):
        """sentence-transformers' Dense: ``activation(linear(x))`` (+ residual)."""

        def __init__(self):
            super().__init__()
            self.linear, self.activation, self.residual = linear, activation, residual
            self.use_residual = use_residual

        def forward(self, x):
            out = self.activation(self.linear(x))
            if self.use_residual:
                out = out + (x if self.residual is None else self.residual(x))
            return out

    return DenseModule().eval()


def apply_dense(pooled, layers):
    """Run pooled vectors ``(n, n_layers, dim)`` through the Dense ``layers`` (numpy in, out)."""
    import numpy as np
    import torch

    if not layers:
        return pooled
    n, n_layers, dim = pooled.shape
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(pooled, dtype=np.float32)).reshape(-1, dim)
        for layer in layers:
            x = layer(x)
    return x.reshape(n, n_layers, -1).numpy()


# ---------------------------------------------------------------- prompts
def prompt_token_count(tokenizer, prompt, *, max_length=None):
    """Tokens of ``prompt`` that sentence-transformers leaves out of pooling.

    As sentence-transformers measures it for ``include_prompt=False``: the
    prompt tokenised alone, with the tokenizer's special tokens (so a
    leading ``[CLS]`` counts), minus a trailing special token (``[SEP]``,
    ``</s>``, an end-of-text token).
    """
    if not prompt:
        return 0
    ids = tokenizer(
        [prompt], truncation=True, max_length=max_length, return_attention_mask=False
    )["input_ids"][0]
    n = len(ids)
    if n and ids[-1] in set(getattr(tokenizer, "all_special_ids", ())):
        n -= 1
    return n


def position_limit(spec):
    """Longest input the model's position embeddings allow, or None if unbounded.

    Unlike the default ``max_length`` (at most 512), this is the limit a
    model's own ``max_seq_length`` may reach.
    """
    config = _backend.load_config(spec)
    pos = getattr(config, "max_position_embeddings", None)
    if not pos or pos < 0:
        return None
    if config.model_type in {"roberta", "xlm-roberta", "camembert"}:
        pos -= (config.pad_token_id or 0) + 1
    return int(pos)


def auto_max_length(spec, config):
    """``max_length="auto"``: the token limit sentence-transformers applies to the model.

    The model's own ``max_seq_length`` when its sentence-transformers files
    declare one; otherwise, as sentence-transformers sets it, the tokenizer's
    ``model_max_length`` capped at the model's ``max_position_embeddings``.
    Either way at most what the position embeddings allow (RoBERTa-style
    models reserve the first positions), where sentence-transformers would
    fail on longer texts. Raises a ValueError when no limit is known.
    """
    limit = position_limit(spec)
    if config is not None and config.max_seq_length:
        own = int(config.max_seq_length)
    else:
        model = _backend.load_config(spec)
        tokenizer = _backend.load_tokenizer(spec)
        own = getattr(tokenizer, "model_max_length", None)
        own = int(own) if own is not None and own < 1_000_000 else None
        pos = getattr(model, "max_position_embeddings", None)
        if pos is not None and pos != -1:
            own = int(pos) if own is None else min(own, int(pos))
    if own is None and limit is None:
        raise ValueError(
            f"max_length='auto': model {spec.name!r} declares no token limit (no "
            "max_seq_length, no model_max_length in its tokenizer, no position "
            "embeddings), and sentence-transformers would not truncate at all. Pass "
            "an explicit max_length=..."
        )
    return own if limit is None else limit if own is None else min(own, limit)
