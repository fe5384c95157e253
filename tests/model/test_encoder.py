"""The lean forward pass (skbert._model.encoder) against transformers' own forward.

Every comparison runs both on the same padded batch and checks the hidden
states at real token positions to 1e-5; timings never appear here (see
benchmarks/throughput.py).
"""

import numpy as np
import pytest

from skbert import BertVectorizer
from skbert._model import backend as _backend
from skbert._model import encoder as _encoder
from skbert._model.backend import ModelSpec
from skbert._model.runtime import model_input_names

torch = pytest.importorskip("torch")

TINY = ["tiny_model", "tiny_distilbert", "tiny_roberta"]

#: Long enough that a batch is padded past MATMUL_ATTENTION_MAX_LENGTH.
LONG = " ".join(["the movie was good but the ending was bad"] * 9)


def _model(path):
    from transformers import AutoModel

    return AutoModel.from_pretrained(path, attn_implementation="eager").eval()


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _inputs(model, tokenizer, texts):
    names = model_input_names(model)
    enc = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    return {k: v for k, v in enc.items() if k in names}


def _compare(model, inputs, layers, *, onednn=False):
    parts = _encoder.lean_layers(model)
    assert parts is not None
    with torch.inference_mode():
        reference = model(**inputs, output_hidden_states=True).hidden_states
        lean = _encoder.lean_hidden_states(model, parts, inputs, layers, onednn=onednn)
    mask = inputs["attention_mask"].bool()
    assert len(lean) == len(layers)
    for layer, got in zip(layers, lean):
        want = reference[layer]
        assert got.shape == want.shape
        torch.testing.assert_close(got[mask], want[mask], rtol=1e-5, atol=1e-5)
        # Padded positions are zero, never garbage.
        assert torch.count_nonzero(got[~mask]) == 0
    return lean


@pytest.mark.parametrize("fixture", TINY)
def test_lean_pass_equals_transformers_on_a_padded_batch(fixture, request, texts):
    path = request.getfixturevalue(fixture)
    model, tokenizer = _model(path), _tokenizer(path)
    inputs = _inputs(model, tokenizer, texts)
    assert not bool(inputs["attention_mask"].all())  # really padded
    n_layers = len(_encoder.lean_layers(model))
    _compare(model, inputs, list(range(n_layers + 1)))


@pytest.mark.parametrize("fixture", TINY)
def test_lean_pass_long_batch_uses_fused_attention_and_matches(fixture, request):
    path = request.getfixturevalue(fixture)
    model, tokenizer = _model(path), _tokenizer(path)
    inputs = _inputs(model, tokenizer, [LONG, "short text", LONG[: len(LONG) // 2]])
    assert inputs["input_ids"].shape[1] > _encoder.MATMUL_ATTENTION_MAX_LENGTH
    _compare(model, inputs, [0, 1, 2])


@pytest.mark.parametrize("n_texts", [2, 4])
def test_lean_pass_without_padding(tiny_model, n_texts):
    """Equal lengths: 2 x 4 tokens get bucket rows appended, 4 x 4 none."""
    model, tokenizer = _model(tiny_model), _tokenizer(tiny_model)
    inputs = _inputs(model, tokenizer, ["good movie", "bad movie", "fun film", "dull plot"][:n_texts])
    assert bool(inputs["attention_mask"].all())
    n_tokens = int(inputs["attention_mask"].sum())
    assert (n_tokens % _encoder.ROW_BUCKET == 0) == (n_texts == 4)
    _compare(model, inputs, [0, 2])


def test_packing_rows_are_bucketed_and_dropped():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]])
    packing = _encoder._Packing(mask)
    assert packing.n == 6 and not packing.identity
    x = torch.arange(12.0).reshape(12, 1) + 1
    packed = packing.pack(x)
    assert packed.shape[0] == _encoder.ROW_BUCKET
    torch.testing.assert_close(packed[:6, 0], torch.tensor([1.0, 2, 3, 5, 6, 9]))
    back = packing.unpack(packed)
    torch.testing.assert_close(back[:, 0], x[:, 0] * mask.reshape(-1))


def test_lean_pass_with_token_types(tiny_model):
    """Sentence-pair token types reach the embedding module."""
    model, tokenizer = _model(tiny_model), _tokenizer(tiny_model)
    enc = tokenizer(["a good movie", "bad"], ["it was fun", "very boring film"],
                    padding=True, return_tensors="pt")
    assert int(enc["token_type_ids"].max()) == 1
    _compare(model, dict(enc), [1, 2])


