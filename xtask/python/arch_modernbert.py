"""ModernBERT fixtures (gte-modernbert-base, modernbert-embed-base, ModernBERT rerankers).

Three layers with global (full) and local (sliding-window) attention alternating, a
window of 4 tokens each side so that nearly every STS sentence (9-20 tokens) crosses
it, not only the long texts, and global and local RoPE thetas far apart so that swapping them shows. Fixtures:

- `modernbert_mean_norm`: mean pooling + Normalize, 256 tokens, with the query and
  document prompts of modernbert-embed-base; config.json as transformers 5 writes it
  (`layer_types`, `rope_parameters`).
- `modernbert_cls`: CLS pooling (as gte-modernbert-base), 512 tokens.
- `modernbert_hub_config`: mean pooling over a model whose config.json has the keys
  the Hub's ModernBERT configs have (`global_attn_every_n_layers`,
  `global_rope_theta`, `local_rope_theta`, no `layer_types` / `rope_parameters`), with
  another layer pattern and other thetas than the first, so that a reader that
  ignores either spelling fails one of the two.
- `modernbert_cross_encoder`: ModernBertForSequenceClassification with one label and
  mean pooling in the head (as gte-reranker-modernbert-base).
- `modernbert_cross_encoder_cls`: CLS pooling, and every optional bias switched on
  (attention, MLP, norms, head dense), so that the bias paths are exercised too.
"""

import contextlib
import json
import os

import torch
from transformers import AutoTokenizer, ModernBertConfig, ModernBertForSequenceClassification, ModernBertModel

NORM_NAMES = ("norm",)  # embeddings.norm, attn_norm, mlp_norm, final_norm, head.norm


def spread_keeping_norms(model, std=0.15):
    """Like make_fixtures' `spread`, but ModernBERT's norms (named `norm`, which that
    one would spread like any weight) get scales near 1 (1 + N(0, 0.2)) and small
    biases. Scales drawn around 0 would shrink every normalised input to the
    projections fourfold, leaving attention almost uniform: then neither RoPE's theta
    nor the window would change the outputs much, and a wrong one could pass. Scales
    away from exactly 1 still catch a norm whose weight is never applied.

    Other weights get std 0.15 rather than 0.25: with 0.25, three pre-norm blocks
    amplify bf16 rounding so much that transformers' own bf16 run of the CLS fixture
    reaches only cosine 0.9990 against its f32 output (0.9999 at 0.15), so bf16
    parity at 0.999 would test the fixture's chaos, not an implementation. At 0.15 a
    window one token too wide still changes 48 of the 50 texts beyond cosine 0.99999,
    and swapped thetas 50 (measured when this was written)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.2 * torch.randn_like(p))
                else:
                    p.normal_(0.0, 0.1)
            else:
                p.normal_(0.0, std)
    return model


@contextlib.contextmanager
def norms_kept(ctx):
    """`ctx.save_base` and `ctx.record_cross_encoder` spread the weights with their
    module's `spread`; inside this block they use `spread_keeping_norms` instead."""
    helpers = ctx.save_base.__globals__
    assert helpers is ctx.record_cross_encoder.__globals__
    original = helpers["spread"]
    helpers["spread"] = spread_keeping_norms
    try:
        yield
    finally:
        helpers["spread"] = original


def modernbert_tokenizer(ctx):
    """The BERT WordPiece test tokenizer ([CLS] A [SEP] / [CLS] A [SEP] B [SEP], right
    padding, as ModernBERT's own), with only the inputs ModernBERT takes: its
    tokenizer_config.json names input_ids and attention_mask, no token_type_ids. A
    copy, so the shared tokenizer stays as the other fixtures expect it."""
    path = os.path.join(ctx.work, "modernbert_tokenizer")
    ctx.bert_tok.save_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path, model_input_names=["input_ids", "attention_mask"])
    assert tok.padding_side == "right"
    return tok


def tiny_config(tok, **overrides):
    config = dict(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        global_attn_every_n_layers=2, local_attention=8, max_position_embeddings=512,
        global_rope_theta=1000.0, local_rope_theta=50.0,
        pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
        bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
    )
    config.update(overrides)
    return ModernBertConfig(**config)


