//! Every committed fixture (both exporters): slimmed FFN widths and head counts match the manifest, outputs match the
//! original, FLOPs never grow, dense models come out unchanged, and the written NNEF loads in
//! plain tract and gives the same outputs.

mod common;

use common::{
    assert_same_summary, check_every_fixture, graph_summary, manifest, product_flops,
    restricted_copies, Fixture, Layer,
};
use model_slim::verify;
use model_slim::{write_model, ArtifactCheck, Expected};
use model_slim::{Slimmer, StopReason};
use tract_core::internal::*;

fn check_fixture(fixture: &Fixture) {
    let original = fixture.load();
    let slimmed = Slimmer::new().unwrap().slim(&original).unwrap();
    let report = &slimmed.report;
    let name = &fixture.name;

    // Widths: one FFN group per layer, slimmed to exactly the manifest's surviving channels.
    let widths: Vec<(usize, usize)> = report
        .ffn_layers
        .iter()
        .map(|l| (l.channels_before, l.channels_after))
        .collect();
    let expected: Vec<(usize, usize)> = fixture
        .layers
        .iter()
        .map(|l| (l.ffn_width, l.ffn_kept))
        .collect();
    assert_eq!(widths, expected, "{name}: FFN widths");

    // Heads: one attention layer per layer of models that have attention, slimmed to exactly the
    // manifest's surviving query and KV heads (zeroed and constant heads both go).
    let heads: Vec<[usize; 4]> = report
        .attention_layers
        .iter()
        .map(|l| {
            [
                l.heads_before,
                l.heads_after,
                l.kv_heads_before,
                l.kv_heads_after,
            ]
        })
        .collect();
    let expected: Vec<[usize; 4]> = fixture
        .layers
        .iter()
        .filter(|l| l.heads > 0)
        .map(|l| [l.heads, l.heads_kept, l.kv_heads, l.kv_heads_kept])
        .collect();
    assert_eq!(heads, expected, "{name}: query heads and KV heads");

    // The matrix products lost exactly what the removed heads and channels cost.
    let removed: f64 = fixture
        .layers
        .iter()
        .map(|l| {
            Layer::product_flops(&fixture.dims, l.heads, l.kv_heads, l.ffn_width)
                - Layer::product_flops(&fixture.dims, l.heads_kept, l.kv_heads_kept, l.ffn_kept)
        })
        .sum();
    let (before, after) = (product_flops(&original), product_flops(&slimmed.model));
    assert_eq!(
        before - after,
        removed,
        "{name}: matrix-product FLOPs {before} → {after}"
    );
    assert!(
        report.flops_after <= report.flops_before,
        "{name}: FLOPs grew"
    );
    assert!(
        report.cost_after.total() <= report.cost_before.total(),
        "{name}: cost grew"
    );
    assert_eq!(
        report.saturation.stop_reason,
        StopReason::Saturated,
        "{name}"
    );
    assert_eq!(
        report.saturation.refused_instantiations, 0,
        "{name}: a rule produced an ill-typed node"
    );

    let v = verify(&original, &slimmed.model, 1, &SymbolValues::default()).unwrap();
    assert!(v.passed, "{name}: outputs differ: {:?}", v.outputs);

    if fixture.variant == "dense" {
        // Nothing to cut: the graph is rebuilt as it was.
        assert_same_summary(
            &graph_summary(&slimmed.model),
            &graph_summary(&original),
            &format!("{name}: dense model changed"),
        );
    } else {
        insta::with_settings!({ snapshot_path => "../snapshots", prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!(name.as_str(), graph_summary(&slimmed.model));
        });
    }

    // The NNEF file is usable by any tract deployment: nothing of ours is registered here.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.nnef.tgz"));
    let values = SymbolValues::default();
    let expected = Expected::of(original.clone(), 2, &values).unwrap();
    let check = ArtifactCheck {
        expected: &expected,
        values: &values,
        cuts: &[],
    };
    let written = write_model(slimmed.model.clone(), &path, Some(check))
        .unwrap()
        .unwrap();
    assert!(
        written.passed,
        "{name}: written NNEF differs: {:?}",
        written.outputs
    );
    assert_eq!(written.artifact.as_deref(), path.to_str());
    let reloaded = tract_nnef::nnef()
        .model_for_path(&path)
        .unwrap()
        .into_decluttered()
        .unwrap();
    let v = verify(&original, &reloaded, 2, &SymbolValues::default()).unwrap();
    assert!(v.passed, "{name}: reloaded NNEF differs: {:?}", v.outputs);
    assert_eq!(
        restricted_copies(&reloaded),
        [],
        "{name}: weights written whole and restricted"
    );
}

