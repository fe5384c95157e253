"""The model: resolve, fingerprint, load and run an encoder.

The only package that imports transformers. :mod:`.backend` names and loads a
model, :mod:`.runtime` prepares it for a device and backend, :mod:`.encoder` is
the lean forward pass, and :mod:`.st_config` reads a sentence-transformers
folder's own configuration.
"""
