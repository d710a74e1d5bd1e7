//! The layering of `src/` (see `model_slim::LAYERS`): a module names only modules of its own
//! layer or of layers before it, and the command line uses only the public API.

use model_slim::LAYERS;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The code of a file without its comments (docs may name any layer).
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level names that follow `prefix` in `code`.
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<&'a str> {
    code.match_indices(prefix)
        .map(|(at, _)| {
            let rest = &code[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

#[test]
fn every_module_uses_only_the_layers_before_it() {
    let src = model_slim::testing::checkout().join("src");
    let rank = |name: &str| LAYERS.iter().position(|l| *l == name);
    let mut wrong = vec![];
    for file in rust_files(&src) {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = top.trim_end_matches(".rs").to_string();
        let Some(own) = rank(&top) else {
            continue; // lib.rs, main.rs, build scripts and the command line: below
        };
        for used in paths_after(&code(&file), "crate::") {
            match rank(used) {
                Some(r) if r <= own => {}
                Some(_) => wrong.push(format!(
                    "{}: `{top}` uses `{used}`, a later layer",
                    relative.display()
                )),
                None => wrong.push(format!(
                    "{}: `crate::{used}` is not a layer",
                    relative.display()
                )),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_layer_is_a_module_and_the_tree_is_small() {
    let src = model_slim::testing::checkout().join("src");
    for layer in LAYERS {
        assert!(
            src.join(layer).is_dir() || src.join(format!("{layer}.rs")).is_file(),
            "layer `{layer}` has no module"
        );
    }
    let entries = std::fs::read_dir(&src).unwrap().count();
    assert!(entries <= 14, "{entries} top-level entries in src/");
}

#[test]
fn the_command_line_uses_only_the_public_api() {
    let src = model_slim::testing::checkout().join("src");
    let mut files = rust_files(&src.join("cli"));
    files.push(src.join("main.rs"));
    for file in files {
        let code = code(&file);
        assert!(
            !code.contains("model_slim::testing"),
            "{}: uses model_slim::testing, which is not the public API",
            file.display()
        );
        for used in paths_after(&code, "crate::") {
            assert_eq!(used, "cli", "{}: `crate::{used}`", file.display());
        }
    }
}
