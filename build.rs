//! Embeds every `rules/*.rules` file as a default rule file, so that a rule file added to
//! `rules/` is shipped without touching the code.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("the rules/ directory")
        .map(|entry| {
            entry
                .expect("a rules/ entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".rules"))
        .collect();
    // A fixed order (by name), so that builds are reproducible.
    files.sort();
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
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("default_rules.rs");
    std::fs::write(out, table).expect("writing the default rules table");
}
