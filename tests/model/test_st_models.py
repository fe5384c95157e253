"""Embedding models as their authors run them: skbert against SentenceTransformer.encode.

Each configuration style of today's embedding models is rebuilt offline from
a small config: tiny seeded random weights (safetensors), a tiny tokenizer,
and the sentence-transformers module files written by hand in the format the
published models use (``modules.json``, ``1_Pooling/config.json``,
``sentence_bert_config.json``, ``config_sentence_transformers.json``). For
each, ``BertVectorizer(pooling="auto", normalize="auto", max_length="auto",
prompt_name=...)`` must equal ``SentenceTransformer(folder).encode(texts,
prompt_name=...)`` to 1e-5. The bundled all-MiniLM-L6-v2 is checked the same
way.
"""

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from skbert import BertVectorizer
from skbert._testing import TINY_WORDS, make_tiny_model

st = pytest.importorskip("sentence_transformers")

TEXTS = [
    "the movie was good",
    "A bad film with a dull plot, really.",
    "",
    "what a wonderful story about a cat and a dog in the city",
    "i",
    "they love the music very much and so do we",
    "the movie was good",  # a duplicate
]


# --------------------------------------------------------------- builders
def _write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2), encoding="utf-8")


def _legacy_pooling(dim, mode, include_prompt=True):
    """A Pooling config in the pre-6.0 format most hub models carry."""
    keys = {
        "cls": "pooling_mode_cls_token",
        "mean": "pooling_mode_mean_tokens",
        "max": "pooling_mode_max_tokens",
        "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
        "weightedmean": "pooling_mode_weightedmean_tokens",
        "lasttoken": "pooling_mode_lasttoken",
    }
    config = {"word_embedding_dimension": dim}
    config.update({key: name == mode for name, key in keys.items()})
    config["include_prompt"] = include_prompt
    return config


def write_st_files(
    folder,
    *,
    dim,
    pooling,
    normalize,
    prompts=None,
    default_prompt_name=None,
    max_seq_length=None,
    do_lower_case=False,
    include_prompt=True,
    new_format=False,
    extra_modules=(),
):
    """Write the sentence-transformers module files of a model folder."""
    folder = Path(folder)
    if new_format:  # as sentence-transformers 6 saves them
        types = (
            "sentence_transformers.base.modules.transformer.Transformer",
            "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
            "sentence_transformers.base.modules.normalize.Normalize",
        )
        pool_config = {
            "embedding_dimension": dim,
            "pooling_mode": pooling,
            "include_prompt": include_prompt,
        }
    else:
        types = (
            "sentence_transformers.models.Transformer",
            "sentence_transformers.models.Pooling",
            "sentence_transformers.models.Normalize",
        )
        pool_config = _legacy_pooling(dim, pooling, include_prompt)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": types[0]},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": types[1]},
    ]
    for module_type in extra_modules:
        modules.append(
            {"idx": len(modules), "name": str(len(modules)), "path": f"{len(modules)}_X",
             "type": module_type}
        )
    if normalize:
        modules.append(
            {"idx": len(modules), "name": str(len(modules)),
             "path": f"{len(modules)}_Normalize", "type": types[2]}
        )
    _write_json(folder / "modules.json", modules)
    _write_json(folder / "1_Pooling" / "config.json", pool_config)
    bert = {"do_lower_case": do_lower_case}
    if max_seq_length is not None:
        bert["max_seq_length"] = max_seq_length
    _write_json(folder / "sentence_bert_config.json", bert)
    extra = {"prompts": prompts or {}, "default_prompt_name": default_prompt_name,
             "similarity_fn_name": "cosine"}
    _write_json(folder / "config_sentence_transformers.json", extra)
    return folder


