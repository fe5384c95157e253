"""A lean forward pass for BERT-family encoders: the model's own modules, tokens packed.

Feature extraction needs only the hidden states of a few layers. transformers'
generic forward costs about a millisecond of Python per layer call (attention
mask construction, output recording hooks, keyword plumbing) and computes every
padded position. For the architectures listed in :data:`LEAN_MODEL_TYPES` this
module runs the same computation directly:

- the model's own embedding module on the padded batch;
- then, per transformer layer, its own ``nn.Linear`` / ``LayerNorm`` /
  activation modules on the *packed* real tokens only (``(n_tokens, hidden)``,
  no padding rows, their count rounded up to a multiple of 16 on the CPU),
  so the matrix multiplies - almost all of the time - do no wasted work;
- attention of the texts of each distinct length together, on the
  ``(texts, heads, length, head_size)`` layout with no padding at all: the
  formula of transformers' eager attention for short texts, PyTorch's fused
  attention for long ones (variable-length attention on the packed rows on a
  GPU in reduced precision). No text's attention sums over another text's
  padding, so on the CPU a text's hidden states are bitwise the same whatever
  texts share its batch (the matrix multiplies of packed rows are row by row).

Calling the modules (rather than reading their weights) keeps backends that
replace them working: dynamic int8 swaps ``nn.Linear`` for a quantised module.
Plain float32 linear layers on the CPU can instead run oneDNN's kernel
(``onednn=True``), which on CPUs where the BLAS lacks an AVX-512 path is more
than twice as fast; the exact GELU is then fused into it.
Outputs equal transformers' forward within float32 rounding (tests compare them
to 1e-5 for every type in :data:`LEAN_MODEL_TYPES`); hidden states at padded positions are
zero instead of transformers' unused values, and pooling never reads them.

Everything else - other architectures, attention maps for attention pooling -
goes through transformers' forward (see :meth:`skbert._model.backend.LoadedModel.hidden_states`).
"""

from typing import NamedTuple

__all__ = [
    "LEAN_MODEL_TYPES",
    "lean_layers",
    "lean_hidden_states",
    "onednn_linear_available",
    "varlen_attention_for",
    "reference_varlen_attention",
    "fuse_qkv",
]

#: ``config.model_type`` values whose encoders the lean pass runs.
LEAN_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "distilbert")


#: Up to this padded length attention is two matrix multiplies and a softmax
#: (the fastest for short texts on the CPU); longer batches use PyTorch's fused
#: ``scaled_dot_product_attention``, which never builds the length x length
#: scores (1.2-1.6x faster at 512 tokens).
MATMUL_ATTENTION_MAX_LENGTH = 64


class LayerParts(NamedTuple):
    """The modules of one post-LayerNorm transformer layer, in order of use."""

    query: object
    key: object
    value: object
    attention_output: object
    attention_norm: object
    ffn_input: object
    activation: object
    ffn_output: object
    output_norm: object
    n_heads: int
    scaling: float
    #: Some linear module is a plain float32 ``nn.Linear`` (not, say, int8).
    plain: bool = False
    #: The activation is the exact (erf) GELU, which oneDNN can fuse.
    exact_gelu: bool = False
    #: ``(weight, bias)`` of query, key and value stacked into one projection
    #: (see :func:`fuse_qkv`), or None.
    qkv: object = None


def _describe(parts):
    """Fill in :attr:`LayerParts.plain` and :attr:`LayerParts.exact_gelu`."""
    import torch

    linears = (parts.query, parts.key, parts.value, parts.attention_output,
               parts.ffn_input, parts.ffn_output)
    plain = any(_is_plain(m) for m in linears)
    act = parts.activation
    exact_gelu = (
        type(act).__name__ == "GELUActivation" and getattr(act, "act", None) is torch.nn.functional.gelu
    ) or type(act) is torch.nn.GELU and getattr(act, "approximate", "none") == "none"
    return parts._replace(plain=plain, exact_gelu=exact_gelu)


def _bert_parts(layer):
    attention = layer.attention.self
    n_heads = int(attention.num_attention_heads)
    head_size = int(attention.attention_head_size)
    return LayerParts(
        attention.query,
        attention.key,
        attention.value,
        layer.attention.output.dense,
        layer.attention.output.LayerNorm,
        layer.intermediate.dense,
        layer.intermediate.intermediate_act_fn,
        layer.output.dense,
        layer.output.LayerNorm,
        n_heads,
        float(getattr(attention, "scaling", head_size**-0.5)),
    )


