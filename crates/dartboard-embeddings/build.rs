fn main() {
    dartboard_build::link_libtorch();
    dartboard_build::compile_cpp(
        &["cpp/onednn_linear.cpp", "cpp/attention.cpp", "cpp/layer_norm.cpp"],
        "dartboard_cpp",
    );
}
