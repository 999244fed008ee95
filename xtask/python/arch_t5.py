"""T5 encoder fixtures (sentence-t5, GTR): tiny `T5EncoderModel`s, which is what
sentence-transformers' Transformer module loads for a `t5` config.

- `t5_mean_dense`: the original T5 feed-forward (`relu`), mean pooling, then a Dense
  without bias and with the identity activation, then Normalize: the module list of
  sentence-t5 and GTR.
- `t5_gated`: T5 v1.1's `gated-gelu` feed-forward (gelu_new on wi_0 times wi_1), with
  `num_heads * d_kv` (64) wider than `d_model` (32), as t5-3b/11b have; mean
  pooling, Normalize, max_seq_length 64.

The tokenizer is a small SentencePiece-shaped Unigram one laid out like T5's
(`<pad>` 0, `</s>` 1, `<unk>` 2) whose post-processor appends `</s>` to every text,
as T5's does; there is no `<s>`.
"""

import os

import torch
from tokenizers import Tokenizer, decoders, models as tok_models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Dense, Normalize, Transformer
from sentence_transformers.sentence_transformer.modules import Pooling


def t5_tokenizer(texts):
    tok = Tokenizer(tok_models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    special = ["<pad>", "</s>", "<unk>"]
    trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=special, unk_token="<unk>")
    tok.train_from_iterator(texts, trainer)
    assert [tok.token_to_id(t) for t in special] == [0, 1, 2], "T5's special ids"
    eos = ("</s>", tok.token_to_id("</s>"))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[eos])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", model_max_length=512,
    )


def vary_norms(model, std=0.2):
    """`spread` leaves parameters named *layer_norm* at their init (1), which is
    every T5 norm (layer.N.layer_norm, final_layer_norm). Distinct weights make a
    loader that swapped or skipped one fail."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(1.0 + std * torch.randn_like(p))
    return model


def base(ctx, tok, name, **config):
    cfg = T5Config(
        vocab_size=len(tok), d_model=32, num_layers=2, num_heads=4, d_ff=64, relative_attention_num_buckets=32,
        relative_attention_max_distance=128, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **config,
    )
    model = ctx.spread(vary_norms(T5EncoderModel(cfg)))
    # T5 does not divide q·k by sqrt(d_kv); its init folds that into q (std
    # (d_model·d_kv)^-1/2 against d_model^-1/2 for k). Spread weights without it
    # make the softmax so sharp that sentence-transformers' own bf16 run is 0.9987
    # from its f32 run; with it, the fixture is as well conditioned as a real T5.
    with torch.no_grad():
        for block in model.encoder.block:
            block.layer[0].SelfAttention.q.weight.mul_(cfg.d_kv ** -0.5)
    path = os.path.join(ctx.work, name)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make(ctx):
    # Trained on the fixture texts (the long ones hold 200 STS sentences' words).
    tok = t5_tokenizer(ctx.texts)
    assert tok("a b").input_ids[-1] == 1, "T5's post-processor appends </s>"

    relu = base(ctx, tok, "t5_relu", d_kv=8, feed_forward_proj="relu")
    transformer = Transformer(relu)
    assert type(transformer.auto_model).__name__ == "T5EncoderModel", type(transformer.auto_model)
    torch.manual_seed(11)
    modules = [
        transformer,
        Pooling(32, pooling_mode="mean"),
        Dense(32, 24, bias=False, activation_function=torch.nn.Identity()),
        Normalize(),
    ]
    ctx.record(ctx.out_dir, "t5_mean_dense", SentenceTransformer(modules=modules, device="cpu"), ctx.texts, [{}])

    gated = base(ctx, tok, "t5_gated", d_kv=16, feed_forward_proj="gated-gelu")
    ctx.record(ctx.out_dir, "t5_gated", ctx.build(gated, "mean", max_seq_length=64), ctx.texts, [{}])
    for name in ("t5_mean_dense", "t5_gated"):
        assert os.path.exists(os.path.join(ctx.out_dir, name, "tokenizer.json"))
