//! Matryoshka truncation and quantized outputs against sentence-transformers itself:
//! `Embeddings::truncate_dim` and `quantize` in the library, `--truncate-dim`,
//! `--precision` and `--calibration` in `dartboard embed`. The reference values come
//! from `xtask/python/quantize_reference.py`, run in the reference venv.

use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use dartboard_embeddings::{
    quantize, quantize_rows, EmbedError, Embeddings, LoadOptions, Precision, QuantizationRanges, QuantizedData,
    SentenceEmbedder,
};
use dartboard_tests::{cosine, dartboard, minilm, run, sts, venv_python, workspace_root, Run};
use serde_json::{json, Value};

/// The real MiniLM, loaded once; the tests run in parallel, and a model is not `Sync`.
fn model() -> &'static Mutex<SentenceEmbedder> {
    static MODEL: OnceLock<Mutex<SentenceEmbedder>> = OnceLock::new();
    MODEL.get_or_init(|| Mutex::new(SentenceEmbedder::load(&minilm(), LoadOptions::default()).unwrap()))
}

/// `n` distinct STS-B test sentences, from `skip` on.
fn sentences(skip: usize, n: usize) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    sts("test").into_iter().flat_map(|(_, a, b)| [a, b]).filter(|s| seen.insert(s.clone())).skip(skip).take(n).collect()
}

fn encode(texts: &[String]) -> Embeddings {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    model().lock().unwrap().encode(&refs).unwrap()
}

/// Runs the reference script on `request` and returns its answer.
fn reference(request: &Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("request.json");
    std::fs::write(&path, serde_json::to_vec(request).unwrap()).unwrap();
    let out = Command::new(venv_python())
        .arg(workspace_root().join("xtask/python/quantize_reference.py"))
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn rows_f32(rows: &Value) -> Vec<Vec<f32>> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect()
}

fn rows_i64(rows: &Value) -> Vec<Vec<i64>> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect())
        .collect()
}

/// Our quantized values as integers, one row per embedding.
fn int_rows(data: &QuantizedData, row_len: usize) -> Vec<Vec<i64>> {
    let flat: Vec<i64> = match data {
        QuantizedData::Int8(v) => v.iter().map(|&x| i64::from(x)).collect(),
        QuantizedData::Uint8(v) => v.iter().map(|&x| i64::from(x)).collect(),
        QuantizedData::Float32(_) => panic!("not an integer precision"),
    };
    flat.chunks(row_len).map(<[i64]>::to_vec).collect()
}

fn ok(r: Run) -> Run {
    assert!(r.ok, "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    r
}

fn jsonl_floats(path: &Path) -> Vec<Vec<f32>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["embedding"].clone())
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

fn jsonl_ints(path: &Path) -> Vec<Vec<i64>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["embedding"].clone())
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

#[test]
fn truncate_dim_equals_encode_with_truncate_dim() {
    let texts = sentences(0, 8);
    let full = encode(&texts);
    let dims = [384, 128, 64, 7];
    let request = json!({
        "model": minilm().dir(),
        "texts": texts,
        "encode": dims.iter().map(|d| json!({ "truncate_dim": d })).collect::<Vec<_>>(),
    });
    let answer = reference(&request);
    for (i, &d) in dims.iter().enumerate() {
        let ours = full.clone().truncate_dim(d).unwrap();
        let theirs = rows_f32(&answer["encode"][i]);
        assert_eq!((ours.len(), ours.dim()), (theirs.len(), theirs[0].len()), "dim {d}");
        for (row, (a, b)) in ours.rows().zip(&theirs).enumerate() {
            // The parity tests' bound for f32 (summation order differs between libtorch
            // builds); truncation itself adds no error, as the prefix check below shows.
            assert!(cosine(a, b) >= 0.99999, "dim {d}, row {row}: cosine {}", cosine(a, b));
            let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            assert!((norm(a) - norm(b)).abs() < 1e-5, "dim {d}, row {row}: norms {} vs {}", norm(a), norm(b));
            assert_eq!(a, &full.row(row)[..d], "a prefix of the normalized vector, not renormalized");
        }
        if d < 384 {
            assert!(
                norm_of_first(&ours) < 0.999,
                "truncated rows keep their partial norm, as in sentence-transformers"
            );
        }
    }
}

