"""Qwen3 fixtures (Qwen3-Embedding-0.6B/4B/8B): tiny `Qwen3Model`s, which is what
sentence-transformers' Transformer module loads for a `qwen3` config.

Shaped like the real models where it matters: a causal decoder, grouped-query
attention (4 query heads sharing 2 key/value heads), an explicit `head_dim` (16)
that is not `hidden_size / num_attention_heads` (8), per-head RMSNorms on queries
and keys, and a small RoPE theta (1000) so that positions change the outputs.

- `qwen3_last_token`: last-token pooling + Normalize with Qwen3-Embedding's
  `query` instruction prompt (and an empty `document` one); config.json as
  transformers 5 writes it (`rope_parameters`, `layer_types`).
- `qwen3_hub_config`: the same modules over other weights, sharded (as the 4B and
  8B models are) and with config.json rewritten as the Hub's Qwen3-Embedding configs
  spell it (transformers 4.51:
  top-level `rope_theta`, `rope_scaling: null`, `sliding_window: null`,
  `use_sliding_window: false`, `architectures: Qwen3ForCausalLM`) and another theta,
  so a reader that ignores either spelling fails one of the two; max_seq_length 64,
  so long texts are cut and the EOS is still last.
- `qwen3_mean_linear_rope`: mean pooling without Normalize over a model with
  attention biases and linear RoPE scaling (`rope_type: linear`, factor 2).

The tokenizer is a small byte-level BPE laid out like Qwen's: the Qwen2 split
regex, NFC, `<|endoftext|>` as padding, `<|im_end|>` as the named EOS token, and a
post-processor that appends `<|endoftext|>` to every text (as Qwen3-Embedding's
tokenizer.json does; the pooled last token is that one), padding on the left
(`padding_side: left` in tokenizer_config.json), loaded as `Qwen2Tokenizer`.
"""

import json
import os

import torch
from tokenizers import Regex, Tokenizer, decoders, models as tok_models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

# Qwen2's pre-tokenizer split (transformers' tokenization_qwen2.py).
SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

PROMPTS = {"query": "Instruct: Given a web search query, retrieve relevant passages\nQuery:", "document": ""}


def qwen_tokenizer(ctx):
    tok = Tokenizer(tok_models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # Trained on the fixture texts (the long ones hold 200 STS sentences' words).
    tok.train_from_iterator(ctx.texts, trainer)
    eot = ("<|endoftext|>", tok.token_to_id("<|endoftext|>"))
    tok.post_processor = processors.TemplateProcessing(
        single="$A:0 <|endoftext|>:0", pair="$A:0 <|endoftext|>:0 $B:1 <|endoftext|>:1", special_tokens=[eot])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        padding_side="left", model_max_length=512,
    )
    # Saved and reloaded as Qwen3-Embedding's tokenizer_config.json names it, so the
    # reference goes through the class transformers 5 picks for the real models.
    path = os.path.join(ctx.work, "qwen3_tokenizer")
    fast.save_pretrained(path)
    config_path = os.path.join(path, "tokenizer_config.json")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    config.update(tokenizer_class="Qwen2Tokenizer", add_prefix_space=False, errors="replace")
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    qwen = AutoTokenizer.from_pretrained(path)
    assert type(qwen).__name__ == "Qwen2Tokenizer", type(qwen)
    assert qwen.padding_side == "left" and qwen.model_max_length == 512
    # transformers' class must tokenize as tokenizer.json does (which dartboard reads).
    for text in ctx.texts[:60] + ["", "a b"]:
        assert qwen(text).input_ids == tok.encode(text).ids, text
    assert qwen("a b").input_ids[-1] == eot[1], "the post-processor appends <|endoftext|>"
    return qwen


