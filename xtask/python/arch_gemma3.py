"""Gemma3 text fixtures (EmbeddingGemma-300m: `gemma3_text` with bidirectional attention).

EmbeddingGemma is a `Gemma3TextModel` with `use_bidirectional_attention: true`,
saved by sentence-transformers as Transformer -> Pooling (mean, prompt included)
-> Dense (768 -> 3072, no bias, Identity) -> Dense (3072 -> 768, no bias,
Identity) -> Normalize, with task prompts such as "task: search result | query: "
in config_sentence_transformers.json. Its tokenizer wraps every text in <bos> (2)
and <eos> (1), <pad> being 0.

The tiny copy keeps every feature that changes the numbers:
- three layers, sliding, full, sliding (`layer_types`), with a window of 8 in
  config.json, i.e. 4 keys on each side of a query (transformers turns
  `sliding_window` into `sliding_window // 2 + 1` exclusive when bidirectional), so
  that nearly every STS sentence crosses it;
- RoPE thetas 50 (sliding) and 1000 (full), so that swapping them shows;
- grouped-query attention (4 query heads, 2 key/value heads), heads of 16 while the
  hidden size is 32 (head_dim is its own key in Gemma), q/k norms, and
  `query_pre_attn_scalar` 24 rather than head_dim, so that a scale of 1/sqrt(16)
  fails;
- Gemma's norms (weights w, scale 1 + w) drawn around 0 with spread, four per layer.

Fixtures:
- `gemma3_mean_dense`: the EmbeddingGemma pipeline with its query and document
  prompts (cases: none, query, document), 256 tokens, left padding (GemmaTokenizer's
  own side).
- `gemma3_causal_hub_config`: Gemma 3 as a decoder (`use_bidirectional_attention`
  false: causal, local blocks seeing the query and the `sliding_window - 1` keys
  before it), mean pooling + Normalize, with config.json spelled as transformers 4
  wrote Gemma 3 configs (`sliding_window_pattern`, `rope_theta`,
  `rope_local_base_freq`, `rope_scaling`, no `layer_types` / `rope_parameters`):
  another layer pattern (sliding, sliding, full), other thetas, a window of 6, and
  linear RoPE scaling (factor 2) on the global blocks, as Gemma 3's larger models have.
"""

import json
import os

import torch
from tokenizers import Tokenizer, decoders, models as tok_models, normalizers, pre_tokenizers, processors, trainers
from transformers import Gemma3TextConfig, Gemma3TextModel, PreTrainedTokenizerFast
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Dense, Normalize, Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

PROMPTS = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "STS": "task: sentence similarity | query: ",
}


def gemma_tokenizer(texts):
    """A small SentencePiece-style Unigram tokenizer with Gemma's special ids
    (<pad> 0, <eos> 1, <bos> 2, <unk> 3) and its wrapping: <bos> text <eos>."""
    tok = Tokenizer(tok_models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    special = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=special, unk_token="<unk>")
    tok.train_from_iterator(texts, trainer)
    assert [tok.token_to_id(t) for t in special[:4]] == [0, 1, 2, 3], "Gemma's special ids"
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>",
        pair="<bos> $A <eos> $B <eos>",
        special_tokens=[("<bos>", 2), ("<eos>", 1)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>",
        mask_token="<mask>", model_max_length=512, padding_side="left",
    )


