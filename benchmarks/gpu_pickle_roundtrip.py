"""Fit a BertClassifier on a GPU, unpickle it in a process that has none.

Checks the promise of ``BertClassifier``'s pickling: the fine-tuned weights
travel inside the pickle (as CPU safetensors bytes), and a classifier fitted
on ``cuda`` loads and predicts where no GPU is visible, with a
``DeviceFallbackWarning``. Uses the tiny seeded test model, so it needs no
download. Run on a machine with a CUDA GPU::

    python benchmarks/gpu_pickle_roundtrip.py
"""

import os
import pickle
import subprocess
import sys
import tempfile
import textwrap

import numpy as np


def main():
    import torch

    from skbert import BertClassifier
    from skbert._testing import make_tiny_model

    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU here; nothing to check")
    folder = tempfile.mkdtemp()
    model = str(make_tiny_model(os.path.join(folder, "tiny")))
    texts = ["the movie was good", "a bad film with a dull plot", "what a wonderful story",
             "i hate this boring movie", "", "the best actor and the worst scene",
             "one two three", "they love the music very much"] * 4
    labels = ["pos", "neg", "pos", "neg", "neg", "pos", "neg", "pos"] * 4
    for params in (dict(freeze_layers=0), dict(freeze_layers=1, unfreeze="gradual",
                                                 unfreeze_step=1, epochs=3),
                   dict(pooling="attention", layers=[1, 2], layer_agg="scalar_mix")):
        clf = BertClassifier(model, device="auto", random_state=0, **params).fit(texts, labels)
        assert clf.device_ == "cuda", clf.device_
        on_gpu = clf.predict_proba(texts)
        path = os.path.join(folder, "clf.pkl")
        with open(path, "wb") as f:
            pickle.dump(clf, f)
        out = os.path.join(folder, "proba.npy")
        code = textwrap.dedent(f"""
            import pickle, warnings, numpy as np, torch
            assert not torch.cuda.is_available()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with open({path!r}, "rb") as f:
                    clf = pickle.load(f)
                np.save({out!r}, clf.predict_proba({texts!r}))
            print("  child: device_", clf.device_, "|", [str(w.message)[:60] for w in caught])
        """)
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        on_cpu = np.load(out)
        diff = float(np.abs(on_cpu - on_gpu).max())
        same = bool(np.array_equal(on_cpu.argmax(1), on_gpu.argmax(1)))
        print(f"{params}: pickle {os.path.getsize(path)} bytes, max |proba cpu - gpu| "
              f"{diff:.2e}, same predictions: {same}, loss {np.round(clf.loss_curve_, 4)}")
        assert same and diff < 1e-4
        again = BertClassifier(model, device="auto", random_state=0, **params).fit(texts, labels)
        print(f"  refit with the same random_state on GPU: identical loss curve "
              f"{again.loss_curve_ == clf.loss_curve_}")
    print("OK")


if __name__ == "__main__":
    main()
