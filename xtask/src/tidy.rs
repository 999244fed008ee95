//! Repository checks that run as ordinary tests (`cargo test -p xtask`, part of
//! `cargo xtask test`).

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use crate::root;

    /// Every file git tracks, as (path, text) for the UTF-8 ones.
    fn tracked_texts() -> Vec<(String, String)> {
        let out = Command::new("git").arg("ls-files").arg("-z").current_dir(root()).output().expect("git runs");
        assert!(out.status.success(), "git ls-files failed");
        String::from_utf8(out.stdout)
            .expect("UTF-8 paths")
            .split('\0')
            .filter(|p| !p.is_empty())
            .filter_map(|p| std::fs::read_to_string(root().join(p)).ok().map(|text| (p.to_owned(), text)))
            .collect()
    }

    /// A user's clone has nothing beside it: no code, script or doc may point at the
    /// build machines' shared data folder. What the tests read lives in `data/`.
    #[test]
    fn nothing_refers_to_a_folder_outside_the_repository() {
        // Spelled in two pieces so this file does not match itself.
        let needle = format!("../{}", "shared");
        let offenders: Vec<String> =
            tracked_texts().into_iter().filter(|(_, text)| text.contains(&needle)).map(|(path, _)| path).collect();
        assert!(offenders.is_empty(), "these files refer to {needle}: {offenders:?}");
    }

    /// Every data file the tests and benchmarks read is in the repository, with the
    /// README that names its origin and licence.
    #[test]
    fn the_data_the_tests_read_is_in_the_repository() {
        let data = root().join("data");
        for file in [
            "README.md",
            "stsbenchmark/sts-dev.csv",
            "stsbenchmark/sts-test.csv",
            "stsbenchmark/LICENSE.txt",
            "stsbenchmark/readme.txt",
            "passages.txt",
            "passages.LICENSE",
        ] {
            assert!(Path::new(&data.join(file)).is_file(), "data/{file} is missing");
        }
    }

    /// The embeddings crate keeps all of its `unsafe` code (FFI into libtorch and
    /// our C++ kernels, libc calls) in `src/backend/`, so reviewing that folder is
    /// reviewing every unsafe line.
    #[test]
    fn unsafe_code_in_the_embeddings_crate_stays_in_its_backend() {
        let crate_src = "crates/dartboard-embeddings/src/";
        let needle = format!("{} ", "unsafe");
        let offenders: Vec<String> = tracked_texts()
            .into_iter()
            .filter(|(path, _)| path.starts_with(crate_src) && path.ends_with(".rs"))
            .filter(|(path, _)| !path.starts_with(&format!("{crate_src}backend/")))
            .filter(|(_, text)| text.lines().any(|l| !l.trim_start().starts_with("//") && l.contains(&needle)))
            .map(|(path, _)| path)
            .collect();
        assert!(offenders.is_empty(), "unsafe code outside src/backend/: {offenders:?}");
    }
}
