"""A model's own sentence-transformers configuration, read without sentence-transformers.

A model published for sentence-transformers carries, next to its weights, the
description of how its authors turn token vectors into one embedding:

``modules.json``
    The module pipeline: a ``Transformer``, then usually a ``Pooling`` and
    optionally a ``Normalize`` (L2 normalisation); other modules (``Dense``,
    ``LayerNorm``, ...) are recorded but not reproduced by skbert.
``<pooling path>/config.json``
    The pooling mode (``cls``, ``mean``, ``max``, ``mean_sqrt_len_tokens``,
    ``weightedmean``, ``lasttoken``; the legacy ``pooling_mode_*_token``
    booleans or the newer ``pooling_mode`` key) and ``include_prompt``.
``sentence_bert_config.json``
    ``max_seq_length`` and ``do_lower_case`` of the ``Transformer`` module.
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
    "read_st_config",
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
class SentenceTransformersConfig:
    """What a model's sentence-transformers files say about its embeddings."""

    #: The skbert pooling equal to the model's Pooling module, or None
    #: (no Pooling module, or a mode combination skbert does not offer).
    pooling: str | None = None
    #: The raw pooling modes, as sentence-transformers concatenates them.
    pooling_modes: tuple = ()
    #: False when the Pooling module leaves prompt tokens out of pooling.
    include_prompt: bool = True
    #: Whether the pipeline ends with L2 normalisation (a Normalize module).
    normalize: bool = False
    max_seq_length: int | None = None
    do_lower_case: bool = False
    prompts: dict = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = None
    #: Module types of the pipeline that skbert does not reproduce.
    unsupported_modules: tuple = ()


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
    if len(modes) == 1:
        return ST_POOLING_MODES.get(modes[0])
    if tuple(modes) == ("mean", "max"):
        return "mean_max"
    return None


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
        then builds a plain mean pooling, which is skbert's default too).
    """
    modules = read("modules.json")
    if not isinstance(modules, list):
        return None
    values = {"unsupported_modules": []}
    for i, module in enumerate(sorted(modules, key=lambda m: int(m.get("idx", 0)))):
        kind = _module_kind(module.get("type", ""))
        path = str(module.get("path", "") or "")
        prefix = f"{path}/" if path else ""
        if kind == "Transformer" and i == 0:
            bert = read(f"{prefix}sentence_bert_config.json") or {}
            if bert.get("max_seq_length") is not None:
                values["max_seq_length"] = int(bert["max_seq_length"])
            values["do_lower_case"] = bool(bert.get("do_lower_case", False))
        elif kind == "Pooling" and "pooling_modes" not in values:
            pooling = read(f"{prefix}config.json") or {}
            modes = _pooling_modes(pooling)
            values["pooling_modes"] = modes
            values["pooling"] = _skbert_pooling(modes)
            values["include_prompt"] = bool(pooling.get("include_prompt", True))
            if values["pooling"] is None:
                values["unsupported_modules"].append(f"Pooling{list(modes)}")
        elif kind == "Normalize":
            values["normalize"] = True
        else:
            values["unsupported_modules"].append(kind)
    extra = read("config_sentence_transformers.json") or {}
    prompts = extra.get("prompts") or {}
    values["prompts"] = {str(k): str(v) for k, v in prompts.items() if v is not None}
    values["default_prompt_name"] = extra.get("default_prompt_name") or None
    values["similarity_fn_name"] = extra.get("similarity_fn_name") or None
    values["unsupported_modules"] = tuple(values["unsupported_modules"])
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


def warn_unsupported(spec, config):
    """Warn that ``config`` holds modules whose effect skbert does not reproduce."""
    if config is not None and config.unsupported_modules:
        warnings.warn(
            f"Model {spec.name!r} has sentence-transformers modules that skbert "
            f"does not reproduce: {', '.join(config.unsupported_modules)}. The "
            "features follow its Transformer, Pooling and Normalize modules only, "
            "so they differ from SentenceTransformer.encode.",
            ModelConfigWarning,
            stacklevel=4,
        )


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
