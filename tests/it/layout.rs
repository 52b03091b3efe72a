//! The core/edge line, checked on the source: the pure core (the run record, features, stats,
//! the forest, the model format, evaluation, the optimizer, admission, the outcome reader, the
//! simulator) imports no edge module or crate, and only `main.rs` and `cli.rs` import the CLI.

use std::path::{Path, PathBuf};

/// Files and folders of the core, relative to `src/`.
const CORE: &[&str] = &[
    "record.rs",
    "cache_advice.rs",
    "features.rs",
    "stats.rs",
    "forest.rs",
    "model.rs",
    "evaluation.rs",
    "optimizer",
    "admission",
    "outcome.rs",
    "simulate.rs",
    "kube_time.rs",
];

/// What the core must not name: the edge modules of this crate, and the I/O crates.
const EDGES: &[&str] = &[
    "crate::telemetry",
    "crate::registry",
    "crate::controller",
    "crate::webhook",
    "crate::api",
    "crate::serving",
    "crate::client",
    "crate::cli",
    "crate::config",
    "crate::error",
    "crate::reporter",
    "crate::training",
    "sqlx::",
    "redis::",
    "kube::",
    "tokio::",
    "warp::",
    "hyper::",
    "hyper_util::",
    "reqwest::",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The file's code before its unit tests (tests may use anything).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let cut = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..cut].to_string()
}

/// `(file, line, edge)` for every edge a core file names outside comments.
fn violations() -> Vec<(String, usize, &'static str)> {
    let mut files = Vec::new();
    for c in CORE {
        rust_files(&src().join(c), &mut files);
    }
    assert!(files.len() >= CORE.len(), "core files missing: {files:?}");
    let mut found = Vec::new();
    for f in files.iter().filter(|f| !f.ends_with("tests.rs")) {
        for (i, line) in code(f).lines().enumerate() {
            let line = line.split("//").next().unwrap_or_default();
            for edge in EDGES {
                if line.contains(edge) {
                    found.push((f.display().to_string(), i + 1, *edge));
                }
            }
        }
    }
    found
}

#[test]
fn the_core_imports_no_edge() {
    let v = violations();
    assert!(v.is_empty(), "core modules reach into edges: {v:#?}");
}

#[test]
fn only_main_and_cli_import_the_cli() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let importers: Vec<String> = files
        .iter()
        .filter(|f| !f.ends_with("main.rs") && !f.ends_with("cli.rs"))
        .filter(|f| {
            let c = code(f);
            c.contains("crate::cli::") || c.contains("crate::cli;") || c.contains("crate::cli}")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(importers.is_empty(), "{importers:?} import the CLI");
}

#[test]
fn the_check_sees_a_violation() {
    // The scan itself must be able to fail: a line naming an edge is caught.
    let line = "use crate::telemetry::Store;";
    assert!(EDGES.iter().any(|e| line.contains(e)));
}
