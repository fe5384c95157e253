"""How a forward pass runs: early exit, backends, CPU threads, out-of-memory.

Everything here changes *how fast* hidden states are computed, never *which*
values the default path returns:

- :func:`truncated` runs only the first ``k`` transformer layers (early exit)
  and skips the pooler, by swapping the encoder's layer list (and the pooler)
  for the duration of one call and always restoring them.
- :func:`prepare_backend` turns a freshly loaded float32 encoder into the
  requested execution backend: ``"torch"`` (eager, exact, the default),
  ``"compile"`` (``torch.compile`` of each transformer layer; equal to
  eager within float32 rounding) or ``"int8"`` (dynamic int8
  quantisation of the linear layers with per-channel weights, except the
  feed-forward output projection; CPU only, approximate).
- :func:`thread_limit` keeps torch's intra-op threads within this process's
  share of the CPUs (inside joblib workers) and restores the global setting.
- :func:`is_out_of_memory` recognises accelerator out-of-memory errors, so the
  extraction engine can halve the batch and retry.
- :func:`tune_allocator` undoes, for the model's activations, the glibc
  malloc setting that Dask's worker nanny puts in every worker's environment
  (``MALLOC_TRIM_THRESHOLD_``), which costs a forward pass about 1.5x.

torch is imported inside the functions so that importing skbert stays cheap.
"""

import contextlib
import inspect
import logging
import os
import sys
import warnings

from .encoder import lean_layers

logger = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "deepest_layer",
    "model_input_names",
    "EXACT_BACKENDS",
    "find_layer_list",
    "truncated",
    "prepare_backend",
    "prepare_precision",
    "DTYPES",
    "PRECISION_SCHEME",
    "autocast",
    "eager_layers",
    "thread_budget",
    "thread_limit",
    "is_out_of_memory",
    "tune_allocator",
]

#: Execution backends offered by ``BertVectorizer(backend=...)``.
BACKENDS = ("torch", "compile", "int8")
#: Backends whose outputs equal the eager float32 model's (within 1e-5).
EXACT_BACKENDS = ("torch", "compile")

#: Version of the int8 recipe (which linear layers are quantised, how); part
#: of the feature cache's key for ``backend="int8"``.
INT8_SCHEME = "dynamic-per-channel;ffn-output-float32"

#: Where encoders keep their transformer layers (dotted attribute paths).
_LAYER_PATHS = (
    "encoder.layer",  # BERT, RoBERTa, XLM-R, ELECTRA, MiniLM, CamemBERT, ...
    "transformer.layer",  # DistilBERT
    "encoder.layers",
    "layers",
    "layer",
)


def _get_path(obj, dotted):
    for name in dotted.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def find_layer_list(model):
    """Return ``(owner, attribute, layers)`` of the encoder's layer list, or None.

    The known attribute paths are tried first; otherwise the only
    ``nn.ModuleList`` whose length is the configured number of layers.
    """
    import torch

    config = getattr(model, "config", None)
    n_layers = getattr(config, "num_hidden_layers", None)
    for dotted in _LAYER_PATHS:
        layers = _get_path(model, dotted)
        if isinstance(layers, torch.nn.ModuleList) and (
            n_layers is None or len(layers) == n_layers
        ):
            owner_path, _, attr = dotted.rpartition(".")
            owner = _get_path(model, owner_path) if owner_path else model
            return owner, attr, layers
    if n_layers is None:
        return None
    found = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers:
            found.append(name)
    if len(found) != 1:
        return None
    owner_path, _, attr = found[0].rpartition(".")
    owner = model.get_submodule(owner_path) if owner_path else model
    return owner, attr, getattr(owner, attr)


def _no_pooler_class():
    import torch

    class _NoPooler(torch.nn.Module):
        """Stands in for the pooler: returns None, whether or not it is called."""

        def forward(self, *args, **kwargs):
            return None

    return _NoPooler


def _NoPooler():  # noqa: N802 - built lazily so that importing skbert stays torch-free
    global _NO_POOLER_CLASS
    if _NO_POOLER_CLASS is None:
        _NO_POOLER_CLASS = _no_pooler_class()
    return _NO_POOLER_CLASS()


