//! Synthetic encoders (built with tract's API, not ONNX): the pass slims them to exactly the
//! heads and FFN channels that survive, to the hand-computed parameter count, with outputs
//! unchanged, including layers whose every head or channel goes.

use model_slim::params;
use model_slim::verify;
use model_slim::EncoderSpec;
use model_slim::Slimmer;
use tract_core::internal::SymbolValues;

fn spec() -> EncoderSpec {
    EncoderSpec {
        layers: 2,
        hidden: 96,
        heads: 6,
        ffn: 384,
        sequence: 8,
        pruned_heads: 2,
        constant_heads: 1,
        pruned_ffn: 100,
        constant_ffn: 30,
        seed: 5,
    }
}

fn slim_and_check(spec: &EncoderSpec) -> model_slim::Slimmed {
    let model = spec.build().unwrap();
    let slimmed = Slimmer::new().unwrap().slim(&model).unwrap();
    let v = verify(&model, &slimmed.model, 4, &SymbolValues::default()).unwrap();
    assert!(v.passed, "{spec:?}: {:?}", v.outputs);
    let (heads, ffn) = spec.kept();
    let report = &slimmed.report;
    assert_eq!(report.attention_layers.len(), spec.layers);
    assert_eq!(report.ffn_layers.len(), spec.layers);
    for l in &report.attention_layers {
        assert_eq!(
            (l.heads_before, l.heads_after),
            (spec.heads, heads),
            "{spec:?}"
        );
    }
    for l in &report.ffn_layers {
        assert_eq!(
            (l.channels_before, l.channels_after),
            (spec.ffn, ffn),
            "{spec:?}"
        );
    }
    slimmed
}

#[test]
fn pruned_and_constant_heads_and_channels_all_go() {
    let spec = spec();
    let slimmed = slim_and_check(&spec);
    let (got, expected) = (params(&slimmed.model) as f64, spec.params(true) as f64);
    assert!(
        (got - expected).abs() <= 0.01 * expected,
        "{got} parameters, {expected} expected"
    );
}

#[test]
fn whole_blocks_collapse_to_their_biases() {
    let spec = EncoderSpec {
        pruned_heads: 5,
        constant_heads: 1,
        pruned_ffn: 384,
        constant_ffn: 0,
        ..spec()
    };
    let slimmed = slim_and_check(&spec);
    // No attention product and no FFN product is left: only the layer norms compute.
    assert!(slimmed.report.flops_after < 0.01 * slimmed.report.flops_before);
}

#[test]
fn the_builder_announces_stages_and_slims_onnx_files() {
    use model_slim::ImportOptions;
    use model_slim::Stage;
    use std::sync::{Arc, Mutex};
    let seen = Arc::new(Mutex::new(vec![]));
    let log = seen.clone();
    let slimmer = Slimmer::new()
        .unwrap()
        .with_verification(Some(1))
        .with_observer(Arc::new(move |stage, done, total| {
            log.lock().unwrap().push((stage, done, total))
        }));
    let model = spec().build().unwrap();
    slimmer.slim(&model).unwrap();
    let seen = seen.lock().unwrap();
    let starts: Vec<Stage> = seen
        .iter()
        .filter(|(_, _, total)| *total == 0)
        .map(|(stage, _, _)| *stage)
        .collect();
    let order = [
        Stage::Lower,
        Stage::Saturate,
        Stage::Extract,
        Stage::Raise,
        Stage::Verify,
    ];
    assert_eq!(starts, order);
    // Lowering counts every source node, raising every chosen node, each up to its total.
    for (stage, nodes) in [(Stage::Lower, model.nodes().len()), (Stage::Raise, 0)] {
        let counts: Vec<(usize, usize)> = seen
            .iter()
            .filter(|(s, _, total)| *s == stage && *total > 0)
            .map(|(_, done, total)| (*done, *total))
            .collect();
        let &(last, total) = counts.last().expect("the stage counts its work");
        assert_eq!(last, total, "{stage:?} ends at its total");
        assert!(
            counts.windows(2).all(|w| w[0].0 < w[1].0),
            "{stage:?} counts up"
        );
        if nodes > 0 {
            assert_eq!(total, nodes);
        }
    }

    let path = model_slim::testing::checkout().join("tests/fixtures/gpt2_mixed_dynamo.onnx");
    let options = ImportOptions {
        inputs: vec![],
        sets: vec![("batch".into(), 1), ("sequence".into(), 16)],
        states: vec![],
    };
    // GPT-2 from dynamo only runs with concrete sizes: verification works because the --set
    // values reach it.
    let (_, slimmed) = Slimmer::new()
        .unwrap()
        .with_verification(Some(0))
        .slim_onnx(&path, &options)
        .unwrap();
    let heads: Vec<usize> = slimmed
        .report
        .attention_layers
        .iter()
        .map(|l| l.heads_after)
        .collect();
    assert_eq!(heads, [3, 0]);
}