def test_lean_pass_returns_the_requested_layers_in_order(tiny_model):
    model, tokenizer = _model(tiny_model), _tokenizer(tiny_model)
    inputs = _inputs(model, tokenizer, ["good movie", "a bad and long movie"])
    lean = _compare(model, inputs, [2, 0, 1])
    assert len(lean) == 3


def test_unsupported_models_take_the_transformers_path(tmp_path, tiny_model):
    from transformers import BertConfig, BertModel

    decoder = BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=8, is_decoder=True))
    assert _encoder.lean_layers(decoder) is None

    class Other(torch.nn.Module):
        config = type("C", (), {"model_type": "mpnet"})()

    assert _encoder.lean_layers(Other()) is None
    # A supported model in a LoadedModel uses the lean pass.
    loaded = _backend.load_model(ModelSpec(tiny_model), "cpu")
    assert loaded.lean is not None


@pytest.mark.parametrize("fixture", TINY)
def test_vectorizer_lean_and_transformers_paths_agree(fixture, request, texts):
    """The same features whichever pass runs (every pooling, every layer)."""
    path = request.getfixturevalue(fixture)
    poolings = ["cls", "mean", "max"]
    loaded = _backend.load_model(ModelSpec(path), "cpu")
    lean_parts = loaded.lean
    assert lean_parts is not None
    results = {}
    for name, parts in (("lean", lean_parts), ("transformers", None)):
        loaded.lean = parts
        try:
            results[name] = [
                BertVectorizer(path, layers="all", pooling=p, device="cpu").fit_transform(texts)
                for p in poolings
            ]
        finally:
            loaded.lean = lean_parts
    for a, b in zip(results["lean"], results["transformers"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


needs_onednn = pytest.mark.skipif(
    not _encoder.onednn_linear_available(), reason="torch has no working oneDNN linear kernel here"
)


@needs_onednn
@pytest.mark.parametrize("fixture", TINY)
def test_onednn_linear_pass_equals_transformers(fixture, request, texts):
    path = request.getfixturevalue(fixture)
    model, tokenizer = _model(path), _tokenizer(path)
    parts = _encoder.lean_layers(model)
    assert all(p.plain for p in parts)
    for batch in (texts, [LONG, "short text"]):
        inputs = _inputs(model, tokenizer, batch)
        _compare(model, inputs, list(range(len(parts) + 1)), onednn=True)


@needs_onednn
def test_onednn_gelu_fusion_only_for_the_exact_gelu(tiny_model):
    from transformers.activations import ACT2FN

    model = _model(tiny_model)
    parts = _encoder.lean_layers(model)
    assert parts[0].exact_gelu  # BERT's "gelu" is the erf GELU
    tanh_gelu = parts[0]._replace(activation=ACT2FN["gelu_new"])
    assert not _encoder._describe(tanh_gelu).exact_gelu
    relu = parts[0]._replace(activation=torch.nn.ReLU())
    assert not _encoder._describe(relu).exact_gelu
    # With a non-GELU activation the lean pass applies that activation itself.
    h = torch.randn(7, model.config.hidden_size)
    packing = _encoder._Packing(torch.ones(1, 7, dtype=torch.long))
    h = packing.pack(h)
    with torch.inference_mode():
        fused = _encoder._layer(_encoder._describe(relu), h, packing, onednn=True)
        plain = _encoder._layer(_encoder._describe(relu), h, packing, onednn=False)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)


def test_int8_quantises_all_but_the_feed_forward_output(tiny_model):
    """int8 modules are called as modules, never handed to the float kernel."""
    loaded = _backend.load_model(ModelSpec(tiny_model), "cpu", backend="int8")
    assert loaded.lean is not None
    for p in loaded.lean:
        for module in (p.query, p.key, p.value, p.attention_output, p.ffn_input):
            assert not _encoder._is_plain(module), type(module)
        assert type(p.ffn_output) is torch.nn.Linear


@pytest.mark.parametrize("model_type", ["bert", "roberta", "xlm-roberta", "camembert", "distilbert"])
def test_every_listed_architecture_matches_transformers(model_type):
    """Each type in LEAN_MODEL_TYPES, built small from its config, on a padded batch."""
    from transformers import AutoConfig, AutoModel

    assert model_type in _encoder.LEAN_MODEL_TYPES
    kwargs = dict(vocab_size=50, max_position_embeddings=40, pad_token_id=1)
    if model_type == "distilbert":
        kwargs.update(dim=16, n_layers=2, n_heads=2, hidden_dim=24)
    else:
        kwargs.update(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=24)
    config = AutoConfig.for_model(model_type, **kwargs)
    torch.manual_seed(0)
    model = AutoModel.from_config(config, attn_implementation="eager").eval()
    ids = torch.randint(3, 50, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 1
    inputs = {"input_ids": ids, "attention_mask": mask}
    _compare(model, inputs, [0, 1, 2])
    if _encoder.onednn_linear_available():
        _compare(model, inputs, [0, 1, 2], onednn=True)


@pytest.mark.parametrize("failure", ["raises", "disagrees"])
def test_onednn_kernel_is_turned_off_when_it_fails_its_check(failure, monkeypatch):
    def broken(x, weight, bias, *, gelu=False):
        if failure == "raises":
            raise RuntimeError("no such op")
        return torch.nn.functional.linear(x, weight, bias) + 1e-3

    monkeypatch.setattr(_encoder, "_onednn_linear", broken)
    monkeypatch.setattr(_encoder, "_ONEDNN_OK", None)
    assert _encoder.onednn_linear_available() is False
    # The verdict is kept for the process (here: until monkeypatch restores it).
    assert _encoder._ONEDNN_OK is False


@needs_onednn
def test_vectorizer_runs_the_onednn_kernel_on_the_cpu(tiny_model, texts, monkeypatch):
    """A float32 CPU model takes the oneDNN path; bfloat16 only for its GELU-fused projection."""
    loaded = _backend.load_model(ModelSpec(tiny_model), "cpu")
    assert loaded.onednn
    calls = []
    original = _encoder._onednn_linear

    def spy(*args, **kwargs):
        calls.append(kwargs.get("gelu", False))
        return original(*args, **kwargs)

    monkeypatch.setattr(_encoder, "_onednn_linear", spy)
    BertVectorizer(tiny_model, device="cpu").fit_transform(texts)
    assert calls and any(calls) and not all(calls)  # plain and GELU-fused calls
    calls.clear()
    BertVectorizer(tiny_model, device="cpu", dtype="bfloat16").fit_transform(texts)
    # One GELU-fused call per layer run; the other projections run as modules.
    assert calls and all(calls)
    reduced = _backend.load_model(ModelSpec(tiny_model), "cpu", dtype="bfloat16")
    assert reduced.onednn_reduced
    assert not _backend.load_model(ModelSpec(tiny_model), "cpu", dtype="float16").onednn_reduced


# ------------------------------------------- packing without reading the mask
def _padded(loaded, texts):
    from skbert._extraction.batches import _iter_chunks, pad_batch

    tok = loaded.tokenizer
    (chunk,) = _iter_chunks(tok, texts, max_length=128, token_type_ids=True, prefetch=False)
    arrays = pad_batch(chunk, np.arange(len(texts)), pad_token_id=tok.pad_token_id)
    real_index = torch.from_numpy(arrays.pop("real_index"))
    arrays.pop("special_tokens_mask")
    names = model_input_names(loaded.model)
    return {k: torch.from_numpy(v) for k, v in arrays.items() if k in names}, real_index


@pytest.mark.parametrize("fixture", TINY)
def test_real_index_packing_equals_the_mask_packing(fixture, request, texts):
    loaded = _backend.load_model(ModelSpec(request.getfixturevalue(fixture)), "cpu")
    inputs, real_index = _padded(loaded, [*texts, LONG])
    with torch.inference_mode():
        want = _encoder.lean_hidden_states(loaded.model, loaded.lean, inputs, [1, 2])
        got = _encoder.lean_hidden_states(
            loaded.model, loaded.lean, inputs, [1, 2], real_index=real_index
        )
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


@pytest.mark.parametrize("fixture", TINY)
@pytest.mark.parametrize("bucket", [1, 16])
def test_varlen_attention_path_equals_the_padded_path(fixture, bucket, request, texts,
                                                      monkeypatch):
    """The packed (cu_seqlens) attention path, run with its reference kernel on the CPU."""
    loaded = _backend.load_model(ModelSpec(request.getfixturevalue(fixture)), "cpu")
    inputs, real_index = _padded(loaded, [*texts, LONG])
    mask = inputs["attention_mask"].bool()
    with torch.inference_mode():
        want = _encoder.lean_hidden_states(loaded.model, loaded.lean, inputs, [1, 2])
        calls = []

        def kernel(*args):
            calls.append(args[3])
            return _encoder.reference_varlen_attention(*args)

        monkeypatch.setattr(_encoder, "ROW_BUCKET", bucket)
        monkeypatch.setattr(_encoder, "varlen_attention_for", lambda device, dtype: kernel)
        for index in (real_index, None):
            calls.clear()
            got = _encoder.lean_hidden_states(
                loaded.model, loaded.lean, inputs, [1, 2], real_index=index
            )
            assert len(calls) == 2  # one call per layer run
            lengths = mask.sum(1).to(torch.int32)
            np.testing.assert_array_equal(calls[0].numpy(), np.r_[0, np.cumsum(lengths)])
            for g, w in zip(got, want):
                torch.testing.assert_close(g[mask], w[mask], rtol=1e-5, atol=1e-5)
                assert torch.count_nonzero(g[~mask]) == 0


def test_varlen_attention_only_for_cuda_in_reduced_precision():
    cpu = torch.device("cpu")
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert _encoder.varlen_attention_for(cpu, dtype) is None
    if torch.cuda.is_available():
        assert _encoder.varlen_attention_for(torch.device("cuda"), torch.float32) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_varlen_kernel_equals_its_reference_on_the_gpu(dtype):
    gen = torch.Generator().manual_seed(1)
    lengths = [7, 30, 1, 12]
    cu = torch.tensor(np.r_[0, np.cumsum(lengths)], dtype=torch.int32, device="cuda")
    q, k, v = (torch.randn(sum(lengths), 4, 32, generator=gen).cuda().to(dtype)
               for _ in range(3))
    kernel = _encoder.varlen_attention_for(q.device, dtype)
    assert kernel is not None, "torch's variable-length attention is unavailable here"
    got = kernel(q, k, v, cu, max(lengths), 32**-0.5)
    want = _encoder.reference_varlen_attention(q.float(), k.float(), v.float(), cu,
                                               max(lengths), 32**-0.5)
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)


# ------------------------------------------------------------- batch invariance
#: Texts of many lengths (1 to 100+ tokens): short ones whose attention used
#: to be computed over another text's padding, and one past the fused-attention
#: threshold.
VARIED = [
    "good",
    "a charming , often affecting journey .",
    "hide new secretions from the parental units",
    "the movie was a complete and utter waste of two hours of my life , honestly",
    "unflinchingly bleak and desperate",
    "of saucy",
    LONG,
    "it 's a lovely film with lovely performances by buy and accorsi .",
    "remains utterly satisfied to remain the same throughout",
]


@pytest.mark.parametrize("fixture", TINY)
def test_hidden_states_do_not_depend_on_the_batch(fixture, request):
    """A text's hidden states are bitwise the same alone and among others (#19.4)."""
    loaded = _backend.load_model(ModelSpec(request.getfixturevalue(fixture)), "cpu")
    inputs, real_index = _padded(loaded, VARIED)
    mask = inputs["attention_mask"].bool()
    with torch.inference_mode():
        together = _encoder.lean_hidden_states(
            loaded.model, loaded.lean, inputs, [1, 2], real_index=real_index
        )
        for i, text in enumerate(VARIED):
            one, one_index = _padded(loaded, [text])
            alone = _encoder.lean_hidden_states(
                loaded.model, loaded.lean, one, [1, 2], real_index=one_index
            )
            for t, a in zip(together, alone):
                assert torch.equal(t[i][mask[i]], a[0][one["attention_mask"][0].bool()]), text


@pytest.mark.integration
def test_vectors_do_not_depend_on_the_batch_real_model(minilm_path):
    """The same text gets bitwise the same vector whatever texts share its batch.

    On all-MiniLM-L6-v2 the padded attention gave differences up to 1e-6 (and
    GridSearchCV(n_jobs=2) scores 1e-2 apart from n_jobs=1 on a cold cache).
    """
    kw = dict(model_name=minilm_path, layers=[1, 3, 6], pooling="mean", device="cpu")
    texts = VARIED + [t + " , again and again" for t in VARIED[:-1]]
    together = BertVectorizer(**kw).fit_transform(texts)
    reversed_ = BertVectorizer(**kw).fit_transform(texts[::-1])[::-1]
    small = BertVectorizer(batch_size=3, **kw).fit_transform(texts)
    alone = np.vstack([BertVectorizer(**kw).fit_transform([t]) for t in texts])
    for other in (reversed_, small, alone):
        np.testing.assert_array_equal(together, other)