_NO_POOLER_CLASS = None


@contextlib.contextmanager
def truncated(model, num_layers=None, *, skip_pooler=True):
    """Run ``model`` with only its first ``num_layers`` layers and no pooler.

    Inside the context the encoder's layer list is replaced by a list of its
    first ``num_layers`` layers (the same module objects, so weights and
    hooks are shared) and ``model.pooler`` (with ALBERT's ``pooler_activation``)
    by a module that returns None; both are restored on exit,
    also after an exception. Models whose layer list cannot be found run in
    full. Not thread-safe: callers hold the model's lock.

    Parameters
    ----------
    model : torch.nn.Module
    num_layers : int or None
        Transformer layers to run; None (or at least the model's count) runs
        all of them.
    skip_pooler : bool, default=True
        Replace ``model.pooler`` (BERT's tanh head, unused for features) by
        None while inside.
    """
    import torch

    saved = []
    try:
        if skip_pooler and isinstance(getattr(model, "pooler", None), torch.nn.Module):
            saved.append((model, "pooler", model.pooler))
            model.pooler = _NoPooler()
            # ALBERT applies pooler_activation (tanh) to the pooler's output.
            if isinstance(getattr(model, "pooler_activation", None), torch.nn.Module):
                saved.append((model, "pooler_activation", model.pooler_activation))
                model.pooler_activation = _NoPooler()
        if num_layers is not None:
            found = find_layer_list(model)
            if found is not None:
                owner, attr, layers = found
                if 0 <= num_layers < len(layers):
                    saved.append((owner, attr, layers))
                    setattr(owner, attr, type(layers)(list(layers)[:num_layers]))
        yield
    finally:
        for owner, attr, value in reversed(saved):
            setattr(owner, attr, value)


# ------------------------------------------------------------------ backends
def _inner_hooks(layer):
    """Forward hooks of a layer's submodules (not of the layer itself)."""
    return [
        (m, dict(m._forward_hooks), dict(m._forward_pre_hooks))
        for m in layer.modules()
        if m is not layer and (m._forward_hooks or m._forward_pre_hooks)
    ]


def _compile_layers(model, layers):
    """Compile each layer's ``forward`` whole, keeping the eager one for attention maps.

    transformers records hidden states with forward hooks on the layers
    (they run outside ``forward``, so compiling ``forward`` keeps them) and
    attention maps with hooks on the attention submodules, inside the
    layer; those read context variables that ``torch.compile`` cannot trace,
    so they would split every layer's graph. They are removed from this
    private copy of the model and put back, with the eager ``forward``,
    only while attention maps are requested (see :func:`eager_layers`).
    """
    import torch

    saved = []
    for layer in layers:
        hooks = _inner_hooks(layer)
        for module, _, _ in hooks:
            module._forward_hooks.clear()
            module._forward_pre_hooks.clear()
        eager = layer.forward
        # dynamic=True: batches vary in size and length; one graph serves all.
        compiled = torch.compile(eager, dynamic=True)
        layer.forward = compiled
        saved.append((layer, eager, compiled, hooks))
    model._skbert_compiled_layers = saved


@contextlib.contextmanager
def eager_layers(model):
    """Run a ``"compile"`` model's layers eagerly, with all their hooks, inside."""
    saved = getattr(model, "_skbert_compiled_layers", None)
    if not saved:
        yield
        return
    for layer, eager, _, hooks in saved:
        layer.forward = eager
        for module, fwd, pre in hooks:
            module._forward_hooks.update(fwd)
            module._forward_pre_hooks.update(pre)
    try:
        yield
    finally:
        for layer, _, compiled, hooks in saved:
            layer.forward = compiled
            for module, _, _ in hooks:
                module._forward_hooks.clear()
                module._forward_pre_hooks.clear()


def _int8_exempt(model):
    """Ids of the linear modules that ``backend="int8"`` keeps in float32.

    The feed-forward output projection reads the GELU's output, whose few
    large values make one int8 scale per batch coarse for all the others;
    keeping it in float32 (a third of the linear work) brings the vectors'
    cosine to float32 from 0.973 to 0.985 on average and the SST-2 probe
    back to float32's accuracy (benchmarks/accuracy.py). Architectures the
    lean pass does not know are quantised whole.
    """
    parts = lean_layers(model) or []
    return {id(p.ffn_output) for p in parts}


