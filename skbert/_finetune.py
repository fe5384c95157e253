"""The torch side of fine-tuning: layer groups, freezing schedule, head, training loop.

:class:`skbert.BertClassifier` keeps parameters, validation and orchestration;
this module holds the tensor work it delegates, so that importing skbert does
not import torch.

Vocabulary. An encoder's parameters fall into *units* numbered like its
hidden states: unit 0 is everything below the first transformer layer (the
embeddings), unit ``l`` (1..L) is transformer layer ``l``, the one that
produces hidden state ``l``. The pooler sits outside the units: no skbert
pooling reads it, so it is never trained. Freezing ``N`` layers freezes
units 0..N; gradual unfreezing starts with no unit trainable (only the head)
and adds ``step`` units per epoch from the top down, never going below the
frozen floor.
"""

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ._extraction.batches import (
    DEFAULT_BATCH_TOKENS,
    plan_batches,
    token_lengths,
)
from ._extraction.pooling import pool_tokens
from ._model.runtime import model_input_names

logger = logging.getLogger(__name__)

__all__ = [
    "LayerGroups",
    "layer_groups",
    "final_units",
    "trainable_units",
    "reachable_units",
    "Head",
    "Encoding",
    "encode",
    "TrainConfig",
    "History",
    "train",
    "predict_logits",
    "pooled_features",
    "tensors_to_bytes",
    "tensors_from_bytes",
]

#: Most texts per prediction batch (batches also stay under a token budget).
PREDICT_BATCH_SIZE = 64
#: Gradient-norm clipping threshold (as in Hugging Face's Trainer).
MAX_GRAD_NORM = 1.0


# --------------------------------------------------------------------- units
@dataclass
class LayerGroups:
    """An encoder's parameters grouped by unit (see the module docstring)."""

    n_layers: int
    params: dict  # unit -> list of (name, Parameter)
    modules: dict  # unit -> nn.Module whose train/eval mode follows the unit
    pooler: list = field(default_factory=list)  # (name, Parameter)

    def numel(self, units):
        return sum(p.numel() for u in units for _, p in self.params.get(u, ()))


