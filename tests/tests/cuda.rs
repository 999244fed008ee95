//! The CUDA path: CPU and GPU give the same embeddings. Runs where libtorch sees a
//! CUDA device and says it skipped otherwise (CI has no GPU).

use dartboard_config::{DType, DeviceSpec};
use dartboard_embeddings::{cuda_available, LoadOptions, SentenceEmbedder};
use dartboard_tests::{cosine, minilm, reference};

#[test]
fn cuda_matches_cpu_in_every_precision() {
    if !cuda_available() {
        eprintln!("SKIPPED: no CUDA device visible to libtorch");
        return;
    }
    let texts: Vec<&str> = reference().texts.iter().map(String::as_str).collect();
    let cpu = SentenceEmbedder::load(&minilm(), LoadOptions::default()).unwrap().encode(&texts).unwrap();
    for (dtype, floor) in [(DType::F32, 0.99999), (DType::F16, 0.999), (DType::Bf16, 0.999)] {
        let options = LoadOptions { device: DeviceSpec::Cuda(0), dtype, batch_size: 32 };
        let gpu = SentenceEmbedder::load(&minilm(), options).unwrap();
        assert_eq!(gpu.device_name(), "cuda:0");
        let out = gpu.encode(&texts).unwrap();
        let cosines: Vec<f64> = (0..texts.len()).map(|i| cosine(out.row(i), cpu.row(i))).collect();
        assert!(cosines.iter().all(|c| c.is_finite()), "{dtype}: NaN or infinite output");
        let worst = cosines.iter().copied().fold(f64::INFINITY, f64::min);
        println!("cuda {dtype}: min cosine vs cpu f32 {worst:.6}");
        assert!(worst >= floor, "{dtype}: {worst}");
    }
}

#[test]
fn asking_for_cuda_without_one_is_a_clear_error() {
    if cuda_available() {
        return;
    }
    let options = LoadOptions { device: DeviceSpec::Cuda(0), ..LoadOptions::default() };
    let err = SentenceEmbedder::load(&minilm(), options).err().expect("no CUDA device here").to_string();
    assert!(err.contains("cuda:0") && err.contains("--device cpu"), "{err}");
    let auto = LoadOptions { device: DeviceSpec::Auto, ..LoadOptions::default() };
    assert_eq!(SentenceEmbedder::load(&minilm(), auto).unwrap().device_name(), "cpu", "auto falls back to the CPU");
}