def prepare_backend(model, backend, device):
    """Turn a freshly loaded float32 eval-mode encoder into ``backend``, in place.

    The model must already have run once (so that transformers' output
    recording hooks are installed on every layer).

    Parameters
    ----------
    model : torch.nn.Module
    backend : {"torch", "compile", "int8"}
    device : str

    Returns
    -------
    model : torch.nn.Module
    """
    import torch

    if backend == "torch":
        return model
    if backend == "int8":
        if str(device).split(":")[0] != "cpu":
            raise ValueError(
                f"backend='int8' (dynamic int8 quantisation) runs on the CPU only; "
                f"got device={device!r}. Use device='cpu', or dtype='float16' / "
                "'bfloat16' for reduced precision on a GPU."
            )
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        exempt = _int8_exempt(model)
        spec = {
            name: per_channel_dynamic_qconfig
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and id(module) not in exempt
        }
        with warnings.catch_warnings():
            # torch.ao.quantization is deprecated in favour of torchao, which
            # skbert does not require; the eager API still works.
            warnings.simplefilter("ignore")
            return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
    if backend == "compile":
        found = find_layer_list(model)
        if found is None:
            raise ValueError(
                f"backend='compile' needs the encoder's layer list, which skbert "
                f"cannot find in {type(model).__name__}; use backend='torch'."
            )
        _compile_layers(model, list(found[2]))
        return model
    raise ValueError(f"Unknown backend {backend!r}; expected one of {BACKENDS}.")


# ----------------------------------------------------------------- precision
#: Compute dtypes offered by ``BertVectorizer(dtype=...)``.
DTYPES = ("float32", "float16", "bfloat16")

#: Version of the reduced-precision recipe; part of the feature cache's key
#: for ``dtype="float16"``/``"bfloat16"``.
PRECISION_SCHEME = "linear-weights-once;norms-float32"


def prepare_precision(model, dtype, backend="torch"):
    """Convert the transformer layers' linear weights to ``dtype`` once, in place.

    Reduced precision used to run under ``torch.autocast``, which casts every
    float32 weight again in every call. Here the ``nn.Linear`` modules of the
    encoder's layers are converted once; the embeddings and LayerNorms stay
    float32, as autocast keeps them, so the residual stream is float32 and
    only the matrix products (and attention) run in ``dtype``. The lean pass
    casts each linear input to ``dtype`` explicitly; transformers' forward
    (attention maps, other architectures) still runs under autocast, whose
    cast of an already converted weight costs nothing.

    Only the eager backend is converted: ``"compile"`` keeps float32 weights
    under autocast, and ``"int8"`` has no float linear layers to convert.

    Returns
    -------
    converted : bool
        Whether any weight was converted.
    """
    import torch

    if dtype in (None, "float32") or backend != "torch":
        return False
    found = find_layer_list(model)
    if found is None:
        return False
    target = getattr(torch, dtype)
    converted = False
    for layer in found[2]:
        for module in layer.modules():
            if type(module) is torch.nn.Linear and module.weight.dtype == torch.float32:
                module.to(target)
                converted = True
    return converted


def autocast(device, dtype):
    """``torch.autocast`` to ``dtype`` on ``device``'s kind; a no-op for float32."""
    if dtype in (None, "float32"):
        return contextlib.nullcontext()
    import torch

    device_type = str(device).split(":")[0]
    return torch.autocast(device_type=device_type, dtype=getattr(torch, dtype))


# ----------------------------------------------------------------- allocator
#: glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Set by :func:`tune_allocator` on a process whose environment disabled
#: glibc's dynamic mmap threshold: allocations below this size come from the
#: heap (glibc's own upper bound for its dynamic threshold on 64-bit), and
#: the heap top is given back to the system once this much is free.
ALLOCATOR_MMAP_THRESHOLD = 32 << 20
ALLOCATOR_TRIM_THRESHOLD = 128 << 20
_ALLOCATOR = {"done": False, "tuned": False}