def _find_layer_stack(model, n_layers):
    """Name and module of the ModuleList holding the transformer layers."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers and name:
            return name, module
    return None, None


def layer_groups(model, n_layers, *, strict=True):
    """Split ``model``'s parameters into units 0..L and the pooler.

    Parameters
    ----------
    model : torch.nn.Module
        A Hugging Face encoder (BERT, RoBERTa, DistilBERT, MiniLM, ...).
    n_layers : int
        Its number of transformer layers.
    strict : bool, default=True
        When no list of ``n_layers`` layers is found (e.g. ALBERT, which
        shares one layer), raise if True; else put every parameter but the
        pooler's in unit 0, so the model can be trained or frozen whole.

    Returns
    -------
    LayerGroups
    """
    prefix, stack = _find_layer_stack(model, n_layers)
    if stack is None and not strict:
        params = {u: [] for u in range(n_layers + 1)}
        pooler = []
        for name, param in model.named_parameters():
            (pooler if name.split(".", 1)[0] == "pooler" else params[0]).append((name, param))
        return LayerGroups(n_layers, params, {0: model}, pooler)
    if stack is None:
        raise ValueError(
            f"Could not find the {n_layers} transformer layers of "
            f"{type(model).__name__} (a torch.nn.ModuleList of that length), so "
            "its layers cannot be frozen one by one. Use freeze_layers=0 or "
            "'all', unfreeze=None and layer_lr_decay=1.0 with this model."
        )
    params = {u: [] for u in range(n_layers + 1)}
    pooler = []
    dotted = prefix + "."
    for name, param in model.named_parameters():
        if name.startswith(dotted):
            index = int(name[len(dotted):].split(".", 1)[0])
            params[index + 1].append((name, param))
        elif name.split(".", 1)[0] == "pooler":
            pooler.append((name, param))
        else:
            params[0].append((name, param))
    modules = {u + 1: stack[u] for u in range(n_layers)}
    embeddings = getattr(model, "embeddings", None)
    if isinstance(embeddings, nn.Module):
        modules[0] = embeddings
    return LayerGroups(n_layers, params, modules, pooler)


def final_units(n_layers, freeze_layers):
    """Units trainable once unfreezing is complete, bottom to top.

    ``freeze_layers=0`` trains everything (units 0..L), ``N`` freezes the
    embeddings and the first ``N`` layers (units N+1..L), ``"all"`` nothing.
    """
    if freeze_layers == "all":
        return []
    if freeze_layers == 0:
        return list(range(n_layers + 1))
    return list(range(int(freeze_layers) + 1, n_layers + 1))


def trainable_units(n_layers, freeze_layers, epoch, *, unfreeze=None, step=2):
    """Units trained in ``epoch`` (0-based), sorted bottom to top.

    With ``unfreeze="gradual"``, epoch 0 trains only the head and each later
    epoch unfreezes ``step`` more units from the top down, until the floor
    set by ``freeze_layers`` is reached.
    """
    units = final_units(n_layers, freeze_layers)
    if unfreeze != "gradual":
        return units
    n = min(len(units), epoch * int(step))
    return units[len(units) - n:] if n else []


def reachable_units(layers, pooling):
    """Highest unit that gradients from the pooled ``layers`` reach."""
    top = max(layers)
    if pooling == "attention" and 0 in layers:
        # Hidden state 0 is pooled with the first layer's attention.
        top = max(top, 1)
    return top


# ---------------------------------------------------------------------- head
class Head(nn.Module):
    """Layer combination, dropout and a linear layer, on pooled layers.

    The combination follows :func:`skbert._extraction.assembly.combine_layers`;
    ``"scalar_mix"`` learns softmax layer weights and a scale ``gamma``
    (initialised to equal weights and 1).
    """

    def __init__(self, n_layers, dim, n_classes, *, layer_agg, weights=None, dropout=0.1,
                 generator=None):
        super().__init__()
        self.layer_agg = layer_agg
        self.n_layers = n_layers
        if layer_agg == "scalar_mix":
            self.scalars = nn.Parameter(torch.zeros(n_layers))
            self.gamma = nn.Parameter(torch.ones(1))
        elif layer_agg == "weighted" and n_layers > 1:
            self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32))
        n_in = dim * n_layers if layer_agg == "concat" else dim
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(n_in, n_classes)
        with torch.no_grad():
            self.linear.weight.copy_(
                torch.randn(self.linear.weight.shape, generator=generator) * 0.02
            )
            self.linear.bias.zero_()

    def layer_weights(self):
        if self.layer_agg == "scalar_mix":
            return torch.softmax(self.scalars, 0)
        if self.layer_agg == "weighted" and self.n_layers > 1:
            return self.weights
        return None

    def combine(self, pooled):
        """(batch, n_layers, dim) -> (batch, n_features)."""
        n, n_layers, dim = pooled.shape
        if self.layer_agg == "scalar_mix":
            if n_layers == 1:
                return pooled[:, 0] * self.gamma
            return self.gamma * torch.einsum("nld,l->nd", pooled, self.layer_weights())
        if n_layers == 1:
            return pooled[:, 0]
        if self.layer_agg == "concat":
            return pooled.reshape(n, n_layers * dim)
        if self.layer_agg == "mean":
            return pooled.mean(dim=1)
        return torch.einsum("nld,l->nd", pooled, self.weights)

    def forward(self, pooled):
        return self.linear(self.dropout(self.combine(pooled)))


# -------------------------------------------------------------- data to model
@dataclass
class Encoding:
    """How texts become pooled layers: the representation parameters."""

    tokenizer: object
    layers: list
    pooling: str
    exclude_special_tokens: bool
    max_length: int
    device: str


def _inputs(model, enc, texts):
    batch = enc.tokenizer(
        texts,
        padding=True,
        truncation=True,
        max_length=enc.max_length,
        return_tensors="pt",
        return_special_tokens_mask=True,
    )
    special = batch.pop("special_tokens_mask").to(enc.device)
    names = model_input_names(model)
    inputs = {k: v.to(enc.device) for k, v in batch.items() if k in names}
    return inputs, special


def encode(model, enc, texts):
    """Pooled selected layers of ``texts``, (batch, n_layers, dim), with grad."""
    inputs, special = _inputs(model, enc, texts)
    attention = enc.pooling == "attention"
    out = model(
        **inputs, output_hidden_states=True, output_attentions=attention, return_dict=True
    )
    mask = inputs["attention_mask"]
    pooled = [
        pool_tokens(
            out.hidden_states[layer],
            mask,
            special,
            enc.pooling,
            enc.exclude_special_tokens,
            out.attentions[max(layer - 1, 0)] if attention else None,
        )
        for layer in enc.layers
    ]
    return torch.stack(pooled, dim=1)


def _eval_batches(enc, texts):
    lengths = token_lengths(enc.tokenizer, texts, max_length=enc.max_length)
    return plan_batches(
        lengths, batch_size=PREDICT_BATCH_SIZE, max_batch_tokens=DEFAULT_BATCH_TOKENS
    )


def pooled_features(model, enc, texts):
    """Pooled layers of ``texts``, (n, n_layers, dim), without grad.

    Puts ``model`` in eval mode and batches texts of similar length. The
    result can enter a training graph (it is made under ``no_grad``, not
    ``inference_mode``).
    """
    model.eval()
    out = None
    with torch.no_grad():
        for positions in _eval_batches(enc, texts):
            pooled = encode(model, enc, [texts[i] for i in positions])
            if out is None:
                out = pooled.new_empty((len(texts),) + tuple(pooled.shape[1:]))
            out[torch.as_tensor(positions, device=pooled.device)] = pooled
    return out


def predict_logits(model, head, enc, texts):
    """Head outputs for ``texts`` as a float32 numpy array (eval mode)."""
    model.eval()
    head.eval()
    n_out = head.linear.out_features
    result = np.empty((len(texts), n_out), dtype=np.float32)
    with torch.inference_mode():
        for positions in _eval_batches(enc, texts):
            logits = head(encode(model, enc, [texts[i] for i in positions]))
            result[positions] = logits.float().cpu().numpy()
    return result


# ------------------------------------------------------------------ training
@dataclass
class TrainConfig:
    """Everything the training loop needs besides model, head and data."""

    epochs: int
    batch_size: int
    learning_rate: float
    head_learning_rate: float
    weight_decay: float
    warmup_ratio: float
    layer_lr_decay: float
    freeze_layers: object
    unfreeze: object
    unfreeze_step: int
    reachable: int
    early_stopping: bool
    n_iter_no_change: int
    verbose: int
    min_steps: int = 0
    head_init: str = "random"
    contrastive_steps: int = 0
    contrastive_learning_rate: float = 2e-5


@dataclass
class History:
    """What :func:`train` records, one entry per epoch run."""

    loss: list = field(default_factory=list)
    validation: list = field(default_factory=list)
    n_trainable: list = field(default_factory=list)
    units: list = field(default_factory=list)
    tuned: set = field(default_factory=set)  # encoder parameter names ever trained
    best_epoch: int | None = None
    n_steps: int = 0  # optimiser steps run
    probe_C: float | None = None  # regularisation of the linear-probe head initialisation
    contrastive_loss: list = field(default_factory=list)  # pair loss per contrastive step


def _units_at(cfg, groups, epoch):
    units = trainable_units(
        groups.n_layers, cfg.freeze_layers, epoch, unfreeze=cfg.unfreeze, step=cfg.unfreeze_step
    )
    return [u for u in units if u <= cfg.reachable]


def _optimizer(cfg, groups, head):
    """AdamW with per-unit learning rates; no decay on biases and norms."""
    param_groups = []

    def add(params, lr):
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        for ps, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)):
            if ps:
                param_groups.append({"params": ps, "lr": lr, "weight_decay": wd})

    add(list(head.parameters()), cfg.head_learning_rate)
    for unit in final_units(groups.n_layers, cfg.freeze_layers):
        if unit > cfg.reachable:
            continue
        lr = cfg.learning_rate * cfg.layer_lr_decay ** (groups.n_layers - unit)
        add([p for _, p in groups.params[unit]], lr)
    return torch.optim.AdamW(param_groups)


def _lr_lambda(warmup, total):
    def factor(step):
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _set_trainable(model, groups, units):
    """requires_grad and train/eval mode of every unit; the pooler stays frozen."""
    units = set(units)
    for param in model.parameters():
        param.requires_grad_(False)
    model.eval()
    for unit in units:
        for _, param in groups.params[unit]:
            param.requires_grad_(True)
        module = groups.modules.get(unit)
        if module is not None:
            module.train()


def _accuracy(model, head, enc, texts, codes):
    pred = predict_logits(model, head, enc, texts).argmax(axis=1)
    return float(np.mean(pred == codes))


#: Regularisation strengths tried for the linear-probe head (LP-FT); the one
#: with the best cross-validated log-loss initialises the head.
PROBE_CS = (0.1, 1.0, 10.0, 100.0)


def probe_C(features, codes, weights, rng):
    """The ``C`` of :data:`PROBE_CS` with the best cross-validated log-loss.

    Falls back to ``C=1`` when a class has fewer than 2 texts (no stratified
    split possible).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    n_splits = min(5, int(np.bincount(codes).min()))
    if n_splits < 2:
        return 1.0
    cv = StratifiedKFold(n_splits, shuffle=True, random_state=rng.randint(2**31 - 1))
    scores = [
        cross_val_score(
            LogisticRegression(C=C, max_iter=2000), features, codes, cv=cv,
            scoring="neg_log_loss", params={"sample_weight": weights},
        ).mean()
        for C in PROBE_CS
    ]
    return float(PROBE_CS[int(np.argmax(scores))])


