"""``python -m dartboard.ray_embed``: embed a Parquet corpus on a Ray cluster.

    python -m dartboard.ray_embed --input DIR --output DIR --text-column text \\
        --model all-MiniLM-L6-v2 [--address auto]

Reads every Parquet file under ``--input``, adds an ``embedding`` column (a float32
vector per row) with ``dartboard.ray.embed`` and writes Parquet files under
``--output``, rows in input order. ``--address`` is the cluster (``auto``: the one
``ray start`` made on this machine; none: ``RAY_ADDRESS``, else a local Ray started
for this run). The output directory must be empty or absent, so files of an earlier
run are never mixed into this one's.
"""

import argparse
import json
import os
import sys
import time

from dartboard.ray import DEFAULT_BATCH_SIZE, embed


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m dartboard.ray_embed", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="directory (or file) of Parquet files")
    p.add_argument("--output", required=True, help="directory to write Parquet files into (empty or absent)")
    p.add_argument("--text-column", default="text", help="column holding the texts (default: text)")
    p.add_argument("--output-column", default="embedding", help="column to write the vectors into (default: embedding)")
    p.add_argument("--model", default=None, help="model name, ORG/NAME[@REV] or directory (default: EMBEDDING_MODEL)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--concurrency", type=int, default=2, help="actors, each holding one model (default: 2)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="rows per Ray batch")
    p.add_argument("--encode-batch-size", type=int, default=None, help="texts per forward pass")
    p.add_argument("--num-cpus", type=float, default=1, help="CPUs each actor reserves (default: 1)")
    p.add_argument("--num-gpus", type=float, default=0, help="GPUs each actor reserves (default: 0)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N, auto (default: EMBEDDING_DEVICE)")
    p.add_argument("--dtype", default=None, help="f32, bf16, f16 (default: EMBEDDING_DTYPE)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.path.isdir(args.output) and os.listdir(args.output):
        sys.exit(f"ray_embed: {args.output} is not empty; choose a new output directory or empty it first")
    if not os.path.exists(args.input):
        sys.exit(f"ray_embed: {args.input} does not exist")
    import ray

    ray.init(address=args.address, log_to_driver=False)
    # Rows leave in the order they came in, whichever actor finished first.
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    started = time.monotonic()
    ds = ray.data.read_parquet(args.input)
    ds = embed(
        ds,
        text_column=args.text_column,
        output_column=args.output_column,
        model=args.model,
        concurrency=args.concurrency,
        batch_size=args.batch_size,
        encode_batch_size=args.encode_batch_size,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        device=args.device,
        dtype=args.dtype,
    )
    ds.write_parquet(args.output)
    seconds = time.monotonic() - started
    rows = ray.data.read_parquet(args.output).count()
    print(json.dumps({"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1)}))


if __name__ == "__main__":
    main()
