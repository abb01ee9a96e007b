//! Tidy checks over the whole workspace, run as tests of `xtask` (and so by `cargo xtask ci`).
//!
//! - every `.rs` file starts with a `//!` module doc;
//! - every package inherits the workspace lints;
//! - each library crate's README opens with its runnable example, verbatim;
//! - no crate depends on a crate above it (read from `cargo metadata`);
//! - `ime-region` and `ime-controller` stay pure: no threads, clocks, locks or I/O, in
//!   their dependencies or their source;
//! - the engine and the controller match their enums exhaustively: their crate roots deny
//!   clippy's `wildcard_enum_match_arm`, and no `_ =>` arm appears in their source;
//! - the engine stays a thin facade: under 2,500 lines of product code
//!   (test modules and the modules only the `testing` feature compiles left out), no
//!   function over 60 lines.

use std::path::{Path, PathBuf};

/// The workspace root (the parent of this crate's directory).
pub(crate) fn workspace_root() -> PathBuf {
    // Cargo's at run time first: `.ci/run` shares a target directory between clones, so
    // this binary may have been built in another clone, since deleted.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    (manifest_dir.parent()).map_or_else(|| manifest_dir.clone(), Path::to_path_buf)
}

/// Internal crates each crate may use; `None` means any (tools, not layers).
///
/// A new crate must be added here before tidy passes, so its place in the layering is
/// decided once, on purpose.
#[cfg(test)]
const LAYERS: &[(&str, Option<&[&str]>)] = &[
    ("ime-types", Some(&[])),
    ("ime-stripes", Some(&["ime-types"])),
    ("ime-testkit", Some(&[])),
    ("ime-region", Some(&["ime-types", "ime-testkit"])),
    ("ime-memkv", Some(&["ime-types"])),
    ("ime-disk", Some(&["ime-types"])),
    ("ime-observer", Some(&["ime-region"])),
    ("ime-eviction", Some(&["ime-region"])),
    (
        "ime-metrics",
        Some(&["ime-controller", "ime-region", "ime-observer", "ime-types"]),
    ),
    (
        "ime-controller",
        Some(&[
            "ime-region",
            "ime-observer",
            "ime-eviction",
            "ime-types",
            "ime-testkit",
        ]),
    ),
    (
        "ime-engine",
        Some(&[
            "ime-controller",
            "ime-metrics",
            "ime-region",
            "ime-memkv",
            "ime-stripes",
            "ime-observer",
            "ime-eviction",
            "ime-disk",
            "ime-types",
        ]),
    ),
    ("ime-sim", Some(&["ime-engine", "ime-memkv", "ime-types"])),
    ("ime-benches", None),
    ("xtask", None),
];

/// Crates that may compile RocksDB (through `ime-disk`'s `rocksdb` feature); the rest
/// build and test in seconds.
#[cfg(test)]
const ROCKSDB_USERS: &[&str] = &["ime-disk", "ime-engine", "ime-sim", "ime-benches"];

/// The most lines of product code `crates/engine/src` may hold: its decisions live in
/// `ime-controller`, its counters in `ime-metrics`, its MVCC rules in `ime-memkv`.
#[cfg(test)]
const ENGINE_MAX_LINES: usize = 2_500;

/// The longest function `crates/engine/src` may hold, in lines.
#[cfg(test)]
const ENGINE_MAX_FN_LINES: usize = 60;

/// The pure crates — no threads, clocks, locks or I/O — with the external crates each may
/// depend on (normal dependencies) and the paths its source may not use.
#[cfg(test)]
const PURE: &[(&str, &str, &[&str], &[&str])] = &[
    (
        "ime-region",
        "crates/region/src",
        &["serde", "thiserror", "ime-types"],
        REGION_FORBIDDEN_PATHS,
    ),
    (
        "ime-controller",
        "crates/controller/src",
        &[
            "serde",
            "thiserror",
            "toml",
            "ime-region",
            "ime-observer",
            "ime-eviction",
            "ime-types",
        ],
        CONTROLLER_FORBIDDEN_PATHS,
    ),
];