def init_head_from_probe(head, pooled, codes, weights, rng):
    """Set ``head``'s linear layer to a logistic regression on frozen features.

    The first stage of LP-FT (Kumar et al., 2022, "Fine-Tuning can Distort
    Pretrained Features and Underperform Out-of-Distribution"): a converged
    linear probe on the frozen encoder's features, so that fine-tuning starts
    from a head that already separates the classes instead of one that moves
    its bias toward the majority class first. Returns the ``C`` used.
    """
    from sklearn.linear_model import LogisticRegression

    with torch.no_grad():
        head.eval()
        features = head.combine(pooled).double().cpu().numpy()
    C = probe_C(features, codes, weights, rng)
    probe = LogisticRegression(C=C, max_iter=2000).fit(features, codes, sample_weight=weights)
    coef, intercept = probe.coef_, probe.intercept_
    if coef.shape[0] == 1:  # binary: one logit difference -> two logits
        coef = np.vstack([-coef / 2, coef / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    with torch.no_grad():
        head.linear.weight.copy_(torch.as_tensor(coef, dtype=head.linear.weight.dtype))
        head.linear.bias.copy_(torch.as_tensor(intercept, dtype=head.linear.bias.dtype))
    return C


#: A training loss above this fraction of the class prior's entropy warns.
LEARNED_NOTHING_RATIO = 0.9
#: A class predicted for this much more of the training texts than it labels warns.
ONE_CLASS_EXCESS = 0.25


def learning_check(logits, codes, weights, classes):
    """Whether a fitted classifier learned more than the class frequencies.

    Parameters
    ----------
    logits : ndarray of shape (n_texts, n_classes)
        The model's outputs on its training texts (evaluation mode).
    codes : ndarray of int
        The texts' class indices.
    weights : ndarray of float
        Their sample weights (class weights included).
    classes : ndarray
        Class labels, for the message.

    Returns
    -------
    train_loss, prior_loss : float
        Weighted cross-entropy of the model, and of predicting the weighted
        class frequencies (their entropy).
    problem : str or None
        What went wrong, for a ConvergenceWarning: the loss stays above
        :data:`LEARNED_NOTHING_RATIO` of the prior's, or a class takes
        :data:`ONE_CLASS_EXCESS` more of the predictions than of the labels.
    """
    logits = np.asarray(logits, dtype=np.float64)
    logits = logits - logits.max(axis=1, keepdims=True)
    log_proba = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    train_loss = float(-(w * log_proba[np.arange(len(codes)), codes]).sum())
    prior = np.bincount(codes, weights=w, minlength=len(classes))
    prior_loss = float(-(prior[prior > 0] * np.log(prior[prior > 0])).sum())
    predicted = np.bincount(logits.argmax(axis=1), minlength=len(classes)) / len(codes)
    labelled = np.bincount(codes, minlength=len(classes)) / len(codes)
    problems = []
    if train_loss > LEARNED_NOTHING_RATIO * prior_loss:
        problems.append(
            f"learned little beyond the class frequencies: its training loss is "
            f"{train_loss:.3f}, against {prior_loss:.3f} for predicting the class "
            "frequencies alone"
        )
    worst = int(np.argmax(predicted - labelled))
    if predicted[worst] - labelled[worst] > ONE_CLASS_EXCESS:
        label = classes[worst]
        label = label.item() if isinstance(label, np.generic) else label
        problems.append(
            f"predicts class {label!r} for {predicted[worst]:.0%} of its "
            f"training texts, which are {labelled[worst]:.0%} labelled so"
        )
    return train_loss, prior_loss, ("; it ".join(problems) or None)


def contrastive_pairs(codes, n_pairs, rng):
    """``n_pairs`` text pairs and their targets (1 same class, 0 not), shuffled.

    As SetFit (Tunstall et al., 2022) draws them: passes over the texts, each
    text paired with one random text of its class and one of another class,
    until ``n_pairs`` are drawn.
    """
    codes = np.asarray(codes)
    n = len(codes)
    members = {c: np.flatnonzero(codes == c) for c in np.unique(codes)}
    others = {c: np.flatnonzero(codes != c) for c in members}
    pairs = []
    while len(pairs) < n_pairs:
        for i in rng.permutation(n):
            same = members[codes[i]]
            same = same[same != i] if len(same) > 1 else same
            pairs.append((i, same[rng.randint(len(same))], 1.0))
            other = others[codes[i]]
            pairs.append((i, other[rng.randint(len(other))], 0.0))
    pairs = pairs[:n_pairs]
    order = rng.permutation(len(pairs))
    return [pairs[k] for k in order]


def contrastive(model, head, groups, enc, cfg, texts, codes, weights, rng, history):
    """SetFit-style contrastive tuning of the encoder before the head is fitted.

    Trains the encoder's trainable units so that the cosine similarity of
    two texts' features (the head's combined input) is 1 for texts of one
    class and 0 otherwise (mean squared error, each pair weighted by the
    product of its texts' sample weights), for ``cfg.contrastive_steps``
    steps of ``cfg.batch_size`` pairs, with AdamW at
    ``cfg.contrastive_learning_rate``, warmup and linear decay.
    """
    units = [u for u in final_units(groups.n_layers, cfg.freeze_layers) if u <= cfg.reachable]
    if not units or cfg.contrastive_steps <= 0:
        return
    _set_trainable(model, groups, units)
    head.eval()
    trainable = [p for u in units for _, p in groups.params[u]]
    history.tuned.update(name for u in units for name, _ in groups.params[u])
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.contrastive_learning_rate,
    )
    total = int(cfg.contrastive_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(int(round(cfg.warmup_ratio * total)), total)
    )
    pairs = contrastive_pairs(codes, total * cfg.batch_size, rng)
    bar = None
    if cfg.verbose:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="step", desc="contrastive pairs", leave=True)
    running = 0.0
    try:
        for step in range(total):
            batch = pairs[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            left = [texts[i] for i, _, _ in batch]
            right = [texts[j] for _, j, _ in batch]
            features = head.combine(encode(model, enc, left + right))
            a, b = features[: len(batch)], features[len(batch):]
            target = torch.as_tensor([t for _, _, t in batch], device=a.device)
            pair_w = torch.as_tensor(
                [weights[i] * weights[j] for i, j, _ in batch], dtype=a.dtype, device=a.device
            )
            losses = (nn.functional.cosine_similarity(a, b) - target) ** 2
            loss = (losses * pair_w).sum() / len(batch)
            _step(loss, trainable, optimizer, scheduler)
            history.n_steps += 1
            history.contrastive_loss.append(float(loss.detach()))
            running += history.contrastive_loss[-1]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{running / (step + 1):.4f}")
    finally:
        if bar is not None:
            bar.close()
    logger.info("contrastive tuning: %d steps, mean pair loss %.4f", total, running / total)
    for param in model.parameters():
        param.requires_grad_(False)
    model.eval()


def _step(loss, trainable, optimizer, scheduler):
    """One optimisation step on ``loss``: clipped gradients, then the schedule."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
    optimizer.step()
    scheduler.step()


#: Texts in one length-sorted group of training batches, in batches.
LENGTH_GROUP_BATCHES = 8


def length_grouped_batches(lengths, batch_size, rng):
    """One epoch's batches (index arrays) of texts of similar token counts.

    A random permutation is cut into groups of ``LENGTH_GROUP_BATCHES``
    batches; each group is sorted by length and cut into batches, and the
    batches are shuffled. Each batch stays a random draw from its group while
    padding (and so the encoder's work) is about halved on short texts.
    """
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    size = LENGTH_GROUP_BATCHES * batch_size
    batches = []
    for start in range(0, len(order), size):
        group = order[start:start + size]
        group = group[np.argsort(-lengths[group], kind="stable")]
        batches.extend(group[i:i + batch_size] for i in range(0, len(group), batch_size))
    return [batches[k] for k in rng.permutation(len(batches))]


def n_epochs(cfg, n):
    """Epochs to run: ``cfg.epochs``, more if that makes fewer than ``cfg.min_steps`` steps."""
    n_batches = math.ceil(n / cfg.batch_size)
    return max(cfg.epochs, math.ceil(cfg.min_steps / n_batches))


def train(model, head, groups, enc, cfg, texts, codes, weights, rng, *, validation=None):
    """Fine-tune ``model`` and ``head`` in place on ``texts``.

    Parameters
    ----------
    model : torch.nn.Module
        The encoder, already on ``enc.device``.
    head : Head
        On ``enc.device``.
    groups : LayerGroups
    enc : Encoding
    cfg : TrainConfig
    texts : list of str
    codes : ndarray of int
        Class index of each text.
    weights : ndarray of float
        Sample weights with mean 1.
    rng : numpy.random.RandomState
        Shuffles the batches.
    validation : (texts, codes) or None
        Held-out data scored each epoch, for early stopping.

    Returns
    -------
    History
    """
    n = len(texts)
    n_batches = math.ceil(n / cfg.batch_size)
    epochs = n_epochs(cfg, n)
    total = epochs * n_batches
    optimizer = _optimizer(cfg, groups, head)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(int(round(cfg.warmup_ratio * total)), total)
    )
    target = torch.as_tensor(codes, dtype=torch.long, device=enc.device)
    weight = torch.as_tensor(weights, dtype=torch.float32, device=enc.device)
    head_params = list(head.parameters())
    n_head = sum(p.numel() for p in head_params)
    history = History()
    frozen_features = None
    best, best_state, stale = -np.inf, None, 0
    snapshot_names = [
        name
        for unit in final_units(groups.n_layers, cfg.freeze_layers)
        if unit <= cfg.reachable
        for name, _ in groups.params[unit]
    ]
    named = dict(model.named_parameters())
    lengths = token_lengths(enc.tokenizer, texts, max_length=enc.max_length)
    contrastive(model, head, groups, enc, cfg, texts, codes, weights, rng, history)
    if cfg.head_init == "probe":
        frozen_features = pooled_features(model, enc, texts)
        history.probe_C = init_head_from_probe(head, frozen_features, codes, weights, rng)
    for epoch in range(epochs):
        units = _units_at(cfg, groups, epoch)
        _set_trainable(model, groups, units)
        head.train()
        trainable = [p for u in units for _, p in groups.params[u]] + head_params
        for u in units:
            history.tuned.update(name for name, _ in groups.params[u])
        history.units.append(list(units))
        history.n_trainable.append(groups.numel(units) + n_head)
        if not units and frozen_features is None:
            # Nothing in the encoder trains: its (eval-mode) features are
            # fixed, so compute them once instead of once per epoch.
            frozen_features = pooled_features(model, enc, texts)
        batches = length_grouped_batches(lengths, cfg.batch_size, rng)
        bar = None
        if cfg.verbose:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, unit="text", desc=f"epoch {epoch + 1}/{epochs}",
                       leave=True)
        total_loss = 0.0
        try:
            seen = 0
            for batch in batches:
                if units:
                    pooled = encode(model, enc, [texts[i] for i in batch])
                else:
                    pooled = frozen_features[torch.as_tensor(batch, device=enc.device)]
                index = torch.as_tensor(batch, device=enc.device)
                losses = nn.functional.cross_entropy(head(pooled), target[index], reduction="none")
                losses = losses * weight[index]
                loss = losses.sum() / len(batch)
                _step(loss, trainable, optimizer, scheduler)
                history.n_steps += 1
                total_loss += float(losses.detach().sum())
                seen += len(batch)
                if bar is not None:
                    bar.update(len(batch))
                    bar.set_postfix(loss=f"{total_loss / seen:.4f}")
            history.loss.append(total_loss / n)
            if validation is not None:
                score = _accuracy(model, head, enc, *validation)
                history.validation.append(score)
                if bar is not None:
                    bar.set_postfix(loss=f"{history.loss[-1]:.4f}", val=f"{score:.4f}")
        finally:
            if bar is not None:
                bar.close()
        logger.info(
            "epoch %d/%d: loss %.4f, %d trainable parameters%s",
            epoch + 1, epochs, history.loss[-1], history.n_trainable[-1],
            f", validation accuracy {history.validation[-1]:.4f}" if validation else "",
        )
        if validation is not None and cfg.early_stopping:
            score = history.validation[-1]
            if score > best:
                best, stale, history.best_epoch = score, 0, epoch
                best_state = (
                    {k: named[k].detach().clone() for k in snapshot_names},
                    {k: v.detach().clone() for k, v in head.state_dict().items()},
                )
            else:
                stale += 1
                if stale >= cfg.n_iter_no_change:
                    break
    if best_state is not None:
        with torch.no_grad():
            for k, v in best_state[0].items():
                named[k].copy_(v)
        head.load_state_dict(best_state[1])
    for param in model.parameters():
        param.requires_grad_(False)
    model.eval()
    head.eval()
    return history


# ------------------------------------------------------------- serialisation
def tensors_to_bytes(tensors):
    """safetensors bytes of a {name: tensor} dict (copied to the CPU)."""
    from safetensors.torch import save

    return save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()})


def tensors_from_bytes(data):
    """Inverse of :func:`tensors_to_bytes`: CPU tensors."""
    from safetensors.torch import load

    return load(data)
