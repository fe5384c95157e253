"""BertClassifier: fine-tuning, partial freezing and gradual unfreezing.

Parameters, validation and orchestration; the tensor work (layer groups,
freezing schedule, head, training loop) lives in :mod:`._finetune`, which is
imported only when a classifier is fitted or used.
"""

import math
import numbers
import os
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d

from ._extraction.assembly import LAYER_AGGS, POOLINGS
from ._model import backend as _backend
from ._params import resolve_layer_weights, resolve_layers, resolve_max_length
from ._validation import check_texts
from .exceptions import DeviceFallbackWarning

__all__ = ["BertClassifier", "DeviceFallbackWarning"]


#: ``early_stopping="auto"`` holds out a validation split above this many texts.
EARLY_STOPPING_AUTO_MIN = 10_000

#: ``contrastive_steps="auto"`` tunes contrastively up to this many texts,
#: with SetFit's default of 20 pair rounds (two pairs per text and round).
CONTRASTIVE_AUTO_MAX = 200
CONTRASTIVE_AUTO_ROUNDS = 20


def contrastive_steps_for(contrastive_steps, n_texts, batch_size):
    """Steps of the contrastive stage that ``contrastive_steps`` asks for."""
    if contrastive_steps != "auto":
        return int(contrastive_steps)
    if n_texts > CONTRASTIVE_AUTO_MAX:
        return 0
    return math.ceil(2 * CONTRASTIVE_AUTO_ROUNDS * n_texts / batch_size)


#: Parameters added after 0.1.0.dev0, with the values that reproduce how a
#: classifier pickled before them was fitted.
_PARAMS_ADDED = {
    "min_steps": 0,
    "head_init": "random",
    "class_weight": None,
    "contrastive_steps": 0,
    "contrastive_learning_rate": 2e-5,
}


def _device_available(device):
    import torch

    kind = str(device).split(":")[0]
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        return mps is not None and mps.is_available()
    return True