fn norm_of_first(e: &Embeddings) -> f64 {
    e.row(0).iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn truncate_dim_of_zero_or_more_than_the_model_is_an_error_naming_both() {
    let full = encode(&sentences(0, 2));
    for bad in [0, 385, 4096] {
        let err = full.clone().truncate_dim(bad).unwrap_err();
        assert!(matches!(err, EmbedError::TruncateDim { requested, dim: 384 } if requested == bad), "{err}");
        let message = err.to_string();
        assert!(message.contains(&format!("to {bad} dimensions")) && message.contains("from 1 to 384"), "{message}");
    }
}

#[test]
fn every_precision_equals_quantize_embeddings_exactly() {
    // 100 dimensions: not a multiple of 8, so the bit precisions pad their last byte.
    let embeddings = encode(&sentences(0, 40)).truncate_dim(100).unwrap();
    let calibration = encode(&sentences(40, 30)).truncate_dim(100).unwrap();
    // A column that is one value in every row (max == min, so width 1) in both sets,
    // and exact zeros, which are not above 0 for the bits.
    let mut values = embeddings.as_slice().to_vec();
    let mut calib = calibration.as_slice().to_vec();
    for row in values.chunks_exact_mut(100).chain(calib.chunks_exact_mut(100)) {
        row[5] = 0.03125;
        row[99] = 0.0;
    }
    let rows = |v: &[f32]| v.chunks(100).map(<[f32]>::to_vec).collect::<Vec<_>>();
    let mut items = Vec::new();
    let mut ours = Vec::new();
    let calibrated = QuantizationRanges::from_rows(100, &calib).unwrap();
    for precision in Precision::ALL {
        items.push(json!({ "embeddings": rows(&values), "precision": precision.name() }));
        ours.push(quantize_rows(100, &values, precision, None).unwrap());
        if precision.needs_ranges() {
            // Calibration from other texts: some values fall outside and are clipped.
            items.push(
                json!({ "embeddings": rows(&values), "precision": precision.name(), "calibration": rows(&calib) }),
            );
            ours.push(quantize_rows(100, &values, precision, Some(&calibrated)).unwrap());
        }
    }
    let answer = reference(&json!({ "quantize": items }));
    let mut clipped = 0;
    for (i, q) in ours.iter().enumerate() {
        let theirs = &answer["quantize"][i];
        let label = format!("{} (item {i})", q.precision());
        match q.data() {
            QuantizedData::Float32(v) => {
                assert_eq!(rows(v), rows_f32(theirs), "{label}");
            }
            data => {
                let ours = int_rows(data, q.row_len());
                assert_eq!(ours[0].len(), q.precision().row_len(100), "{label}");
                // Exactly equal: every step is done in f32 as numpy does it on float32.
                assert_eq!(ours, rows_i64(theirs), "{label}");
                if q.precision() == Precision::Uint8 {
                    clipped += ours.iter().flatten().filter(|&&b| b == 0 || b == 255).count();
                }
            }
        }
    }
    assert!(clipped > 0, "some values reach the end buckets");

    // `quantize` on Embeddings is `quantize_rows` on its values.
    let direct = quantize(&embeddings, Precision::Int8, None).unwrap();
    assert_eq!(direct, quantize_rows(100, embeddings.as_slice(), Precision::Int8, None).unwrap());
}

#[test]
fn precision_and_truncate_dim_through_encode_agree_with_sentence_transformers() {
    // One encode call, as sentence-transformers' encode(precision=...) quantizes the
    // outputs of one call with ranges taken from them. Our floats and theirs differ in
    // the last places, so a value sitting on a bucket boundary may land one bucket
    // over, and a value within that distance of 0 may flip its bit; nothing more.
    let texts = sentences(0, 24);
    let d = 60;
    let ours = encode(&texts).truncate_dim(d).unwrap();
    let precisions = [Precision::Int8, Precision::Uint8, Precision::Binary, Precision::Ubinary];
    let request = json!({
        "model": minilm().dir(),
        "texts": texts,
        "encode": precisions.iter().map(|p| json!({ "truncate_dim": d, "precision": p.name() })).collect::<Vec<_>>(),
    });
    let answer = reference(&request);
    for (i, &p) in precisions.iter().enumerate() {
        let q = quantize(&ours, p, None).unwrap();
        let (mine, theirs) = (int_rows(q.data(), q.row_len()), rows_i64(&answer["encode"][i]));
        assert_eq!((mine.len(), mine[0].len()), (theirs.len(), theirs[0].len()), "{p}");
        let mut differing = 0;
        for (r, (a, b)) in mine.iter().zip(&theirs).enumerate() {
            for (j, (x, y)) in a.iter().zip(b).enumerate() {
                if x == y {
                    continue;
                }
                differing += 1;
                if p.needs_ranges() {
                    assert!((x - y).abs() <= 1, "{p} row {r} dim {j}: {x} vs {y}");
                } else {
                    // Only bits of values within float noise of 0 may differ.
                    for bit in 0..8 {
                        let dim = j * 8 + bit;
                        if (x ^ y) & (0x80 >> bit) != 0 {
                            let value = ours.row(r)[dim];
                            assert!(value.abs() < 1e-5, "{p} row {r} dim {dim}: bit differs for value {value}");
                        }
                    }
                }
            }
        }
        assert!(differing * 100 <= mine.len() * mine[0].len(), "{p}: {differing} values differ");
    }
}

#[test]
fn cli_precisions_match_quantize_embeddings_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let texts = sentences(0, 23);
    let input = dir.path().join("corpus.txt");
    std::fs::write(&input, texts.join("\n") + "\n").unwrap();
    // The reference quantizes the CLI's own float32 output (JSON floats parse back to
    // the same f32), so the comparison is exact whatever the batching did to the last
    // places; that output is itself the library's, truncated.
    let floats = dir.path().join("floats.jsonl");
    ok(run(dartboard()
        .args(["embed", "-q", "--window", "5", "--truncate-dim", "100", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&floats)));
    let rows = jsonl_floats(&floats);
    let library = encode(&texts).truncate_dim(100).unwrap();
    assert_eq!(rows.len(), library.len());
    for (a, b) in rows.iter().zip(library.rows()) {
        assert!(cosine(a, b) >= 0.99999, "cosine {}", cosine(a, b));
    }
    let mut items = Vec::new();
    for p in Precision::ALL {
        items.push(json!({ "embeddings": rows, "precision": p.name() }));
    }
    let answer = reference(&json!({ "quantize": items }));

    for (i, p) in Precision::ALL.into_iter().enumerate() {
        let expected = &answer["quantize"][i];
        let path = |ext: &str| dir.path().join(format!("{p}.{ext}"));
        for format in ["jsonl", "npy", "parquet"] {
            // Windows of 5: the int8/uint8 ranges must still cover the whole run.
            ok(run(dartboard()
                .args(["embed", "-q", "--window", "5", "--truncate-dim", "100", "--precision", p.name()])
                .args(["--format", format, "--input"])
                .arg(&input)
                .arg("--output")
                .arg(path(format))));
        }
        // numpy and pyarrow read the files; they must hold the reference values with the
        // element type of the precision.
        let script = r#"
import json, sys, numpy as np, pyarrow.parquet as pq
expected, jsonl, npy, parquet, dtype = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
j = np.array([json.loads(l)["embedding"] for l in open(jsonl)])
n = np.load(npy)
t = pq.read_table(parquet)
p = np.stack(t.column("embedding").to_numpy(zero_copy_only=False))
assert n.dtype == np.dtype(dtype), n.dtype
assert p.dtype == np.dtype(dtype), p.dtype
assert str(t.schema.field("embedding").type.value_type) == {"float32": "float", "int8": "int8", "uint8": "uint8"}[dtype]
e = np.array(expected, dtype=dtype)
for name, got in (("jsonl", j), ("npy", n), ("parquet", p)):
    assert got.shape == e.shape, (name, got.shape, e.shape)
    assert np.array_equal(got.astype(dtype), e), name
print("ok", n.shape)
"#;
        let dtype = match p {
            Precision::Float32 => "float32",
            Precision::Int8 | Precision::Binary => "int8",
            Precision::Uint8 | Precision::Ubinary => "uint8",
        };
        let out = Command::new(venv_python())
            .arg("-c")
            .arg(script)
            .arg(expected.to_string())
            .args([path("jsonl"), path("npy"), path("parquet")])
            .arg(dtype)
            .output()
            .unwrap();
        assert!(out.status.success(), "{p}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("ok (23, {})", p.row_len(100)), "{p}");
    }
}

#[test]
fn cli_calibration_files_set_the_buckets_as_calibration_embeddings_do() {
    let dir = tempfile::tempdir().unwrap();
    let texts = sentences(0, 12);
    let calib_texts = sentences(100, 30);
    let input = dir.path().join("corpus.txt");
    std::fs::write(&input, texts.join("\n") + "\n").unwrap();
    let calib_input = dir.path().join("calib.txt");
    std::fs::write(&calib_input, calib_texts.join("\n") + "\n").unwrap();
    // Calibration files as `dartboard embed` writes them (full width: the run truncates
    // their ranges), and a float64 .npy as numpy.save writes one.
    let calib_jsonl = dir.path().join("calib.jsonl");
    ok(run(dartboard().args(["embed", "-q", "--input"]).arg(&calib_input).arg("--output").arg(&calib_jsonl)));
    let floats = dir.path().join("floats.jsonl");
    ok(run(dartboard()
        .args(["embed", "-q", "--truncate-dim", "64", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&floats)));
    let calib: Vec<Vec<f32>> = jsonl_floats(&calib_jsonl).into_iter().map(|r| r[..64].to_vec()).collect();
    let answer = reference(&json!({ "quantize": [
        { "embeddings": jsonl_floats(&floats), "precision": "int8", "calibration": calib },
    ]}));
    let expected = rows_i64(&answer["quantize"][0]);
    let calib_parquet = dir.path().join("calib.parquet");
    ok(run(dartboard()
        .args(["embed", "-q", "--format", "parquet", "--input"])
        .arg(&calib_input)
        .arg("--output")
        .arg(&calib_parquet)));
    let calib_npy = dir.path().join("calib64.npy");
    let out = Command::new(venv_python())
        .arg("-c")
        .arg(
            "import sys, json, numpy as np\nrows = [json.loads(l)['embedding'] for l in open(sys.argv[1])]\n\
              np.save(sys.argv[2], np.array(rows, dtype=np.float32).astype(np.float64)[:, :64])",
        )
        .arg(&calib_jsonl)
        .arg(&calib_npy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    for calibration in [&calib_jsonl, &calib_parquet, &calib_npy] {
        let file = dir.path().join("out.jsonl");
        ok(run(dartboard()
            .args(["embed", "-q", "--truncate-dim", "64", "--precision", "int8", "--calibration"])
            .arg(calibration)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&file)));
        assert_eq!(jsonl_ints(&file), expected, "{}", calibration.display());
        // With ranges given, int8 streams to stdout too, with the same values.
        let streamed = ok(run(dartboard()
            .args(["embed", "-q", "--truncate-dim", "64", "--precision", "int8", "--calibration"])
            .arg(calibration)
            .arg("--input")
            .arg(&input)));
        assert_eq!(streamed.stdout, std::fs::read_to_string(&file).unwrap());
    }

    // A calibration set of another width is refused, naming both widths.
    let narrow = dir.path().join("narrow.npy");
    let out = Command::new(venv_python())
        .arg("-c")
        .arg("import sys, numpy as np\nnp.save(sys.argv[1], np.zeros((3, 10), dtype=np.float32))")
        .arg(&narrow)
        .output()
        .unwrap();
    assert!(out.status.success());
    let r = run(dartboard().args(["embed", "--precision", "uint8", "--calibration"]).arg(&narrow).arg("a text"));
    assert!(!r.ok && r.stderr.contains("10-dimensional") && r.stderr.contains("384"), "{}", r.stderr);
}

#[test]
fn cli_refuses_what_it_cannot_do_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["0", "385"] {
        let r = run(dartboard().args(["embed", "--truncate-dim", bad, "a text"]));
        assert!(!r.ok, "--truncate-dim {bad} accepted");
        assert!(
            r.stderr.contains(&format!("--truncate-dim {bad}")) && r.stderr.contains("from 1 to 384"),
            "{}",
            r.stderr
        );
    }
    let r = run(dartboard().args(["embed", "--precision", "int4", "a text"]));
    assert!(!r.ok && r.stderr.contains("float32, int8, uint8, binary, ubinary"), "{}", r.stderr);
    // The run's own int8 ranges are known only at its end: not on a stream.
    let r = run(dartboard().args(["embed", "--precision", "int8", "a text", "another"]));
    assert!(!r.ok && r.stderr.contains("--output") && r.stderr.contains("--calibration"), "{}", r.stderr);
    let r = run(dartboard().args(["embed", "--precision", "binary", "--calibration", "x.npy", "a text"]));
    assert!(!r.ok && r.stderr.contains("int8 or uint8"), "{}", r.stderr);
    // One embedding has no range, as in sentence-transformers.
    let r =
        run(dartboard().args(["embed", "--precision", "uint8", "--output"]).arg(dir.path().join("one.npy")).arg("a"));
    assert!(!r.ok && r.stderr.contains("single embedding") && r.stderr.contains("--calibration"), "{}", r.stderr);
    // Bits need no ranges: one text streams.
    let r = ok(run(dartboard().args(["embed", "-q", "--precision", "ubinary", "--truncate-dim", "12", "a"])));
    let row: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(row["embedding"].as_array().unwrap().len(), 2, "12 bits in 2 bytes");
}
