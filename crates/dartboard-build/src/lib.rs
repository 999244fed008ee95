//! Build-script helper for every crate whose binaries or tests link libtorch.
//!
//! `torch-sys` tells the linker where libtorch is, but not the loader: without an
//! rpath a freshly built `dartboard` fails with "libtorch_cpu.so: cannot open shared
//! object file" unless the user exports `LD_LIBRARY_PATH`. Cargo only forwards
//! link arguments from a package's own build script to that package's binaries and
//! tests, so each such package calls [`link_libtorch`] from its `build.rs` (and lists
//! `torch-sys` as a dependency, which is what gives it `DEP_TCH_LIBTORCH_LIB`).

use std::path::PathBuf;

/// Emits the rpath to libtorch's `lib/` directory, and records that directory for
/// the crate (`DARTBOARD_LIBTORCH_LIB`).
///
/// `libtorch_cuda.so` is deliberately *not* linked (rustc's `--as-needed` drops it,
/// since nothing references its symbols): loading it and the CUDA libraries costs
/// about 0.4 s and 500 MB of resident memory at every start, which a CPU process
/// should not pay. `dartboard-embeddings` loads it at run time, from the directory
/// recorded here, the first time a CUDA device is asked for.
pub fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    // Canonical, so a binary copied out of the checkout still finds the real
    // directory rather than the checkout's `.libtorch` link.
    let Some(lib_dir) = std::env::var_os("DEP_TCH_LIBTORCH_LIB").map(|d| {
        let dir = PathBuf::from(d);
        dir.canonicalize().unwrap_or(dir)
    }) else {
        // torch-sys only publishes the directory on Linux and macOS.
        println!("cargo:rustc-env=DARTBOARD_LIBTORCH_LIB=");
        return;
    };
    println!("cargo:rustc-env=DARTBOARD_LIBTORCH_LIB={}", lib_dir.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
}

/// Compiles `sources`, C++ files calling libtorch's C++ API, into one static library
/// linked into the calling crate, with the include paths and flags torch-sys uses
/// for its own C++ (C++17, the CXX11 ABI libtorch 2.x wheels are built with).
///
/// The headers are found as torch-sys finds them: `LIBTORCH_INCLUDE`, else beside
/// libtorch's `lib/` (`DEP_TCH_LIBTORCH_LIB`, see [`link_libtorch`]); the ABI
/// follows `LIBTORCH_CXX11_ABI` (default 1).
pub fn compile_cpp(sources: &[&str], lib_name: &str) {
    // Each source's whole directory, so that headers beside it count too.
    for source in sources {
        let dir = std::path::Path::new(source).parent().unwrap_or(std::path::Path::new("."));
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    for var in ["LIBTORCH", "LIBTORCH_INCLUDE", "LIBTORCH_CXX11_ABI"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    // The same sources as torch-sys: LIBTORCH_INCLUDE for split installs, else
    // the `include/` beside libtorch's `lib/`.
    let root = match (std::env::var_os("LIBTORCH_INCLUDE"), std::env::var_os("DEP_TCH_LIBTORCH_LIB")) {
        (Some(root), _) => Some(PathBuf::from(root)),
        (None, Some(lib)) => PathBuf::from(lib).parent().map(PathBuf::from),
        (None, None) => std::env::var_os("LIBTORCH").map(PathBuf::from),
    };
    let include =
        root.expect("none of LIBTORCH_INCLUDE, DEP_TCH_LIBTORCH_LIB, LIBTORCH names libtorch").join("include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .files(sources)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        // libtorch's headers use a few C++20 extensions GCC warns about under C++17.
        .cargo_warnings(false);
    // `at::parallel_for` is a header template: without OpenMP its `#pragma omp
    // parallel` is ignored and the loop runs on one thread. libtorch's Linux wheels
    // use GCC's libgomp, whose entry points only GCC emits (clang's OpenMP calls
    // LLVM's runtime), so other compilers build a correct, single-threaded shim.
    let gnu = build.get_compiler().is_like_gnu();
    if gnu {
        build.flag("-fopenmp");
    } else {
        println!("cargo:warning=not GCC: dartboard's CPU kernels will run on one thread (set CXX=g++ for all)");
    }
    build.compile(lib_name);
    if gnu {
        link_libtorch_openmp();
    }
}

/// Links the OpenMP runtime libtorch itself loads, so that one thread pool (sized by
/// `at::set_num_threads`) serves libtorch and our kernels alike: the copy in
/// libtorch's `lib/` when it ships one (`libgomp.so.1` in the 2.x wheels; older
/// wheels renamed theirs with a hash), by its exact file name; else the system's.
fn link_libtorch_openmp() {
    let lib_dir = std::env::var_os("DEP_TCH_LIBTORCH_LIB")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("LIBTORCH").map(|root| PathBuf::from(root).join("lib")));
    let bundled = lib_dir.as_ref().and_then(|dir| {
        let entries = std::fs::read_dir(dir).ok()?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with("libgomp") && name.contains(".so"))
            .collect();
        names.sort();
        names.into_iter().next()
    });
    match (lib_dir, bundled) {
        (Some(dir), Some(name)) => {
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-lib=dylib:+verbatim={name}");
        }
        _ => println!("cargo:rustc-link-lib=gomp"),
    }
}
