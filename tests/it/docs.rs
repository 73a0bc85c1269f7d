//! The docs as a reader uses them: every shell snippet of README.md and
//! docs/ runs, as written, against a `jitid dev`; every fence names its
//! language; every Rust example is a compiled doctest; docs/configuration.md
//! documents exactly the keys the config accepts.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::support::jitid_bin;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md, then docs/*.md in name order: the order snippets run in.
fn doc_files() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    let mut files = vec![root().join("README.md")];
    files.extend(pages);
    files
}

/// One fenced block: its language tag, first line number and text.
struct Fence {
    lang: String,
    line: usize,
    text: String,
}

/// The top-level fenced blocks of a markdown file.
fn fences(markdown: &str) -> Vec<Fence> {
    let mut fences = Vec::new();
    let mut open: Option<Fence> = None;
    for (index, line) in markdown.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(tag)) => {
                open = Some(Fence {
                    lang: tag.trim().to_owned(),
                    line: index + 1,
                    text: String::new(),
                });
            }
            (Some(_), Some(rest)) if rest.trim().is_empty() => {
                fences.extend(open.take());
            }
            (Some(fence), _) => {
                fence.text.push_str(line);
                fence.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a fence is not closed");
    fences
}

/// The commands of a shell fence: `sh` and `bash` blocks as they are; of a
/// `console` block, the lines after `$ ` with their continuation lines.
fn commands(fence: &Fence) -> Option<String> {
    match fence.lang.as_str() {
        "sh" | "bash" => Some(fence.text.clone()),
        "console" => {
            let mut script = String::new();
            let mut continued = false;
            for line in fence.text.lines() {
                if continued {
                    script.push_str(line);
                    script.push('\n');
                } else if let Some(command) = line.strip_prefix("$ ") {
                    script.push_str(command);
                    script.push('\n');
                } else {
                    continue;
                }
                continued = line.trim_end().ends_with('\\');
            }
            Some(script)
        }
        _ => None,
    }
}

#[test]
fn every_fence_names_its_language() {
    // An untagged fence would be compiled as Rust by the doctests that
    // include these pages, and would not be run as shell by the test below.
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for fence in fences(&text) {
            assert!(
                !fence.lang.is_empty(),
                "{}:{}: a fence without a language (use text, sh, rust, toml ...)",
                file.display(),
                fence.line
            );
        }
    }
}

#[test]
fn every_rust_example_is_a_compiled_doctest() {
    // client/src/lib.rs includes the pages with Rust examples as doctests of
    // `jitid_client`: a page with a Rust fence must be included there, and
    // no example may opt out of compiling.
    let host = std::fs::read_to_string(root().join("client/src/lib.rs")).unwrap();
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        for fence in fences(&text).iter().filter(|f| f.lang.starts_with("rust")) {
            assert!(
                !fence.lang.contains("ignore"),
                "{name}:{}: a Rust example must compile (no_run where it needs a server)",
                fence.line
            );
            assert!(
                host.contains(&format!("include_str!(\"../../{name}\")")),
                "{name}:{}: client/src/lib.rs must include this page as a doctest",
                fence.line
            );
        }
    }
}

/// `jitid dev` on an ephemeral port in a temp dir, killed on drop.
struct Dev {
    child: Child,
    exports: Vec<(String, String)>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    /// Starts `jitid dev --dir <dir>/certs/dev`, as a user's checkout has it.
    fn start(dir: &Path) -> Self {
        let mut child = Command::new(jitid_bin())
            .current_dir(dir)
            .args(["dev", "--dir", "certs/dev", "--listen", "127.0.0.1:0"])
            .args(["--log", "error"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut exports = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some((key, value)) = line
                .strip_prefix("export ")
                .and_then(|assignment| assignment.split_once('='))
            {
                exports.push((key.to_owned(), value.to_owned()));
            }
            if line.starts_with("# Other demo identities") {
                break;
            }
        }
        assert_eq!(exports.len(), 4, "jitid dev prints four exports");
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, exports }
    }
}