def spread_gemma(model, std=0.15, norm_std=0.2):
    """make_fixtures' `spread` would draw Gemma's norm weights (named *norm*, not
    *LayerNorm*) from N(0, 0.25) like any weight; here they are w ~ N(0, 0.2), scales
    1 + w, so each norm is exercised (a loader that reads w as the scale, or skips a
    norm, fails) without shrinking activations.

    Other weights get std 0.15: with wider ones, the sqrt(hidden) embedding scale and
    three blocks make transformers' own bf16 output drift from its f32 output, and
    a bf16 parity test at 0.999 would measure the fixture, not an implementation.
    `check_bf16` asserts the margin."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0.0, norm_std)
            else:
                p.normal_(0.0, std)
    return model


def tiny_config(tok, **overrides):
    config = dict(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24, rms_norm_eps=1e-6,
        sliding_window=8, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 50.0},
            "full_attention": {"rope_type": "default", "rope_theta": 1000.0},
        },
        max_position_embeddings=512, use_bidirectional_attention=True, hidden_activation="gelu_pytorch_tanh",
        pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    config.update(overrides)
    return Gemma3TextConfig(**config)


def build(base_path, max_seq_length):
    torch.manual_seed(11)
    transformer = Transformer(base_path, max_seq_length=max_seq_length)
    modules = [
        transformer,
        Pooling(32, pooling_mode="mean"),
        Dense(32, 64, bias=False, activation_function=torch.nn.Identity()),
        Dense(64, 16, bias=False, activation_function=torch.nn.Identity()),
        Normalize(),
    ]
    # Dense's init (std 1/sqrt(in)) keeps the 16-wide output well spread already.
    return SentenceTransformer(modules=modules, prompts=PROMPTS, device="cpu")


def check_model(path, texts):
    """The saved model is what this module meant: the window survives the round trip
    through config.json, and outputs differ from text to text; transformers' own bf16
    run stays within cosine 0.9995 of its f32 run (so bf16 parity at 0.999 tests an
    implementation) and eager attention equals SDPA."""
    f32 = SentenceTransformer(path, device="cpu")
    config = f32[0].auto_model.config
    assert config.sliding_window == 8 // 2 + 1 and config.use_bidirectional_attention, config
    assert config.layer_types == ["sliding_attention", "full_attention", "sliding_attention"], config.layer_types
    sample = texts[:40] + texts[-2:]
    a = f32.encode(sample, convert_to_tensor=True)
    off_diagonal = (a @ a.T - torch.eye(len(sample)) * 2).max().item()
    assert off_diagonal < 0.99, f"two texts embed alike (cosine {off_diagonal})"
    eager = SentenceTransformer(path, device="cpu", model_kwargs={"attn_implementation": "eager"})
    b = eager.encode(sample, convert_to_tensor=True)
    assert (a - b).abs().max() < 1e-5, (a - b).abs().max()
    bf16 = SentenceTransformer(path, device="cpu", model_kwargs={"dtype": torch.bfloat16})
    c = bf16.encode(sample, convert_to_tensor=True).float()
    worst = torch.nn.functional.cosine_similarity(a, c).min().item()
    print(f"gemma3: transformers' bf16 vs f32 min cosine {worst:.6f}; max off-diagonal cosine {off_diagonal:.4f}")
    assert worst >= 0.9995, worst


def to_hub_config(path):
    """Rewrites config.json the way transformers 4 spelled Gemma 3 text configs (see
    the module docstring), and checks that transformers 5 reads it as meant."""
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    del config["layer_types"], config["rope_parameters"], config["_sliding_window_pattern"]
    config.update(sliding_window_pattern=3, rope_theta=3000.0, rope_local_base_freq=30.0, sliding_window=6,
                  rope_scaling={"rope_type": "linear", "factor": 2.0})
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    reread = Gemma3TextConfig.from_pretrained(path)
    assert reread.layer_types == ["sliding_attention", "sliding_attention", "full_attention"], reread.layer_types
    assert reread.rope_parameters["full_attention"] == {"rope_type": "linear", "factor": 2.0, "rope_theta": 3000.0}, \
        reread.rope_parameters
    assert reread.rope_parameters["sliding_attention"]["rope_theta"] == 30.0, reread.rope_parameters
    assert reread.sliding_window == 6 and not reread.use_bidirectional_attention


def make(ctx):
    # The texts include one made of 200 STS sentences' words: vocabulary enough.
    tok = gemma_tokenizer(ctx.texts)
    model = spread_gemma(Gemma3TextModel(tiny_config(tok)))
    base = os.path.join(ctx.work, "gemma3")
    model.save_pretrained(base)
    tok.save_pretrained(base)
    path = ctx.record(ctx.out_dir, "gemma3_mean_dense", build(base, 256), ctx.texts,
                      [{}, {"prompt_name": "query"}, {"prompt_name": "document"}])
    check_model(path, ctx.texts)

    causal = spread_gemma(Gemma3TextModel(tiny_config(tok, use_bidirectional_attention=False)))
    causal_base = os.path.join(ctx.work, "gemma3_causal")
    causal.save_pretrained(causal_base)
    tok.save_pretrained(causal_base)
    ctx.record(ctx.out_dir, "gemma3_causal_hub_config", ctx.build(causal_base, "mean", max_seq_length=200),
               ctx.texts, [{}], rearrange=to_hub_config)
