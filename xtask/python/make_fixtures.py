"""Tiny random-weight models of every architecture and module combination, saved the
way sentence-transformers saves them, with sentence-transformers' own outputs.

Run by `cargo xtask test` through the project's venv (regenerated when this script
changes; nothing here is committed, because the outputs are a pure function of this
script and the pinned library versions):

    python make_fixtures.py [--only arch_NAME] MINILM_DIR STS_DEV_CSV OUT_DIR

For each fixture NAME it writes OUT_DIR/NAME/ (a model directory) and
OUT_DIR/NAME.json (texts, the cases run, and the embeddings sentence-transformers
produced after loading the saved directory back).

BERT, MPNet and (XLM-)RoBERTa are built here; every other architecture has its own
module `arch_<name>.py` beside this script with a `make(ctx)` function taking a
`Context`, so adding an architecture's fixtures is one new file. `--only` runs one
of those modules alone (while working on it; `cargo xtask test` runs everything).
"""

import glob
import importlib
import json
import os
import shutil
import sys
import tempfile

import torch
from tokenizers import Tokenizer, models as tok_models, pre_tokenizers, processors, trainers, normalizers, decoders
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    MPNetConfig,
    MPNetForSequenceClassification,
    MPNetModel,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaModel,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
    XLMRobertaModel,
)
from stsb import sts_sentences
from sentence_transformers import CrossEncoder, SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling
from sentence_transformers.base.modules import Dense, Normalize, Transformer

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)

EDGE_TEXTS = [
    "",
    "   ",
    "UPPER and lower Case",
    "Café naïve résumé Ångström",
    "日本語のテキスト",
    "Emoji 🚀 and symbols ∑√",
    "def f(x):\n    return x * 2  # code",
    " ".join(["Dartboard balances relevance and diversity."] * 40),
]


def long_texts(sentences):
    """Texts far longer than any token limit, which dartboard tokenizes only up to a
    cut before a space: runs of spaces, tabs, newlines and a combining mark after a
    space sit where cuts fall, and words too long for WordPiece (one [UNK] each) make
    the cut grow. sentence-transformers tokenizes them whole, so these check that the
    cut never changes the ids."""
    separators = [" ", "  ", "\t", "\n", " \u0301", "   ", " \n "]
    words = " ".join(sentences).split()
    mixed = "".join(w + separators[i % len(separators)] for i, w in enumerate(words * 8))[:60000]
    long_words = " ".join(("Supercalifragilistic" * 8 + str(i)) for i in range(400))
    return [mixed, long_words]


def bert_tokenizer(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir)


def unigram_tokenizer(texts):
    """A small SentencePiece-style Unigram tokenizer, shaped like XLM-R's."""
    tok = Tokenizer(tok_models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=special, unk_token="<unk>")
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        cls_token="<s>", sep_token="</s>", mask_token="<mask>", model_max_length=512,
    )


