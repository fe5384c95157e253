"""Every warning and error class of skbert, in one place users can import from.

The warnings are :class:`UserWarning` subclasses, so that a filter can name
exactly one of them (``warnings.simplefilter("ignore", WhiteningWarning)``);
the public ones are re-exported by :mod:`skbert`.
"""

__all__ = [
    "FeatureCacheWarning",
    "ModelChangedWarning",
    "ModelConfigWarning",
    "DeviceFallbackWarning",
    "TruncationWarning",
    "WhiteningWarning",
    "DatasetChecksumError",
    "CLIError",
    "InputError",
    "OutputError",
]


class FeatureCacheWarning(UserWarning):
    """A problem with the on-disk feature cache that skbert worked around.

    Results stay correct: damaged entries are recomputed, an unusable or
    unsafe cache folder means the features are computed without caching, and
    a process that stopped making progress on texts it claimed is not waited
    for any longer.
    """

class ModelChangedWarning(UserWarning):
    """The model's content differs from the one a fitted estimator was fitted with.

    Raised as a warning by :meth:`BertVectorizer.transform` when the weights,
    configuration or tokenizer that ``model_name`` names changed since ``fit``
    (a folder changed in place, a hub branch moved, another version of the
    model package) and nothing the vectorizer learned depends on the features
    (no whitening, no scalar mix): the output then comes from the new model,
    and estimators fitted downstream on the old features may no longer suit
    it. With whitening or a scalar mix, the mismatch is a :class:`ValueError`.
    """

class ModelConfigWarning(UserWarning):
    """A model's sentence-transformers configuration cannot be followed exactly.

    Raised by ``BertVectorizer`` with ``pooling="auto"`` or
    ``normalize="auto"`` when the model's pipeline holds a module skbert does
    not reproduce (``Dense``, ``LayerNorm``, a combination of pooling modes
    other than mean then max, ...); the features then differ from the ones
    sentence-transformers computes.
    """

class DeviceFallbackWarning(UserWarning):
    """A fitted estimator was loaded where its device is not available."""

class TruncationWarning(UserWarning):
    """Some texts were longer than ``max_length`` and were truncated."""

class WhiteningWarning(UserWarning):
    """Whitening was fitted on too few samples for the dimensions it keeps.

    With ``n`` training samples the covariance has rank at most ``n - 1``;
    whitening rescales every kept direction to unit variance, so directions
    the data hardly estimate are amplified noise. Keep fewer components
    (``n_components``), fit on more texts, or use ``whitening="center"``.
    """

class DatasetChecksumError(OSError):
    """A dataset file does not have its pinned SHA-256 checksum.

    Raised for a corrupted or foreign local file (delete it to download it
    again) and for a download whose converted content differs from the
    pinned release (nothing is written then).
    """

class CLIError(Exception):
    """An error worth one line on stderr and a non-zero exit code.

    Parameters
    ----------
    message : str
    exit_code : int, default=1
        2 for a wrong option value (as argparse's usage errors), 1 otherwise.
    """

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code

class InputError(ValueError):
    """A problem with an input file, worth one line to the user."""

class OutputError(Exception):
    """An output file cannot be written, worth one line to the user.

    Parameters
    ----------
    message : str
    exit_code : int, default=1
        2 when the path itself is wrong (its folder does not exist), as for
        any wrong option value; 1 when writing failed.
    """

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code
