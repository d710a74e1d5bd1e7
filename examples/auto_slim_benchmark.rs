//! Auto-slim's fidelity on a real model, judged on held-out sentences: the tables in README.
//!
//! Make the data with `python tests/fixtures/make_benchmark_data.py minilm target/minilm` (a
//! real model, `minilm`, `mpnet` or `smollm2`, and sentences from a fixed public text), then
//! `cargo run --release --example auto_slim_benchmark -- target/minilm [COLUMNS]`, COLUMNS a
//! comma-separated list of method numbers (1-based, default: all).
//!
//! For each target (FFN channels and heads removed) and each method it prints, on the held-out
//! sentences, the mean cosine between the mean-pooled real-token embeddings of the pruned and
//! the dense model — for a language model (an output named logits), the share of real tokens
//! whose predicted next token is the dense model's — and the time `auto_slim` took.

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

/// The methods the command line asks for (1-based numbers, comma-separated), else all.
fn chosen_methods(list: Option<String>) -> Result<Vec<&'static Method>, String> {
    let Some(list) = list else {
        return Ok(METHODS.iter().collect());
    };
    list.split(',')
        .map(|n| {
            n.trim()
                .parse::<usize>()
                .ok()
                .and_then(|n| METHODS.get(n.wrapping_sub(1)))
                .ok_or(format!(
                    "no method {n:?}: methods are 1 to {}",
                    METHODS.len()
                ))
        })
        .collect()
}

/// The held-out measure of a result: next-token agreement for a language model, else the
/// pooled-embedding cosine.
fn measure(fidelity: &model_slim::OutputFidelity) -> String {
    match (fidelity.same_next_token, fidelity.pooled_cosine) {
        (Some(same), _) => format!("{:.1}%", same * 100.0),
        (None, Some(pooled)) => format!("{pooled:.3}"),
        (None, None) => format!("cosine {:.3}", fidelity.cosine),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or("target/minilm".into()));
    let methods = chosen_methods(args.next())?;
    let model = import_onnx(&dir.join("model.onnx"), &ImportOptions::default())?;
    let calibration = load_npz(&dir.join("calibration.npz"), &model)?;
    let heldout = load_npz(&dir.join("heldout.npz"), &model)?;
    let slimmer = Slimmer::new()?;
    print!("| FFN removed | heads removed |");
    for Method(name, ..) in &methods {
        print!(" {name} |");
    }
    println!("\n|---|---|{}", "---|".repeat(methods.len()));
    for (ffn, heads) in TARGETS {
        print!("| {:.0}% | {:.0}% |", ffn * 100.0, heads * 100.0);
        for Method(_, criterion, repair, global) in &methods {
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
            let measured = measure(&result.report.fidelity[0]);
            print!(" {measured} ({:.1} s) |", clock.elapsed().as_secs_f64());
        }
        println!();
    }
    Ok(())
}