def spread(model, std=0.25):
    """transformers' init (std 0.02) makes every text embed almost alike and every
    cross-encoder score ~0.5, which would let a wrong implementation pass a parity
    test. Wider weights make outputs differ from text to text."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" not in name and "layer_norm" not in name:
                p.normal_(0.0, std)
    return model


def save_base(model, tokenizer, workdir, name, **save_kwargs):
    spread(model)
    path = os.path.join(workdir, name)
    model.save_pretrained(path, **save_kwargs)
    tokenizer.save_pretrained(path)
    return path


def build(base_path, pooling_mode, max_seq_length=None, dense=None, normalize=True, include_prompt=True,
          prompts=None, default_prompt_name=None, do_lower_case=False):
    transformer = Transformer(base_path, max_seq_length=max_seq_length, do_lower_case=do_lower_case)
    dim = transformer.get_embedding_dimension() if hasattr(transformer, "get_embedding_dimension") else TINY["hidden_size"]
    modules = [transformer, Pooling(dim, pooling_mode=pooling_mode, include_prompt=include_prompt)]
    width = dim * (1 if isinstance(pooling_mode, str) else len(pooling_mode))
    if dense:
        torch.manual_seed(7)
        modules.append(Dense(width, dense, activation_function=torch.nn.Tanh()))
    if normalize:
        modules.append(Normalize())
    return SentenceTransformer(modules=modules, prompts=prompts, default_prompt_name=default_prompt_name, device="cpu")


def record(out_dir, name, model, texts, cases, safe_serialization=True, rearrange=None):
    """Saves the model, lets `rearrange` change the saved files (another layout of
    the same model), and records what sentence-transformers computes after loading
    the result back."""
    path = os.path.join(out_dir, name)
    shutil.rmtree(path, ignore_errors=True)
    model.save(path, safe_serialization=safe_serialization)
    if rearrange:
        rearrange(path)
    reloaded = SentenceTransformer(path, device="cpu")
    results = []
    for case in cases:
        emb = reloaded.encode(texts, convert_to_numpy=True, **case)
        results.append({**case, "embeddings": emb.astype("float32").tolist()})
    with open(os.path.join(out_dir, name + ".json"), "w", encoding="utf-8") as f:
        json.dump({"texts": texts, "dim": len(results[0]["embeddings"][0]), "cases": results}, f)
    return path


def main():
    minilm_dir, sts_dev, out_dir = sys.argv[1:4]
    os.makedirs(out_dir, exist_ok=True)
    texts = sts_sentences(sts_dev, 40) + EDGE_TEXTS + long_texts(sts_sentences(sts_dev, 200))
    work = tempfile.mkdtemp()
    plain = [{}]

    torch.manual_seed(0)
    bert_tok = bert_tokenizer(minilm_dir)
    bert = save_base(BertModel(BertConfig(vocab_size=bert_tok.vocab_size, **TINY)), bert_tok, work, "bert")

    record(out_dir, "bert_mean_norm", build(bert, "mean", max_seq_length=64), texts, plain)
    record(out_dir, "bert_cls_dense", build(bert, "cls", dense=16), texts, plain)
    record(out_dir, "bert_multi_pooling", build(bert, ("max", "cls", "mean", "mean_sqrt_len_tokens"), normalize=False), texts, plain)
    record(out_dir, "bert_weighted_last", build(bert, ("weightedmean", "lasttoken"), max_seq_length=48), texts, plain)
    prompts = {"query": "query: ", "passage": "passage: "}
    record(
        out_dir, "bert_prompts",
        build(bert, "mean", prompts=prompts, default_prompt_name="query", include_prompt=False),
        texts, [{}, {"prompt_name": "passage"}, {"prompt": "Represent this sentence: "}],
    )
    record(out_dir, "bert_prompts_included", build(bert, ("cls", "mean"), prompts=prompts), texts, [{}, {"prompt_name": "query"}])
    record(
        out_dir, "bert_cls_prompt_excluded",
        build(bert, ("cls", "lasttoken"), prompts=prompts, default_prompt_name="query", include_prompt=False),
        texts, [{}],
    )
    # The same model twice: pickled weights (as old Hub repos ship them) and safetensors.
    pickled = record(out_dir, "bert_bin", build(bert, "mean", dense=8), texts, plain, safe_serialization=False)
    # sentence-transformers 6 and transformers 5 write safetensors regardless; old
    # repos have pytorch_model.bin, so pickle the same weights the way they were
    # (torch.save of the state dict).
    model = BertModel.from_pretrained(pickled)
    os.remove(os.path.join(pickled, "model.safetensors"))
    torch.save(model.state_dict(), os.path.join(pickled, "pytorch_model.bin"))
    record(out_dir, "bert_bin_twin", build(bert, "mean", dense=8), texts, plain)

    # Sharded safetensors: the transformer weights split into several files with an index.
    def shard_safetensors(path):
        model = BertModel.from_pretrained(path)
        os.remove(os.path.join(path, "model.safetensors"))
        model.save_pretrained(path, max_shard_size="400KB")
        assert os.path.exists(os.path.join(path, "model.safetensors.index.json"))
        assert not os.path.exists(os.path.join(path, "model.safetensors"))

    record(out_dir, "bert_sharded", build(bert, "mean"), texts, plain, rearrange=shard_safetensors)

    # A sharded pytorch_model.bin (pytorch_model.bin.index.json and torch.save shards),
    # as large models saved by transformers 4 before safetensors ship it. transformers 5
    # writes safetensors only, so the shards are written as transformers 4 wrote them.
    def shard_pickle(path):
        state = BertModel.from_pretrained(path).state_dict()
        os.remove(os.path.join(path, "model.safetensors"))
        names = list(state)
        groups = [names[i::3] for i in range(3)]
        weight_map, total = {}, 0
        for i, group in enumerate(groups):
            shard = f"pytorch_model-{i + 1:05d}-of-{len(groups):05d}.bin"
            torch.save({n: state[n].contiguous() for n in group}, os.path.join(path, shard))
            for n in group:
                weight_map[n] = shard
                total += state[n].numel() * state[n].element_size()
        with open(os.path.join(path, "pytorch_model.bin.index.json"), "w", encoding="utf-8") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)

    record(out_dir, "bert_bin_sharded", build(bert, "mean", dense=8), texts, plain, rearrange=shard_pickle)

    # The sentence-transformers 2.x layout: the Transformer module's files (config,
    # weights, tokenizer, sentence_bert_config.json) in 0_Transformer/, named by
    # modules.json's path, beside 1_Pooling/ and 2_Normalize/.
    def st2_layout(path):
        sub = os.path.join(path, "0_Transformer")
        os.makedirs(sub)
        with open(os.path.join(path, "modules.json"), encoding="utf-8") as f:
            modules = json.load(f)
        assert modules[0]["type"].endswith("Transformer") and modules[0]["path"] == ""
        modules[0]["path"] = "0_Transformer"
        with open(os.path.join(path, "modules.json"), "w", encoding="utf-8") as f:
            json.dump(modules, f, indent=2)
        keep = {"modules.json", "config_sentence_transformers.json", "README.md"}
        for entry in os.listdir(path):
            full = os.path.join(path, entry)
            if entry not in keep and os.path.isfile(full):
                shutil.move(full, os.path.join(sub, entry))
        assert os.path.exists(os.path.join(sub, "tokenizer.json"))
        assert os.path.exists(os.path.join(sub, "sentence_bert_config.json"))

    record(out_dir, "bert_st2_layout", build(bert, "cls", max_seq_length=40, do_lower_case=True), texts, plain,
           rearrange=st2_layout)

    torch.manual_seed(1)
    # 514 positions, as real MPNet checkpoints have: the 512-token limit of the
    # tokenizer plus the padding offset (the long texts reach it).
    mpnet = save_base(MPNetModel(MPNetConfig(vocab_size=bert_tok.vocab_size, pad_token_id=0, relative_attention_num_buckets=32, max_position_embeddings=514, **TINY)), bert_tok, work, "mpnet")
    record(out_dir, "mpnet_mean_norm", build(mpnet, "mean", max_seq_length=64), texts, plain)
    record(out_dir, "mpnet_cls", build(mpnet, "cls", normalize=False), texts, plain)

    torch.manual_seed(2)
    uni_tok = unigram_tokenizer(sts_sentences(sts_dev, 2000))
    xlmr = save_base(XLMRobertaModel(XLMRobertaConfig(vocab_size=len(uni_tok), pad_token_id=1, type_vocab_size=1, max_position_embeddings=130, **TINY)), uni_tok, work, "xlmr")
    record(out_dir, "xlmr_mean_norm", build(xlmr, "mean", max_seq_length=64), texts, plain)
    torch.manual_seed(3)
    roberta = save_base(RobertaModel(RobertaConfig(vocab_size=len(uni_tok), pad_token_id=1, type_vocab_size=1, max_position_embeddings=130, **TINY)), uni_tok, work, "roberta")
    record(out_dir, "roberta_max_dense", build(roberta, "max", max_seq_length=100, dense=16), texts, plain)

    # Cross-encoder: BERT with a one-logit classification head (sigmoid at predict time).
    torch.manual_seed(4)
    head = BertForSequenceClassification(BertConfig(vocab_size=bert_tok.vocab_size, num_labels=1, **TINY))
    record_cross_encoder(out_dir, "cross_encoder", head, bert_tok, texts)
    torch.manual_seed(5)
    head = XLMRobertaForSequenceClassification(XLMRobertaConfig(
        vocab_size=len(uni_tok), num_labels=1, pad_token_id=1, type_vocab_size=1, max_position_embeddings=514, **TINY))
    record_cross_encoder(out_dir, "xlmr_cross_encoder", head, uni_tok, texts)

    torch.manual_seed(6)
    head = MPNetForSequenceClassification(MPNetConfig(
        vocab_size=bert_tok.vocab_size, num_labels=1, pad_token_id=0, relative_attention_num_buckets=32,
        max_position_embeddings=514, **TINY))
    record_cross_encoder(out_dir, "mpnet_cross_encoder", head, bert_tok, texts)

    run_arch_modules(Context(out_dir, texts, work, bert_tok, uni_tok))
    shutil.rmtree(work)


def record_cross_encoder(out_dir, name, model, tokenizer, texts):
    """Saves a sequence-classification `model` (weights spread) with `tokenizer` as
    OUT_DIR/NAME and records sentence-transformers' `CrossEncoder.predict` scores
    (its default activation) for a query against passages, a 5 x 5 matrix of
    ordered pairs, and pairs with sides past the token limit."""
    ce_path = os.path.join(out_dir, name)
    shutil.rmtree(ce_path, ignore_errors=True)
    spread(model).save_pretrained(ce_path)
    tokenizer.save_pretrained(ce_path)
    ce = CrossEncoder(ce_path, device="cpu")
    query = "How does Dartboard improve RAG systems?"
    passages = texts[:12] + [EDGE_TEXTS[0], EDGE_TEXTS[-1]] + texts[-2:]
    scores = ce.predict([(query, p) for p in passages], convert_to_numpy=True)
    matrix = ce.predict([(a, b) for a in passages[:5] for b in passages[:5]], convert_to_numpy=True)
    # Pairs with both sides past the limit (509 content tokens, odd: the longer side
    # keeps the extra token), and a long side against a short one, both ways round.
    mixed, long_words = texts[-2:]
    # (A pair of the mixed text with its own 3000-character prefix scored 1.2e-4 off
    # sentence-transformers with identical token ids from the tokenizers library; the
    # cause is open, see the closing note of the session that found it.)
    pairs = [(mixed, long_words), (long_words, mixed), (mixed, texts[0]), (texts[0], mixed), (EDGE_TEXTS[-1], mixed)]
    pair_scores = ce.predict(pairs, convert_to_numpy=True)
    with open(ce_path + ".json", "w", encoding="utf-8") as f:
        json.dump({"query": query, "passages": passages, "scores": scores.tolist(), "matrix": matrix.reshape(5, 5).tolist(),
                   "pairs": pairs, "pair_scores": pair_scores.tolist()}, f)
    return ce_path


class Context:
    """What an `arch_<name>.py` module's `make(ctx)` gets: where to write, the texts
    every fixture embeds, a scratch directory, and the two test tokenizers (a BERT
    WordPiece one and a small XLM-R-shaped Unigram one). The helpers `build`,
    `record`, `record_cross_encoder`, `spread` and `save_base` of this module are
    attributes too."""

    def __init__(self, out_dir, texts, work, bert_tok, uni_tok):
        self.out_dir, self.texts, self.work = out_dir, texts, work
        self.bert_tok, self.uni_tok = bert_tok, uni_tok
        self.tiny = dict(TINY)
        self.build, self.record, self.record_cross_encoder = build, record, record_cross_encoder
        self.spread, self.save_base = spread, save_base


def arch_modules():
    here = os.path.dirname(os.path.abspath(__file__))
    return sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(here, "arch_*.py")))


def run_arch_modules(ctx, only=None):
    for name in arch_modules():
        if only is None or name == only:
            torch.manual_seed(sum(map(ord, name)))
            importlib.import_module(name).make(ctx)


def main_only(only, minilm_dir, sts_dev, out_dir):
    """One architecture module's fixtures, with the same texts and tokenizers."""
    if only not in arch_modules():
        sys.exit(f"no module {only}.py beside make_fixtures.py (have: {', '.join(arch_modules())})")
    os.makedirs(out_dir, exist_ok=True)
    texts = sts_sentences(sts_dev, 40) + EDGE_TEXTS + long_texts(sts_sentences(sts_dev, 200))
    work = tempfile.mkdtemp()
    ctx = Context(out_dir, texts, work, bert_tokenizer(minilm_dir), unigram_tokenizer(sts_sentences(sts_dev, 2000)))
    run_arch_modules(ctx, only)
    shutil.rmtree(work)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--only":
        main_only(*sys.argv[2:6])
    else:
        main()
