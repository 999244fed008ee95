"""dartboard.ray.embed on a local Ray cluster of four nodes (a head with no CPUs, so
that all work runs on three one-CPU workers), embedding 3,000 rows from Parquet with
a tiny model: spread over nodes, through a killed actor and a removed node, and a
negative control that must fail with fault tolerance off.

The tests share one cluster and run in file order (the node removal last, since it
leaves the cluster a node short). Each has a hard timeout (``deadline``).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dartboard
import dartboard.ray

ROWS = 3000
FILES = 30
# Rows per map_batches batch: 5 batches in each of the 30 actor tasks.
RAY_BATCH = 20
MODEL = "bert_mean_norm"
# Seconds each test may take (cluster start-up included for the first).
TIMEOUT = 240


@pytest.fixture
def deadline():
    """Fails the test with a traceback if it runs past TIMEOUT; should the main
    thread be stuck where no signal is handled, faulthandler ends the process
    shortly after (tests/tests/python_wheel.rs kills it as a last resort)."""
    import faulthandler

    def expire(signum, frame):
        raise TimeoutError(f"test still running after {TIMEOUT} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TIMEOUT)
    faulthandler.dump_traceback_later(TIMEOUT + 30, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny):
    """3,000 rows in thirty Parquet files: ids in a shuffled order (so that sorted
    output could not pass by accident) and texts of varied length; and the
    single-process embeddings of those texts."""
    rng = np.random.default_rng(16)
    ids = rng.permutation(np.arange(100_000, 100_000 + ROWS)).astype(np.int64)
    words = "dartboard ray actor node parquet embedding vector model passage query cluster retry".split()
    texts = [f"row {i}: " + " ".join(rng.choice(words, size=int(rng.integers(1, 40)))) for i in ids]
    root = tmp_path_factory.mktemp("corpus")
    for part, rows in enumerate(np.array_split(np.arange(ROWS), FILES)):
        table = pa.table({"id": ids[rows], "text": [texts[r] for r in rows]})
        pq.write_table(table, root / f"part-{part:02d}.parquet")
    model = str(tiny / MODEL)
    reference = dartboard.Embedder(model).encode(texts)
    return {"dir": root, "model": model, "ids": ids, "by_id": dict(zip(ids.tolist(), reference))}


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    # A short path: Ray's sockets live under it, and Unix socket paths are short.
    temp_dir = tempfile.mkdtemp(prefix="dbray", dir="/tmp")
    # Ray records the cluster's address in $RAY_TMPDIR/ray/ray_current_cluster
    # (default /tmp/ray) whatever temp_dir says, and creates that folder only when it
    # is also the session's folder: on a fresh machine the write fails. Keep it
    # inside ours (the workers inherit the variable).
    os.environ["RAY_TMPDIR"] = temp_dir
    os.makedirs(os.path.join(temp_dir, "ray"), exist_ok=True)
    small = dict(object_store_memory=80 << 20)
    cluster = Cluster(
        initialize_head=True,
        head_node_args=dict(num_cpus=0, include_dashboard=False, temp_dir=temp_dir, **small),
    )
    workers = [cluster.add_node(num_cpus=1, **small) for _ in range(3)]
    ray.init(address=cluster.address, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # Blocks leave as they finish, so the first output comes after the first block,
    # whichever it is, and a fault injected then lands with most blocks still to do
    # on both actors. (In input order, block 0 may finish last and hold back every
    # other output until the work is nearly done.)
    context.execution_options.preserve_order = False
    # Work starts once both actors have loaded the model; otherwise the first one
    # up can finish this small job alone while the second is still loading.
    context.wait_for_min_actors_s = TIMEOUT
    try:
        yield {"cluster": cluster, "workers": workers}
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def run_job(corpus, fault=None, **options):
    """Embeds the corpus, consuming the output as it streams out; `fault` runs on a
    live embedding actor as soon as the first output batch has arrived, with the
    rest of the job still to do. Returns the output table, what the fault did, and
    the seconds the job took."""
    import ray

    # 30 blocks of 100 rows, all read before embedding starts, so both actors have
    # work from the start (Ray reads these small files as one block, and streamed
    # reads would trickle in slower than the tiny model embeds).
    ds = ray.data.read_parquet(str(corpus["dir"])).repartition(FILES).materialize()
    # One text per forward pass: about 1 ms a row, so the job runs for seconds and
    # a fault injected after its first output lands with most of the rows ahead.
    options.setdefault("encode_batch_size", 1)
    ds = dartboard.ray.embed(
        ds, model=corpus["model"], concurrency=2, batch_size=RAY_BATCH, node_column="node", **options
    )
    # Actors of earlier jobs that Ray has not reaped yet are not this job's.
    earlier = {a["id"] for a in live_embed_actors()}
    injected, parts = {}, []
    started = time.monotonic()
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        parts.append(batch)
        if fault is not None and not injected:
            actors = [a for a in live_embed_actors() if a["id"] not in earlier]
            assert actors, "no live embedding actor to inject the fault into"
            injected["rows_before"] = sum(len(p) for p in parts)
            injected["actor"] = actors[0]
            fault(actors[0])
    seconds = time.monotonic() - started
    if fault is not None:
        assert injected, "the job produced no output to inject the fault after"
        # The fault came with most of the job still ahead.
        assert injected["rows_before"] < ROWS // 2, injected
    return pa.concat_tables(parts), injected, seconds


def live_embed_actors():
    from ray._private import state

    return [
        {"id": actor_id, "pid": a["Pid"], "node": a["Address"]["NodeID"]}
        for actor_id, a in state.actors().items()
        if "EmbedBatch" in a["ActorClassName"] and a["State"] == "ALIVE" and a["Pid"]
    ]


def restarts_of(actor_id):
    from ray._private import state

    return state.actors()[actor_id]["NumRestarts"]


def check_rows(table, corpus, exact=None):
    """Output ids are exactly the input ids, each once; every vector is the
    single-process one (or, given `exact`, bit for bit that run's)."""
    ids = table.column("id").to_numpy()
    assert len(ids) == ROWS
    assert len(np.unique(ids)) == ROWS, "a row came out twice"
    assert set(ids.tolist()) == set(corpus["ids"].tolist()), "rows were dropped or invented"
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    reference = np.stack([corpus["by_id"][i] for i in ids.tolist()])
    # Ray batches rows differently from the single process, so padding and the
    # order of sums may differ: the project's f32 parity bound, and a tight
    # absolute one on these unit vectors.
    cos = (vectors * reference).sum(1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1))
    assert cos.min() >= 0.99999, cos.min()
    assert np.abs(vectors - reference).max() <= 1e-5
    if exact is not None:
        np.testing.assert_array_equal(vectors, np.stack([exact[i] for i in ids.tolist()]))
    return dict(zip(ids.tolist(), vectors))