/// Paths whose use in `ime-controller`'s source would bring threads, clocks, locks or
/// I/O (an atomic only where [`PURE_SYNC_ALLOWED`] says). `Duration` is allowed: time
/// comes in as a value, never read from a clock.
#[cfg(test)]
const CONTROLLER_FORBIDDEN_PATHS: &[&str] = &[
    "std::thread",
    "Instant",
    "SystemTime",
    "std::fs",
    "std::net",
    "std::process",
    "std::io",
    "std::env",
    "Mutex",
    "RwLock",
    "Condvar",
    "atomic",
    "tracing",
];

/// Paths whose use in `ime-region`'s source would bring threads, clocks, locks or I/O
/// (a lock or an atomic only where [`PURE_SYNC_ALLOWED`] says).
#[cfg(test)]
const REGION_FORBIDDEN_PATHS: &[&str] = &[
    "std::thread",
    "std::time",
    "std::fs",
    "std::net",
    "std::process",
    "std::io",
    "Mutex",
    "RwLock",
    "Condvar",
    "atomic",
];

/// The places a pure crate may use a lock or an atomic, and why; nowhere else.
/// - `ime-region`'s `snapshot.rs`: a region's live snapshots, shared with its tickets, so
///   that readers register and release while the map is shared (its owner serializes
///   every other change).
/// - `ime-region`'s `callback.rs`: an eviction callback's function, only ever taken
///   through `&mut` (never locked), which makes the callback `Sync` without asking the
///   function to be.
/// - `ime-region`'s `map.rs` and `apply.rs`, `ime-controller`'s `controller.rs`: a
///   region's applied index (the map's record, the peer table), an atomic counter that
///   the apply side moves on while the map is shared (`try_report_applied`,
///   `try_on_applied`); every other change still goes through the owner.
#[cfg(test)]
const PURE_SYNC_ALLOWED: &[(&str, &str, &str)] = &[
    ("crates/region/src", "snapshot.rs", "Mutex"),
    ("crates/region/src", "callback.rs", "Mutex"),
    ("crates/region/src", "map.rs", "atomic"),
    ("crates/region/src", "apply.rs", "atomic"),
    ("crates/controller/src", "controller.rs", "atomic"),
];

#[cfg(test)]
mod tests {
    use super::*;

    use std::process::Command;