def spread_qwen3(model, std=0.12):
    """make_fixtures' `spread` draws every weight whose name lacks "LayerNorm" from
    N(0, 0.25), Qwen3's RMSNorm weights (`input_layernorm`, `q_norm`, ...) included:
    scales around 0 would shrink queries and keys so far that attention is near
    uniform, and neither positions nor causality would change much. Here norms get
    scales 1 + N(0, 0.1) (away from exactly 1, so a norm left out fails) and every
    other weight N(0, std): at 0.25 bf16 rounding grows through the blocks until
    transformers' own bf16 output strays from its f32 one, and a bf16 parity test
    would measure the fixture rather than the implementation (`check_bf16` below)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, std)
    return model


def base(ctx, tok, name, **overrides):
    config = dict(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, intermediate_size=64, max_position_embeddings=512, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000.0},
        pad_token_id=tok.pad_token_id, bos_token_id=tok.pad_token_id, eos_token_id=tok.pad_token_id,
    )
    config.update(overrides)
    model = spread_qwen3(Qwen3Model(Qwen3Config(**config)))
    path = os.path.join(ctx.work, name)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def to_hub_layout(path):
    """Lays the model out as Qwen3-Embedding-4B/8B are on the Hub: weights in
    safetensors shards with `model.safetensors.index.json`, and config.json as their
    configs spell it (saved by transformers 4.51), with rope_theta 300 instead of the
    1000 the model was built with: the reference is computed from the result."""
    model = Qwen3Model.from_pretrained(path)
    os.remove(os.path.join(path, "model.safetensors"))
    model.save_pretrained(path, max_shard_size="100KB")
    assert os.path.exists(os.path.join(path, "model.safetensors.index.json"))
    assert not os.path.exists(os.path.join(path, "model.safetensors"))
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    for key in ("rope_parameters", "layer_types", "dtype"):
        config.pop(key, None)
    config.update(
        architectures=["Qwen3ForCausalLM"], rope_theta=300.0, rope_scaling=None, sliding_window=None,
        use_sliding_window=False, max_window_layers=28, torch_dtype="float32", use_cache=True,
        transformers_version="4.51.3", tie_word_embeddings=True,
    )
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    reread = Qwen3Config.from_pretrained(path)
    assert reread.rope_parameters == {"rope_type": "default", "rope_theta": 300.0}, reread.rope_parameters
    assert reread.layer_types == ["full_attention"] * 3, reread.layer_types


def check_bf16(path, texts):
    """transformers' own bf16 run must stay close to its f32 run (see
    `spread_qwen3`), and its attention implementations must agree."""
    from sentence_transformers import SentenceTransformer

    f32 = SentenceTransformer(path, device="cpu")
    assert f32[0].auto_model.config._attn_implementation == "sdpa", f32[0].auto_model.config._attn_implementation
    bf16 = SentenceTransformer(path, device="cpu", model_kwargs={"dtype": torch.bfloat16})
    eager = SentenceTransformer(path, device="cpu", model_kwargs={"attn_implementation": "eager"})
    a = f32.encode(texts, convert_to_tensor=True).float()
    b = bf16.encode(texts, convert_to_tensor=True).float()
    e = eager.encode(texts, convert_to_tensor=True).float()
    cos = torch.nn.functional.cosine_similarity(a, b).min().item()
    assert cos >= 0.9995, f"{path}: transformers' bf16 run is only {cos} from its f32 run"
    assert (a - e).abs().max() < 1e-5, (a - e).abs().max()
    # Texts must embed differently, or parity would mean little.
    neighbours = torch.nn.functional.cosine_similarity(a[1:], a[:-1])
    assert neighbours.median() < 0.95 and (neighbours > 0.999).sum() <= 1, neighbours
    print(f"{os.path.basename(path)}: transformers bf16 vs f32 min cosine {cos:.6f}; "
          f"neighbour cosines median {neighbours.median():.3f}, max {neighbours.max():.4f}")


def make(ctx):
    tok = qwen_tokenizer(ctx)
    queries = [{}, {"prompt_name": "query"}]

    last = base(ctx, tok, "qwen3")
    path = ctx.record(ctx.out_dir, "qwen3_last_token", ctx.build(last, "lasttoken", prompts=PROMPTS), ctx.texts, queries)
    check_bf16(path, ctx.texts)

    hub = base(ctx, tok, "qwen3_hub")
    path = ctx.record(ctx.out_dir, "qwen3_hub_config", ctx.build(hub, "lasttoken", max_seq_length=64, prompts=PROMPTS),
                      ctx.texts, queries, rearrange=to_hub_layout)
    check_bf16(path, ctx.texts)

    linear = base(ctx, tok, "qwen3_linear", attention_bias=True,
                  rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0})
    path = ctx.record(ctx.out_dir, "qwen3_mean_linear_rope", ctx.build(linear, "mean", max_seq_length=128, normalize=False),
                      ctx.texts, [{}])
    check_bf16(path, ctx.texts)
