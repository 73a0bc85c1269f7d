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

/// The import directions between the top-level modules of `src/`, layer by
/// layer from the bottom: each row names a module and what it may import
/// (`crate::x`, also as `use crate::{x, y}`). A module may only import
/// modules of rows above its own (`the_layer_table_points_down` checks it),
/// so the table cannot describe a circle. A new module needs a row here;
/// the binary (`main.rs` and what it declares) sits on top.
const LAYERS: &[(&str, &[&str])] = &[
    // The core: data, time, decisions and signing, with no I/O beyond the
    // CA's own files.
    ("spiffe_id", &[]),
    ("grant", &["spiffe_id"]),
    ("clock", &[]),
    ("policy", &["clock", "grant", "spiffe_id"]),
    ("extension", &[]),
    ("crypto", &[]),
    ("keyfile", &[]),
    (
        "ca",
        &["clock", "crypto", "extension", "keyfile", "spiffe_id"],
    ),
    // Where things are kept, each on its own side of its trait; they share
    // only the Redis connection.
    ("redis_conn", &["keyfile"]),
    ("store", &["clock", "grant", "redis_conn", "spiffe_id"]),
    ("audit", &["ca", "clock", "grant", "keyfile", "redis_conn"]),
    // The use cases.
    (
        "issuer",
        &[
            "audit",
            "ca",
            "clock",
            "grant",
            "policy",
            "spiffe_id",
            "store",
        ],
    ),
    (
        "attest",
        &[
            "ca",
            "clock",
            "crypto",
            "extension",
            "grant",
            "issuer",
            "keyfile",
            "spiffe_id",
        ],
    ),
    // The edges. `config` comes first: the server takes its sections.
    // Shared with the client crate, which owns them.
    ("proto", &[]),
    ("convert", &[]),
    ("incoming", &[]),
    (
        "config",
        &[
            "attest",
            "audit",
            "ca",
            "clock",
            "incoming",
            "policy",
            "spiffe_id",
            "store",
        ],
    ),
    (
        "server",
        &[
            "attest",
            "audit",
            "ca",
            "clock",
            "config",
            "convert",
            "crypto",
            "extension",
            "grant",
            "incoming",
            "issuer",
            "proto",
            "spiffe_id",
            "store",
        ],
    ),
    // The client crate, re-exported, with the audit lines it fetches
    // checked on the server's side of the line.
    (
        "client",
        &[
            "audit",
            "crypto",
            "extension",
            "incoming",
            "keyfile",
            "proto",
            "spiffe_id",
        ],
    ),
    (
        "app",
        &[
            "attest",
            "audit",
            "ca",
            "clock",
            "config",
            "crypto",
            "grant",
            "issuer",
            "keyfile",
            "policy",
            "redis_conn",
            "server",
            "spiffe_id",
            "store",
        ],
    ),
    ("dev", &["ca", "clock", "config", "keyfile", "spiffe_id"]),
    (
        "bench",
        &["ca", "client", "clock", "crypto", "proto", "spiffe_id"],
    ),
    // The binary: `main.rs` and the modules it declares.
    ("main", EVERYTHING),
    ("cli", EVERYTHING),
];

/// Stands for every module in [`LAYERS`].
const EVERYTHING: &[&str] = &["*"];

/// An import of `to` by a file of `from`.
struct Import {
    from: String,
    to: String,
    file: PathBuf,
}

/// The modules `src/lib.rs` declares: the library. Every other top-level
/// file or folder of `src/` belongs to the binary.
fn library_modules() -> Vec<String> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    lib.lines()
        .filter_map(|line| {
            let line = line.trim();
            let line = line.strip_prefix("pub ").unwrap_or(line);
            let name = line.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.trim().to_owned())
        })
        .collect()
}

/// Files declared `#[cfg(test)] mod name;` by another: test-only code.
fn test_only_files(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("#[cfg(test)]") {
            rest = &rest[at + "#[cfg(test)]".len()..];
            let declaration = rest.trim_start();
            let Some(name) = declaration
                .strip_prefix("mod ")
                .and_then(|after| after.split_once(';'))
                .map(|(name, _)| name.trim())
                .filter(|name| name.chars().all(|c| c.is_alphanumeric() || c == '_'))
            else {
                continue;
            };
            // `a/mod.rs` declares `a/name.rs`; `a/b.rs` declares `a/b/name.rs`.
            let stem = file.file_stem().unwrap().to_str().unwrap();
            let dir = match stem {
                "mod" | "lib" | "main" => file.parent().unwrap().to_path_buf(),
                _ => file.with_extension(""),
            };
            found.push(dir.join(format!("{name}.rs")));
            found.push(dir.join(name).join("mod.rs"));
        }
    }
    found
}

