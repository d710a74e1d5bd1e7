//! A BERT-base-sized encoder (12 layers, hidden 768, 12 heads, FFN 3072, random weights) with
//! half the heads and half the FFN channels of every layer pruned, generated in memory: slims
//! it, checks the result against the hand-computed size of the fully slimmed model, verifies
//! outputs, and measures dense vs slimmed latency on tract's optimized plan.
//!
//! ```sh
//! cargo run --release --example bert_base [-- RUNS]
//! ```

use model_slim::bench::compare_latency;
use model_slim::demo::EncoderSpec;
use model_slim::report::params;
use model_slim::verify::verify;
use model_slim::Slimmer;
use std::time::Instant;
use tract_core::internal::SymbolValues;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(20);
    let spec = EncoderSpec::bert_base_half_pruned();
    let clock = Instant::now();
    let model = spec.build()?;
    println!(
        "generated {spec:?} in {:.1} s",
        clock.elapsed().as_secs_f64()
    );

    let mut slimmed = Slimmer::new()?.slim(&model)?;
    let values = SymbolValues::default();
    slimmed.report.verification = Some(verify(&model, &slimmed.model, 0, &values)?);
    print!("{}", slimmed.report.table());

    let (got, expected) = (params(&slimmed.model), spec.params(true));
    let off = 100.0 * (got as f64 - expected as f64).abs() / expected as f64;
    println!(
        "parameters: dense {} (spec {}), slimmed {got}, hand-computed fully slimmed {expected} ({off:.3}% off)",
        params(&model),
        spec.params(false)
    );

    let latency = compare_latency(&model, &slimmed.model, &values, 3, runs)?;
    let flop_ratio = slimmed.report.flops_after / slimmed.report.flops_before;
    println!("| model | median latency (ms) | FLOPs |");
    println!("|---|---|---|");
    println!(
        "| dense | {:.1} | {:.2}G |",
        latency.original_ms,
        slimmed.report.flops_before / 1e9
    );
    println!(
        "| slimmed | {:.1} | {:.2}G |",
        latency.slimmed_ms,
        slimmed.report.flops_after / 1e9
    );
    println!(
        "latency ratio {:.3}, FLOP ratio {:.3} ({} alternating runs each)",
        latency.ratio(),
        flop_ratio,
        latency.runs
    );
    Ok(())
}
