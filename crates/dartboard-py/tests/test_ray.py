"""dartboard.ray.embed on a local Ray cluster of four nodes (a head with no CPUs, so
that all work runs on three one-CPU workers), embedding 3,000 rows from Parquet with
a tiny model: spread over nodes, through a killed actor and a removed node, and a
negative control that must fail with fault tolerance off.

The faults are injected by an embedding actor into itself, through dartboard.ray's
test-only hook (``DARTBOARD_RAY_TEST_FAULT``): the first actor to reach its
``FAULT_AT``-th batch, with that batch embedded but not yet returned, is killed or
held while its node is removed. A fault sent from outside when some output has
arrived could hit an actor that happens to be idle, which loses nothing, so the
negative control would pass or fail by timing; from inside, every run hits an
actor in the middle of a task, and the positive tests and the control inject the
very same fault.

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
import threading
import time

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
# The fault fires in the first actor to reach its 3rd batch: early in its first
# task of five batches, with some 140 of the job's 150 batches still to come.
FAULT_AT = 3


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
    # Every actor looks for an armed fault here (the nodes' processes inherit the
    # variable); only the tests that inject one arm it (Fault).
    fault_file = os.path.join(temp_dir, "fault")
    os.environ[dartboard.ray.TEST_FAULT_ENV] = fault_file
    small = dict(object_store_memory=80 << 20)
    cluster = Cluster(
        initialize_head=True,
        head_node_args=dict(num_cpus=0, include_dashboard=False, temp_dir=temp_dir, **small),
    )
    workers = [cluster.add_node(num_cpus=1, **small) for _ in range(3)]
    ray.init(address=cluster.address, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # Blocks leave as they finish (the checks compare rows by id), so a held or
    # retried block never holds back the others' output.
    context.execution_options.preserve_order = False
    # Work starts once both actors have loaded the model; otherwise the first one
    # up can finish this small job alone while the second is still loading.
    context.wait_for_min_actors_s = TIMEOUT
    try:
        yield {"cluster": cluster, "workers": workers, "fault_file": fault_file}
    finally:
        ray.shutdown()
        cluster.shutdown()
        os.environ.pop(dartboard.ray.TEST_FAULT_ENV, None)
        shutil.rmtree(temp_dir, ignore_errors=True)


class Fault:
    """One fault, armed for one job: the first embedding actor to reach its
    FAULT_AT-th batch injects it into itself while that batch is embedded but not
    returned (dartboard.ray's test hook). "kill": the actor SIGKILLs itself. "hold":
    the actor waits while `on_hold(record)` runs here, in a thread, then goes on.
    `record` is what the actor wrote about itself (actor_id, node_id, pid, batch)."""

    def __init__(self, cluster, action, on_hold=None):
        self.path = cluster["fault_file"]
        self.action = action
        self.on_hold = on_hold
        self.record = None
        self._error = None
        self._stop = threading.Event()
        self._watcher = None

    def __enter__(self):
        for leftover in (self.path, self.path + ".fired", self.path + ".released"):
            if os.path.exists(leftover):
                os.remove(leftover)
        # Armed whole (write, then rename), so that no actor reads half of it.
        with open(self.path + ".tmp", "w") as f:
            f.write(f"{self.action} {FAULT_AT}\n")
        os.replace(self.path + ".tmp", self.path)
        if self.on_hold is not None:
            self._watcher = threading.Thread(target=self._watch, daemon=True)
            self._watcher.start()
        return self

    def _watch(self):
        deadline = time.monotonic() + TIMEOUT
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                record = self._read()
                if record is not None:
                    self.on_hold(record)
                    return
                time.sleep(0.01)
        except BaseException as e:  # handed to the test's thread in __exit__
            self._error = e
        finally:
            # Let the held actor go on (if it still exists) whatever happened here.
            with open(self.path + ".released", "w"):
                pass

    def _read(self):
        try:
            with open(self.path + ".fired") as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def __exit__(self, *exc):
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=30)
        # Disarmed, so that a fault that never fired cannot fire in a later job.
        if os.path.exists(self.path):
            os.remove(self.path)
        self.record = self._read()
        if self._error is not None and exc[0] is None:
            raise self._error
        return False


def run_job(corpus, fault=None, **options):
    """Embeds the corpus, consuming the output as it streams out, with `fault` (a
    Fault) armed for this job. Returns the output table and the seconds the job
    took."""
    import contextlib

    import ray

    # 30 blocks of 100 rows, all read before embedding starts, so both actors have
    # work from the start (Ray reads these small files as one block, and streamed
    # reads would trickle in slower than the tiny model embeds).
    ds = ray.data.read_parquet(str(corpus["dir"])).repartition(FILES).materialize()
    # One text per forward pass: about 1 ms a row, so the job runs for seconds, and
    # a row's vector depends on its text alone, whichever batch it was in.
    options.setdefault("encode_batch_size", 1)
    ds = dartboard.ray.embed(
        ds, model=corpus["model"], concurrency=2, batch_size=RAY_BATCH, node_column="node", **options
    )
    parts = []
    started = time.monotonic()
    with fault or contextlib.nullcontext():
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            parts.append(batch)
    seconds = time.monotonic() - started
    if fault is not None:
        assert fault.record is not None, f"no actor reached its batch {FAULT_AT}: the fault never fired"
        assert fault.record["batch"] == FAULT_AT, fault.record
    return pa.concat_tables(parts), seconds


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
    return run_job(corpus)


def same_output(table, clean):
    """Deterministic: the same rows with the same vectors, bit for bit, as the run
    without a fault (rows compared by id: they leave in the order they finish)."""
    table, clean = table.sort_by("id"), clean.sort_by("id")
    np.testing.assert_array_equal(table.column("id").to_numpy(), clean.column("id").to_numpy())
    np.testing.assert_array_equal(
        np.stack(table.column("embedding").to_numpy(zero_copy_only=False)),
        np.stack(clean.column("embedding").to_numpy(zero_copy_only=False)),
    )


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


def test_a_killed_actor_is_restarted_and_the_job_completes(clean_run, cluster, corpus, deadline):
    fault = Fault(cluster, "kill")
    table, seconds = run_job(corpus, fault=fault)
    restarts = restarts_of(fault.record["actor_id"])
    assert restarts >= 1, "Ray did not restart the killed actor"
    check_rows(table, corpus)
    same_output(table, clean_run[0])
    print(f"\nkill: actor {fault.record['actor_id']} killed itself in its batch {fault.record['batch']}; "
          f"restarted {restarts}x; the job completed in {seconds:.1f} s")


def test_without_restarts_a_killed_actor_fails_the_job(clean_run, cluster, corpus, deadline):
    """The negative control: the same fault as the test above, with restarts and
    retries off, must fail the job because that actor died; so the test above shows
    that restarts and retries are what carried the job through it."""
    import ray

    fault = Fault(cluster, "kill")
    with pytest.raises(Exception) as failure:
        run_job(corpus, fault=fault, max_restarts=0, max_task_retries=0)
    assert fault.record is not None, f"the job failed before the fault fired: {failure.value!r}"
    chain, err = [], failure.value
    while err is not None and len(chain) < 20:
        chain.append(err)
        err = err.__cause__ or err.__context__
    died = [e for e in chain if isinstance(e, ray.exceptions.RayActorError)] or [
        e for e in chain if "ActorDiedError" in str(e) or "actor died" in str(e).lower()
    ]
    assert died, f"the job failed, but not because the actor died: {failure.value!r}"
    killed = fault.record["actor_id"]
    assert any(getattr(e, "actor_id", None) == killed or killed in str(e) for e in died), (
        f"the job failed because of another actor than the killed one ({killed}): {died[0]!r}"
    )
    print(f"\nno restarts: the job failed with {type(died[0]).__name__} for actor {killed}")


def test_a_removed_node_costs_no_rows(clean_run, cluster, corpus, deadline):
    """The node of an actor that is holding a batch it has embedded but not
    returned is removed (all its processes killed at once), mid-job."""
    import ray

    removed = {}

    def remove(record):
        node = next(n for n in cluster["workers"] if n.node_id == record["node_id"])
        removed["node"] = node.node_id
        cluster["cluster"].remove_node(node, allow_graceful=False)

    fault = Fault(cluster, "hold", on_hold=remove)
    table, seconds = run_job(corpus, fault=fault)
    assert removed, "the node was not removed"
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert removed["node"] not in alive, "the node was not removed"
    check_rows(table, corpus)
    same_output(table, clean_run[0])
    print(f"\nnode {removed['node'][:12]} removed while its actor held its batch {fault.record['batch']}; "
          f"the job completed in {seconds:.1f} s")