def _decoder_tokenizer(padding_side):
    """A small cased WordPiece tokenizer that appends an end-of-text token, as
    Qwen3-Embedding's does (no begin token, the pad token is the end token)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    upper = [c.upper() for c in letters]
    digits = [str(d) for d in range(10)]
    punct = list(".,!?;:'\"()-")
    pieces = ["##" + c for c in letters + upper + digits]
    vocab = ["<|endoftext|>", "<unk>"] + letters + upper + digits + punct + pieces
    vocab += [w for w in dict.fromkeys(list(TINY_WORDS) + ["Instruct", "Given", "Query", "query"])
              if w not in vocab]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    eos = vocab.index("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A <|endoftext|>", pair="$A <|endoftext|> $B <|endoftext|>",
        special_tokens=[("<|endoftext|>", eos)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        unk_token="<unk>", padding_side=padding_side, model_max_length=128,
    ), len(vocab), eos


def make_tiny_decoder(path, architecture="qwen3", *, padding_side="left", seed=0):
    """A tiny seeded decoder (Qwen3 or Qwen2) with its tokenizer, saved to ``path``."""
    import torch

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer, vocab_size, eos = _decoder_tokenizer(padding_side)
    common = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        eos_token_id=eos, pad_token_id=eos, bos_token_id=None, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    if architecture == "qwen3":
        from transformers import Qwen3Config, Qwen3Model

        model = Qwen3Model(Qwen3Config(head_dim=8, **common))
    else:
        from transformers import Qwen2Config, Qwen2Model

        model = Qwen2Model(Qwen2Config(**common))
    model.eval()
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def make_tiny_modernbert(path, *, seed=0):
    """A tiny seeded ModernBERT with the tiny WordPiece vocabulary, saved to ``path``."""
    import torch
    from transformers import ModernBertConfig, ModernBertModel

    path = Path(path)
    make_tiny_model(path, "bert", seed=seed)  # the tokenizer (weights overwritten below)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = tokenizer.convert_tokens_to_ids
    config = ModernBertConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=128, global_attn_every_n_layers=2,
        local_attention=16, pad_token_id=ids("[PAD]"), cls_token_id=ids("[CLS]"),
        sep_token_id=ids("[SEP]"), bos_token_id=ids("[CLS]"), eos_token_id=ids("[SEP]"),
    )
    torch.manual_seed(seed)
    model = ModernBertModel(config).eval()
    for name in os.listdir(path):
        if name.endswith(".safetensors"):
            os.remove(path / name)
    model.save_pretrained(path, safe_serialization=True)
    return path


BGE_QUERY = "Represent this sentence for searching relevant passages: "
QWEN_QUERY = "Instruct: Given a web search query, retrieve relevant passages\nQuery:"

#: name -> (builder, ST files). One per configuration style.
FAMILIES = {
    # BAAI/bge-*-en-v1.5: BERT, CLS pooling, normalised, a query instruction.
    "bge": (
        lambda p: make_tiny_model(p, "bert", seed=1),
        dict(pooling="cls", normalize=True, prompts={"query": BGE_QUERY}, max_seq_length=48),
    ),
    # intfloat/multilingual-e5-*: XLM-R (here RoBERTa), mean pooling,
    # normalised, "query: " / "passage: " prefixes.
    "e5": (
        lambda p: make_tiny_model(p, "roberta", seed=2),
        dict(pooling="mean", normalize=True,
             prompts={"query": "query: ", "passage": "passage: "}, max_seq_length=64),
    ),
    # Alibaba-NLP/gte-modernbert-base: ModernBERT, CLS pooling, normalised.
    "gte": (
        lambda p: make_tiny_modernbert(p, seed=3),
        dict(pooling="cls", normalize=True, max_seq_length=64),
    ),
    # nomic-ai/nomic-embed-text-v1.5: mean pooling, task prefixes (a default
    # prompt here, so that default_prompt_name is exercised), normalised.
    "nomic": (
        lambda p: make_tiny_model(p, "bert", seed=4),
        dict(pooling="mean", normalize=True, max_seq_length=64,
             prompts={"search_query": "search_query: ", "search_document": "search_document: "},
             default_prompt_name="search_document"),
    ),
    # Qwen/Qwen3-Embedding-*: decoder, last-token pooling, left padding,
    # an instruction for queries, normalised.
    "qwen3": (
        lambda p: make_tiny_decoder(p, "qwen3", padding_side="left", seed=5),
        dict(pooling="lasttoken", normalize=True, prompts={"query": QWEN_QUERY, "document": ""},
             max_seq_length=96),
    ),
    # SGPT-style decoder: position-weighted mean, right padding, not normalised.
    "sgpt": (
        lambda p: make_tiny_decoder(p, "qwen2", padding_side="right", seed=6),
        dict(pooling="weightedmean", normalize=False, max_seq_length=96),
    ),
    # INSTRUCTOR-style: the prompt is left out of the pooling
    # (include_prompt=False), in the format sentence-transformers 6 saves.
    "instructor": (
        lambda p: make_tiny_model(p, "bert", seed=7),
        dict(pooling="mean_sqrt_len_tokens", normalize=False, include_prompt=False,
             prompts={"query": "represent the question for retrieval: "},
             default_prompt_name="query", new_format=True),
    ),
}


@pytest.fixture(scope="session")
def st_models(tmp_path_factory):
    """Folders of the tiny embedding models, built once (lazily, per family)."""
    built = {}

    def get(name):
        if name not in built:
            builder, files = FAMILIES[name]
            folder = builder(tmp_path_factory.mktemp(f"st-{name}"))
            from transformers import AutoConfig

            dim = AutoConfig.from_pretrained(folder).hidden_size
            built[name] = str(write_st_files(folder, dim=dim, **files))
        return built[name]

    return get


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _st_encode(folder, texts, **kwargs):
    model = st.SentenceTransformer(folder, device="cpu")
    return model.encode(texts, batch_size=3, convert_to_numpy=True, **kwargs)


def _skbert(folder, texts, **params):
    vec = BertVectorizer(
        folder, pooling="auto", normalize="auto", max_length="auto", device="cpu",
        max_batch_tokens=64, **params,
    )
    return vec, vec.fit_transform(texts)


# ---------------------------------------------------------------- equality
CASES = [
    ("bge", None),
    ("bge", "query"),
    ("e5", "query"),
    ("e5", "passage"),
    ("gte", None),
    ("nomic", None),  # the model's default prompt
    ("nomic", "search_query"),
    ("qwen3", "query"),
    ("qwen3", "document"),
    ("sgpt", None),
    ("instructor", None),  # default prompt, excluded from the pooling
]


@pytest.mark.parametrize("family, prompt_name", CASES)
def test_equals_sentence_transformers_encode(st_models, family, prompt_name):
    folder = st_models(family)
    kwargs = {} if prompt_name is None else {"prompt_name": prompt_name}
    want = _st_encode(folder, TEXTS, **kwargs)
    vec, got = _skbert(folder, TEXTS, **kwargs)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # A literal prompt equal to the named one gives the same vectors.
    if prompt_name is not None:
        prompt = st.SentenceTransformer(folder, device="cpu").prompts[prompt_name]
        _, literal = _skbert(folder, TEXTS, prompt=prompt)
        np.testing.assert_array_equal(literal, got)


def test_resolved_settings_are_fitted_attributes(st_models):
    vec, _ = _skbert(st_models("qwen3"), ["a"], prompt_name="query")
    assert (vec.pooling_, vec.normalize_, vec.max_length_) == ("last_token", True, 96)
    assert vec.prompt_ == QWEN_QUERY and vec.prompt_tokens_excluded_ == 0
    assert vec.get_params()["pooling"] == "auto"  # the parameter is left as given
    vec, _ = _skbert(st_models("bge"), ["a"])
    assert (vec.pooling_, vec.normalize_, vec.max_length_, vec.prompt_) == ("cls", True, 48, "")
    vec, _ = _skbert(st_models("instructor"), ["a"])
    assert vec.pooling_ == "mean_sqrt_len" and vec.normalize_ is False
    # [CLS] + the prompt's tokens, as sentence-transformers counts them.
    model = st.SentenceTransformer(st_models("instructor"), device="cpu")
    assert vec.prompt_tokens_excluded_ == model[0]._get_prompt_length(vec.prompt_)
    assert vec.prompt_tokens_excluded_ > 1


def test_explicit_settings_override_the_model(st_models):
    folder = st_models("bge")
    vec = BertVectorizer(folder, pooling="mean", normalize=False, max_length=20, device="cpu")
    X = vec.fit_transform(TEXTS[:3])
    assert (vec.pooling_, vec.normalize_, vec.max_length_) == ("mean", False, 20)
    want = _st_encode(folder, TEXTS[:3], output_value="token_embeddings")
    # mean of the token vectors sentence-transformers returns (max_length differs
    # only for texts longer than 20 tokens; these are shorter)
    np.testing.assert_allclose(X, np.stack([t.numpy().mean(0) for t in want]), atol=1e-5)


def test_auto_without_sentence_transformers_files_is_the_default(tiny_model, texts):
    auto = BertVectorizer(tiny_model, pooling="auto", normalize="auto", max_length="auto")
    plain = BertVectorizer(tiny_model, pooling="mean", normalize=False, max_length=None)
    np.testing.assert_array_equal(auto.fit_transform(texts), plain.fit_transform(texts))
    assert (auto.pooling_, auto.normalize_, auto.max_length_, auto.prompt_) == (
        "mean", False, plain.max_length_, "")


def test_default_prompt_can_be_switched_off(st_models):
    folder = st_models("nomic")
    vec = BertVectorizer(folder, prompt="", device="cpu").fit(["x"])
    assert vec.prompt_ == ""
    want = _st_encode(folder, TEXTS, prompt="")
    got = BertVectorizer(folder, prompt="", normalize="auto", device="cpu").fit_transform(TEXTS)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_prompt_errors(st_models, tiny_model):
    folder = st_models("e5")
    with pytest.raises(ValueError, match=r"prompt_name='question' is not one of .*'query', 'passage'"):
        BertVectorizer(folder, prompt_name="question").fit(["x"])
    with pytest.raises(ValueError, match="either prompt=.* or prompt_name=.*not both"):
        BertVectorizer(folder, prompt="q: ", prompt_name="query").fit(["x"])
    with pytest.raises(ValueError, match="holds: none"):
        BertVectorizer(tiny_model, prompt_name="query").fit(["x"])
    with pytest.raises(ValueError, match="cannot be combined with long_text='chunk'"):
        BertVectorizer(folder, prompt_name="query", long_text="chunk").fit(["x"])


def test_prompt_is_a_grid_searchable_hyperparameter(st_models):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    texts = [f"{w} movie" for w in TINY_WORDS[40:70]]
    y = np.arange(len(texts)) % 2
    pipe = Pipeline([("bert", BertVectorizer(st_models("e5"), device="cpu")),
                     ("clf", LogisticRegression())])
    grid = {"bert__prompt_name": ["query", "passage"], "bert__prompt": [None]}
    search = GridSearchCV(pipe, grid, cv=2).fit(texts, y)
    assert search.best_params_["bert__prompt_name"] in ("query", "passage")


def test_unsupported_module_raises_unless_warn_is_asked(tmp_path):
    folder = make_tiny_model(tmp_path / "dense", "bert")
    write_st_files(folder, dim=32, pooling="cls", normalize=True,
                   extra_modules=["sentence_transformers.models.Dense"])
    from skbert.exceptions import ModelConfigWarning

    # A Dense module without its configuration: never silently left out,
    # whether the pooling is the model's own or not.
    for params in ({"normalize": "auto"}, {"pooling": "cls", "normalize": False}):
        with pytest.raises(ValueError, match=r"Dense \(2_X\): its config.json lacks"):
            BertVectorizer(folder, **params).fit(["x"])
    with pytest.warns(ModelConfigWarning, match="Dense"):
        vec = BertVectorizer(folder, normalize="auto", on_unsupported="warn").fit(["x"])
    assert (vec.pooling_, vec.normalize_, vec.dense_layers_) == ("cls", True, 0)


# --------------------------------------------------------------- the cache
def test_prompt_changes_the_cache_key(st_models, tmp_path):
    from skbert._model.backend import forward_counts

    folder = st_models("e5")
    texts = TEXTS[:4]
    params = dict(memory=tmp_path, device="cpu", normalize="auto")

    def run(**kw):
        before = forward_counts()["texts"]
        vec = BertVectorizer(folder, **params, **kw)
        X = vec.fit_transform(texts)
        return X, forward_counts()["texts"] - before, vec.last_cache_stats_

    q_cold, n_cold, _ = run(prompt_name="query")
    assert n_cold == len(texts)
    p_cold, n_p, stats_p = run(prompt_name="passage")
    # Another prompt: other texts for the model, no stale hit.
    assert n_p == len(texts) and stats_p["hits"] == 0
    assert not np.allclose(q_cold, p_cold)
    np.testing.assert_allclose(p_cold, _st_encode(folder, texts, prompt_name="passage"), atol=1e-5)
    # Warm: the same prompt (named or literal) runs no model and gives the same vectors.
    q_warm, n_warm, stats_w = run(prompt_name="query")
    assert n_warm == 0 and stats_w["hits"] == len(texts)
    np.testing.assert_array_equal(q_warm, q_cold)
    q_lit, n_lit, _ = run(prompt="query: ")
    assert n_lit == 0
    np.testing.assert_array_equal(q_lit, q_cold)


def test_excluded_prompt_is_keyed_apart(st_models, tmp_path):
    """With include_prompt=False the statistics leave the prompt out: the same
    model input with the prompt written into the text is another entry."""
    from skbert._model.backend import forward_counts

    folder = st_models("instructor")
    prompt = "represent the question for retrieval: "
    texts = ["the movie was good", "a cat"]
    cached = BertVectorizer(folder, memory=tmp_path, device="cpu").fit_transform(texts)
    before = forward_counts()["texts"]
    inline = BertVectorizer(folder, prompt="", memory=tmp_path, device="cpu").fit_transform(
        [prompt + t for t in texts]
    )
    assert forward_counts()["texts"] - before == len(texts)  # not read from the other entries
    assert not np.allclose(inline, cached)
    np.testing.assert_allclose(
        inline, _st_encode(folder, [prompt + t for t in texts], prompt=""), atol=1e-5
    )
    np.testing.assert_allclose(cached, _st_encode(folder, texts), atol=1e-5)


@pytest.mark.parametrize("pooling", ["last_token", "weighted_mean", "mean_sqrt_len"])
def test_new_poolings_through_the_cache(st_models, tmp_path, pooling):
    """The new statistics are a cache entry kind of their own, added on demand."""
    from skbert._model.backend import forward_counts

    folder = st_models("qwen3")
    uncached = BertVectorizer(folder, pooling=pooling, layers="all", device="cpu").fit_transform(TEXTS)
    BertVectorizer(folder, pooling="mean", memory=tmp_path, device="cpu").fit_transform(TEXTS)
    before = forward_counts()["texts"]
    cold = BertVectorizer(folder, pooling=pooling, layers="all", memory=tmp_path,
                          device="cpu").fit_transform(TEXTS)
    middle = forward_counts()["texts"]
    warm = BertVectorizer(folder, pooling=pooling, layers="all", memory=tmp_path,
                          device="cpu").fit_transform(TEXTS)
    assert middle - before == len(set(TEXTS))  # the "pos" kind was missing
    assert forward_counts()["texts"] == middle
    np.testing.assert_array_equal(cold, uncached)
    np.testing.assert_array_equal(warm, uncached)


# ------------------------------------------------------- padding and layers
@pytest.mark.parametrize("family", ["qwen3", "sgpt"])
def test_padding_side_does_not_change_features(st_models, family):
    """A text alone or in a padded batch (left or right) gets the same vector."""
    folder = st_models(family)
    for pooling in ("cls", "mean", "max", "last_token", "weighted_mean", "mean_sqrt_len"):
        vec = BertVectorizer(folder, pooling=pooling, layers=[1, 2], device="cpu")
        batched = vec.fit_transform(TEXTS)
        alone = np.vstack([vec.transform([t]) for t in TEXTS])
        np.testing.assert_allclose(batched, alone, atol=1e-5, err_msg=pooling)


def test_last_token_is_the_last_real_token(st_models):
    """Left padding: the last position is real; right padding: it is not."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    for family in ("qwen3", "sgpt"):
        folder = st_models(family)
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModel.from_pretrained(folder).eval()
        want = []
        for text in TEXTS[:4]:
            enc = tok([text], return_tensors="pt")
            with torch.inference_mode():
                want.append(model(**enc).last_hidden_state[0, -1].numpy())
        got = BertVectorizer(folder, pooling="last_token", device="cpu").fit_transform(TEXTS[:4])
        np.testing.assert_allclose(got, np.stack(want), atol=1e-5)


