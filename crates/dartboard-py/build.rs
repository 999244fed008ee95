//! Where the extension finds libtorch at run time.
//!
//! The wheel links the libtorch inside PyPI's `torch==2.13.0` wheel, which it
//! declares as a dependency, so after `pip install` that libtorch sits in
//! `site-packages/torch/lib/`, and the extension in `site-packages/dartboard/`. An
//! rpath relative to the extension's own file (`$ORIGIN`) finds it in every
//! environment the two wheels are installed into together, with no
//! `LD_LIBRARY_PATH` and whether or not `import torch` ran first (if it did, the
//! loader reuses the libraries already loaded under the same sonames). The
//! absolute rpath `dartboard-build` gives the repository's binaries would point at
//! the build machine's venv and is deliberately not used.

fn main() {
    // `$ORIGIN` reaches the linker literally: rustc runs the linker without a shell.
    println!("cargo:rustc-link-arg-cdylib=-Wl,-rpath,$ORIGIN/../torch/lib");
}
