//! BERT-base-sized encoders (12 layers, hidden 768, 12 heads, FFN 3072, random weights),
//! generated in memory, measured on tract's optimized plan.
//!
//! ```sh
//! cargo run --release --example bert_base [-- slim [RUNS]]   # half the heads and channels pruned: slim it
//! cargo run --release --example bert_base -- auto [RUNS]     # dense: auto-slim at 50% FFN + 50% heads
//! cargo run --release --example bert_base -- memory          # peak memory of the pass alone
//! ```
//!
//! `slim` checks the slimmed size against the hand-computed size of the fully slimmed model and
//! verifies outputs; `auto` reports fidelity with and without calibration data. Both print
//! dense vs slimmed median latency (alternating runs in one process) next to the FLOP ratio.

use model_slim::compare_latency;
use model_slim::Calibration;
use model_slim::EncoderSpec;
use model_slim::Slimmer;
use model_slim::Targets;
use model_slim::{auto_slim, AutoOptions};
use model_slim::{params, Report};
use model_slim::{random_inputs, verify};
use std::time::Instant;
use tract_core::internal::*;

fn latency_table(
    dense: &TypedModel,
    slim: &TypedModel,
    report: &Report,
    runs: usize,
) -> TractResult<()> {
    let latency = compare_latency((dense, slim), &[], &SymbolValues::default(), 3, runs)?;
    println!("| model | median latency (ms) | FLOPs |");
    println!("|---|---|---|");
    println!(
        "| dense | {:.1} | {:.2}G |",
        latency.original_ms,
        report.flops_before / 1e9
    );
    println!(
        "| slimmed | {:.1} | {:.2}G |",
        latency.slimmed_ms,
        report.flops_after / 1e9
    );
    println!(
        "latency ratio {:.3}, FLOP ratio {:.3} ({} alternating runs each)",
        latency.ratio(),
        report.flops_after / report.flops_before,
        latency.runs
    );
    Ok(())
}

fn slim(runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let spec = EncoderSpec::bert_base_half_pruned();
    let model = spec.build()?;
    let mut slimmed = Slimmer::new()?.slim(&model)?;
    slimmed.report.verification =
        Some(verify(&model, &slimmed.model, 0, &SymbolValues::default())?);
    print!("{}", slimmed.report.table());
    let (got, expected) = (params(&slimmed.model), spec.params(true));
    let off = 100.0 * (got as f64 - expected as f64).abs() / expected as f64;
    println!(
        "parameters: dense {} (spec {}), slimmed {got}, hand-computed fully slimmed {expected} ({off:.3}% off)",
        params(&model),
        spec.params(false)
    );
    latency_table(&model, &slimmed.model, &slimmed.report, runs)?;
    Ok(())
}

fn auto(runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let spec = EncoderSpec {
        pruned_heads: 0,
        pruned_ffn: 0,
        ..EncoderSpec::bert_base_half_pruned()
    };
    let model = spec.build()?;
    let slimmer = Slimmer::new()?;
    let targets = Targets::per_layer(0.5, 0.5);
    // Held-out inputs for fidelity, and a separate calibration set.
    let held_out: Vec<_> = (100..108)
        .map(|s| random_inputs(&model, s, &SymbolValues::default()))
        .collect::<TractResult<_>>()?;
    let calibration = Calibration::new(
        &model,
        (0..16)
            .map(|s| random_inputs(&model, s, &SymbolValues::default()))
            .collect::<TractResult<_>>()?,
    );
    for (label, calibration) in [
        ("magnitude, no calibration", None),
        ("calibration (16 samples) + compensation", Some(calibration)),
    ] {
        let clock = Instant::now();
        let options = AutoOptions {
            calibration,
            random_samples: 1,
            ..AutoOptions::new(targets)
        };
        let result = auto_slim(&model, &slimmer, &options)?;
        let seconds = clock.elapsed().as_secs_f64();
        let fidelity = model_slim::fidelity(&model, &result.slimmed, &held_out, None)?;
        println!("== {label}: auto-slim took {seconds:.1} s");
        println!(
            "{}",
            result
                .report
                .slim
                .table()
                .lines()
                .filter(|l| l.starts_with("model:"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        for f in fidelity {
            println!(
                "held-out fidelity {}: cosine {:.4}, relative L2 error {:.4}",
                f.name, f.cosine, f.relative_l2
            );
        }
        latency_table(&model, &result.slimmed, &result.report.slim, runs)?;
    }
    Ok(())
}

/// Peak resident memory so far (Linux), in MB.
fn peak_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn memory() -> Result<(), Box<dyn std::error::Error>> {
    let model = EncoderSpec::bert_base_half_pruned().build()?;
    let weights_mb = params(&model) as f64 * 4.0 / (1024.0 * 1024.0);
    let before = peak_mb().ok_or("no /proc/self/status")?;
    let slimmed = Slimmer::new()?.slim(&model)?;
    let after = peak_mb().ok_or("no /proc/self/status")?;
    println!(
        "weights {weights_mb:.0} MB; peak RSS {before:.0} MB after building the model, {after:.0} MB after the pass (pass time {:.0} ms)",
        slimmed.report.times.lower_ms + slimmed.report.times.saturate_ms + slimmed.report.times.extract_ms + slimmed.report.times.raise_ms
    );
    println!(
        "the pass itself added {:.0} MB at peak ({:.2}× the weights)",
        after - before,
        (after - before) / weights_mb
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "slim".into());
    let runs: usize = std::env::args()
        .nth(2)
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(20);
    match mode.as_str() {
        "slim" => slim(runs),
        "auto" => auto(runs),
        "memory" => memory(),
        other => Err(format!("unknown mode `{other}` (slim, auto or memory)").into()),
    }
}