def tune_allocator():
    """Let glibc reuse freed activation buffers when the environment stopped it.

    Setting ``MALLOC_TRIM_THRESHOLD_`` (Dask's nanny does for every worker,
    at 64 KiB) also freezes glibc's mmap threshold at 128 KiB: every
    activation tensor of a forward pass is then a fresh ``mmap`` whose pages
    fault in again, and ``free`` unmaps it. all-MiniLM-L6-v2 ran 1.5x slower
    in such a process (2-core AMD EPYC, one thread, 1,000 SST-2 sentences:
    7.7 s against 5.0 s). This raises both thresholds (32 MiB and 128 MiB),
    once per process, when ``MALLOC_TRIM_THRESHOLD_`` is set and
    ``MALLOC_MMAP_THRESHOLD_`` is not: set the latter to keep your own
    settings. Elsewhere (not glibc, or neither variable set) it does nothing.

    Returns
    -------
    tuned : bool
        Whether this process's allocator was changed (now or before).
    """
    if _ALLOCATOR["done"]:
        return _ALLOCATOR["tuned"]
    _ALLOCATOR["done"] = True
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, ValueError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    tuned = (
        mallopt(_M_MMAP_THRESHOLD, ALLOCATOR_MMAP_THRESHOLD) == 1
        and mallopt(_M_TRIM_THRESHOLD, ALLOCATOR_TRIM_THRESHOLD) == 1
    )
    _ALLOCATOR["tuned"] = tuned
    logger.debug(
        "MALLOC_TRIM_THRESHOLD_=%s in the environment: mmap threshold set to %d bytes, "
        "trim threshold to %d (%s)",
        os.environ["MALLOC_TRIM_THRESHOLD_"], ALLOCATOR_MMAP_THRESHOLD,
        ALLOCATOR_TRIM_THRESHOLD, "done" if tuned else "refused",
    )
    return tuned


# ------------------------------------------------------------------- threads
def thread_budget():
    """CPUs this process should use for torch's intra-op threads.

    The CPUs available to the process (affinity and cgroup quota, via
    :func:`joblib.cpu_count`), divided among sibling workers: joblib's loky
    and multiprocessing backends export ``OMP_NUM_THREADS`` (and friends) as
    ``cpu_count // n_jobs`` in each worker, which is honoured here.
    """
    try:
        from joblib import cpu_count

        cpus = cpu_count(only_physical_cores=False)
    except Exception:  # noqa: BLE001 - fall back to the OS view
        cpus = os.cpu_count() or 1
    budget = max(1, int(cpus))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            budget = min(budget, int(value))
    return budget


@contextlib.contextmanager
def thread_limit(device):
    """Limit torch's intra-op threads to :func:`thread_budget` on the CPU.

    Only lowers the count (never raises a user's explicit lower setting) and
    restores the previous value on exit.
    """
    if str(device).split(":")[0] != "cpu":
        yield
        return
    import torch

    before = torch.get_num_threads()
    budget = thread_budget()
    if before <= budget:
        yield
        return
    logger.debug("Limiting torch threads from %d to %d", before, budget)
    torch.set_num_threads(budget)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------ out of memory
def is_out_of_memory(exc):
    """Whether ``exc`` is an accelerator (CUDA, MPS, XPU) out-of-memory error."""
    import torch

    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_accelerator_memory(device):
    """Return cached blocks to the driver after an out-of-memory error."""
    import torch

    kind = str(device).split(":")[0]
    if kind == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif kind == "mps" and hasattr(torch, "mps"):
        with contextlib.suppress(Exception):
            torch.mps.empty_cache()


def deepest_layer(layers):
    """Number of transformer layers a pass must run to give ``layers``.

    Hidden state ``l`` is the output of layer ``l`` (0 is the embedding
    output). At least one layer runs: transformers records the embedding
    output when the first layer is called, and attention pooling of hidden
    state 0 uses layer 1's maps.
    """
    return max(1, max(int(i) for i in layers))


def model_input_names(model):
    """The token inputs ``model.forward`` takes, among those a tokenizer makes."""
    params = inspect.signature(model.forward).parameters
    return {"input_ids", "attention_mask", "token_type_ids", "position_ids"} & set(params)
