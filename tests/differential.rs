//! Differential testing of the whole pass: random models in the family it targets
//! ([`model_slim::testing::random`]: FFNs, attention blocks with 1–8 heads, fused or separate QKV, masks,
//! stacks with layer norms, residuals, shared weights, unknown ops; random zero structure) are
//! slimmed and compared with the original on several random inputs, and must have lost at least
//! the weights the generator planted as removable (whole zero channels and heads of consumers).
//!
//! CI runs a bounded number. A long campaign:
//! `MODEL_SLIM_DIFF_MODELS=20000 cargo test --release --test differential -- --nocapture`.
//! A failure names its seed; `MODEL_SLIM_DIFF_SEED=<seed>` re-runs that model alone, and the
//! model is saved as NNEF under `target/differential-failures/`.

use model_slim::testing::check::model_for_seed;
use model_slim::verify;
use model_slim::write_model;
use model_slim::Slimmer;
use std::path::PathBuf;
use tract_core::internal::*;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Slims the model of `seed`, checks that its planted zero units were cut and compares outputs
/// on three inputs; an error describes how the model failed.
fn check_seed(slimmer: &Slimmer, seed: u64) -> Result<(), String> {
    let planted = model_for_seed(seed);
    let model = planted.model;
    let slimmed = slimmer
        .slim(&model)
        .map_err(|e| format!("slimming failed: {e}"))?;
    let removed = weights(&model).saturating_sub(weights(&slimmed.model));
    if removed < planted.removable_weights {
        return Err(format!(
            "{removed} weights removed, {} planted as removable",
            planted.removable_weights
        ));
    }
    for input_seed in 0..3 {
        let v = verify(
            &model,
            &slimmed.model,
            seed * 7 + input_seed,
            &SymbolValues::default(),
        )
        .map_err(|e| format!("{e:#}"))?;
        if !v.passed {
            return Err(format!("outputs differ: {:?}", v.outputs));
        }
    }
    Ok(())
}

/// Elements of a model's floating-point constants: its weights (not the index tables of gathers).
fn weights(model: &TypedModel) -> usize {
    model
        .nodes()
        .iter()
        .filter_map(|n| n.op_as::<tract_core::ops::konst::Const>())
        .filter(|c| c.val().datum_type().is_float())
        .map(|c| c.val().len())
        .sum()
}

fn save_reproducer(seed: u64) -> Option<PathBuf> {
    let dir = model_slim::testing::checkout().join("target/differential-failures");
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!("seed-{seed}.nnef.tgz"));
    write_model(model_for_seed(seed).model, &path, None).ok()?;
    Some(path)
}

#[test]
fn slimming_never_changes_outputs() {
    let slimmer = Slimmer::new().unwrap();
    let seeds: Vec<u64> = match env_u64("MODEL_SLIM_DIFF_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("MODEL_SLIM_DIFF_MODELS").unwrap_or(300)).collect(),
    };
    let mut failures = vec![];
    for &seed in &seeds {
        if let Err(how) = check_seed(&slimmer, seed) {
            let saved = save_reproducer(seed)
                .map(|p| format!(", saved as {}", p.display()))
                .unwrap_or_default();
            failures.push(format!(
                "seed {seed}: {how} (re-run with MODEL_SLIM_DIFF_SEED={seed}{saved})"
            ));
        }
    }
    println!(
        "{} random models slimmed and compared, {} failed",
        seeds.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
