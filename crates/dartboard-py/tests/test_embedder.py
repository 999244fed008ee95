"""dartboard.Embedder, CrossEncoder and compat against sentence-transformers and
the CLI, and how the package loads."""

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import dartboard
from conftest import min_cosine
from dartboard.compat import SentenceTransformerModel


def test_embedder_equals_sentence_transformers(minilm, sts_texts):
    from sentence_transformers import SentenceTransformer

    ours = dartboard.Embedder(str(minilm))
    theirs = SentenceTransformer(str(minilm), device="cpu")
    got = ours.encode(sts_texts)
    want = theirs.encode(sts_texts, batch_size=32)
    assert got.dtype == np.float32 and got.shape == (len(sts_texts), 384)
    assert (ours.embedding_dim, ours.max_seq_length) == (384, theirs.max_seq_length)
    assert min_cosine(got, want) >= 0.99999
    # A per-call batch size changes only the grouping, not the vectors.
    assert min_cosine(ours.encode(sts_texts, batch_size=7), want) >= 0.99999


def test_embedder_equals_the_cli(minilm, sts_texts, dartboard_bin):
    texts = sts_texts[:64]
    out = subprocess.run(
        [str(dartboard_bin), "embed", "--model", str(minilm), *texts],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    cli = np.array([json.loads(line)["embedding"] for line in out.splitlines()], dtype=np.float32)
    got = dartboard.Embedder(str(minilm)).encode(texts)
    assert cli.shape == got.shape
    # Same library, same batches: equal up to the CLI's shortest round-trip JSON.
    np.testing.assert_allclose(got, cli, rtol=0, atol=1e-7)


def test_a_model_name_resolves_in_the_cache_the_cli_and_sentence_transformers_share(minilm, sts_texts):
    """By name, with the Hub out of reach, the model comes from the one cache the CLI
    and Python sentence-transformers read (SENTENCE_TRANSFORMERS_HOME, hub layout),
    where `cargo xtask setup` put it."""
    from sentence_transformers import SentenceTransformer

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    cache = os.environ["SENTENCE_TRANSFORMERS_HOME"]
    assert os.path.commonpath([str(minilm), cache]) == os.path.normpath(cache), (minilm, cache)
    texts = sts_texts[:32]
    by_name = dartboard.Embedder("all-MiniLM-L6-v2").encode(texts)
    by_dir = dartboard.Embedder(str(minilm)).encode(texts)
    np.testing.assert_allclose(by_name, by_dir, rtol=0, atol=1e-7)
    theirs = SentenceTransformer("all-MiniLM-L6-v2", device="cpu").encode(texts)
    assert min_cosine(by_name, theirs) >= 0.99999


def test_truncate_dim_keeps_the_leading_columns(tiny):
    model = dartboard.Embedder(str(tiny / "bert_mean_norm"))
    texts = ["a first text", "and a second, longer one"]
    full = model.encode(texts)
    cut = model.encode(texts, truncate_dim=5)
    assert cut.shape == (2, 5)
    np.testing.assert_array_equal(cut, full[:, :5])
    with pytest.raises(dartboard.DartboardError, match="cannot truncate"):
        model.encode(texts, truncate_dim=model.embedding_dim + 1)


def test_prompt_name_equals_sentence_transformers(tiny):
    from sentence_transformers import SentenceTransformer

    path = str(tiny / "bert_prompts")
    ours = dartboard.Embedder(path)
    theirs = SentenceTransformer(path, device="cpu")
    texts = ["how do darts land", "Dartboard picks diverse passages."]
    for name in ["query", "passage", "document"]:
        assert min_cosine(ours.encode(texts, prompt_name=name), theirs.encode(texts, prompt_name=name)) >= 0.99999
    # None means the model's default prompt, as in sentence-transformers.
    assert min_cosine(ours.encode(texts), theirs.encode(texts)) >= 0.99999
    with pytest.raises(dartboard.DartboardError, match='no prompt named "nope".*query'):
        ours.encode(texts, prompt_name="nope")


def test_empty_input_gives_an_empty_matrix(tiny):
    model = dartboard.Embedder(str(tiny / "bert_mean_norm"))
    got = model.encode([])
    assert got.shape == (0, model.embedding_dim) and got.dtype == np.float32


def test_errors_are_python_exceptions_with_the_rust_message(tmp_path, tiny):
    missing = tmp_path / "no-such-model"
    missing.mkdir()
    with pytest.raises(dartboard.DartboardError, match=f"cannot load embedding model {missing}.*modules.json|config"):
        dartboard.Embedder(str(missing))
    with pytest.raises(ValueError, match="device.*cpu, cuda, cuda:N, auto"):
        dartboard.Embedder(str(tiny / "bert_mean_norm"), device="tpu")
    with pytest.raises(ValueError, match="dtype.*f32, bf16, f16"):
        dartboard.Embedder(str(tiny / "bert_mean_norm"), dtype="f64")
    model = dartboard.Embedder(str(tiny / "bert_mean_norm"))
    with pytest.raises(ValueError, match="batch_size"):
        model.encode(["x"], batch_size=0)
    with pytest.raises(TypeError, match="not one string"):
        model.encode("one string")
    with pytest.raises(TypeError, match="list of strings"):
        model.encode(["fine", 3])
    with pytest.raises(dartboard.DartboardError, match="bytes"):
        model.encode(["x" * ((1 << 20) + 1)])


def test_embedder_reads_the_cli_environment(tiny, monkeypatch, tmp_path):
    # The CLI's order: arguments over EMBEDDING_* over dartboard.toml.
    config = tmp_path / "dartboard.toml"
    config.write_text(f'model = "{tiny / "bert_mean_norm"}"\nbatch_size = 5\n')
    monkeypatch.setenv("DARTBOARD_CONFIG", str(config))
    model = dartboard.Embedder()
    assert model.model == str(tiny / "bert_mean_norm") and model.batch_size == 5
    monkeypatch.setenv("EMBEDDING_MODEL", str(tiny / "bert_mean_norm"))
    monkeypatch.setenv("EMBEDDING_BATCH_SIZE", "3")
    model = dartboard.Embedder()
    assert model.model == str(tiny / "bert_mean_norm") and model.batch_size == 3
    assert dartboard.Embedder(batch_size=4).batch_size == 4
    monkeypatch.setenv("EMBEDDING_DTYPE", "f64")
    with pytest.raises(dartboard.DartboardError, match="EMBEDDING_DTYPE"):
        dartboard.Embedder()


def test_encode_releases_the_gil(minilm, sts_texts):
    model = dartboard.Embedder(str(minilm))
    texts = sts_texts * 2
    span = {}

    def work():
        span["start"] = time.monotonic()
        model.encode(texts)
        span["end"] = time.monotonic()

    thread = threading.Thread(target=work)
    ticks = []
    thread.start()
    while thread.is_alive():
        ticks.append(time.monotonic())
        time.sleep(0.001)
    thread.join()
    inside = [t for t in ticks if span["start"] < t < span["end"]]
    # With the GIL held for the whole call this thread could not run at all in it;
    # released, it ticks about once a millisecond.
    assert span["end"] - span["start"] > 0.2, "encode too short to tell"
    assert len(inside) > 0.3 * (span["end"] - span["start"]) * 1000, (len(inside), span)


def test_two_threads_share_one_embedder(tiny):
    model = dartboard.Embedder(str(tiny / "bert_mean_norm"))
    texts = [f"text number {i}" for i in range(200)]
    want = model.encode(texts)
    results = [None] * 4

    def work(i):
        results[i] = model.encode(texts)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        np.testing.assert_array_equal(got, want)


def test_cross_encoder_equals_sentence_transformers(tiny):
    from sentence_transformers import CrossEncoder

    path = str(tiny / "cross_encoder")
    pairs = [("how do darts land", "A dart lands on the board."), ("a query", "an unrelated passage about cats")]
    ours = dartboard.CrossEncoder(path)
    want = CrossEncoder(path, device="cpu").predict(pairs)
    got = ours.predict(pairs)
    assert got.dtype == np.float32 and got.shape == want.shape == (2,)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(ours.predict([list(p) for p in pairs]), got)
    with pytest.raises(TypeError, match="pair 0 is not two texts"):
        ours.predict([("only one",)])


def test_compat_has_the_seed_interface(tiny):
    path = str(tiny / "bert_mean_norm")
    model = SentenceTransformerModel(path)
    one = model.encode("one text")
    many = model.encode(["one text", "two texts"], batch_size=32)
    assert one.shape == (model.embedding_dim,) and many.shape == (2, model.embedding_dim)
    np.testing.assert_array_equal(one, many[0])
    np.testing.assert_array_equal(many, dartboard.Embedder(path).encode(["one text", "two texts"]))


@pytest.mark.parametrize("first", ["dartboard", "torch"])
def test_import_needs_no_library_path(first, tiny):
    """A fresh interpreter with LD_LIBRARY_PATH unset finds libtorch through the
    extension's rpath, whether torch was imported before dartboard or after."""
    second = "torch" if first == "dartboard" else "dartboard"
    code = (
        f"import {first}, {second}, dartboard\n"
        f"v = dartboard.Embedder({str(tiny / 'bert_mean_norm')!r}).encode(['hi'])\n"
        "import torch\n"
        "print(v.shape[0], torch.__version__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "1" and out.stdout.split()[1].startswith("2.13.0")


def test_extension_points_only_at_the_torch_wheel():
    """The extension's run path is relative to where pip installs it; the build
    machine's venv must not be baked in."""
    so = dartboard._dartboard.__file__
    dynamic = subprocess.run(["readelf", "-d", so], capture_output=True, text=True, check=True).stdout
    paths = [line for line in dynamic.splitlines() if "RPATH" in line or "RUNPATH" in line]
    assert len(paths) == 1 and "[$ORIGIN/../torch/lib]" in paths[0], paths