#[test]
fn every_fixture_slims_exactly_to_the_manifest() {
    let manifest = manifest();
    assert!(
        manifest.fixtures.len() >= 80,
        "fixtures missing from the manifest"
    );
    for exporter in ["torchscript", "dynamo"] {
        assert!(
            manifest.fixtures.iter().any(|f| f.exporter == exporter),
            "no {exporter} fixture"
        );
    }
    check_every_fixture(&manifest.fixtures, check_fixture);
}

#[test]
fn dynamo_exports_slim_with_symbolic_shapes() {
    // Dynamo exports analyse with symbolic batch/sequence: no --input needed.
    let manifest = manifest();
    for name in [
        "bert_ffn_dynamo",
        "bert_mixed_dynamo",
        "bert_constant_dynamo",
    ] {
        let fixture = manifest.fixtures.iter().find(|f| f.name == name).unwrap();
        let model = model_slim::import_onnx(&fixture.path(), &Default::default()).unwrap();
        let slimmed = Slimmer::new().unwrap().slim(&model).unwrap();
        let report = &slimmed.report;
        let kept: Vec<(usize, usize)> = report
            .ffn_layers
            .iter()
            .zip(&report.attention_layers)
            .map(|(f, a)| (f.channels_after, a.heads_after))
            .collect();
        let expected: Vec<(usize, usize)> = fixture
            .layers
            .iter()
            .map(|l| (l.ffn_kept, l.heads_kept))
            .collect();
        assert_eq!(kept, expected, "{name}: FFN widths and heads");
        assert!(
            slimmed
                .model
                .input_fact(0)
                .unwrap()
                .shape
                .iter()
                .any(|d| d.to_i64().is_err()),
            "{name}: inputs stay symbolic"
        );
        let v = verify(&model, &slimmed.model, 3, &SymbolValues::default()).unwrap();
        assert!(v.passed, "{name}: {:?}", v.outputs);
    }
}

#[test]
fn the_sdpa_nan_guard_is_lowered_as_a_choice_not_an_opaque_op() {
    // Default (sdpa) exports put `where(isnan(p), 0, p)` after every softmax; lowered as an
    // opaque op it would stop every head restriction (no head of a default export slimmed).
    let fixture = manifest()
        .fixtures
        .into_iter()
        .find(|f| f.name == "bert_heads_torchscript")
        .unwrap();
    let lowered = model_slim::testing::lower(&fixture.load()).unwrap();
    let egraph = &lowered.egraph;
    let ops = &egraph.analysis.tables.ops;
    let (mut choices, mut opaque_choices) = (0, 0);
    for class in egraph.classes() {
        for node in &class.nodes {
            let op = node
                .op_child()
                .and_then(|c| model_slim::testing::op_of(egraph, c));
            let is_iff = op.is_some_and(|k| ops[k as usize].is::<tract_core::ops::logic::Iff>());
            match node {
                model_slim::testing::TensorLang::Where(_) if is_iff => choices += 1,
                model_slim::testing::TensorLang::Opaque(_) if is_iff => opaque_choices += 1,
                _ => {}
            }
        }
    }
    assert_eq!(opaque_choices, 0, "an Iff was lowered opaque");
    assert!(choices >= 2, "the NaN guards of both layers: {choices}");
}