@pytest.mark.parametrize("family", ["qwen3", "gte"])
def test_intermediate_layers_of_models_with_a_final_norm(st_models, family):
    """Early exit must not put the final norm on an intermediate layer."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = st_models(family)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    enc = tok(TEXTS[:3], return_tensors="pt", padding=True)
    with torch.inference_mode():
        hidden = model(**enc, output_hidden_states=True).hidden_states
    mask = enc["attention_mask"].unsqueeze(-1).float()
    for layer in range(len(hidden)):
        want = ((hidden[layer] * mask).sum(1) / mask.sum(1)).numpy()
        got = BertVectorizer(folder, layers=layer, pooling="mean", device="cpu",
                             prompt="").fit_transform(TEXTS[:3])
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"layer {layer}")


# ---------------------------------------------------------------- MiniLM
@pytest.mark.integration
def test_minilm_auto_equals_sentence_transformers(minilm_path):
    texts = TEXTS + ["Stocks fell sharply on Monday as investors worried about rates."]
    want = st.SentenceTransformer(minilm_path, device="cpu").encode(texts, batch_size=2)
    vec = BertVectorizer(pooling="auto", normalize="auto", max_length="auto")
    got = vec.fit_transform(texts)
    assert (vec.pooling_, vec.normalize_, vec.max_length_, vec.prompt_) == ("mean", True, 256, "")
    np.testing.assert_allclose(got, want, atol=1e-5)
    # The default stays unnormalised mean pooling at up to 512 tokens.
    default = BertVectorizer().fit(["x"])
    assert (default.pooling_, default.normalize_, default.max_length_) == ("mean", False, 512)
