fn main() {
    dartboard_build::link_libtorch();
    // Our own kernels are AVX-512 code written for GCC and clang; elsewhere (other
    // architectures, MSVC) `kernels::available()` is false.
    let mut sources = vec!["src/backend/cpp/onednn_linear.cpp"];
    let x86_64 = std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64");
    let msvc = std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("msvc");
    if x86_64 && !msvc {
        sources.extend([
            "src/backend/cpp/attention.cpp",
            "src/backend/cpp/gated.cpp",
            "src/backend/cpp/layer_norm.cpp",
            "src/backend/cpp/rms_norm.cpp",
        ]);
    }
    dartboard_build::compile_cpp(&sources, "dartboard_cpp");
}
