"""Every model family, as sentence-transformers runs it: reproduced exactly, or refused.

For each family a tiny seeded model (safetensors) is built offline from a
small config with the tiny WordPiece tokenizer, then given its
sentence-transformers modules twice: written by hand in the older layout most
published models carry (``modules.json``, ``sentence_bert_config.json``,
legacy pooling flags, ``2_Dense/config.json`` with its weights,
``3_Normalize``), and saved by sentence-transformers' own
``SentenceTransformer.save()``. ``BertVectorizer(pooling="auto",
normalize="auto", max_length="auto")`` must equal
``SentenceTransformer(folder).encode`` to 1e-5, prompts included; what skbert
does not reproduce must raise in ``fit``.
"""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from skbert import BertVectorizer
from skbert._testing import make_tiny_model

st = pytest.importorskip("sentence_transformers")

TEXTS = [
    "the movie was good",
    "A bad film with a dull plot, really.",
    "",
    "what a wonderful story about a cat and a dog in the city",
    "i",
    "The [SEP] token and [CLS] in a text",
    "they love the music very much and so do we",
]
DIM = 32


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --------------------------------------------------------------- builders
def _tokenizer(path):
    """The tiny WordPiece tokenizer of skbert's test models, saved to ``path``."""
    from transformers import AutoTokenizer

    make_tiny_model(path, "bert", seed=0)
    for weights in Path(path).glob("*.safetensors"):
        weights.unlink()
    (Path(path) / "config.json").unlink()
    return AutoTokenizer.from_pretrained(path)


#: Sentences the Unigram tokenizer is trained on (the test texts' words, and more).
_CORPUS = [
    "the movie was good and the film was bad",
    "A bad film with a dull plot, really.",
    "what a wonderful story about a cat and a dog in the city",
    "they love the music very much and so do we",
    "The token in a text is a piece of a word",
    "a story, a song, a city: all of them good",
    "we watched the movie in the city with a friend",
    "the plot of this film is dull, but the music is wonderful",
]


