"""Random-weight models at the real shapes of Qwen3-Embedding-0.6B and ModernBERT-base,
saved by sentence-transformers, for `cargo xtask bench --shapes`.

    python shapes_models.py MINILM_DIR DATA_DIR OUT_DIR

writes OUT_DIR/qwen3-0.6b/ and OUT_DIR/modernbert-base/ (sentence-transformers
directories that both sides load, so both run the same weights) and
OUT_DIR/sts-test-500.txt (the first 500 distinct STS-B test sentences, as `stsb.py`
reads them, one a line).

Shapes (transformers' classes, no remote code):
- Qwen3-Embedding-0.6B: hidden 1024, 28 layers, 16 query heads sharing 8 key/value
  heads of 128, SwiGLU 3072, RMSNorm eps 1e-6 with per-head q/k norms, RoPE theta
  1,000,000, tied embeddings, causal; last-token pooling + Normalize, left padding,
  `<|endoftext|>` appended by the tokenizer (the pooled token).
- ModernBERT-base (gte-modernbert-base, modernbert-embed-base): `ModernBertConfig`'s
  defaults, which are ModernBERT-base's: hidden 768, 22 layers, 12 heads, gated GELU
  MLP 1152, every third layer global, local window 128, RoPE thetas 160,000 (global)
  and 10,000 (local), no biases; mean pooling + Normalize.

Vocabularies are small (no real tokenizer is available offline): Qwen3 gets the
fixtures' Qwen-shaped byte-level BPE (`arch_qwen3.qwen_tokenizer`) trained to
QWEN_VOCAB tokens on the STS-B dev sentences, ModernBERT the BERT WordPiece tokenizer
of all-MiniLM-L6-v2 (30,522 tokens, `arch_modernbert.modernbert_tokenizer`). The
vocabulary size changes only the embedding lookup (and the file size), not the
per-token compute of the blocks; what it does change is how many tokens a sentence
becomes, which this script prints and the benchmark reports.

Weights are transformers' own initialisation (normal, std 0.02; norms 1): the
benchmark measures speed and numerical agreement, which parity tests on tiny models
already check for correctness.
"""

import os
import shutil
import sys
import types

import torch
from tokenizers import trainers
from transformers import AutoTokenizer, ModernBertConfig, ModernBertModel, Qwen3Config, Qwen3Model

import arch_modernbert
import arch_qwen3
from make_fixtures import build
from stsb import sts_sentences

QWEN_VOCAB = 4000
SENTENCES = 500


def qwen_tokenizer(work, texts):
    """`arch_qwen3.qwen_tokenizer` (the fixtures' Qwen-shaped tokenizer), whose
    trainer asks for 600 tokens: fine for tiny fixtures, but at 600 tokens English
    words split into several pieces and sentences would be far longer than Qwen's
    151k vocabulary makes them. Its BpeTrainer is swapped for one with QWEN_VOCAB
    tokens for the duration of the call, so the builder itself is reused unchanged."""

    def bigger(**kwargs):
        kwargs["vocab_size"] = QWEN_VOCAB
        return trainers.BpeTrainer(**kwargs)

    original = arch_qwen3.trainers
    arch_qwen3.trainers = types.SimpleNamespace(BpeTrainer=bigger)
    try:
        return arch_qwen3.qwen_tokenizer(types.SimpleNamespace(work=work, texts=texts))
    finally:
        arch_qwen3.trainers = original


def qwen3(tok):
    config = Qwen3Config(
        vocab_size=len(tok), hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
        head_dim=128, intermediate_size=3072, max_position_embeddings=32768, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.pad_token_id, eos_token_id=tok.pad_token_id,
    )
    return Qwen3Model(config)


def modernbert(tok):
    config = ModernBertConfig(
        vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id,
        sep_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
    )
    # The real model's shape; fail loudly if transformers' defaults ever change.
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (
        768, 22, 12, 1152), config
    assert config.local_attention == 128 and config.layer_types[:3] == [
        "full_attention", "sliding_attention", "sliding_attention"], config.layer_types
    assert config.rope_parameters["full_attention"]["rope_theta"] == 160000.0
    assert config.rope_parameters["sliding_attention"]["rope_theta"] == 10000.0
    return ModernBertModel(config)


def save(model, tok, work, out_dir, name, pooling):
    base = os.path.join(work, name)
    model.save_pretrained(base)
    tok.save_pretrained(base)
    st = build(base, pooling)
    path = os.path.join(out_dir, name)
    st.save(path)
    return path


def report(path, name, texts):
    """Tokens per text, and how much the texts' embeddings differ (with random
    weights they could all point one way, which would make cosine fidelity say
    little)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu")
    tokens = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
    emb = model.encode(texts[:64], convert_to_tensor=True).float()
    neighbours = torch.nn.functional.cosine_similarity(emb[1:], emb[:-1])
    params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {params / 1e6:.0f}M parameters, {sum(tokens) / len(tokens):.1f} tokens per text "
          f"(max {max(tokens)}); neighbour cosines median {neighbours.median():.3f}, max {neighbours.max():.4f}")


def main():
    minilm_dir, data_dir, out_dir = sys.argv[1:4]
    os.makedirs(out_dir, exist_ok=True)
    work = os.path.join(out_dir, "work")
    os.makedirs(work, exist_ok=True)
    texts = sts_sentences(os.path.join(data_dir, "stsbenchmark/sts-test.csv"), SENTENCES)
    assert len(texts) == SENTENCES and all("\n" not in t for t in texts)
    with open(os.path.join(out_dir, "sts-test-500.txt"), "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in texts))

    torch.manual_seed(0)
    dev = sts_sentences(os.path.join(data_dir, "stsbenchmark/sts-dev.csv"), 10000)
    tok = qwen_tokenizer(work, dev)
    path = save(qwen3(tok), tok, work, out_dir, "qwen3-0.6b", "lasttoken")
    report(path, "qwen3-0.6b", texts)

    torch.manual_seed(1)
    tok = arch_modernbert.modernbert_tokenizer(
        types.SimpleNamespace(work=work, bert_tok=AutoTokenizer.from_pretrained(minilm_dir)))
    path = save(modernbert(tok), tok, work, out_dir, "modernbert-base", "mean")
    report(path, "modernbert-base", texts)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
