"""Parameter resolution that BertVectorizer and BertClassifier share.

Each function turns a constructor parameter into the fitted value it means,
raising a ValueError in scikit-learn's wording that names the estimator.
"""

import numbers
import warnings

import numpy as np

from ._extraction.assembly import softmax

__all__ = ["resolve_layers", "resolve_layer_weights", "resolve_max_length"]


def resolve_layers(layers, n_hidden_states, owner):
    """Resolve the ``layers`` parameter into non-negative hidden-state indices.

    Parameters
    ----------
    layers : int, list of int or "all"
        As given; negative indices count from the last hidden state.
    n_hidden_states : int
        The model's hidden states: its layers plus the embedding output.
    owner : str
        The estimator's class name, for the error messages.

    Returns
    -------
    layers : list of int

    Raises
    ------
    ValueError
        For an empty list, a non-integer or an index out of range.
    """
    if isinstance(layers, str):
        return list(range(n_hidden_states))
    if isinstance(layers, numbers.Integral):
        raw = [layers]
    else:
        raw = list(layers)
        if not raw:
            raise ValueError(f"The 'layers' parameter of {owner} must not be empty.")
    out = []
    for layer in raw:
        if not isinstance(layer, numbers.Integral) or isinstance(layer, bool):
            raise ValueError(f"The 'layers' parameter of {owner} must hold ints; got {layer!r}.")
        if not -n_hidden_states <= layer < n_hidden_states:
            raise ValueError(
                f"Layer index {layer} is out of range: the model has "
                f"{n_hidden_states - 1} layers, so hidden_states has "
                f"{n_hidden_states} entries (0 = embedding output, "
                f"{n_hidden_states - 1} or -1 = last); valid indices are "
                f"{-n_hidden_states}..{n_hidden_states - 1}."
            )
        out.append(int(layer) % n_hidden_states)
    return out


def resolve_layer_weights(layer_weights, layer_agg, layers):
    """Softmax-normalised weights of ``layer_agg="weighted"``, or None.

    Parameters
    ----------
    layer_weights : array-like of shape (len(layers),) or None
        Unnormalised weights; None weighs every layer equally.
    layer_agg : str
    layers : list of int
        The resolved layers.

    Returns
    -------
    weights : ndarray of shape (len(layers),) or None
        None unless ``layer_agg="weighted"``; ``layer_weights`` given with
        another combination is ignored, with a warning.
    """
    if layer_agg != "weighted":
        if layer_weights is not None:
            warnings.warn(
                f"layer_weights is only used with layer_agg='weighted'; it is "
                f"ignored with layer_agg={layer_agg!r}.",
                UserWarning,
                stacklevel=4,
            )
        return None
    n_sel = len(layers)
    if layer_weights is None:
        return softmax(np.zeros(n_sel))
    weights = np.asarray(layer_weights, dtype=np.float64).ravel()
    if weights.shape[0] != n_sel or not np.all(np.isfinite(weights)):
        raise ValueError(
            f"layer_weights must hold {n_sel} finite values, one per "
            f"selected layer {layers}; got {layer_weights!r}."
        )
    return softmax(weights)


def resolve_max_length(max_length, model_max):
    """The token limit ``max_length`` means for a model that takes ``model_max``.

    None (and "auto" without a model configuration of its own) is the
    model's limit; a larger value than the limit is a ValueError.
    """
    if max_length in (None, "auto"):
        return model_max
    if max_length > model_max:
        raise ValueError(
            f"max_length={max_length} exceeds the model's limit of "
            f"{model_max} tokens. Use max_length<={model_max}, or None for "
            "the model's limit."
        )
    return int(max_length)
