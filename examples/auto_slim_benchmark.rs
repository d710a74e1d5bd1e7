//! Auto-slim's fidelity on a real model, judged on held-out sentences: the table in README.
//!
//! Make the data with `python tests/fixtures/make_minilm_benchmark.py target/minilm` (the real
//! all-MiniLM-L6-v2 and sentences from a fixed public text), then
//! `cargo run --release --example auto_slim_benchmark -- target/minilm`.
//!
//! For each target (FFN channels and heads removed in every layer) and each method it prints
//! the mean cosine between the mean-pooled real-token embeddings of the pruned and the dense
//! model on the held-out sentences, and the time `auto_slim` took.

use model_slim::Targets;
use model_slim::{auto_slim, load_npz, AutoOptions, Criterion, GlobalCost, Repair, Slimmer};
use model_slim::{import_onnx, ImportOptions};
use std::path::PathBuf;
use std::time::Instant;

const TARGETS: &[(f64, f64)] = &[(0.1, 0.0), (0.3, 0.0), (0.5, 0.0), (0.3, 0.25), (0.5, 0.5)];

/// A method: its name, how units are scored, how consumers are repaired, and whether the
/// sparsity is one budget across layers (weighed by what).
struct Method(&'static str, Criterion, Repair, Option<GlobalCost>);

const METHODS: &[Method] = &[
    Method(
        "activation + compensation",
        Criterion::Activation,
        Repair::Compensation,
        None,
    ),
    Method(
        "fluctuation + compensation",
        Criterion::Fluctuation,
        Repair::Compensation,
        None,
    ),
    Method(
        "fluctuation + least squares",
        Criterion::Fluctuation,
        Repair::LeastSquares,
        None,
    ),
    Method(
        "greedy removal + least squares (default)",
        Criterion::RemovalCost,
        Repair::LeastSquares,
        None,
    ),
    Method(
        "greedy removal + least squares, `--global`",
        Criterion::RemovalCost,
        Repair::LeastSquares,
        Some(GlobalCost::Reconstruction),
    ),
    Method(
        "… `--global --global-cost outputs`",
        Criterion::RemovalCost,
        Repair::LeastSquares,
        Some(GlobalCost::Outputs),
    ),
    Method(
        "… `--global --global-cost embeddings`",
        Criterion::RemovalCost,
        Repair::LeastSquares,
        Some(GlobalCost::Embeddings),
    ),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or("target/minilm".into()));
    let model = import_onnx(&dir.join("minilm.onnx"), &ImportOptions::default())?;
    let calibration = load_npz(&dir.join("calibration.npz"), &model)?;
    let heldout = load_npz(&dir.join("heldout.npz"), &model)?;
    let slimmer = Slimmer::new()?;
    print!("| FFN removed | heads removed |");
    for Method(name, ..) in METHODS {
        print!(" {name} |");
    }
    println!("\n|---|---|{}", "---|".repeat(METHODS.len()));
    for (ffn, heads) in TARGETS {
        print!("| {:.0}% | {:.0}% |", ffn * 100.0, heads * 100.0);
        for Method(_, criterion, repair, global) in METHODS {
            let targets = Targets {
                global: global.is_some(),
                global_cost: global.unwrap_or_default(),
                ..Targets::per_layer(*ffn, *heads)
            };
            let options = AutoOptions {
                calibration: Some(calibration.clone()),
                heldout: Some(heldout.clone()),
                criterion: *criterion,
                repair: *repair,
                ..AutoOptions::new(targets)
            };
            let clock = Instant::now();
            let result = auto_slim(&model, &slimmer, &options)?;
            let pooled = result.report.fidelity[0].pooled_cosine.unwrap_or(f64::NAN);
            print!(" {pooled:.3} ({:.1} s) |", clock.elapsed().as_secs_f64());
        }
        println!();
    }
    Ok(())
}