class BertClassifier(ClassifierMixin, BaseEstimator):
    """Fine-tune a transformer encoder with a linear head, as a classifier.

    How much of the encoder is trained is a hyperparameter like any other:
    ``freeze_layers="all"`` trains only the head (a linear probe of frozen
    features, trained by gradient descent), ``freeze_layers=N`` freezes the
    embeddings and the first ``N`` transformer layers, ``freeze_layers=0``
    fine-tunes everything, and ``unfreeze="gradual"`` starts from the head
    alone and unfreezes ``unfreeze_step`` layers per epoch from the top down.

    The representation parameters (``layers``, ``layer_agg``, ``pooling``,
    ``exclude_special_tokens``, ``max_length``) mean what they mean in
    :class:`BertVectorizer`, so a frozen probe and a fine-tuned model differ
    only in what is trained. The head is dropout and a linear layer on the
    combined pooled layers, trained with cross-entropy.

    Parameters
    ----------
    model_name : str, default="sentence-transformers/all-MiniLM-L6-v2"
        Hugging Face hub id or local directory of an encoder. Each fit loads
        its own private copy of the weights.
    revision : str, default=None
        Hub revision (branch, tag or commit) to load.
    layers : int, sequence of int or "all", default=-1
        Hidden states to pool: 0 is the embedding output, 1..L the
        transformer layers, negative indices count from the end. Layers
        above the highest selected one receive no gradient and stay frozen.
    layer_agg : {"concat", "mean", "weighted", "scalar_mix"}, default="concat"
        How several pooled layers combine before the head. ``"scalar_mix"``
        learns softmax layer weights and a scale with the head.
    layer_weights : array-like of float, default=None
        Unnormalised weights (softmax-normalised) for ``layer_agg="weighted"``.
    pooling : {"mean", "cls", "max", "attention", "mean_max"}, default="mean"
        How token vectors become one vector, as in :class:`BertVectorizer`.
    exclude_special_tokens : bool, default=False
        Leave [CLS], [SEP] and other special tokens out of the pooling.
    max_length : int, default=None
        Maximum tokens per text, special tokens included. None means the
        model's limit, at most 512.
    freeze_layers : int or "all", default=0
        0 trains the whole encoder; ``N`` freezes the embeddings and the
        first ``N`` transformer layers; ``"all"`` trains only the head.
        Frozen parts run in evaluation mode (no dropout), so they compute
        exactly the features :class:`BertVectorizer` computes. The pooler,
        which no pooling reads, is never trained.
    unfreeze : {"gradual"} or None, default=None
        None trains every unit above ``freeze_layers`` from the first epoch.
        ``"gradual"`` trains only the head in the first epoch, then unfreezes
        ``unfreeze_step`` more layers per epoch from the top down (the
        embeddings count as the lowest layer), never below ``freeze_layers``.
    unfreeze_step : int, default=2
        Layers unfrozen per epoch with ``unfreeze="gradual"``.
    layer_lr_decay : float, default=1.0
        Layer-wise learning-rate decay: transformer layer ``l`` of ``L``
        trains with ``learning_rate * layer_lr_decay ** (L - l)`` and the
        embeddings with ``learning_rate * layer_lr_decay ** L``.
    epochs : int, default=4
        Passes over the training data, at least: more are run when fewer
        would make less than ``min_steps`` optimisation steps.
    min_steps : int, default=200
        Fewest optimisation steps a fit makes. Small training sets get more
        epochs (100 texts in batches of 16: 29 epochs, 203 steps), because
        what fine-tuning learns depends on the number of steps, not on the
        number of texts. 0 runs exactly ``epochs`` epochs.
    head_init : {"probe", "random"}, default="probe"
        ``"probe"`` initialises the head as a logistic regression fitted on
        the frozen encoder's features (its ``C`` chosen by cross-validated
        log-loss among 0.1, 1, 10 and 100), then fine-tunes (LP-FT: a linear
        probe, then fine-tuning). ``"random"`` draws the head's weights from
        N(0, 0.02) with zero biases.
    contrastive_steps : int or "auto", default="auto"
        Optimisation steps of SetFit-style contrastive tuning (Tunstall et
        al., 2022) before the head is fitted: batches of ``batch_size`` text
        pairs, one of each text's class and one of another class, train the
        encoder so that the cosine similarity of their features is 1 and 0
        (mean squared error). It helps when there are few labelled texts.
        ``"auto"`` runs SetFit's default of 20 pair rounds (``ceil(40 *
        n_samples / batch_size)`` steps: 250 for 100 texts) on training sets
        of at most 200 texts and none on larger ones; resolved into
        ``contrastive_steps_``. 0 skips it.
    contrastive_learning_rate : float, default=2e-5
        Peak learning rate of the contrastive stage (AdamW, the same warmup
        and linear decay).
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes in the loss, as in scikit-learn's linear
        models: ``"balanced"`` weighs each class by ``n_samples / (n_classes
        * count)``; multiplied with ``sample_weight``.
    batch_size : int, default=16
        Texts per optimisation step. Prediction batches up to 64 texts of
        similar length.
    learning_rate : float, default=1e-4
        Peak learning rate of the encoder (AdamW).
    head_learning_rate : float, default=1e-3
        Peak learning rate of the head (and of a scalar mix).
    weight_decay : float, default=0.01
        AdamW weight decay, not applied to biases and normalisation weights.
    warmup_ratio : float, default=0.1
        Fraction of the optimisation steps over which the learning rates rise
        linearly from 0; they then decay linearly to 0 at the last step.
    dropout : float, default=0.1
        Dropout on the features entering the linear head.
    early_stopping : "auto" or bool, default="auto"
        Hold out ``validation_fraction`` of the training data (stratified),
        score it after each epoch, stop when the accuracy has not improved
        for ``n_iter_no_change`` epochs and restore the best epoch's weights.
        ``"auto"`` enables it for training sets of more than 10,000 texts
        (as :class:`~sklearn.ensemble.HistGradientBoostingClassifier` does).
    validation_fraction : float, default=0.1
        Fraction held out for early stopping.
    n_iter_no_change : int, default=2
        Epochs without improvement before stopping.
    device : str, default="auto"
        "auto" picks "cuda", then "mps", then "cpu"; resolved into ``device_``.
    verbose : int, default=0
        Show a progress bar per epoch with the running training loss.
    trust_remote_code : bool, default=False
        Allow model code from the hub to run. Only for models you trust.
    use_safetensors : bool, default=True
        Load safetensors weights only.
    random_state : int, RandomState instance or None, default=None
        Seeds the head's initialisation, dropout, batch order and the
        validation split. With an int, fits on the CPU are reproducible.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    layers_ : list of int
        The pooled hidden-state indices, made non-negative.
    n_layers_ : int
        Number of transformer layers of the model.
    hidden_size_ : int
        Hidden size of the model.
    max_length_ : int
        The resolved maximum number of tokens per text.
    device_ : str
        The device the model runs on.
    layer_weights_ : ndarray of shape (n_selected_layers,)
        Normalised layer weights (``"weighted"`` and ``"scalar_mix"``).
    gamma_ : float
        Learned scale of the scalar mix.
    n_iter_ : int
        Epochs run (fewer than ``epochs`` after early stopping).
    loss_curve_ : list of float
        Mean training loss of each epoch (dropout on, as trained).
    contrastive_steps_ : int
        Contrastive steps run.
    contrastive_loss_curve_ : list of float
        Weighted pair loss of each contrastive step (empty without
        ``contrastive_steps``).
    n_steps_ : int
        Optimisation steps made, contrastive ones included.
    probe_C_ : float or None
        The ``C`` of the linear-probe head initialisation
        (``head_init="probe"``), else None.
    train_loss_ : float
        Weighted cross-entropy of the fitted model on its training texts,
        in evaluation mode.
    prior_loss_ : float
        The same for a model that predicts the class frequencies (their
        entropy): a ``train_loss_`` near it means nothing was learned.
    validation_scores_ : list of float or None
        Validation accuracy after each epoch (None without early stopping).
    best_validation_score_ : float or None
        Best validation accuracy, whose weights were kept.
    n_trainable_params_ : list of int
        Parameters trained in each epoch, head included.
    trainable_layers_ : list of list of int
        Units trained in each epoch: 0 is the embeddings, ``l`` the
        transformer layer that produces hidden state ``l``.

    See Also
    --------
    BertVectorizer : Frozen features for any scikit-learn estimator.

    Notes
    -----
    A fitted classifier pickles with the weights it changed (safetensors
    bytes, on the CPU) and reloads the rest from ``model_name``, so the same
    model and revision must be available where it is unpickled (a content
    fingerprint of the model is checked on first use). A classifier
    fitted on a GPU unpickles on a machine without one, with a
    :class:`DeviceFallbackWarning`. :meth:`save_pretrained` writes the whole
    tuned encoder.

    Examples
    --------
    >>> from skbert import BertClassifier
    >>> clf = BertClassifier(tiny_model, freeze_layers=1, epochs=2, min_steps=0,
    ...                      random_state=0)
    >>> clf.fit(["good movie", "bad movie", "great film", "awful film"],
    ...         ["pos", "neg", "pos", "neg"]).classes_
    array(['neg', 'pos'], dtype='<U3')
    >>> clf.n_trainable_params_
    [6855, 6855]

    By default a fit makes at least ``min_steps=200`` optimisation steps (here
    200 epochs of one batch), and on so few texts first tunes the encoder
    contrastively on pairs of them (``contrastive_steps="auto"``: 20 rounds
    of 2 pairs per text, batches of 16 pairs):

    >>> clf.set_params(min_steps=200).fit(
    ...     ["good movie", "bad movie", "great film", "awful film"],
    ...     ["pos", "neg", "pos", "neg"]).n_steps_
    210
    >>> clf.contrastive_steps_
    10
    """

    _parameter_constraints = {
        "model_name": [str, os.PathLike],
        "revision": [str, None],
        "layers": [Interval(numbers.Integral, None, None, closed="neither"), "array-like", StrOptions({"all"})],
        "layer_agg": [StrOptions(set(LAYER_AGGS))],
        "layer_weights": ["array-like", None],
        "pooling": [StrOptions(set(POOLINGS))],
        "exclude_special_tokens": ["boolean"],
        "max_length": [Interval(numbers.Integral, 2, None, closed="left"), None],
        "freeze_layers": [Interval(numbers.Integral, 0, None, closed="left"), StrOptions({"all"})],
        "unfreeze": [StrOptions({"gradual"}), None],
        "unfreeze_step": [Interval(numbers.Integral, 1, None, closed="left")],
        "layer_lr_decay": [Interval(numbers.Real, 0, 1, closed="right")],
        "epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="left")],
        "head_learning_rate": [Interval(numbers.Real, 0, None, closed="left")],
        "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
        "warmup_ratio": [Interval(numbers.Real, 0, 1, closed="both")],
        "dropout": [Interval(numbers.Real, 0, 1, closed="left")],
        "early_stopping": ["boolean", StrOptions({"auto"})],
        "min_steps": [Interval(numbers.Integral, 0, None, closed="left")],
        "head_init": [StrOptions({"probe", "random"})],
        "contrastive_steps": [
            Interval(numbers.Integral, 0, None, closed="left"), StrOptions({"auto"})
        ],
        "contrastive_learning_rate": [Interval(numbers.Real, 0, None, closed="left")],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "device": [str],
        "verbose": ["verbose"],
        "trust_remote_code": ["boolean"],
        "use_safetensors": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        model_name=_backend.DEFAULT_MODEL,
        *,
        revision=None,
        layers=-1,
        layer_agg="concat",
        layer_weights=None,
        pooling="mean",
        exclude_special_tokens=False,
        max_length=None,
        freeze_layers=0,
        unfreeze=None,
        unfreeze_step=2,
        layer_lr_decay=1.0,
        epochs=4,
        min_steps=200,
        head_init="probe",
        contrastive_steps="auto",
        contrastive_learning_rate=2e-5,
        class_weight=None,
        batch_size=16,
        learning_rate=1e-4,
        head_learning_rate=1e-3,
        weight_decay=0.01,
        warmup_ratio=0.1,
        dropout=0.1,
        early_stopping="auto",
        validation_fraction=0.1,
        n_iter_no_change=2,
        device="auto",
        verbose=0,
        trust_remote_code=False,
        use_safetensors=True,
        random_state=None,
    ):
        self.model_name = model_name
        self.revision = revision
        self.layers = layers
        self.layer_agg = layer_agg
        self.layer_weights = layer_weights
        self.pooling = pooling
        self.exclude_special_tokens = exclude_special_tokens
        self.max_length = max_length
        self.freeze_layers = freeze_layers
        self.unfreeze = unfreeze
        self.unfreeze_step = unfreeze_step
        self.layer_lr_decay = layer_lr_decay
        self.epochs = epochs
        self.min_steps = min_steps
        self.head_init = head_init
        self.contrastive_steps = contrastive_steps
        self.contrastive_learning_rate = contrastive_learning_rate
        self.class_weight = class_weight
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.head_learning_rate = head_learning_rate
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.dropout = dropout
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.device = device
        self.verbose = verbose
        self.trust_remote_code = trust_remote_code
        self.use_safetensors = use_safetensors
        self.random_state = random_state

    # ------------------------------------------------------------------ model
    def _spec(self):
        return _backend.ModelSpec(
            name=str(self.model_name),
            revision=self.revision,
            trust_remote_code=bool(self.trust_remote_code),
            use_safetensors=bool(self.use_safetensors),
        )

    def _resolve(self):
        """Resolve model-dependent settings from the config (no weights)."""
        info = _backend.model_info(self._spec())
        self.n_layers_ = info.n_hidden_states - 1
        self.hidden_size_ = info.hidden_size
        self.layers_ = resolve_layers(self.layers, info.n_hidden_states, type(self).__name__)
        self.device_ = _backend.resolve_device(self.device)
        self.max_length_ = resolve_max_length(self.max_length, info.max_length)
        if self.freeze_layers != "all" and self.freeze_layers > self.n_layers_:
            raise ValueError(
                f"freeze_layers={self.freeze_layers} exceeds the model's "
                f"{self.n_layers_} transformer layers. Use an int in "
                f"0..{self.n_layers_}, or 'all' to train only the head."
            )
        self.layer_weights_ = resolve_layer_weights(self.layer_weights, self.layer_agg, self.layers_)

    def _pooled_dim(self):
        return self.hidden_size_ * (2 if self.pooling == "mean_max" else 1)

    def _encoding(self):
        from ._finetune import Encoding

        return Encoding(
            tokenizer=_backend.load_tokenizer(self._spec()),
            layers=self.layers_,
            pooling=self.pooling,
            exclude_special_tokens=self.exclude_special_tokens,
            max_length=self.max_length_,
            device=self.device_,
        )

    def _new_head(self, generator=None):
        from ._finetune import Head

        return Head(
            len(self.layers_),
            self._pooled_dim(),
            len(self.classes_),
            layer_agg=self.layer_agg,
            weights=self.layer_weights_,
            dropout=self.dropout,
            generator=generator,
        )

    def _network(self):
        """The tuned encoder and head, rebuilt after unpickling if needed."""
        if getattr(self, "_model", None) is None:
            self._restore()
        return self._model, self._head

    def _restore(self):
        from ._finetune import tensors_from_bytes

        if not _device_available(self.device_):
            warnings.warn(
                f"This BertClassifier was fitted on {self.device_!r}, which is not "
                "available here; it runs on 'cpu' instead.",
                DeviceFallbackWarning,
                stacklevel=3,
            )
            self.device_ = "cpu"
        stored = getattr(self, "_base_fingerprint", None)
        if stored is not None:
            _backend.model_info(self._spec())  # a hub id's fingerprint needs its config
            current = _backend.model_fingerprint(self._spec())
            if current is not None and current != stored:
                raise ValueError(
                    f"The model {str(self.model_name)!r} differs from the one this "
                    "BertClassifier was fine-tuned from (its weights, configuration "
                    "or tokenizer changed), so its stored weights cannot be restored "
                    "on top of it. Pin revision= when fitting, or load the classifier "
                    "where the original model is available."
                )
        model = _backend.load_trainable_model(
            self._spec(), eager_attention=self.pooling == "attention"
        )
        tensors = tensors_from_bytes(self._weights)
        encoder = {k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")}
        head_state = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
        missing = set(encoder) - {name for name, _ in model.named_parameters()}
        if missing:
            raise ValueError(
                f"The model {self.model_name!r} loaded to restore this classifier lacks "
                f"parameters it was fine-tuned with ({sorted(missing)[:3]}...). "
                "Unpickle it where the same model and revision are available."
            )
        model.load_state_dict(encoder, strict=False)
        for param in model.parameters():
            param.requires_grad_(False)
        head = self._new_head()
        head.load_state_dict(head_state)
        self._model = model.to(self.device_).eval()
        self._head = head.to(self.device_).eval()
        self._weights = None

    # ------------------------------------------------------------ estimator
    def _check_targets(self, texts, y, sample_weight):
        y = column_or_1d(y, warn=True)
        if y.shape[0] != len(texts):
            raise ValueError(
                f"X and y have inconsistent numbers of samples: {len(texts)} texts "
                f"and {y.shape[0]} targets."
            )
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                "BertClassifier needs samples of at least 2 classes in the data, "
                f"but the data contain {len(self.classes_)}: {list(self.classes_)!r}."
            )
        weights = _check_sample_weight(sample_weight, np.empty((len(texts), 1)), dtype=np.float64)
        if np.any(weights < 0) or not weights.sum() > 0:
            raise ValueError("sample_weight must be non-negative and not all zero.")
        return codes, weights

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fine-tune the encoder and train the head on labelled texts.

        Parameters
        ----------
        X : iterable of str
            Training texts: list, 1-D array, pandas Series or one-column
            DataFrame.
        y : array-like of shape (n_samples,)
            Class labels (strings or integers).
        sample_weight : array-like of shape (n_samples,), default=None
            Per-text weights of the training loss.

        Returns
        -------
        self : BertClassifier
            The fitted classifier.
        """
        import torch

        from . import _finetune

        texts = check_texts(X, estimator_name="BertClassifier", ensure_min_samples=1)
        codes, weights = self._check_targets(texts, y, sample_weight)
        self._resolve()
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        validation = None
        if self.class_weight is not None:
            from sklearn.utils.class_weight import compute_class_weight

            per_class = compute_class_weight(
                self.class_weight, classes=self.classes_, y=self.classes_[codes]
            )
            weights = weights * per_class[codes]
        early_stopping = self.early_stopping
        if early_stopping == "auto":
            early_stopping = len(texts) > EARLY_STOPPING_AUTO_MIN
        if early_stopping:
            try:
                idx_train, idx_val = train_test_split(
                    np.arange(len(texts)),
                    test_size=self.validation_fraction,
                    stratify=codes,
                    random_state=rng,
                )
            except ValueError as exc:
                raise ValueError(
                    f"early_stopping could not hold out validation_fraction="
                    f"{self.validation_fraction} of {len(texts)} texts with every "
                    f"class represented ({exc}). Use more data, a larger "
                    "validation_fraction, or early_stopping=False."
                ) from None
            validation = ([texts[i] for i in idx_val], codes[idx_val])
            texts = [texts[i] for i in idx_train]
            codes, weights = codes[idx_train], weights[idx_train]
        weights = weights / weights.mean()
        self.contrastive_steps_ = contrastive_steps_for(
            self.contrastive_steps, len(texts), self.batch_size
        )

        model = _backend.load_trainable_model(
            self._spec(), eager_attention=self.pooling == "attention"
        )
        # Identifies the base weights that a pickle's stored weights complete.
        self._base_fingerprint = _backend.model_fingerprint(self._spec())
        # Models without a stack of layers (ALBERT) can be trained or frozen whole.
        per_layer = (
            self.freeze_layers not in (0, "all")
            or self.unfreeze is not None
            or self.layer_lr_decay != 1.0
        )
        groups = _finetune.layer_groups(model, self.n_layers_, strict=per_layer)
        cfg = _finetune.TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            head_learning_rate=self.head_learning_rate,
            weight_decay=self.weight_decay,
            warmup_ratio=self.warmup_ratio,
            layer_lr_decay=self.layer_lr_decay,
            freeze_layers=self.freeze_layers,
            unfreeze=self.unfreeze,
            unfreeze_step=self.unfreeze_step,
            reachable=_finetune.reachable_units(self.layers_, self.pooling),
            early_stopping=early_stopping,
            n_iter_no_change=self.n_iter_no_change,
            verbose=self.verbose,
            min_steps=self.min_steps,
            head_init=self.head_init,
            contrastive_steps=self.contrastive_steps_,
            contrastive_learning_rate=self.contrastive_learning_rate,
        )
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            head = self._new_head(torch.Generator().manual_seed(seed))
            model.to(self.device_)
            head.to(self.device_)
            history = _finetune.train(
                model, head, groups, self._encoding(), cfg, texts, codes, weights, rng,
                validation=validation,
            )
        self._model, self._head = model, head
        self._tuned = sorted(history.tuned)
        self._weights = None
        self.n_iter_ = len(history.loss)
        self.n_steps_ = history.n_steps
        self.probe_C_ = history.probe_C
        self.loss_curve_ = history.loss
        self.contrastive_loss_curve_ = history.contrastive_loss
        self.n_trainable_params_ = history.n_trainable
        self.trainable_layers_ = history.units
        self._check_learned(texts, codes, weights)
        if early_stopping:
            self.validation_scores_ = history.validation
            self.best_validation_score_ = max(history.validation)
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
        weights_now = head.layer_weights()
        if weights_now is not None:
            self.layer_weights_ = weights_now.detach().cpu().double().numpy()
        elif self.layer_agg == "scalar_mix":
            self.layer_weights_ = np.ones(1)
        if self.layer_agg == "scalar_mix":
            self.gamma_ = float(head.gamma.detach().cpu())
        return self

    def _check_learned(self, texts, codes, weights):
        """``train_loss_``, ``prior_loss_``, and a ConvergenceWarning if little was learned."""
        from ._finetune import learning_check, predict_logits

        logits = predict_logits(self._model, self._head, self._encoding(), texts)
        self.train_loss_, self.prior_loss_, problem = learning_check(
            logits, codes, weights, self.classes_
        )
        if problem is not None:
            warnings.warn(
                f"BertClassifier {problem} ({self.n_steps_} optimisation steps). Train "
                "for more steps (min_steps, epochs), keep head_init='probe', or use "
                "class_weight='balanced' if the classes are imbalanced.",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _features(self, X):
        """Combined pooled features before the head (eval mode), for tests."""
        import torch

        from ._finetune import pooled_features

        check_is_fitted(self, "classes_")
        texts = check_texts(X, estimator_name="BertClassifier")
        model, head = self._network()
        head.eval()
        with torch.no_grad():
            return head.combine(pooled_features(model, self._encoding(), texts)).cpu().numpy()

    def decision_function(self, X):
        """Confidence scores: the head's logits.

        Parameters
        ----------
        X : iterable of str

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            For two classes, the logit of ``classes_[1]`` minus that of
            ``classes_[0]`` (positive means ``classes_[1]``); otherwise one
            logit per class.
        """
        logits = self._logits(X)
        if len(self.classes_) == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def _logits(self, X):
        from ._finetune import predict_logits

        check_is_fitted(self, "classes_")
        texts = check_texts(X, estimator_name="BertClassifier")
        if not texts:
            return np.zeros((0, len(self.classes_)), dtype=np.float32)
        model, head = self._network()
        return predict_logits(model, head, self._encoding(), texts)

    def predict_proba(self, X):
        """Class probabilities (softmax of the logits).

        Parameters
        ----------
        X : iterable of str

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns follow ``classes_``.
        """
        logits = self._logits(X).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True) if len(logits) else 0.0
        proba = np.exp(logits)
        return proba / proba.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        return np.log(self.predict_proba(X))

    def predict(self, X):
        """Predict class labels.

        Parameters
        ----------
        X : iterable of str

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        logits = self._logits(X)  # NotFittedError before classes_ is read
        return self.classes_[logits.argmax(axis=1)]

    def save_pretrained(self, path):
        """Write the tuned encoder and its tokenizer as a Hugging Face folder.

        ``BertVectorizer(model_name=path)`` (or ``AutoModel.from_pretrained``)
        then uses the fine-tuned encoder. Weights are saved as safetensors;
        the head is not part of the folder.

        Parameters
        ----------
        path : str or path-like
            Directory to write (created if missing).

        Returns
        -------
        path : str
        """
        check_is_fitted(self, "classes_")
        model, _ = self._network()
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        _backend.save_encoder(model, _backend.load_tokenizer(self._spec()), path)
        return path

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.non_deterministic = self.random_state is None
        return tags

    def __getstate__(self):
        state = dict(super().__getstate__())
        model = state.pop("_model", None)
        head = state.pop("_head", None)
        if model is not None:
            from ._finetune import tensors_to_bytes

            named = dict(model.named_parameters())
            tensors = {f"encoder.{k}": named[k] for k in self._tuned}
            tensors.update({f"head.{k}": v for k, v in head.state_dict().items()})
            state["_weights"] = tensors_to_bytes(tensors)
        return state

    def __setstate__(self, state):
        # Parameters added after 0.1.0.dev0: a classifier pickled before them
        # was fitted as these values fit (exactly `epochs`, a random head).
        for name, value in _PARAMS_ADDED.items():
            state.setdefault(name, value)
        super().__setstate__(state)
        self._model = None
        self._head = None
