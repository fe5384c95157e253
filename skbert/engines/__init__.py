"""Corpus embedding on distributed engines: Dask, Ray Data and Spark.

Each engine lives in its own sub-module, imported on demand, so that
``import skbert`` never imports dask, ray or pyspark:

- :mod:`skbert.engines.dask`: a Dask Series, single-column DataFrame or Bag
  of texts to a Dask array or DataFrame of features;
- :mod:`skbert.engines.ray`: a Ray Data ``map_batches`` actor class that
  holds the model, and a whole-dataset helper;
- :mod:`skbert.engines.spark`: a ``mapInPandas`` helper that adds an
  ``array<float>`` column to a Spark DataFrame.

All three ship a :class:`~skbert.BertVectorizer` fitted once on the client
(a few kilobytes: model name and settings, never the weights). Each worker
process loads the model once, from skbert's process-wide registry, and only
when some text misses the feature store. With ``memory=`` set, a cold run
first embeds every *unique* text of the corpus exactly once across all
workers (texts are deduplicated globally by the engine's own hash shuffle
and written to the shared store), then assembles each partition's features
from the store, in the input's order. See :ref:`scaling_out`.
"""

__all__ = []
