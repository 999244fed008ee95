"""Embedding a Ray Dataset with one ``dartboard.Embedder`` per actor.

``embed(ds)`` is a ``map_batches`` over :class:`EmbedBatch`, a callable class: Ray
Data starts ``concurrency`` actors, each loads the model once, and batches of rows
stream through them. Actor restarts (``max_restarts``) and retries of the tasks an
actor was running (``max_task_retries``) are on by default, so a killed actor or a
lost node costs time, not rows.

Why a retry never duplicates or drops a row: a map task's output block is committed
to the object store only when the task finishes, so the attempt that died leaves
nothing behind and the retry produces the whole block again; blocks lost with a node
are rebuilt from lineage. The vectors do not depend on which actor or attempt
computed them (the model is deterministic and each batch's rows are embedded
together), and with ``preserve_order`` (set by ``python -m dartboard.ray_embed``)
the rows come out in input order.
"""

import json
import os
import signal
import time
import warnings
from typing import Any, Dict, Optional

import numpy as np

# Rows per map_batches batch: large enough that Ray's per-batch overhead is small
# next to the model, small enough that a retried batch is cheap.
DEFAULT_BATCH_SIZE = 256

# Test-only fault injection, used by crates/dartboard-py/tests/test_ray.py and by
# nothing else. A fault injected from outside (a SIGKILL sent when the job's first
# output arrives) may hit an actor that happens to be idle, and then the job has
# nothing to lose; injected by the actor itself, inside a batch, it always lands on
# work that has not been returned yet. When an actor's environment names a file in
# this variable and that file exists, holding "kill N" or "hold N", the first actor
# to reach its N-th batch claims the file (deletes it: exactly one actor wins),
# records itself in FILE.fired (JSON: actor_id, pid, node_id, batch), and then,
# with that batch embedded but not returned, either SIGKILLs itself ("kill") or
# waits until FILE.released exists ("hold", at most HOLD_SECONDS) so that the test
# can take its node away. Unset, as anywhere but in that test, it costs one
# environment lookup per actor.
TEST_FAULT_ENV = "DARTBOARD_RAY_TEST_FAULT"
HOLD_SECONDS = 120.0


class EmbedBatch:
    """The per-actor callable: loads one ``Embedder`` and embeds each batch's
    ``text_column`` into ``output_column`` (a list of float32 vectors, which Ray
    stores as a fixed-size tensor column)."""

    def __init__(
        self,
        text_column: str,
        output_column: str,
        model: Optional[str],
        device: Optional[str],
        dtype: Optional[str],
        encode_batch_size: Optional[int],
        prompt_name: Optional[str],
        truncate_dim: Optional[int],
        node_column: Optional[str],
    ):
        from dartboard import Embedder

        self._embedder = Embedder(model=model, device=device, dtype=dtype, batch_size=encode_batch_size)
        self._text_column = text_column
        self._output_column = output_column
        self._prompt_name = prompt_name
        self._truncate_dim = truncate_dim
        self._node_column = node_column
        self._node_id = None
        if node_column is not None:
            import ray

            self._node_id = ray.get_runtime_context().get_node_id()
        self._batches = 0
        self._test_fault = os.environ.get(TEST_FAULT_ENV) or None

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        texts = batch[self._text_column]
        texts = texts.tolist() if isinstance(texts, np.ndarray) else list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(
                    f"column {self._text_column!r} holds a {type(text).__name__} in row {i} of this batch; "
                    "every row needs a string (drop or fill the missing ones first)"
                )
        vectors = self._embedder.encode(texts, prompt_name=self._prompt_name, truncate_dim=self._truncate_dim)
        batch[self._output_column] = vectors
        if self._node_column is not None:
            batch[self._node_column] = np.array([self._node_id] * len(texts), dtype=object)
        self._batches += 1
        if self._test_fault is not None:
            _inject_test_fault(self._test_fault, self._batches)
        return batch