#[test]
fn shell_snippets_run_against_jitid_dev() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let bin_dir = jitid_bin().parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut ran = 0;
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        for fence in fences(&text) {
            let Some(script) = commands(&fence) else {
                continue;
            };
            // A fresh shell with what the reader has after pasting the lines
            // `jitid dev` prints: its exports, and `jitid` on the PATH.
            let output = Command::new("timeout")
                .args([
                    "60",
                    "bash",
                    "--noprofile",
                    "--norc",
                    "-e",
                    "-o",
                    "pipefail",
                ])
                .args(["-c", &script])
                .current_dir(dir.path())
                .env_clear()
                .env("PATH", &path)
                .env("HOME", dir.path())
                .env("TMPDIR", dir.path())
                .envs(dev.exports.iter().cloned())
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{name}:{}: the snippet failed ({}):\n{script}\n--- stdout\n{}\n--- stderr\n{}",
                fence.line,
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
            );
            ran += 1;
        }
    }
    assert!(ran >= 10, "only {ran} shell snippets ran");
}

/// The keys a `deny_unknown_fields` struct of the config accepts, as
/// dotted paths, read from the source: a field whose type is another raw
/// struct is a table, a map keyed by name is `<name>`.
fn accepted_keys() -> BTreeSet<String> {
    let sources = [
        "src/config/mod.rs",
        "src/policy/catalogue.rs",
        "src/policy/window.rs",
    ]
    .map(|file| std::fs::read_to_string(root().join(file)).unwrap())
    .join("\n");
    let mut keys = BTreeSet::new();
    collect_keys(&sources, "RawConfig", "", &mut keys);
    keys
}

fn collect_keys(sources: &str, name: &str, prefix: &str, keys: &mut BTreeSet<String>) {
    let start = sources
        .find(&format!("struct {name} {{"))
        .unwrap_or_else(|| panic!("struct {name} not found"));
    let before = &sources[..start];
    let attrs = &before[before.rfind("\n\n").unwrap_or(0)..];
    assert!(
        attrs.contains("deny_unknown_fields"),
        "{name} must deny unknown fields for the page to be checked"
    );
    let body = &sources[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find("\n}").unwrap()];
    let mut rename: Option<String> = None;
    for line in body.lines().map(str::trim) {
        if let Some(at) = line.find("rename = \"") {
            let rest = &line[at + 10..];
            rename = Some(rest[..rest.find('"').unwrap()].to_owned());
            continue;
        }
        let Some((field, ty)) = line.strip_suffix(',').and_then(|l| l.split_once(": ")) else {
            continue;
        };
        let key = format!(
            "{prefix}{}",
            rename.take().unwrap_or_else(|| field.to_owned())
        );
        let by_name = ty.contains("Map<String,");
        let key = if by_name {
            format!("{key}.<name>")
        } else {
            key
        };
        match ty.find("Raw") {
            Some(at) => {
                let raw: String = ty[at..]
                    .chars()
                    .take_while(char::is_ascii_alphanumeric)
                    .collect();
                collect_keys(sources, &raw, &format!("{key}."), keys);
            }
            None => {
                keys.insert(key);
            }
        }
    }
}

/// The keys docs/configuration.md documents: the backquoted names in the
/// first column of its tables headed `key`.
fn documented_keys() -> BTreeSet<String> {
    let page = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let mut keys = BTreeSet::new();
    let mut in_table = false;
    for line in page.lines() {
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        let first = line.split('|').nth(1).unwrap_or("").trim();
        if first == "key" {
            in_table = true;
            continue;
        }
        if !in_table || first.starts_with("---") {
            continue;
        }
        for (index, part) in first.split('`').enumerate() {
            if index % 2 == 1 {
                keys.insert(part.to_owned());
            }
        }
    }
    keys
}

#[test]
fn the_configuration_page_documents_every_key_and_only_those() {
    let accepted = accepted_keys();
    let documented = documented_keys();
    assert!(accepted.len() > 50, "found only {accepted:?}");
    let undocumented: Vec<_> = accepted.difference(&documented).collect();
    // A table may be documented too (`entitlement.break_glass`), when it
    // holds keys the config accepts.
    let unknown: Vec<_> = documented
        .difference(&accepted)
        .filter(|key| !accepted.iter().any(|a| a.starts_with(&format!("{key}."))))
        .collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "docs/configuration.md: keys the config accepts but the page does not document: \
         {undocumented:?}; keys the page documents but the config does not accept: {unknown:?}"
    );
}