@pytest.fixture(scope="module")
def clean_run(cluster, corpus):
    table, _, seconds = run_job(corpus)
    return table, seconds


def same_output(table, clean):
    """Deterministic: the same rows with the same vectors, bit for bit, as the run
    without a fault (rows compared by id: they leave in the order they finish)."""
    table, clean = table.sort_by("id"), clean.sort_by("id")
    np.testing.assert_array_equal(table.column("id").to_numpy(), clean.column("id").to_numpy())
    np.testing.assert_array_equal(
        np.stack(table.column("embedding").to_numpy(zero_copy_only=False)),
        np.stack(clean.column("embedding").to_numpy(zero_copy_only=False)),
    )


def kill(actor):
    os.kill(actor["pid"], signal.SIGKILL)


def test_rows_spread_over_nodes_and_match_one_process(clean_run, corpus, deadline):
    table, seconds = clean_run
    check_rows(table, corpus)
    nodes = set(table.column("node").to_pylist())
    assert len(nodes) >= 2, f"all rows were embedded on {nodes}"
    print(f"\nray: {ROWS} rows in {seconds:.2f} s = {ROWS / seconds:.0f} rows/s on {len(nodes)} nodes")


def test_ray_embed_reads_and_writes_parquet(cluster, corpus, tmp_path, deadline):
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "dartboard.ray_embed", "--input", str(corpus["dir"]), "--output", str(out),
         "--text-column", "text", "--model", corpus["model"], "--address", cluster["cluster"].address,
         "--batch-size", str(RAY_BATCH)],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    # The summary is the one JSON line ray_embed prints; Ray may print its own lines
    # to stdout after it (at shutdown), so find it rather than take the last line.
    summaries = [line for line in run.stdout.splitlines() if line.startswith('{"rows"')]
    assert len(summaries) == 1, run.stdout[-3000:]
    summary = json.loads(summaries[0])
    assert summary["rows"] == ROWS
    check_rows(pq.read_table(out), corpus)
    # A second run into the same directory would mix its files with these.
    again = subprocess.run(
        [sys.executable, "-m", "dartboard.ray_embed", "--input", str(corpus["dir"]), "--output", str(out)],
        capture_output=True, text=True, timeout=60,
    )
    assert again.returncode != 0 and "is not empty" in again.stderr


def test_a_killed_actor_is_restarted_and_the_job_completes(clean_run, corpus, deadline):
    table, injected, _ = run_job(corpus, fault=kill)
    assert restarts_of(injected["actor"]["id"]) >= 1, "Ray did not restart the killed actor"
    check_rows(table, corpus)
    same_output(table, clean_run[0])


def test_without_restarts_a_killed_actor_fails_the_job(clean_run, corpus, deadline):
    """The negative control: the same fault with restarts and retries off must fail
    the job, because of the dead actor; so the test above shows that restarts and
    retries are what carried the job through it."""
    import ray

    with pytest.raises(Exception) as failure:
        run_job(corpus, fault=kill, max_restarts=0, max_task_retries=0)
    chain, err = [], failure.value
    while err is not None and len(chain) < 20:
        chain.append(err)
        err = err.__cause__ or err.__context__
    died = [e for e in chain if isinstance(e, ray.exceptions.RayActorError)] or [
        e for e in chain if "ActorDiedError" in str(e) or "actor died" in str(e).lower()
    ]
    assert died, f"the job failed, but not because the actor died: {failure.value!r}"


def test_a_removed_node_costs_no_rows(clean_run, cluster, corpus, deadline):
    import ray

    removed = {}

    def remove(actor):
        node = next(n for n in cluster["workers"] if n.node_id == actor["node"])
        removed["node"] = node.node_id
        cluster["cluster"].remove_node(node, allow_graceful=False)

    table, injected, _ = run_job(corpus, fault=remove)
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert removed["node"] not in alive, "the node was not removed"
    check_rows(table, corpus)
    same_output(table, clean_run[0])