    use serde_json::Value;

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    rust_files(&path, out);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }

    fn metadata() -> Value {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let output = Command::new(cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--offline",
            ])
            .current_dir(workspace_root())
            .output()
            .expect("cargo metadata runs");
        assert!(output.status.success(), "cargo metadata failed: {output:?}");
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
    }

    fn packages(meta: &Value) -> &Vec<Value> {
        meta["packages"].as_array().expect("packages is an array")
    }

    #[test]
    fn every_rust_file_starts_with_a_module_doc() {
        let mut files = Vec::new();
        rust_files(&workspace_root(), &mut files);
        assert!(
            !files.is_empty(),
            "no Rust files found under {:?}",
            workspace_root()
        );
        let missing: Vec<_> = files
            .iter()
            .filter(|path| {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                !text.trim_start().starts_with("//!")
            })
            .collect();
        assert!(
            missing.is_empty(),
            "files without a `//!` module doc: {missing:#?}"
        );
    }

    /// Each library crate's README opens with its example, exactly as the example file
    /// runs in CI: the README's first `rust` block is the file, and nothing but a title
    /// and prose comes before it.
    #[test]
    fn every_readme_opens_with_its_example() {
        for (dir, package, name) in crate::EXAMPLES {
            let dir = workspace_root().join(dir);
            let readme = std::fs::read_to_string(dir.join("README.md"))
                .unwrap_or_else(|e| panic!("{package}: README.md unreadable: {e}"));
            let example = std::fs::read_to_string(dir.join("examples").join(format!("{name}.rs")))
                .unwrap_or_else(|e| panic!("{package}: example {name} unreadable: {e}"));
            let (before, block) = readme
                .split_once("```rust\n")
                .unwrap_or_else(|| panic!("{package}: README.md has no ```rust block"));
            assert!(
                !before.contains("```"),
                "{package}: README.md shows another code block before its example"
            );
            let block = block.split("```").next().unwrap_or_default();
            assert_eq!(
                block, example,
                "{package}: README.md's first rust block differs from examples/{name}.rs"
            );
            let run = format!("cargo run -p {package} --example {name}");
            assert!(readme.contains(&run), "{package}: README.md lacks `{run}`");
        }
    }

    #[test]
    fn every_package_inherits_the_workspace_lints() {
        let meta = metadata();
        for package in packages(&meta) {
            let manifest = package["manifest_path"].as_str().expect("manifest_path");
            let text = std::fs::read_to_string(manifest).expect("manifest readable");
            let inherits = text.split("[lints]").nth(1).is_some_and(|rest| {
                rest.lines()
                    .map(str::trim)
                    .take_while(|l| !l.starts_with('['))
                    .any(|l| l.replace(' ', "") == "workspace=true")
            });
            assert!(inherits, "{manifest} lacks `[lints] workspace = true`");
        }
    }

    #[test]
    fn no_layer_depends_upward() {
        let meta = metadata();
        let internal: Vec<&str> = packages(&meta)
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        for package in packages(&meta) {
            let name = package["name"].as_str().expect("package name");
            let allowed = LAYERS
                .iter()
                .find(|(layer, _)| *layer == name)
                .unwrap_or_else(|| panic!("{name} has no entry in xtask's LAYERS table"))
                .1;
            let Some(allowed) = allowed else { continue };
            for dep in package["dependencies"].as_array().expect("dependencies") {
                let dep_name = dep["name"].as_str().expect("dependency name");
                // A crate's dev-dependency on itself turns on test-only features.
                if internal.contains(&dep_name) && dep_name != name {
                    assert!(
                        allowed.contains(&dep_name),
                        "{name} depends on {dep_name}, which is not below it in the layering"
                    );
                }
            }
        }
    }

    #[test]
    fn only_the_crates_that_need_it_compile_rocksdb() {
        let meta = metadata();
        for package in packages(&meta) {
            let name = package["name"].as_str().expect("package name");
            for dep in package["dependencies"].as_array().expect("dependencies") {
                let dep_name = dep["name"].as_str().expect("dependency name");
                let features: Vec<&str> = dep["features"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f.as_str())
                    .collect();
                let pulls_rocksdb = dep_name == "rocksdb"
                    || (dep_name == "ime-disk"
                        && (dep["uses_default_features"] == true || features.contains(&"rocksdb")));
                assert!(
                    !pulls_rocksdb || ROCKSDB_USERS.contains(&name),
                    "{name} compiles RocksDB through {dep_name}; use `default-features = false`"
                );
            }
        }
    }

    #[test]
    fn the_pure_crates_have_no_threads_clocks_locks_or_io() {
        let meta = metadata();
        for (name, src, allowed, forbidden) in PURE {
            let package = packages(&meta)
                .iter()
                .find(|p| p["name"] == *name)
                .unwrap_or_else(|| panic!("{name} is a workspace member"));
            for dep in package["dependencies"].as_array().expect("dependencies") {
                let is_normal = dep["kind"].is_null();
                let dep_name = dep["name"].as_str().expect("dependency name");
                assert!(
                    !is_normal || allowed.contains(&dep_name),
                    "{name} must stay pure, but depends on {dep_name}"
                );
            }
            let mut files = Vec::new();
            rust_files(&workspace_root().join(src), &mut files);
            assert!(!files.is_empty(), "no sources under {src}");
            for file in files {
                // Product code: a test module may count with atomics.
                let text = product_lines(&file).join("\n");
                let name = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                for path in *forbidden {
                    let allowed = PURE_SYNC_ALLOWED.contains(&(*src, name, *path));
                    assert!(
                        allowed || !text.contains(path),
                        "{} uses {path}",
                        file.display()
                    );
                }
            }
        }
    }

    /// No wildcard arm may stand in for a variant the engine or the controller has to handle: a new event,
    /// read miss, eviction reason, lifecycle state or task kind must not compile until the
    /// engine says what it does with it. Clippy enforces it (the crate root denies
    /// `wildcard_enum_match_arm`, and CI runs clippy with warnings denied); this test keeps
    /// the lint from being dropped and catches a bare `_ =>` arm in a build without clippy.
    #[test]
    fn the_engine_and_the_controller_match_their_enums_exhaustively() {
        for crate_src in ["crates/engine/src", "crates/controller/src"] {
            let src = workspace_root().join(crate_src);
            let root = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs readable");
            assert!(
                root.contains("#![deny(clippy::wildcard_enum_match_arm)]"),
                "{crate_src}/lib.rs must deny clippy::wildcard_enum_match_arm"
            );
            let mut files = Vec::new();
            rust_files(&src, &mut files);
            for file in files {
                let text = std::fs::read_to_string(&file).expect("source readable");
                for (n, line) in text.lines().enumerate() {
                    assert!(
                        !line.trim_start().starts_with("_ =>"),
                        "{}:{}: a wildcard arm: name the variants",
                        file.display(),
                        n + 1
                    );
                }
            }
        }
    }

    /// The lines of `file` that are product code: everything before its `#[cfg(test)]`
    /// module (by convention the last item of a file).
    fn product_lines(file: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(file).expect("source readable");
        text.lines()
            .take_while(|l| !l.starts_with("#[cfg(test)]"))
            .map(str::to_owned)
            .collect()
    }

    /// The engine's modules the crate root compiles only with the `testing` feature.
    fn testing_modules(src: &Path) -> Vec<PathBuf> {
        let root = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs readable");
        let lines: Vec<&str> = root.lines().collect();
        lines
            .windows(2)
            .filter(|w| w[0].trim() == "#[cfg(feature = \"testing\")]")
            .filter_map(|w| w[1].trim().strip_prefix("mod ")?.strip_suffix(';'))
            .map(|name| src.join(format!("{name}.rs")))
            .collect()
    }

    /// Each function in `lines` with its name and length: from its `fn` line to the
    /// closing brace at its indentation.
    fn functions(lines: &[String]) -> Vec<(String, usize)> {
        let mut found = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            let after_vis = trimmed
                .strip_prefix("pub(crate) ")
                .or_else(|| trimmed.strip_prefix("pub "))
                .unwrap_or(trimmed);
            let Some(rest) = after_vis.strip_prefix("fn ") else {
                continue;
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let opens = lines[i..]
                .iter()
                .position(|l| l.trim_end().ends_with('{') || l.trim_end().ends_with(';'));
            let Some(opens) = opens.map(|o| i + o) else {
                continue;
            };
            if lines[opens].trim_end().ends_with(';') {
                continue; // a declaration without a body
            }
            let closing = format!("{indent}}}");
            if let Some(end) = lines[opens..].iter().position(|l| *l == closing) {
                found.push((name, opens + end - i + 1));
            }
        }
        found
    }

    #[test]
    fn the_engine_stays_a_thin_facade() {
        let src = workspace_root().join("crates/engine/src");
        let testing = testing_modules(&src);
        assert!(
            !testing.is_empty(),
            "the engine's testing modules were not found in lib.rs"
        );
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut total = 0;
        let mut long = Vec::new();
        for file in files.iter().filter(|f| !testing.contains(f)) {
            let lines = product_lines(file);
            total += lines.len();
            for (name, length) in functions(&lines) {
                if length > ENGINE_MAX_FN_LINES {
                    long.push(format!("{}: {name} ({length} lines)", file.display()));
                }
            }
        }
        assert!(
            total < ENGINE_MAX_LINES,
            "crates/engine/src holds {total} lines of product code (fewer than {ENGINE_MAX_LINES} allowed): \
             move decisions into ime-controller rather than growing the facade"
        );
        assert!(
            long.is_empty(),
            "engine functions over {ENGINE_MAX_FN_LINES} lines: {long:#?}"
        );
    }

    #[test]
    fn function_lengths_are_measured_from_fn_to_its_closing_brace() {
        let code: Vec<String> = [
            "impl X {",
            "    pub(crate) fn short(&self) -> u8 {",
            "        1",
            "    }",
            "    fn declared(&self);",
            "}",
            "fn free(",
            "    a: u8,",
            ") -> u8 {",
            "    a",
            "}",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            functions(&code),
            [("short".to_owned(), 3), ("free".to_owned(), 5)]
        );
    }
}