def _inject_test_fault(path: str, batches: int) -> None:
    """The fault of ``TEST_FAULT_ENV`` (test-only), if armed and due at this actor's
    ``batches``-th batch and no other actor has claimed it."""
    try:
        with open(path) as f:
            armed = f.read()
    except FileNotFoundError:
        return  # not armed
    action, _, at = armed.strip().partition(" ")
    if action not in ("kill", "hold") or not at.isdigit():
        raise ValueError(f"{path} holds {armed!r}; {TEST_FAULT_ENV} expects 'kill N' or 'hold N'")
    if batches < int(at):
        return
    try:
        os.remove(path)
    except FileNotFoundError:
        return  # another actor claimed it first
    import ray

    context = ray.get_runtime_context()
    record = {
        "action": action,
        "batch": batches,
        "actor_id": context.get_actor_id(),
        "node_id": context.get_node_id(),
        "pid": os.getpid(),
    }
    # Written whole, then renamed, so that the test never reads half a record.
    with open(path + ".fired.tmp", "w") as f:
        json.dump(record, f)
    os.replace(path + ".fired.tmp", path + ".fired")
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "hold":
        deadline = time.monotonic() + HOLD_SECONDS
        while not os.path.exists(path + ".released") and time.monotonic() < deadline:
            time.sleep(0.01)


def embed(
    ds,
    text_column: str = "text",
    output_column: str = "embedding",
    model: Optional[str] = None,
    *,
    concurrency: Any = 2,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_cpus: float = 1,
    num_gpus: float = 0,
    device: Optional[str] = None,
    dtype: Optional[str] = None,
    encode_batch_size: Optional[int] = None,
    prompt_name: Optional[str] = None,
    truncate_dim: Optional[int] = None,
    max_restarts: int = -1,
    max_task_retries: int = -1,
    node_column: Optional[str] = None,
    **ray_remote_args: Any,
):
    """Adds ``output_column`` (one float32 vector per row) to the ``ray.data.Dataset``
    ``ds`` and returns the new (lazy) Dataset.

    ``concurrency``: actors (an int, or ``(min, max)`` for an autoscaling pool), each
    holding one model and reserving ``num_cpus`` / ``num_gpus``. ``batch_size``: rows
    per ``map_batches`` batch; ``encode_batch_size``: texts per forward pass inside
    it (default: the configured batch size). ``model``, ``device``, ``dtype``: as for
    ``dartboard.Embedder`` (None reads ``EMBEDDING_*`` on each worker).
    ``max_restarts`` / ``max_task_retries``: -1 restarts a dead actor and retries
    its tasks without limit; 0 turns fault tolerance off. ``node_column``: if given,
    also records the Ray node id that embedded each row. Further keyword arguments
    go to Ray as actor options.
    """
    import ray.data

    if num_gpus and device is None:
        device = "cuda"
    if isinstance(concurrency, tuple):
        pool = ray.data.ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
    else:
        pool = ray.data.ActorPoolStrategy(size=concurrency)
    with warnings.catch_warnings():
        # Ray 2.60 takes an actor pool's max_restarts and max_task_retries only as
        # extra keyword arguments (the way its own docs show), and warns that those
        # go away in 2.64, which has not said what replaces them; requirements-py.txt
        # pins 2.60. The warning would only confuse our callers.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return ds.map_batches(
            EmbedBatch,
            fn_constructor_kwargs=dict(
                text_column=text_column,
                output_column=output_column,
                model=model,
                device=device,
                dtype=dtype,
                encode_batch_size=encode_batch_size,
                prompt_name=prompt_name,
                truncate_dim=truncate_dim,
                node_column=node_column,
            ),
            batch_size=batch_size,
            batch_format="numpy",
            compute=pool,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            max_restarts=max_restarts,
            max_task_retries=max_task_retries,
            **ray_remote_args,
        )