def _unigram_tokenizer(path):
    """An XLM-R tokenizer with a genuine Unigram (SentencePiece-style) model,
    trained offline on a tiny corpus and saved to ``path``.

    The special tokens sit where XLM-R has them: ``<s>``=0, ``<pad>``=1,
    ``</s>``=2, ``<unk>``=3, ``<mask>`` last; the pieces carry the trainer's
    log-probabilities, words are split on whitespace and prefixed with "▁".
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import XLMRobertaTokenizerFast

    unigram = Tokenizer(models.Unigram())
    unigram.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581",
                                                     prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=160, unk_token="<unk>",
                                      special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    unigram.train_from_iterator(_CORPUS * 4, trainer)
    vocab = [tuple(piece) for piece in json.loads(unigram.to_str())["model"]["vocab"]]
    tok = XLMRobertaTokenizerFast(vocab=vocab + [("<mask>", 0.0)])
    assert type(tok.backend_tokenizer.model).__name__ == "Unigram"
    assert [tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    tok.save_pretrained(path)
    return tok


def _save(model, path):
    model.eval()
    model.save_pretrained(path, safe_serialization=True)
    return path


def _build(family, path, seed):
    """A tiny seeded model of ``family`` with its tokenizer, saved to ``path``."""
    import torch
    import transformers as tf

    path = Path(path)
    if family in ("bert", "distilbert"):
        return make_tiny_model(path, family, seed=seed)
    if family == "xlm_roberta":
        tok = _unigram_tokenizer(path)
        torch.manual_seed(seed)
        # RoBERTa-style positions: padding_idx + 1 of them are reserved.
        model = tf.XLMRobertaModel(tf.XLMRobertaConfig(
            vocab_size=len(tok), pad_token_id=1, bos_token_id=0, eos_token_id=2,
            type_vocab_size=1, hidden_size=DIM, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=130))
        return _save(model, path)
    tok = _tokenizer(path)
    ids = tok.convert_tokens_to_ids
    common = dict(vocab_size=len(tok), pad_token_id=ids("[PAD]"))
    layers = dict(hidden_size=DIM, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=128)
    torch.manual_seed(seed)
    if family == "mpnet":
        model = tf.MPNetModel(tf.MPNetConfig(**common, **layers))
    elif family == "electra":
        model = tf.ElectraModel(tf.ElectraConfig(embedding_size=16, **common, **layers))
    elif family == "albert":
        model = tf.AlbertModel(tf.AlbertConfig(embedding_size=16, **common, **layers))
    elif family == "deberta_v2":
        model = tf.DebertaV2Model(tf.DebertaV2Config(
            relative_attention=True, position_buckets=16, pos_att_type=["p2c", "c2p"],
            position_biased_input=False, **common, **layers))
    elif family == "t5":
        # A full encoder-decoder checkpoint: sentence-transformers loads its encoder.
        model = tf.T5Model(tf.T5Config(d_model=DIM, d_kv=8, d_ff=37, num_layers=2,
                                       num_heads=4, decoder_start_token_id=0, **common))
    elif family == "modernbert":
        model = tf.ModernBertModel(tf.ModernBertConfig(
            global_attn_every_n_layers=2, local_attention=16, cls_token_id=ids("[CLS]"),
            sep_token_id=ids("[SEP]"), bos_token_id=ids("[CLS]"), eos_token_id=ids("[SEP]"),
            **common, **{**layers, "num_hidden_layers": 3}))
    elif family == "llama":
        model = tf.LlamaModel(tf.LlamaConfig(
            num_key_value_heads=2, bos_token_id=None, eos_token_id=ids("[SEP]"),
            tie_word_embeddings=False, **common, **layers))
    elif family == "mistral":
        # A sliding window shorter than the longer texts, and left padding (as
        # e5-mistral-style embedders pad, so that the last position is real).
        config_file = path / "tokenizer_config.json"
        tok_config = json.loads(config_file.read_text(encoding="utf-8"))
        config_file.write_text(json.dumps({**tok_config, "padding_side": "left"}),
                               encoding="utf-8")
        model = tf.MistralModel(tf.MistralConfig(
            num_key_value_heads=2, sliding_window=6, bos_token_id=None,
            eos_token_id=ids("[SEP]"), tie_word_embeddings=False, **common, **layers))
    else:
        raise ValueError(family)
    return _save(model, path)


def _write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2), encoding="utf-8")


_LEGACY_KEYS = {
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean": "pooling_mode_mean_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}


def _dense_weights(n_in, n_out, seed):
    import torch

    g = torch.Generator().manual_seed(seed)
    return {"linear.weight": torch.randn(n_out, n_in, generator=g) * 0.3,
            "linear.bias": torch.randn(n_out, generator=g) * 0.1}


def write_legacy_st(folder, *, modes, dense=(), normalize=True, include_prompt=True,
                    do_lower_case=False, max_seq_length=None, prompts=None, bin_dense=False):
    """The sentence-transformers files of ``folder``, by hand in the older layout.

    ``dense`` lists ``(out_features, activation)``; ``modes`` the pooling
    modes switched on by the legacy boolean flags.
    """
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    pool = {"word_embedding_dimension": DIM, "include_prompt": include_prompt}
    pool.update({key: mode in modes for mode, key in _LEGACY_KEYS.items()})
    _write_json(folder / "1_Pooling" / "config.json", pool)
    width = DIM * len(modes)
    for k, (n_out, activation) in enumerate(dense):
        idx = len(modules)
        sub = folder / f"{idx}_Dense"
        modules.append({"idx": idx, "name": str(idx), "path": sub.name,
                        "type": "sentence_transformers.models.Dense"})
        _write_json(sub / "config.json", {"in_features": width, "out_features": n_out,
                                          "bias": True, "activation_function": activation})
        weights = _dense_weights(width, n_out, seed=100 + k)
        if bin_dense:
            torch.save(weights, sub / "pytorch_model.bin")
        else:
            save_file(weights, str(sub / "model.safetensors"))
        width = n_out
    if normalize:
        idx = len(modules)
        modules.append({"idx": idx, "name": str(idx), "path": f"{idx}_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    _write_json(folder / "modules.json", modules)
    bert = {"do_lower_case": do_lower_case}
    if max_seq_length is not None:
        bert["max_seq_length"] = max_seq_length
    _write_json(folder / "sentence_bert_config.json", bert)
    _write_json(folder / "config_sentence_transformers.json",
                {"prompts": prompts or {}, "default_prompt_name": None,
                 "similarity_fn_name": "cosine"})
    return str(folder)


def save_with_st(model_folder, out, *, modes, dense=(), normalize=True, include_prompt=True,
                 max_seq_length=None, prompts=None, do_lower_case=False):
    """The same pipeline built from sentence-transformers' modules and saved by it."""
    import torch
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.base.modules.normalize import Normalize
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    transformer = Transformer(model_folder, max_seq_length=max_seq_length,
                              do_lower_case=do_lower_case)
    modules = [transformer, Pooling(DIM, pooling_mode=list(modes), include_prompt=include_prompt)]
    width = DIM * len(modes)
    for k, (n_out, activation) in enumerate(dense):
        module_name, _, name = activation.rpartition(".")
        act = getattr(__import__(module_name, fromlist=[name]), name)()
        layer = Dense(width, n_out, activation_function=act)
        weights = _dense_weights(width, n_out, seed=100 + k)
        with torch.no_grad():
            layer.linear.weight.copy_(weights["linear.weight"])
            layer.linear.bias.copy_(weights["linear.bias"])
        modules.append(layer)
        width = n_out
    if normalize:
        modules.append(Normalize())
    model = st.SentenceTransformer(modules=modules, device="cpu", prompts=prompts or {})
    model.save(str(out))
    return str(out)


