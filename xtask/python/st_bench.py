"""sentence-transformers' side of `cargo xtask bench`: the same measurement as
`dartboard bench`, printed as one JSON object.

    python st_bench.py MODEL_DIR CORPUS BATCH_SIZE DTYPE REPEAT [EMBEDDINGS_OUT]
    python st_bench.py --cold-start MODEL_DIR      (embed one text and exit)
    python st_bench.py --corpus-npy MODEL_DIR CORPUS DTYPE OUT_NPY
        (the corpus run: encode once at batch 32, save a float32 .npy, report the
        encode time and peak RSS)
"""

import resource
import sys
import time

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def load(model_dir, dtype):
    return SentenceTransformer(model_dir, device="cpu", model_kwargs={"torch_dtype": DTYPES[dtype]})


def main():
    if sys.argv[1] == "--cold-start":
        load(sys.argv[2], "f32").encode(["hi"])
        return
    if sys.argv[1] == "--corpus-npy":
        model_dir, corpus, dtype, out = sys.argv[2:6]
        with open(corpus, encoding="utf-8") as f:
            texts = f.read().splitlines()
        model = load(model_dir, dtype)
        t = time.perf_counter()
        emb = model.encode(texts, batch_size=32, convert_to_numpy=True)
        seconds = time.perf_counter() - t
        np.save(out, emb.astype(np.float32))
        print(
            '{"impl": "sentence-transformers", "texts": %d, "seconds": %.6f, "peak_rss_kb": %d}'
            % (len(texts), seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        )
        return
    model_dir, corpus, batch_size, dtype, repeat = sys.argv[1:6]
    out = sys.argv[6] if len(sys.argv) > 6 else None
    with open(corpus, encoding="utf-8") as f:
        texts = f.read().splitlines()
    started = time.perf_counter()
    model = load(model_dir, dtype)
    load_seconds = time.perf_counter() - started
    model.encode(texts[:64], batch_size=int(batch_size))  # warm-up, as on the Rust side
    best = float("inf")
    for _ in range(int(repeat)):
        t = time.perf_counter()
        emb = model.encode(texts, batch_size=int(batch_size), convert_to_numpy=True)
        best = min(best, time.perf_counter() - t)
    if out:
        emb.astype("<f4").tofile(out)
    print(
        '{"impl": "sentence-transformers", "dtype": "%s", "batch_size": %d, "texts": %d, "seconds": %.6f, '
        '"texts_per_s": %.3f, "load_seconds": %.4f, "threads": %d, "peak_rss_kb": %d}'
        % (dtype, int(batch_size), len(texts), best, len(texts) / best, load_seconds, torch.get_num_threads(),
           resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    )


if __name__ == "__main__":
    main()
