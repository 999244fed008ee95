"""DistilBERT fixtures (msmarco-distilbert-*, multi-qa-distilbert-*): a tiny
`DistilBertModel` embedded two ways, and a `DistilBertForSequenceClassification`
cross-encoder with one label (scored with a sigmoid by `CrossEncoder.predict`).

The tokenizer is the BERT WordPiece one saved as a `DistilBertTokenizer`, as the
released models ship it: its `model_input_names` leave out `token_type_ids`, so
sentence-transformers sends none (DistilBERT has no token type table).
"""

import os

import torch
from transformers import DistilBertConfig, DistilBertForSequenceClassification, DistilBertModel, DistilBertTokenizer


def distilbert_tokenizer(ctx):
    path = os.path.join(ctx.work, "distilbert_tokenizer")
    ctx.bert_tok.save_pretrained(path)
    return DistilBertTokenizer.from_pretrained(path)


def config(tok, **extra):
    return DistilBertConfig(
        vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=512,
        activation="gelu", pad_token_id=0, **extra,
    )


def vary_norms(model, std=0.2):
    """`spread` leaves every parameter named *LayerNorm* or *layer_norm* at its init
    (weight 1, bias 0), which is all of DistilBERT's norms (embeddings.LayerNorm,
    sa_layer_norm, output_layer_norm). Identity norms would let a loader that
    swapped or skipped them pass; distinct weights make each one count."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name:
                if name.endswith("weight"):
                    p.copy_(1.0 + std * torch.randn_like(p))
                else:
                    p.normal_(0.0, std)
    return model


def make(ctx):
    tok = distilbert_tokenizer(ctx)
    assert "token_type_ids" not in tok("a", "b"), "a DistilBERT tokenizer sends no token types"
    base = ctx.save_base(vary_norms(DistilBertModel(config(tok))), tok, ctx.work, "distilbert")
    plain = [{}]
    ctx.record(ctx.out_dir, "distilbert_mean_norm", ctx.build(base, "mean", max_seq_length=64), ctx.texts, plain)
    ctx.record(ctx.out_dir, "distilbert_cls_dense", ctx.build(base, "cls", dense=16), ctx.texts, plain)
    head = vary_norms(DistilBertForSequenceClassification(config(tok, num_labels=1)))
    ctx.record_cross_encoder(ctx.out_dir, "distilbert_cross_encoder", head, tok, ctx.texts)
