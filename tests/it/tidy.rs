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
    for dir in ["src", "tests", "client"] {
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
        (
            "client/src/spiffe_id.rs",
            &["tonic::", "redis::", "tokio::"],
        ),
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
            "client/src",
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
    for dir in ["src", "tests", "client"] {
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

/// The client crate builds without the server's dependencies: walks the
/// graph that Cargo.lock records from `jitid-client` (normal, build and dev
/// dependencies alike, which is stricter than `cargo tree -e normal`) and
/// fails if any of them is reachable.
#[test]
fn client_crate_has_no_server_dependencies() {
    const SERVER_ONLY: [&str; 5] = ["cedar-policy", "redis", "governor", "clap", "toml"];
    let lock: toml::Table = std::fs::read_to_string(root().join("Cargo.lock"))
        .unwrap()
        .parse()
        .unwrap();
    // (name, version) -> dependencies, each "name" or "name version ...".
    let mut packages = std::collections::HashMap::new();
    for package in lock["package"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        let version = package["version"].as_str().unwrap();
        let dependencies: Vec<&str> = package
            .get("dependencies")
            .and_then(toml::Value::as_array)
            .map(|list| list.iter().map(|dep| dep.as_str().unwrap()).collect())
            .unwrap_or_default();
        packages.insert((name, version), dependencies);
    }
    let find = |spec: &str| {
        let mut words = spec.split(' ');
        let name = words.next().unwrap();
        let version = words.next();
        let matches: Vec<_> = packages
            .keys()
            .filter(|(n, v)| *n == name && version.is_none_or(|version| *v == version))
            .copied()
            .collect();
        assert_eq!(matches.len(), 1, "{spec} names {matches:?} in Cargo.lock");
        matches[0]
    };
    let mut seen = std::collections::HashSet::new();
    let mut to_visit = vec![(find("jitid-client"), vec!["jitid-client"])];
    let mut reached = Vec::new();
    while let Some((package, path)) = to_visit.pop() {
        if !seen.insert(package) {
            continue;
        }
        if SERVER_ONLY.contains(&package.0) {
            reached.push(path.join(" -> "));
            continue;
        }
        for dependency in &packages[&package] {
            let next = find(dependency);
            let mut next_path = path.clone();
            next_path.push(next.0);
            to_visit.push((next, next_path));
        }
    }
    assert!(
        seen.len() > 50,
        "the walk from jitid-client found only {seen:?}"
    );
    assert!(
        reached.is_empty(),
        "the client crate depends on the server's dependencies: {reached:#?}"
    );
}
