"""Reference embeddings from sentence-transformers itself, for the parity tests.

Run by `cargo xtask test` through the project's venv:
    python st_reference.py MODEL_DIR STS_DEV_CSV OUT_JSON

Writes the texts, sentence-transformers' embeddings of them (encode() defaults:
batch size 32, f32, CPU), and sentence-transformers' own Spearman correlation on the
STS Benchmark dev split, so the Rust tests compare against what Python really does.
"""

import csv
import json
import sys

import numpy as np
import sentence_transformers
import torch
from scipy.stats import spearmanr
from stsb import sts_sentences
from sentence_transformers import SentenceTransformer

# Texts chosen to exercise the tokenizer and the pipeline's edges.
EXTRA_TEXTS = [
    "",
    " ",
    "   leading and trailing spaces   ",
    "Tabs\tand\nnewlines\r\ninside",
    "UPPER CASE and MiXeD cAsE",
    "Café, naïve, coöperate, résumé, Ångström",
    "日本語のテキストも埋め込めます。",
    "中文句子用于测试分词器。",
    "Текст на русском языке.",
    "نص باللغة العربية",
    "Emoji 🚀🔥 and symbols ©®™ ∑∫√",
    "def embed(texts):\n    return [model(t) for t in texts]  # Python code",
    "fn main() { println!(\"{}\", 1 + 2); } // Rust code",
    "SELECT id, name FROM passages WHERE score > 0.5 ORDER BY score DESC;",
    "https://example.com/path?query=1&other=two#fragment",
    "Numbers: 3.14159, 2,718, 1e-9, -42, 100%",
    "a",
    "The",
    "[CLS] [SEP] [PAD] [MASK] [UNK]",
    " ".join(["Dartboard retrieval balances relevance and diversity across many passages."] * 60),
    "word " * 600,
]


def sts_spearman(model, path):
    a, b, gold = [], [], []
    with open(path, encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            gold.append(float(row[4]))
            a.append(row[5])
            b.append(row[6])
    ea = model.encode(a, convert_to_numpy=True)
    eb = model.encode(b, convert_to_numpy=True)
    cos = (ea * eb).sum(1) / (np.linalg.norm(ea, axis=1) * np.linalg.norm(eb, axis=1))
    return float(spearmanr(cos, gold).correlation)

def main():
    model_dir, sts_dev, out = sys.argv[1:4]
    torch.manual_seed(0)
    model = SentenceTransformer(model_dir, device="cpu")
    texts = sts_sentences(sts_dev, 280) + EXTRA_TEXTS
    embeddings = model.encode(texts, convert_to_numpy=True)
    result = {
        "model_dir": model_dir,
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": model.max_seq_length,
        "sts_dev_spearman": sts_spearman(model, sts_dev),
        "texts": texts,
        "embeddings": embeddings.astype(np.float32).tolist(),
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f)

if __name__ == "__main__":
    main()
