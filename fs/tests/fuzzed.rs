//! Replays fuzzer findings and seed inputs as ordinary tests, on the stable toolchain.
//!
//! Every file in `tests/fixtures/fuzzed/<target>/` (a minimised input that once crashed, hung or
//! broke a check of the fuzz target `<target>`) and in `fuzz/corpus-seeds/<target>/` is run
//! through the function that fuzz target calls. The functions live in `fuzz/src/harness.rs`,
//! included here with `#[path]`, so this test and the fuzzer check exactly the same things
//! without this crate depending on libFuzzer. A panic fails the test and names the file; a file
//! named `err-…` must be rejected and one named `ok-…` accepted.
//!
//! See `fuzz/README.md` for running the fuzzers and adding a crash input here.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/harness.rs"]
pub mod harness;

use harness::Outcome;

/// `fs/tests/fixtures/fuzzed/<target>`.
fn fixture_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzzed")
        .join(target)
}

/// The `fuzz/` directory of the repository.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted; none if it does not exist.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(listing) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = listing
        .map(|entry| entry.expect("listing a fixture directory").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every fixture and seed of `target` through `run`, and fails listing each file that
/// panicked or had the wrong outcome for its name.
fn replay(target: &str, run: fn(&[u8]) -> Outcome) {
    let mut files = files_in(&fixture_dir(target));
    files.extend(files_in(&harness::seed_dir(&fuzz_dir(), target)));
    assert!(!files.is_empty(), "no inputs for {target}");
    let mut failures = Vec::new();
    for file in &files {
        let data = fs::read(file).expect("reading a fixture");
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let expected = if name.starts_with("ok-") {
            Some(Outcome::Accepted)
        } else if name.starts_with("err-") {
            Some(Outcome::Rejected)
        } else {
            None
        };
        match panic::catch_unwind(AssertUnwindSafe(|| run(&data))) {
            Ok(outcome) if expected.is_none_or(|expected| expected == outcome) => {}
            Ok(outcome) => failures.push(format!("{}: {outcome:?}", file.display())),
            Err(_) => failures.push(format!("{}: panicked", file.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: {} of {} inputs failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn tar_index_build() {
    replay("tar_index_build", harness::tar_index_build);
}

#[test]
fn index_codec() {
    replay("index_codec", harness::index_codec);
}

#[test]
fn tar_normalize() {
    replay("tar_normalize", harness::tar_normalize);
}

#[test]
fn lower_merge() {
    replay("lower_merge", harness::lower_merge);
}

#[test]
fn ovl_markers() {
    replay("ovl_markers", harness::ovl_markers);
}

#[test]
fn image_manifest() {
    replay("image_manifest", harness::image_manifest);
}

/// The checked-in seeds are what `harness::seeds()` makes today, so a format change that
/// would leave the fuzzer starting from stale inputs is noticed. `RFS_FUZZ_WRITE_SEEDS=1`
/// rewrites them.
#[test]
fn seeds_are_current() {
    let write = std::env::var_os("RFS_FUZZ_WRITE_SEEDS").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for seed in harness::seeds() {
        let dir = harness::seed_dir(&fuzz_dir(), seed.target);
        let path = dir.join(seed.name);
        if write {
            fs::create_dir_all(&dir).expect("creating a seed directory");
            fs::write(&path, &seed.bytes).expect("writing a seed");
        } else if fs::read(&path).ok().as_deref() != Some(seed.bytes.as_slice()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "seeds missing or stale (rerun with RFS_FUZZ_WRITE_SEEDS=1):\n{}",
        stale.join("\n")
    );
}
