//! Benchmarks on a BERT-base-sized encoder (12 layers, hidden 768, 12 heads, FFN 3072, random
//! weights, half the heads and half the FFN channels of every layer pruned; generated in memory):
//! the pass's own time by stage, and dense vs slimmed inference at batch 1, sequence 128.
//!
//! ```sh
//! cargo bench --bench pass
//! ```

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use model_slim::random_inputs;
use model_slim::EncoderSpec;
use model_slim::Slimmer;
use std::time::Duration;
use tract_core::internal::*;

fn pass_stages(c: &mut Criterion) {
    let model = EncoderSpec::bert_base_half_pruned().build().unwrap();
    let slimmer = Slimmer::new().unwrap();
    let mut group = c.benchmark_group("pass on BERT-base");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("lower", |b| b.iter(|| slimmer.lower(&model).unwrap()));
    group.bench_function("saturate", |b| {
        b.iter_batched(
            || slimmer.lower(&model).unwrap().0,
            |lowered| slimmer.saturate(lowered).unwrap(),
            BatchSize::LargeInput,
        )
    });
    let (saturated, _) = slimmer.saturate(slimmer.lower(&model).unwrap().0).unwrap();
    group.bench_function("extract", |b| b.iter(|| slimmer.extract(&saturated)));
    // Raising copies the kept weights out of the e-graph's lazy slices (once per e-graph), so
    // each measurement gets a fresh e-graph.
    group.bench_function("raise", |b| {
        b.iter_batched(
            || {
                let (saturated, _) = slimmer.saturate(slimmer.lower(&model).unwrap().0).unwrap();
                let (choice, _) = slimmer.extract(&saturated);
                (saturated, choice)
            },
            |(saturated, choice)| slimmer.raise(&model, &saturated, &choice).unwrap(),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("whole pass", |b| b.iter(|| slimmer.slim(&model).unwrap()));
    group.finish();
}

fn inference(c: &mut Criterion) {
    let model = EncoderSpec::bert_base_half_pruned().build().unwrap();
    let slimmed = Slimmer::new().unwrap().slim(&model).unwrap().model;
    let inputs = random_inputs(&model, 0, &SymbolValues::default()).unwrap();
    let mut group = c.benchmark_group("BERT-base inference, batch 1, sequence 128");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for (name, m) in [("dense", &model), ("slimmed", &slimmed)] {
        let plan = m.clone().into_optimized().unwrap().into_runnable().unwrap();
        group.bench_function(name, |b| b.iter(|| plan.run(inputs.clone()).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, pass_stages, inference);
criterion_main!(benches);