TANH = "torch.nn.modules.activation.Tanh"
IDENTITY = "torch.nn.modules.linear.Identity"
GELU = "torch.nn.modules.activation.GELU"

#: family -> the sentence-transformers pipeline of a typical published model of it.
FAMILIES = {
    "bert": dict(modes=("cls",), dense=((24, TANH),), normalize=True),  # LaBSE-style
    "distilbert": dict(modes=("mean",), dense=((16, TANH),), normalize=False),  # distiluse
    "mpnet": dict(modes=("mean",), normalize=True, max_seq_length=40),  # all-mpnet
    "electra": dict(modes=("mean", "max"), normalize=False),  # several modes
    "albert": dict(modes=("mean",), normalize=False),  # paraphrase-albert-small-v2
    "deberta_v2": dict(modes=("cls",), normalize=True),
    "t5": dict(modes=("mean",), dense=((24, IDENTITY),), normalize=True),  # sentence-t5, GTR
    "modernbert": dict(modes=("mean_sqrt_len_tokens", "cls"), dense=((20, GELU),)),
    "llama": dict(modes=("lasttoken",), normalize=True, prompts={"query": "query: "}),
    # paraphrase-multilingual-style: a Unigram tokenizer, mean, a short limit (truncates).
    "xlm_roberta": dict(modes=("mean",), normalize=False, max_seq_length=24),
    # e5-mistral-style: last token, Normalize, an instruction prompt.
    "mistral": dict(modes=("lasttoken",), normalize=True,
                    prompts={"query": "Instruct: find the film\nQuery: "}),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(family, layout) -> a model folder, built once per module, lazily."""
    built = {}

    def get(family, layout):
        key = (family, layout)
        if key not in built:
            files = FAMILIES[family]
            seed = sorted(FAMILIES).index(family)
            base = _build(family, tmp_path_factory.mktemp(f"{family}-{layout}"), seed)
            if layout == "legacy":
                built[key] = write_legacy_st(base, **files)
            else:
                built[key] = save_with_st(base, tmp_path_factory.mktemp(f"{family}-saved"),
                                          **files)
        return built[key]

    return get


def _st_encode(folder, texts, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = st.SentenceTransformer(folder, device="cpu")
        return model.encode(texts, batch_size=3, convert_to_numpy=True, **kwargs)


def _skbert(folder, texts, **params):
    vec = BertVectorizer(folder, pooling="auto", normalize="auto", max_length="auto",
                         device="cpu", max_batch_tokens=64, **params)
    return vec, vec.fit_transform(texts)


# ---------------------------------------------------------------- equality
@pytest.mark.parametrize("layout", ["legacy", "saved"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_equals_sentence_transformers(folders, family, layout):
    folder = folders(family, layout)
    want = _st_encode(folder, TEXTS)
    vec, got = _skbert(folder, TEXTS)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert vec.dense_layers_ == len(FAMILIES[family].get("dense", ()))
    if family == "mistral":  # the left padding survived sentence-transformers' save()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert st.SentenceTransformer(folder, device="cpu").tokenizer.padding_side == "left"
    if "prompts" in FAMILIES[family]:
        want = _st_encode(folder, TEXTS, prompt_name="query")
        _, got = _skbert(folder, TEXTS, prompt_name="query")
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_dense_applies_after_the_chosen_layers(folders):
    """A grid over layers still works: each pooled layer goes through the Dense head."""
    folder = folders("distilbert", "legacy")
    want = _st_encode(folder, TEXTS)
    vec = BertVectorizer(folder, layers=[1, 2], device="cpu")
    X = vec.fit_transform(TEXTS)
    assert X.shape == (len(TEXTS), 2 * 16) and vec.dense_layers_ == 1
    np.testing.assert_allclose(X[:, 16:], want, atol=1e-5, rtol=0)
    assert not np.allclose(X[:, :16], want, atol=1e-3)
    # A pooling whose width the head does not take is refused, naming it.
    with pytest.raises(ValueError, match=r"Dense module '2_Dense' .* takes 32-wide .*"
                                         r"pooling='mean_max' gives 64-wide"):
        BertVectorizer(folder, pooling="mean_max").fit(["x"])


def test_dense_weights_in_pickle_only_need_the_opt_in(tmp_path):
    folder = make_tiny_model(tmp_path / "bin", "bert", seed=3)
    write_legacy_st(folder, modes=("cls",), dense=((8, TANH),), bin_dense=True)
    with pytest.raises(OSError, match=r"Dense module '2_Dense' .* pytorch_model.bin only.*"
                                      r"use_safetensors=False"):
        BertVectorizer(folder, device="cpu").fit_transform(TEXTS)
    got = BertVectorizer(folder, normalize="auto", device="cpu",
                         use_safetensors=False).fit_transform(TEXTS)
    np.testing.assert_allclose(got, _st_encode(str(folder), TEXTS), atol=1e-5, rtol=0)


def test_dense_weights_are_part_of_the_model_fingerprint(tmp_path):
    from safetensors.torch import save_file

    from skbert._model.backend import ModelSpec, model_fingerprint

    folder = make_tiny_model(tmp_path / "fp", "bert", seed=3)
    write_legacy_st(folder, modes=("cls",), dense=((8, TANH),))
    spec = ModelSpec(str(folder))
    before = model_fingerprint(spec)
    vec = BertVectorizer(folder, device="cpu").fit(TEXTS)
    save_file(_dense_weights(DIM, 8, seed=7), str(folder / "2_Dense" / "model.safetensors"))
    assert model_fingerprint(spec) != before
    from skbert.exceptions import ModelChangedWarning

    with pytest.warns(ModelChangedWarning):
        vec.transform(TEXTS)


# ------------------------------------------------------- text preprocessing
def _cased_bert(path, seed=4):
    """The tiny BERT with a cased tokenizer (its vocabulary has no capitals)."""
    from tokenizers.normalizers import BertNormalizer
    from transformers import AutoTokenizer

    make_tiny_model(path, "bert", seed=seed)
    tok = AutoTokenizer.from_pretrained(path)
    tok.backend_tokenizer.normalizer = BertNormalizer(lowercase=False, strip_accents=False)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("layout", ["legacy", "saved"])
def test_do_lower_case_inside_the_tokenizer(tmp_path, layout):
    """sentence-transformers lowercases after special tokens are split off:
    "[SEP]" in a text stays the special token, "The" becomes "the"."""
    base = _cased_bert(tmp_path / "cased")
    files = dict(modes=("mean",), normalize=False, do_lower_case=True)
    folder = (write_legacy_st(base, **files) if layout == "legacy"
              else save_with_st(base, tmp_path / "saved", **files))
    want = _st_encode(folder, TEXTS)
    vec, got = _skbert(folder, TEXTS)
    # sentence-transformers 6 saves the Lowercase normalizer into the tokenizer
    # itself (and no do_lower_case): there the tokenizer lowercases as loaded.
    assert vec.lowercase_ == (layout == "legacy")
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # str.lower() on the raw text turned "[SEP]" into plain word pieces.
    naive = BertVectorizer(folder, prompt="", device="cpu", on_unsupported="warn")
    naive.fit(["x"])
    naive.lowercase_ = False  # as before: the tokenizer as saved, the text lowered
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fingerprint without lowercasing differs
        lowered = naive.transform([t.lower() for t in TEXTS])
    assert np.abs(lowered[5] - got[5]).max() > 1e-3  # the text with "[SEP]" and "[CLS]"
    np.testing.assert_allclose(lowered[:5], got[:5], atol=1e-5)


def test_lowercasing_is_part_of_the_cache_key(tmp_path):
    from skbert._model.backend import ModelSpec, forward_counts, model_fingerprint

    base = _cased_bert(tmp_path / "cased")
    folder = write_legacy_st(base, modes=("mean",), normalize=False, do_lower_case=True)
    assert model_fingerprint(ModelSpec(folder, lowercase=True)) != model_fingerprint(
        ModelSpec(folder))
    want = _st_encode(folder, TEXTS)
    cold = BertVectorizer(folder, memory=tmp_path / "c", device="cpu").fit_transform(TEXTS)
    before = forward_counts()["texts"]
    warm = BertVectorizer(folder, memory=tmp_path / "c", device="cpu").fit_transform(TEXTS)
    assert forward_counts()["texts"] == before
    np.testing.assert_allclose(cold, want, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(warm, cold)


def test_max_length_auto_is_sentence_transformers_rule(tmp_path):
    """No max_seq_length: the tokenizer's limit capped at the position embeddings,
    here 600 tokens, past skbert's default cap of 512."""
    folder = make_tiny_model(tmp_path / "long", "bert", seed=5, max_position_embeddings=600)
    write_legacy_st(folder, modes=("mean",), normalize=False)
    model = st.SentenceTransformer(str(folder), device="cpu")
    assert model.max_seq_length == 600
    text = " ".join(["good movie"] * 280)  # 560 word pieces
    vec, got = _skbert(str(folder), [text, "a cat"])
    assert vec.max_length_ == 600
    np.testing.assert_allclose(got, _st_encode(str(folder), [text, "a cat"]), atol=1e-5, rtol=0)
    assert BertVectorizer(folder).fit(["x"]).max_length_ == 512  # the default stays


# ------------------------------------------------------------- refusals
def _with_chat_template(folder):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}"
                         "{% endfor %}")
    tok.save_pretrained(folder)
    return folder


