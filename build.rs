//! Embeds every `rules/*.rules` file as a default rule file, so that a rule file added to
//! `rules/` is shipped without touching the code.
//!
//! The checkout is read from the environment when the script runs, never baked in with `env!`:
//! cargo judges a compiled build script fresh by file times alone, so a target directory shared
//! by two checkouts may run a script compiled in the other one.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    match write_rules_table() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // One line, as cargo shows a build script's error output.
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn write_rules_table() -> Result<(), String> {
    let dir = PathBuf::from(variable("CARGO_MANIFEST_DIR")?).join("rules");
    println!("cargo:rerun-if-changed={}", dir.display());
    let files = rule_files(&dir)?;
    let mut table = String::from("&[\n");
    for name in &files {
        let path = dir.join(name);
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(
            table,
            "    (\"rules/{name}\", include_str!({:?})),",
            path.display().to_string()
        )
        .expect("writing to a string");
    }
    table.push(']');
    let out = Path::new(&variable("OUT_DIR")?).join("default_rules.rs");
    std::fs::write(&out, table).map_err(|e| format!("writing {}: {e}", out.display()))
}

/// The `*.rules` files in `dir`, by name (a fixed order, so that builds are reproducible).
fn rule_files(dir: &Path) -> Result<Vec<String>, String> {
    let unreadable = |e: std::io::Error| format!("the rules directory {}: {e}", dir.display());
    let mut files = vec![];
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let name = entry.map_err(unreadable)?.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".rules") {
            files.push(name.into_owned());
        }
    }
    files.sort();
    Ok(files)
}

fn variable(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("cargo did not set {name}"))
}
