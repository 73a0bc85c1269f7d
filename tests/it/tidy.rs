//! Executable architecture rules: every source file says what it owns, and
//! the layers only depend downward (see ARCHITECTURE.md).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_file_opens_with_a_module_doc() {
    let mut missing = Vec::new();
    for dir in ["src", "tests"] {
        for file in rust_files(&root().join(dir)) {
            let text = std::fs::read_to_string(&file).unwrap();
            if !text.starts_with("//!") {
                missing.push(file.display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a leading //! doc: {missing:?}"
    );
}

#[test]
fn layers_depend_downward() {
    let rules: &[(&str, &[&str])] = &[
        (
            "src/policy",
            &[
                "tonic::",
                "redis::",
                "tokio::",
                "rcgen::",
                "SystemTime::now",
                "crate::store",
                "crate::issuer",
            ],
        ),
        ("src/spiffe_id.rs", &["tonic::", "redis::", "tokio::"]),
        ("src/grant.rs", &["tonic::", "redis::", "tokio::"]),
        (
            "src/ca",
            &[
                "tonic::",
                "redis::",
                "tokio::",
                "SystemTime::now",
                "crate::server",
                "crate::issuer",
            ],
        ),
        (
            "src/issuer",
            &[
                "tonic::",
                "prost::",
                "redis::",
                "crate::server",
                "crate::client",
            ],
        ),
        (
            "src/store",
            &["tonic::", "crate::policy", "crate::ca", "crate::server"],
        ),
        (
            "src/client",
            &[
                "crate::server",
                "crate::store",
                "crate::policy",
                "crate::issuer",
                "crate::ca::",
            ],
        ),
    ];
    let mut breaks = Vec::new();
    for (place, forbidden) in rules {
        let path = root().join(place);
        let files = if path.is_dir() {
            rust_files(&path)
        } else {
            vec![path]
        };
        // Unit tests may use anything; the rules are about production code.
        for file in files.into_iter().filter(|f| !f.ends_with("tests.rs")) {
            let text = std::fs::read_to_string(&file).unwrap();
            for needle in *forbidden {
                if text.contains(needle) {
                    breaks.push(format!("{} uses {needle}", file.display()));
                }
            }
        }
    }
    assert!(breaks.is_empty(), "layering breaks: {breaks:#?}");
}

#[test]
fn no_stubs_or_skipped_tests() {
    let mut found = Vec::new();
    let patterns = [
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
        concat!("#[", "ignore"),
        concat!("dbg", "!("),
    ];
    for dir in ["src", "tests"] {
        for file in rust_files(&root().join(dir)) {
            let text = std::fs::read_to_string(&file).unwrap();
            for pattern in patterns {
                if text.contains(pattern) {
                    found.push(format!("{} contains {pattern}", file.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}