def test_chat_template_is_refused(tmp_path):
    """A decoder saved by sentence-transformers 6 with a chat template: every text
    is rendered through the template there, so skbert refuses it."""
    base = _with_chat_template(_build("llama", tmp_path / "chat", seed=9))
    folder = save_with_st(base, tmp_path / "saved", modes=("lasttoken",))
    config = json.loads((Path(folder) / "sentence_bert_config.json").read_text())
    assert "message" in config["modality_config"]
    with pytest.raises(ValueError, match=r"modality_config has a 'message' entry.*chat template"
                                         r".*on_unsupported='warn'"):
        BertVectorizer(folder, device="cpu").fit(TEXTS)
    from skbert.exceptions import ModelConfigWarning

    with pytest.warns(ModelConfigWarning, match="chat template"):
        BertVectorizer(folder, device="cpu", on_unsupported="warn").fit(TEXTS)


def test_plain_folder_with_chat_template_is_refused(tmp_path):
    """No modules.json: sentence-transformers infers the Transformer's modalities
    from the tokenizer, and one with a chat template gets the "message" modality,
    so every text is rendered through the template. skbert refuses it."""
    from skbert.exceptions import ModelConfigWarning

    folder = _with_chat_template(_build("llama", tmp_path / "plain", seed=9))
    assert not (Path(folder) / "modules.json").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = st.SentenceTransformer(str(folder), device="cpu")
    assert "message" in model[0].modality_config
    rendered = model[0].preprocess(["the movie"])["input_ids"][0].tolist()
    plain = model.tokenizer(["the movie"])["input_ids"][0]
    assert rendered != plain  # the text went through the template
    with pytest.raises(ValueError, match=r"no modules.json and its tokenizer has a chat "
                                         r"template.*on_unsupported='warn'"):
        BertVectorizer(folder, device="cpu").fit(TEXTS)
    with pytest.warns(ModelConfigWarning, match="chat template"):
        BertVectorizer(folder, device="cpu", on_unsupported="warn").fit(TEXTS)
    # With a modules.json (the older layout: no modality_config), sentence-transformers
    # reads plain texts whatever the tokenizer holds, and so does skbert.
    write_legacy_st(folder, modes=("lasttoken",), normalize=True)
    _, got = _skbert(str(folder), TEXTS)
    np.testing.assert_allclose(got, _st_encode(str(folder), TEXTS), atol=1e-5, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_plain_folder_equals_sentence_transformers(tmp_path, causal):
    """No modules.json and no chat template: sentence-transformers builds mean
    pooling, or last-token pooling for a ``...ForCausalLM`` checkpoint."""
    import torch
    import transformers as tf

    tok = _tokenizer(tmp_path / "plain")
    torch.manual_seed(11)
    config = tf.LlamaConfig(
        vocab_size=len(tok), pad_token_id=tok.pad_token_id, num_key_value_heads=2,
        bos_token_id=None, eos_token_id=tok.sep_token_id, tie_word_embeddings=False,
        hidden_size=DIM, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=128)
    model = tf.LlamaForCausalLM(config) if causal else tf.LlamaModel(config)
    folder = str(_save(model, tmp_path / "plain"))
    want = _st_encode(folder, TEXTS)
    vec, got = _skbert(folder, TEXTS)
    assert vec.pooling_ == ("last_token" if causal else "mean")
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("module, match", [
    ("sentence_transformers.models.LayerNorm", r"LayerNorm \(2_X\): skbert reproduces"),
    ("sentence_transformers.models.WeightedLayerPooling", r"WeightedLayerPooling"),
])
def test_unsupported_module_raises_in_fit(tmp_path, module, match):
    folder = Path(write_legacy_st(make_tiny_model(tmp_path / "m", "bert"), modes=("cls",)))
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_X", "type": module})
    for i, m in enumerate(modules):
        m["idx"] = i
    (folder / "modules.json").write_text(json.dumps(modules))
    # Whatever the pooling and normalisation asked for.
    for params in ({}, {"pooling": "mean", "normalize": False}):
        with pytest.raises(ValueError, match=match):
            BertVectorizer(folder, **params).fit(["x"])


@pytest.mark.parametrize("options, match", [
    ({"transformer_task": "sequence-classification"}, "transformer_task"),
    ({"processing_kwargs": {"text": {"max_length": 8}}}, "processing_kwargs"),
    ({"model_args": {"torch_dtype": "float16"}}, "model_args sets torch_dtype"),
])
def test_unsupported_transformer_options_raise(tmp_path, options, match):
    folder = Path(write_legacy_st(make_tiny_model(tmp_path / "m", "bert"), modes=("cls",)))
    config = json.loads((folder / "sentence_bert_config.json").read_text())
    (folder / "sentence_bert_config.json").write_text(json.dumps({**config, **options}))
    with pytest.raises(ValueError, match=match):
        BertVectorizer(folder).fit(["x"])
