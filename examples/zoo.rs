//! Slims every committed fixture (`tests/fixtures/manifest.json`) the way the CLI does and
//! prints one Markdown row per fixture: query heads and KV heads per layer before → after, FFN
//! widths, the FLOP ratio, and the largest output difference of the written NNEF (loaded back in
//! stock tract) and of the written ONNX (re-imported) against the original.
//!
//! `cargo run --release --example zoo` (about a minute).

use model_slim::write_slimmed_onnx;
use model_slim::Slimmer;
use model_slim::Verification;
use model_slim::{import_onnx, ImportOptions, InputSpec};
use model_slim::{write_model, ArtifactCheck, Expected};
use serde::Deserialize;
use std::path::Path;
use std::time::Instant;
use tract_core::internal::*;

#[derive(Deserialize)]
struct Manifest {
    fixtures: Vec<Fixture>,
}

#[derive(Deserialize)]
struct Fixture {
    name: String,
    file: String,
    inputs: Vec<Input>,
}

#[derive(Deserialize)]
struct Input {
    name: String,
    shape: Vec<usize>,
    dtype: String,
}

fn options(fixture: &Fixture) -> ImportOptions {
    let inputs = fixture
        .inputs
        .iter()
        .map(|i| {
            let dims: Vec<String> = i.shape.iter().map(|d| d.to_string()).collect();
            let ty = if i.dtype == "int64" { "i64" } else { "f32" };
            format!("{}:{},{ty}", i.name, dims.join(","))
                .parse::<InputSpec>()
                .expect("manifest inputs parse")
        })
        .collect();
    ImportOptions {
        inputs,
        sets: vec![],
        states: vec![],
    }
}

fn max_diff(v: &Verification) -> f32 {
    v.outputs.iter().map(|o| o.max_abs_diff).fold(0.0, f32::max)
}

fn row(fixture: &Fixture, dir: &Path) -> TractResult<String> {
    let source = model_slim::testing::checkout()
        .join("tests/fixtures")
        .join(&fixture.file);
    let options = options(fixture);
    let original = import_onnx(&source, &options)?;
    let clock = Instant::now();
    let slimmed = Slimmer::new()?.slim(&original)?;
    let pass_ms = clock.elapsed().as_secs_f64() * 1000.0;
    let values = SymbolValues::default();
    let expected = Expected::of(original.clone(), 1, &values)?;
    let check = ArtifactCheck {
        expected: &expected,
        values: &values,
        cuts: &[],
    };
    let nnef = dir.join(format!("{}.nnef.tgz", fixture.name));
    let nnef = write_model(slimmed.model.clone(), &nnef, Some(check))?.context("no comparison")?;
    let onnx = dir.join(format!("{}.onnx", fixture.name));
    let onnx = write_slimmed_onnx(
        &source,
        &onnx,
        &options,
        original.clone(),
        slimmed.model.clone(),
        check,
    )?;
    let r = &slimmed.report;
    let heads: Vec<String> = r
        .attention_layers
        .iter()
        .map(|l| {
            if l.kv_heads_before == l.heads_before {
                format!("{}→{}", l.heads_before, l.heads_after)
            } else {
                format!(
                    "{}/{}→{}/{}",
                    l.heads_before, l.kv_heads_before, l.heads_after, l.kv_heads_after
                )
            }
        })
        .collect();
    let ffn: Vec<String> = r
        .ffn_layers
        .iter()
        .map(|l| format!("{}→{}", l.channels_before, l.channels_after))
        .collect();
    let ok = |v: &Verification| if v.passed { "" } else { " FAILED" };
    Ok(format!(
        "| {} | {} | {} | {:.3} | {:.1e}{} | {:.1e}{} | {:.0} |",
        fixture.name,
        if heads.is_empty() {
            "—".into()
        } else {
            heads.join(", ")
        },
        ffn.join(", "),
        r.flops_after / r.flops_before,
        max_diff(&nnef),
        ok(&nnef),
        max_diff(&onnx),
        ok(&onnx),
        pass_ms
    ))
}

fn main() -> TractResult<()> {
    let manifest: Manifest = serde_json::from_str(&std::fs::read_to_string(
        model_slim::testing::checkout().join("tests/fixtures/manifest.json"),
    )?)?;
    let dir = tempfile::tempdir()?;
    println!("| fixture | heads per layer (query/KV) | FFN channels per layer | FLOP ratio | NNEF max diff | ONNX max diff | pass ms |");
    println!("|---|---|---|---|---|---|---|");
    for fixture in &manifest.fixtures {
        match row(fixture, dir.path()) {
            Ok(line) => println!("{line}"),
            Err(e) => println!("| {} | error: {e:#} |", fixture.name),
        }
    }
    Ok(())
}
