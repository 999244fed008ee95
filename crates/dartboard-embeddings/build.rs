fn main() {
    dartboard_build::link_libtorch();
    // Our own kernels are AVX-512 code; elsewhere `kernels::available()` is false.
    let mut sources = vec!["cpp/onednn_linear.cpp"];
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64") {
        sources.extend(["cpp/attention.cpp", "cpp/layer_norm.cpp"]);
    }
    dartboard_build::compile_cpp(&sources, "dartboard_cpp");
}