/// The first segment of each `crate::` path in `text`, including each
/// member of a group (`crate::{a, b::c}` gives `a` and `b`).
fn crate_paths(text: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Members of the group, at its own nesting level only.
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start && depth == 0 => {
                        start = false;
                        found.push(ident(&group[i..]));
                    }
                    _ => {}
                }
            }
        } else {
            found.push(ident(rest));
        }
    }
    found
}

/// Every import between two top-level modules of the library's production
/// code: unit tests (`tests.rs`, `#[cfg(test)]` modules, and what follows
/// the first `#[cfg(test)]` of a file) may use anything. Doc links count:
/// they too say what a module knows about.
fn imports() -> Vec<Import> {
    let src = root().join("src");
    let library = library_modules();
    let files = rust_files(&src);
    let test_only = test_only_files(&files);
    let mut imports = Vec::new();
    for file in &files {
        if file.ends_with("tests.rs") || test_only.contains(file) {
            continue;
        }
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap()
            .trim_end_matches(".rs")
            .to_owned();
        // The binary's `crate::` is the binary, which may use anything.
        if top == "lib" || !library.contains(&top) {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        let production = text.split("#[cfg(test)]").next().unwrap();
        for to in crate_paths(production) {
            let known = library.contains(&to) || LAYERS.iter().any(|(name, _)| *name == to);
            if known && to != top {
                imports.push(Import {
                    from: top.clone(),
                    to,
                    file: relative.to_path_buf(),
                });
            }
        }
    }
    imports
}

#[test]
fn the_layer_table_points_down() {
    let mut wrong = Vec::new();
    for (row, (name, allowed)) in LAYERS.iter().enumerate() {
        if LAYERS[..row].iter().any(|(above, _)| above == name) {
            wrong.push(format!("{name} has two rows"));
        }
        for to in allowed.iter().filter(|to| **to != "*") {
            if !LAYERS[..row].iter().any(|(below, _)| below == to) {
                wrong.push(format!(
                    "{name} may import {to}, which is not listed below it"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn imports_follow_the_layers() {
    let mut breaks = Vec::new();
    let library = library_modules();
    for module in &library {
        if !LAYERS.iter().any(|(name, _)| name == module) {
            breaks.push(format!("{module} has no row in LAYERS (tests/it/tidy.rs)"));
        }
    }
    for import in imports() {
        let allowed = LAYERS
            .iter()
            .find(|(name, _)| *name == import.from)
            .map_or(&[][..], |(_, allowed)| *allowed);
        if !allowed.contains(&"*") && !allowed.contains(&import.to.as_str()) {
            breaks.push(format!(
                "{} imports {} in {}",
                import.from,
                import.to,
                import.file.display()
            ));
        }
    }
    breaks.dedup();
    assert!(breaks.is_empty(), "imports against LAYERS: {breaks:#?}");
}

#[test]
fn no_module_imports_another_in_a_circle() {
    let mut graph: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        std::collections::BTreeMap::new();
    for import in imports() {
        graph.entry(import.from).or_default().insert(import.to);
    }
    // Depth-first search; a module met again while on the path closes a
    // circle.
    fn visit(
        module: &str,
        graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
        circles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|on| on == module) {
            let mut circle = path[at..].to_vec();
            circle.push(module.to_owned());
            circles.push(circle.join(" -> "));
            return;
        }
        if !done.insert(module.to_owned()) {
            return;
        }
        path.push(module.to_owned());
        for next in graph.get(module).into_iter().flatten() {
            visit(next, graph, path, done, circles);
        }
        path.pop();
    }
    let mut circles = Vec::new();
    let mut done = std::collections::BTreeSet::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done, &mut circles);
    }
    assert!(circles.is_empty(), "module circles: {circles:#?}");
}

#[test]
fn the_import_scanner_sees_grouped_and_nested_paths() {
    let text = "use crate::{a, b::{c, d}, e::f};\nuse crate::g::h;\nlet x = crate::i::j();\n\
                use mycrate::k; // [`l`](crate::l)\nuse crate::{\n    m,\n    n::{o, p},\n};";
    assert_eq!(crate_paths(text), ["a", "b", "e", "g", "i", "l", "m", "n"]);
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
