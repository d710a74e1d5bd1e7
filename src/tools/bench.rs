//! Latency of the original and the slimmed model on tract's optimized CPU plan, measured in one
//! process: both plans are built first, then run alternately (after warm-up), so both see the
//! same machine state; the median of each is reported.

use crate::model::state::StateCut;
use crate::model::verify::random_inputs;
use crate::util::slices::select_slices;
use serde::Serialize;
use std::time::Instant;
use tract_core::internal::*;

/// Median latencies of the two plans, in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    /// Median latency of the original model.
    pub original_ms: f64,
    /// Median latency of the slimmed model.
    pub slimmed_ms: f64,
    /// Timed runs of each.
    pub runs: usize,
}

impl Latency {
    /// Slimmed latency as a fraction of the original's.
    pub fn ratio(&self) -> f64 {
        self.slimmed_ms / self.original_ms
    }
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Runs both models `runs` times each, alternating, after `warmup` runs each, on the same seeded
/// random inputs (symbols valued by `values`).
pub fn compare_latency(
    (original, slimmed): (&TypedModel, &TypedModel),
    cuts: &[StateCut],
    values: &SymbolValues,
    warmup: usize,
    runs: usize,
) -> TractResult<Latency> {
    ensure!(runs > 0, "at least one run is needed");
    let inputs = random_inputs(original, 0, values)?;
    // The slimmed model reads the kept slices of the state it cuts.
    let mut slimmed_inputs = inputs.clone();
    for cut in cuts {
        slimmed_inputs[cut.input] =
            select_slices(&inputs[cut.input], cut.axis, &cut.kept)?.into_tvalue();
    }
    let plans =
        [original, slimmed].map(|m| m.clone().into_optimized().and_then(|m| m.into_runnable()));
    let [original_plan, slimmed_plan] = plans;
    let (original_plan, slimmed_plan) = (original_plan?, slimmed_plan?);
    let mut times = [vec![], vec![]];
    for i in 0..warmup + runs {
        let runs = [(&original_plan, &inputs), (&slimmed_plan, &slimmed_inputs)];
        for (slot, (plan, inputs)) in runs.into_iter().enumerate() {
            let clock = Instant::now();
            plan.run(inputs.clone())?;
            if i >= warmup {
                times[slot].push(clock.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    let [original_times, slimmed_times] = times;
    Ok(Latency {
        original_ms: median(original_times),
        slimmed_ms: median(slimmed_times),
        runs,
    })
}
