"""dartboard.Embedder against sentence-transformers in one Python process, and the
Ray job next to one process.

    python crates/dartboard-py/bench/compare.py MODEL_DIR STS_TEST_CSV [--ray] [--out FILE]

`cargo xtask bench --python` builds and installs the wheel, runs this with `--ray`
on the default model and writes the table in docs/scale-out.md; by hand, run it
with the venv's Python after `cargo xtask wheel --install`. The texts are the
sentences of STS-B test (both columns, in file order), embedded at batch 32; each
side runs once to warm up, then three times, alternating, and the median is reported,
with the minimum cosine of dartboard's f32 vectors against sentence-transformers'.
`--ray` then embeds the same texts with `dartboard.ray.embed` on a local Ray
cluster (a head without CPUs and two one-CPU worker nodes, two actors) and reports
its rows/s, actor start-up included, beside one process's.
"""

import argparse
import csv
import json
import os
import statistics
import tempfile
import time

import numpy as np


def sts_sentences(path):
    texts = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            texts.extend(row[5:7])
    return texts


def min_cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def alternating(sides, rounds=3):
    """Runs each side once to warm up, then `rounds` times, alternating, so that a
    change in the machine's load falls on both sides alike; returns each side's last
    output and median seconds."""
    outputs = {name: fn() for name, fn in sides.items()}
    times = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            started = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - started)
    return {name: (outputs[name], statistics.median(times[name])) for name in sides}


def one_process(model_dir, texts):
    import dartboard
    from sentence_transformers import SentenceTransformer

    ours = dartboard.Embedder(model_dir, batch_size=32)
    theirs = SentenceTransformer(model_dir, device="cpu")
    runs = alternating(
        {"dartboard": lambda: ours.encode(texts), "st": lambda: theirs.encode(texts, batch_size=32)}
    )
    (got, ours_s), (want, theirs_s) = runs["dartboard"], runs["st"]
    return {
        "texts": len(texts),
        "dartboard_texts_per_s": round(len(texts) / ours_s, 1),
        "sentence_transformers_texts_per_s": round(len(texts) / theirs_s, 1),
        "speedup": round(theirs_s / ours_s, 3),
        "min_cosine_f32": min_cosine(got, want),
        "torch_threads": __import__("torch").get_num_threads(),
        "torch_version": __import__("torch").__version__,
        "sentence_transformers_version": __import__("sentence_transformers").__version__,
    }


def ray_job(model_dir, texts):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    from ray.cluster_utils import Cluster

    import dartboard.ray

    temp_dir = tempfile.mkdtemp(prefix="dbbench", dir="/tmp")
    # Ray writes the cluster's address under $RAY_TMPDIR/ray (default /tmp/ray), a
    # folder it creates only when that is also the session's: keep it inside ours
    # (as tests/test_ray.py does), so a machine without /tmp/ray works too.
    os.environ["RAY_TMPDIR"] = temp_dir
    os.makedirs(os.path.join(temp_dir, "ray"))
    data = os.path.join(temp_dir, "in")
    os.makedirs(data)
    for part, rows in enumerate(np.array_split(np.arange(len(texts)), 8)):
        pq.write_table(pa.table({"id": rows, "text": [texts[i] for i in rows]}), os.path.join(data, f"{part}.parquet"))
    small = dict(object_store_memory=100 << 20)
    head = dict(num_cpus=0, include_dashboard=False, temp_dir=temp_dir, **small)
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1, **small)
        ray.init(address=cluster.address, log_to_driver=False)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.read_parquet(data).repartition(8).materialize()
        started = time.perf_counter()
        embedded = dartboard.ray.embed(ds, model=model_dir, concurrency=2, batch_size=256, encode_batch_size=32)
        rows = sum(len(b["id"]) for b in embedded.iter_batches(batch_size=None))
        seconds = time.perf_counter() - started
        # Actor start-up (loading the model) is inside the time, as in a real job.
        return {"rows": rows, "nodes": 3, "actors": 2, "threads_per_actor": 1, "seconds": round(seconds, 2),
                "rows_per_s": round(rows / seconds, 1)}
    finally:
        ray.shutdown()
        cluster.shutdown()
        import shutil

        shutil.rmtree(temp_dir, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("sts_test")
    p.add_argument("--ray", action="store_true")
    p.add_argument("--out")
    args = p.parse_args()
    texts = sts_sentences(args.sts_test)
    result = {"one_process": one_process(args.model_dir, texts)}
    if args.ray:
        result["ray"] = ray_job(args.model_dir, texts)
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
