//! `ime-testkit`: test support shared by IME's crates (a dev-dependency only).
//!
//! [`check_transcripts`] runs transcript tests: files of commands, each followed by a
//! `----` line and the output it is expected to print, blocks separated by blank lines;
//! `#` lines are comments. A driver (one per file) runs each command and returns its
//! output; the file must read the same afterwards. With `UPDATE_TRANSCRIPTS=1` the files
//! are rewritten with the actual outputs instead (then read the diff).
//!
//! ```
//! use ime_testkit::run_transcript;
//!
//! let text = "echo hi\n----\nhi\n";
//! assert_eq!(run_transcript(text, |command| command.replacen("echo ", "", 1) + "\n"), text);
//! ```
#![forbid(unsafe_code)]

use std::path::Path;

/// Runs every `*.txt` transcript in `dir`, each with a fresh driver from `driver`, and
/// fails the test with the first difference of each file that does not match (or, with
/// `UPDATE_TRANSCRIPTS=1`, rewrites the files).
///
/// # Panics
/// When a transcript differs, the directory holds none, or a file cannot be read: the
/// test fails.
#[allow(
    clippy::panic,
    clippy::expect_used,
    reason = "a test helper: failing the test is its job"
)]
pub fn check_transcripts<R: FnMut(&str) -> String>(dir: &Path, mut driver: impl FnMut() -> R) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("the transcript directory is readable")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|f| f.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no transcripts in {}", dir.display());
    let update = std::env::var_os("UPDATE_TRANSCRIPTS").is_some();
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a transcript is readable");
        let actual = run_transcript(&text, driver());
        if actual != text {
            if update {
                std::fs::write(file, &actual).expect("a transcript is writable");
            } else {
                failures.push(format!(
                    "{}:\n{}",
                    file.display(),
                    first_difference(&text, &actual)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "transcripts differ (UPDATE_TRANSCRIPTS=1 rewrites):\n{}",
        failures.join("\n")
    );
}

/// Runs every block of `text` through `run` and returns the transcript with the actual
/// outputs in place of the expected ones.
///
/// # Panics
/// When a command is not followed by a `----` line.
#[allow(clippy::panic, reason = "a malformed transcript fails the test")]
pub fn run_transcript(text: &str, mut run: impl FnMut(&str) -> String) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        out.push_str(line);
        out.push('\n');
        let command = line.trim();
        if command.is_empty() || command.starts_with('#') {
            continue;
        }
        assert_eq!(
            lines.next().map(str::trim),
            Some("----"),
            "`----` expected after `{command}`"
        );
        while lines.next_if(|l| !l.trim().is_empty()).is_some() {}
        out.push_str("----\n");
        out.push_str(&run(command));
        if lines.peek().is_some() {
            out.push('\n');
            lines.next();
        }
    }
    out
}

/// The first line where `actual` departs from `expected`, for a failure message.
pub fn first_difference(expected: &str, actual: &str) -> String {
    let pairs = expected.lines().zip(actual.lines()).enumerate();
    match pairs.clone().find(|(_, (e, a))| e != a) {
        Some((n, (e, a))) => format!("line {}: expected `{e}`\n      got `{a}`", n + 1),
        None => format!(
            "lengths differ: {} vs {} lines",
            expected.lines().count(),
            actual.lines().count()
        ),
    }
}

/// The calling crate's directory: cargo's `CARGO_MANIFEST_DIR` at run time, else the
/// one the test was built in. A target directory shared between clones (as `.ci/run`
/// shares one) may run a binary built in another clone, whose directory is gone.
#[macro_export]
macro_rules! crate_dir {
    () => {
        ::std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
            || ::std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            ::std::path::PathBuf::from,
        )
    };
}
