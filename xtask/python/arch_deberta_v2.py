"""DeBERTa-v2/v3 fixtures (model_type "deberta-v2": DeBERTa-v3 and mDeBERTa-v3 based
embedders, and the ms-marco / mixedbread deberta-v3 rerankers).

Two tiny `DebertaV2Model`s:

- `deberta_v3_*`: shaped like every released v3 checkpoint: relative attention with
  log-bucketed positions, c2p and p2c with the content projections shared
  (`share_att_key`), a LayerNorm on the relative embeddings, no absolute positions and
  no token types. 16 buckets (8 exact distances either way) with 512 positions, so
  the longer texts reach the log buckets and the clamp at the edge of the table.
- `deberta_v2_conv_*`: the branches v3 does not use, each of which changes the
  numbers: the convolution after the first layer (v2-xlarge/xxlarge), separate
  position projections (`pos_key_proj`, `pos_query_proj`), `pos_att_type` written as
  the older "p2c|c2p" string, plain clamped distances instead of buckets, absolute
  positions added to the input, two token types, and an embedding narrower than the
  hidden size (`embed_proj`).

Plus a one-label `DebertaV2ForSequenceClassification` (v3 shape) as a cross-encoder,
scored with a sigmoid by `CrossEncoder.predict`.

The tokenizer is the shared SentencePiece-style Unigram one, as v3 ships a
SentencePiece model; its pad id (1) is passed as `pad_token_id`.
"""

import json
import os

import torch
from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, DebertaV2Model


def v3_config(tok, ctx, **extra):
    return DebertaV2Config(
        vocab_size=len(tok), pad_token_id=tok.pad_token_id, max_position_embeddings=512,
        relative_attention=True, position_buckets=16, max_relative_positions=-1,
        pos_att_type=["p2c", "c2p"], share_att_key=True, norm_rel_ebd="layer_norm",
        position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7,
        hidden_act="gelu", pooler_hidden_act="gelu", **ctx.tiny, **extra,
    )


def v2_conv_config(tok, ctx):
    return DebertaV2Config(
        vocab_size=len(tok), pad_token_id=tok.pad_token_id, max_position_embeddings=512,
        relative_attention=True, position_buckets=-1, max_relative_positions=24,
        pos_att_type="p2c|c2p", share_att_key=False, norm_rel_ebd="layer_norm",
        position_biased_input=True, type_vocab_size=2, embedding_size=16,
        conv_kernel_size=3, conv_act="gelu", layer_norm_eps=1e-7, hidden_act="gelu", **ctx.tiny,
    )


def vary_norms(model, std=0.2):
    """`spread` leaves every parameter named *LayerNorm* at its init (weight 1, bias 0),
    which is all of DeBERTa's norms, including the one on the relative embeddings
    (`encoder.LayerNorm`) and the convolution's. Identity norms would let a loader that
    swapped or skipped them pass; distinct weights make each one count."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name:
                if name.endswith("weight"):
                    p.copy_(1.0 + std * torch.randn_like(p))
                else:
                    p.normal_(0.0, std)
    return model


def legacy_pos_att_type(path):
    """transformers writes `pos_att_type` as a list; v2-xlarge's config.json (and older
    ones) has the string "p2c|c2p", which transformers still reads. Write it that way."""
    config_path = os.path.join(path, "config.json")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    assert config["pos_att_type"] == ["p2c", "c2p"], config["pos_att_type"]
    config["pos_att_type"] = "p2c|c2p"
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)


def make(ctx):
    tok = ctx.uni_tok
    plain = [{}]

    model = DebertaV2Model(v3_config(tok, ctx))
    names = [n for n, _ in model.named_parameters()]
    assert "encoder.rel_embeddings.weight" in names and "encoder.LayerNorm.weight" in names, names
    assert not any("position_embeddings" in n or "token_type" in n for n in names), names
    # save_base and record_cross_encoder spread every other weight.
    base = ctx.save_base(vary_norms(model), tok, ctx.work, "deberta_v3")
    ctx.record(ctx.out_dir, "deberta_v3_mean_norm", ctx.build(base, "mean", max_seq_length=128), ctx.texts, plain)
    ctx.record(ctx.out_dir, "deberta_v3_cls_dense", ctx.build(base, "cls", dense=16), ctx.texts, plain)

    model = DebertaV2Model(v2_conv_config(tok, ctx))
    names = [n for n, _ in model.named_parameters()]
    for expected in ("encoder.conv.conv.weight", "encoder.conv.LayerNorm.weight", "embeddings.embed_proj.weight",
                     "embeddings.position_embeddings.weight", "embeddings.token_type_embeddings.weight",
                     "encoder.layer.0.attention.self.pos_key_proj.weight",
                     "encoder.layer.0.attention.self.pos_query_proj.weight"):
        assert expected in names, (expected, names)
    base = ctx.save_base(vary_norms(model), tok, ctx.work, "deberta_v2_conv")
    ctx.record(ctx.out_dir, "deberta_v2_conv_mean", ctx.build(base, "mean", max_seq_length=100, normalize=False),
               ctx.texts, plain, rearrange=legacy_pos_att_type)

    head = DebertaV2ForSequenceClassification(v3_config(tok, ctx, num_labels=1))
    ctx.record_cross_encoder(ctx.out_dir, "deberta_v2_cross_encoder", vary_norms(head), tok, ctx.texts)