def to_hub_config(path):
    """Rewrites config.json the way ModernBERT configs on the Hub spell it
    (transformers 4.48): the layer pattern as `global_attn_every_n_layers` and the
    thetas as `global_rope_theta` / `local_rope_theta`, plus the keys those configs
    carry that nothing reads (`layer_norm_eps`, `reference_compile`,
    `position_embedding_type`). Another pattern (every third layer global: full,
    sliding, sliding), other thetas than the transformers 5 fixtures, and an odd
    `local_attention` (13: 6 tokens each side, the half rounded down)."""
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    del config["layer_types"], config["rope_parameters"]
    config.update(global_attn_every_n_layers=3, global_rope_theta=2000.0, local_rope_theta=20.0, local_attention=13,
                  layer_norm_eps=1e-5, reference_compile=True, position_embedding_type="absolute")
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    reread = ModernBertConfig.from_pretrained(path)
    assert reread.layer_types == ["full_attention", "sliding_attention", "sliding_attention"], reread.layer_types
    assert reread.rope_parameters["full_attention"]["rope_theta"] == 2000.0
    assert reread.rope_parameters["sliding_attention"]["rope_theta"] == 20.0
    assert reread.sliding_window == 6


def check_attention_implementation(path):
    """sentence-transformers loads ModernBERT on the CPU with SDPA; eager attention
    must give the same outputs (else the reference would depend on the kernel)."""
    from sentence_transformers import SentenceTransformer

    texts = ["a short one", " ".join(["Dartboard balances relevance and diversity."] * 12), ""]
    sdpa = SentenceTransformer(path, device="cpu")
    assert sdpa[0].auto_model.config._attn_implementation == "sdpa", sdpa[0].auto_model.config._attn_implementation
    eager = SentenceTransformer(path, device="cpu", model_kwargs={"attn_implementation": "eager"})
    a, b = sdpa.encode(texts, convert_to_tensor=True), eager.encode(texts, convert_to_tensor=True)
    assert torch.isfinite(a).all() and (a - b).abs().max() < 1e-5, (a - b).abs().max()


def make(ctx):
    tok = modernbert_tokenizer(ctx)
    plain = [{}]
    prompts = {"query": "search_query: ", "document": "search_document: "}
    with norms_kept(ctx):
        base = ctx.save_base(ModernBertModel(tiny_config(tok)), tok, ctx.work, "modernbert")
        hub = ctx.save_base(ModernBertModel(tiny_config(tok)), tok, ctx.work, "modernbert_hub")

    path = ctx.record(ctx.out_dir, "modernbert_mean_norm", ctx.build(base, "mean", max_seq_length=256, prompts=prompts),
                      ctx.texts, [{}, {"prompt_name": "query"}, {"prompt_name": "document"}])
    check_attention_implementation(path)
    ctx.record(ctx.out_dir, "modernbert_cls", ctx.build(base, "cls", normalize=False), ctx.texts, plain)
    # Rewritten after sentence-transformers saves (which writes the transformers 5
    # spelling) and before it loads the result back for the reference.
    ctx.record(ctx.out_dir, "modernbert_hub_config", ctx.build(hub, "mean", max_seq_length=256), ctx.texts, plain,
               rearrange=to_hub_config)

    with norms_kept(ctx):
        head = ModernBertForSequenceClassification(tiny_config(tok, num_labels=1, classifier_pooling="mean"))
        ctx.record_cross_encoder(ctx.out_dir, "modernbert_cross_encoder", head, tok, ctx.texts)
        head = ModernBertForSequenceClassification(tiny_config(
            tok, num_labels=1, classifier_pooling="cls", classifier_bias=True, attention_bias=True, mlp_bias=True,
            norm_bias=True, classifier_activation="gelu_pytorch_tanh", hidden_activation="gelu_pytorch_tanh"))
        ctx.record_cross_encoder(ctx.out_dir, "modernbert_cross_encoder_cls", head, tok, ctx.texts)