def _distilbert_parts(layer):
    attention = layer.attention
    n_heads = int(attention.n_heads)
    head_size = int(attention.dim) // n_heads
    return LayerParts(
        attention.q_lin,
        attention.k_lin,
        attention.v_lin,
        attention.out_lin,
        layer.sa_layer_norm,
        layer.ffn.lin1,
        layer.ffn.activation,
        layer.ffn.lin2,
        layer.output_layer_norm,
        n_heads,
        float(getattr(attention, "scaling", head_size**-0.5)),
    )


def lean_layers(model):
    """The :class:`LayerParts` of every layer of ``model``, or None if unsupported.

    Supported: encoder-only models of the types in :data:`LEAN_MODEL_TYPES`
    with absolute position embeddings, no cross-attention and the standard
    layer layout. Anything else returns None and runs through transformers.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in LEAN_MODEL_TYPES:
        return None
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return None
    if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
        return None
    if model_type == "distilbert" and getattr(config, "sinusoidal_pos_embds", False):
        # Fixed sinusoidal tables are still looked up by the embedding module,
        # so they would work; kept on the reference path until tested.
        return None
    try:
        if model_type == "distilbert":
            layers = model.transformer.layer
            parts = [_distilbert_parts(layer) for layer in layers]
        else:
            layers = model.encoder.layer
            parts = [_bert_parts(layer) for layer in layers]
    except AttributeError:
        return None
    return [_describe(p) for p in parts]


def fuse_qkv(parts):
    """``parts`` with the query, key and value projections stacked into one.

    Only where all three are plain ``nn.Linear`` modules of one dtype (so
    not int8); the stacked weights are a copy, used by the reduced-precision
    pass: one matrix multiply instead of three.
    """
    import torch

    out = []
    for p in parts:
        mods = (p.query, p.key, p.value)
        if not all(type(m) is torch.nn.Linear and m.bias is not None for m in mods) or len(
            {m.weight.dtype for m in mods}
        ) != 1:
            out.append(p)
            continue
        with torch.no_grad():
            weight = torch.cat([m.weight for m in mods]).detach()
            bias = torch.cat([m.bias for m in mods]).detach()
        out.append(p._replace(qkv=(weight, bias)))
    return out


_ONEDNN_OK = None


def onednn_linear_available():
    """Whether torch's oneDNN float32 linear kernel runs here and agrees with ``F.linear``.

    On the CPU, ``torch.nn.functional.linear`` calls the BLAS (MKL), which on
    some CPUs (AMD Zen, where MKL takes its AVX2 path) reaches less than half
    of the float32 throughput that oneDNN's AVX-512 kernels reach. The check
    runs once per process; any error or disagreement beyond float32 rounding
    turns the kernel off.
    """
    global _ONEDNN_OK
    if _ONEDNN_OK is None:
        _ONEDNN_OK = _check_onednn()
    return _ONEDNN_OK


def _check_onednn():
    import torch

    if not torch.backends.mkldnn.is_available():
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(5, 3, 16, generator=gen)
        w = torch.randn(24, 16, generator=gen)
        b = torch.randn(24, generator=gen)
        with torch.inference_mode():
            plain = _onednn_linear(x, w, b)
            gelu = _onednn_linear(x, w, b, gelu=True)
            want = torch.nn.functional.linear(x, w, b)
        return bool(
            torch.allclose(plain, want, rtol=1e-5, atol=1e-5)
            and torch.allclose(gelu, torch.nn.functional.gelu(want), rtol=1e-5, atol=1e-5)
        )
    except Exception:  # noqa: BLE001 - any failure means "use F.linear"
        return False


def _onednn_linear(x, weight, bias, *, gelu=False):
    import torch

    if gelu:  # exact (erf) GELU fused into the kernel
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "none")
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _embed(model, inputs):
    if model.config.model_type == "distilbert":
        return model.embeddings(input_ids=inputs["input_ids"])
    kwargs = {"input_ids": inputs["input_ids"]}
    if "token_type_ids" in inputs:
        kwargs["token_type_ids"] = inputs["token_type_ids"]
    return model.embeddings(**kwargs)


#: On the CPU, packed rows are padded to a multiple of this many (with copies
#: of the first token, computed and dropped), so that a corpus produces few
#: distinct matrix shapes: oneDNN caches one kernel per shape (and rebuilds
#: them when more shapes than its cache holds come by), and the allocator
#: reuses its blocks. Without it, 100,000 short texts left about 400 MiB of
#: such state behind and ran slower; the cost is under 1 % more rows.
ROW_BUCKET = 16


class _Packing:
    """Where a padded batch's real tokens are, and the packed rows' order.

    Packed rows are the real tokens in order, then ``rows - n`` copies of the
    first one up to a multiple of :data:`ROW_BUCKET`. ``real_index`` (a CPU
    tensor of the real tokens' flat positions, row by row) spares reading the
    mask back from an accelerator; without it the mask is read.
    """

    def __init__(self, mask, real_index=None):
        import torch

        self.batch, self.length = mask.shape
        self.device = mask.device
        if real_index is not None:
            real_index = real_index.to(torch.int64)
            full = int(real_index.numel()) == self.batch * self.length
            index = real_index.to(mask.device, non_blocking=True)
            #: Real tokens per text, on the CPU (for variable-length attention).
            self._counts = torch.bincount(real_index // self.length, minlength=self.batch)
        else:
            real = mask.reshape(-1) != 0
            full = bool(real.all())
            if full:
                index = torch.arange(self.batch * self.length, device=mask.device)
            else:
                index = real.nonzero().squeeze(1)
            self._counts = None
            self._mask = mask
        self.n = int(index.numel())
        bucket = ROW_BUCKET if mask.device.type == "cpu" else 1
        rows = -(-self.n // bucket) * bucket
        #: Packed rows are exactly the flattened padded batch (nothing to move).
        self.identity = full and rows == self.n
        self.index = index
        if rows > self.n:
            index = torch.cat([index, index[:1].expand(rows - self.n)])
        self.gather_index = index
        self._cu = None
        self._groups = None

    def pack(self, x):
        """``(batch * length, d)`` -> packed ``(rows, d)``."""
        return x if self.identity else x.index_select(0, self.gather_index)

    def unpack(self, x):
        """Packed ``(rows, d)`` -> ``(batch * length, d)``, zero at padding."""
        if self.identity:
            return x
        full = x.new_zeros(self.batch * self.length, x.shape[1])
        return full.index_copy_(0, self.index, x[: self.n])

    def lengths(self):
        """Real tokens of each text, a CPU int64 tensor."""
        if self._counts is None:
            self._counts = self._mask.sum(dim=1).cpu().to(dtype=self.index.dtype)
        return self._counts

    def groups(self):
        """``[(length, rows)]``: the texts of each distinct length and their
        packed rows, ``rows`` a ``(texts * length,)`` index on the batch's
        device, texts in batch order (computed once per batch)."""
        import torch

        if self._groups is None:
            counts = self.lengths()
            starts = torch.cumsum(counts, 0) - counts
            self._groups = []
            for length in torch.unique(counts).tolist():
                if length == 0:
                    continue
                first = starts[counts == length]
                rows = (first[:, None] + torch.arange(length)).reshape(-1)
                self._groups.append((int(length), rows.to(self.device, non_blocking=True)))
        return self._groups

    def sequences(self):
        """``(cu_seqlens, longest)``: int32 offsets of each text's packed rows
        (on the batch's device) and the longest text, for variable-length attention."""
        import torch

        if self._cu is None:
            counts = self.lengths()
            cu = torch.zeros(self.batch + 1, dtype=torch.int32)
            cu[1:] = torch.cumsum(counts, 0)
            self._cu = (cu.to(self.device, non_blocking=True), int(counts.max()))
        return self._cu


# ------------------------------------------------------ variable-length attention
_VARLEN_OK = {}


def varlen_attention_for(device, dtype):
    """PyTorch's variable-length attention for tensors on ``device`` in ``dtype``, or None.

    It attends each text's packed rows among themselves (flash attention on
    ``cu_seqlens``), so the packed rows never go back to the padded layout.
    Only CUDA in float16/bfloat16 has the kernel; its result is checked once
    per device and dtype against ``scaled_dot_product_attention``, and any
    error or disagreement turns it off (the padded path runs instead).
    """
    import torch

    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
        return None
    key = (str(device), dtype)
    if key not in _VARLEN_OK:
        _VARLEN_OK[key] = _check_varlen(device, dtype)
    return _varlen_attention if _VARLEN_OK[key] else None


def _varlen_attention(q, k, v, cu_seqlens, longest, scaling):
    """``q, k, v``: packed ``(rows, heads, head_size)``; returns the same shape."""
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn(q, k, v, cu_seqlens, cu_seqlens, longest, longest, scale=scaling)


def reference_varlen_attention(q, k, v, cu_seqlens, longest, scaling):
    """:func:`_varlen_attention` by its definition: each text attended alone.

    Rows past the last text (bucket padding) come back as zeros.
    """
    import torch

    out = torch.zeros_like(q)
    cu = [int(c) for c in cu_seqlens.cpu()]
    for start, stop in zip(cu[:-1], cu[1:]):
        if stop > start:
            qq, kk, vv = (x[start:stop].transpose(0, 1) for x in (q, k, v))
            att = torch.nn.functional.scaled_dot_product_attention(qq, kk, vv, scale=scaling)
            out[start:stop] = att.transpose(0, 1)
    return out


def _check_varlen(device, dtype):
    import torch

    try:
        gen = torch.Generator().manual_seed(0)
        # Views of one stacked projection, as the reduced-precision pass makes them.
        qkv = torch.randn(8, 96, generator=gen).to(device, dtype)
        q, k, v = (x.view(8, 2, 16) for x in qkv.split(32, dim=1))
        cu = torch.tensor([0, 5, 8], dtype=torch.int32, device=device)
        got = _varlen_attention(q, k, v, cu, 5, 0.25)
        want = reference_varlen_attention(q.float(), k.float(), v.float(), cu, 5, 0.25)
        return bool(torch.allclose(got.float(), want, rtol=2e-2, atol=2e-2))
    except Exception:  # noqa: BLE001 - any failure means "use the padded path"
        return False


def _attention(q, k, v, *, packing, n_heads, scaling):
    """Multi-head attention of packed ``q, k, v`` (``(rows, hidden)``) rows.

    On a GPU in reduced precision, variable-length attention on the packed
    rows (:func:`varlen_attention_for`). Otherwise the texts of each distinct
    length are attended together with no padding at all
    (:func:`_dense_attention`): a text's attention then never sums over
    another text's padding, so its vector does not depend on which texts
    share its batch (bitwise on the CPU; see the caching guide).
    """
    import torch

    hidden = q.shape[-1]
    varlen = varlen_attention_for(q.device, q.dtype)
    if varlen is not None:
        rows, head = q.shape[0], hidden // n_heads
        cu_seqlens, longest = packing.sequences()
        context = varlen(
            q.view(rows, n_heads, head), k.view(rows, n_heads, head),
            v.view(rows, n_heads, head), cu_seqlens, longest, scaling,
        )
        return context.reshape(rows, hidden)
    qkv = torch.cat((q, k, v), dim=1)
    groups = packing.groups()
    if len(groups) == 1 and packing.n == packing.batch * groups[0][0]:
        # One length, no padding: the packed rows are the batch itself.
        length = groups[0][0]
        context = _dense_attention(qkv[: packing.n], packing.batch, length, n_heads, scaling)
        if qkv.shape[0] == packing.n:
            return context
        out = q.new_zeros(q.shape)
        out[: packing.n] = context
        return out
    out = q.new_zeros(q.shape)
    for length, rows in groups:
        part = qkv.index_select(0, rows)
        out.index_copy_(0, rows, _dense_attention(part, rows.numel() // length, length,
                                                  n_heads, scaling))
    return out


def _dense_attention(qkv, batch, length, n_heads, scaling):
    """Attention of ``batch`` texts of ``length`` tokens each, no padding.

    ``qkv``: ``(batch * length, 3 * hidden)``; returns ``(batch * length, hidden)``.
    """
    import torch

    hidden = qkv.shape[1] // 3
    # Contiguous (batch, heads, length, head_size) copies: the matrix multiplies
    # then see the same layout for one text as for many (a view of one text
    # takes another kernel path, with other rounding).
    qkv = qkv.view(batch, length, 3, n_heads, hidden // n_heads).permute(2, 0, 3, 1, 4)
    q, k, v = (x.contiguous() for x in (qkv[0], qkv[1], qkv[2]))
    if length > MATMUL_ATTENTION_MAX_LENGTH:
        context = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scaling)
    else:
        scores = torch.matmul(q, k.transpose(-1, -2)) * scaling
        # The softmax in float32 whatever the compute dtype, as autocast runs it.
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
        context = torch.matmul(probs, v)
    return context.transpose(1, 2).reshape(batch * length, hidden)


def _is_plain(module):
    import torch

    return type(module) is torch.nn.Linear and module.weight.dtype == torch.float32


def _layer(parts, h, packing, onednn=False, compute_dtype=None):
    """One post-LayerNorm transformer layer on packed rows ``h``.

    With ``compute_dtype`` (the linear weights already converted to it), each
    linear input is cast to it; the residual stream and the LayerNorms stay
    float32 (a reduced-precision output plus a float32 residual is float32).
    There ``onednn`` fuses the exact GELU into the first feed-forward
    projection (bfloat16 on the CPU).
    """
    if compute_dtype is not None:
        import torch

        hd = h.to(compute_dtype)  # cast once for the three projections
        if parts.qkv is not None:
            qkv = torch.nn.functional.linear(hd, *parts.qkv)
            q, k, v = qkv.split(qkv.shape[1] // 3, dim=1)
        else:
            q, k, v = parts.query(hd), parts.key(hd), parts.value(hd)
        context = _attention(q, k, v, packing=packing, n_heads=parts.n_heads,
                             scaling=parts.scaling)
        a = parts.attention_norm(parts.attention_output(context.to(compute_dtype)) + h)
        ad = a.to(compute_dtype)
        module = parts.ffn_input
        if onednn and parts.exact_gelu and type(module) is torch.nn.Linear:
            ffn = _onednn_linear(ad, module.weight, module.bias, gelu=True)  # GELU fused
        else:
            ffn = parts.activation(module(ad))
        return parts.output_norm(parts.ffn_output(ffn) + a)
    if onednn:

        def linear(module, x):
            if _is_plain(module):
                return _onednn_linear(x, module.weight, module.bias)
            return module(x)

        def ffn_input(x):
            module = parts.ffn_input
            if parts.exact_gelu and _is_plain(module):
                return _onednn_linear(x, module.weight, module.bias, gelu=True)
            return parts.activation(linear(module, x))
    else:

        def linear(module, x):
            return module(x)

        def ffn_input(x):
            return parts.activation(parts.ffn_input(x))

    context = _attention(
        linear(parts.query, h), linear(parts.key, h), linear(parts.value, h),
        packing=packing, n_heads=parts.n_heads, scaling=parts.scaling,
    )
    a = parts.attention_norm(linear(parts.attention_output, context) + h)
    return parts.output_norm(linear(parts.ffn_output, ffn_input(a)) + a)


def lean_hidden_states(
    model, parts, inputs, layers, *, onednn=False, compute_dtype=None, real_index=None
):
    """Hidden states ``layers`` of ``model`` for one padded batch.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        In eval mode; :func:`lean_layers` returned ``parts`` for it.
    parts : list of LayerParts
    inputs : dict of tensors
        ``input_ids``, ``attention_mask`` (and ``token_type_ids``), padded.
    layers : list of int
        Hidden-state indices (0 = embedding output); only the layers up to
        the deepest one run.
    onednn : bool, default=False
        Run plain float32 linear layers with oneDNN's kernel (CPU only; see
        :func:`onednn_linear_available`), the GELU fused into the first
        feed-forward one.
    compute_dtype : {"float16", "bfloat16"} or None, default=None
        Run the linear layers (and attention) in this dtype; their weights
        must already be converted (see
        :func:`skbert._model.runtime.prepare_precision`). Hidden states are
        returned in float32.
    real_index : CPU tensor of int64, optional
        Flat positions of the real tokens, row by row (see :class:`_Packing`).

    Returns
    -------
    list of tensors of shape (batch, length, hidden), in the order of ``layers``;
    zero at padded positions.
    """
    packing = _Packing(inputs["attention_mask"], real_index)
    batch, length = packing.batch, packing.length
    embedded = _embed(model, inputs)
    hidden = embedded.shape[-1]
    h = packing.pack(embedded.reshape(batch * length, hidden))

    def unpacked(x):
        return packing.unpack(x).view(batch, length, hidden)

    wanted = set(int(i) for i in layers)
    found = {}
    if 0 in wanted:
        found[0] = embedded if packing.identity else unpacked(h)
    dtype = None
    if compute_dtype not in (None, "float32"):
        import torch

        dtype = getattr(torch, compute_dtype)
    for i in range(max(wanted)):
        h = _layer(parts[i], h, packing, onednn=onednn, compute_dtype=dtype)
        if i + 1 in wanted:
            found[i + 1] = unpacked(h)
    return [found[int(i)] for i in layers]
