//! Writing slimmed models back to ONNX: for every fixture of both exporters, the written file
//! loads in tract, computes the original's outputs, has the slimmed widths, and holds exactly the
//! removed parameters fewer; symbolic dims stay symbolic.

mod common;

use common::{manifest, Fixture};
use model_slim::discover::{base_name, groups, Kind};
use model_slim::import::{import_onnx, ImportOptions, InputSpec};
use model_slim::onnx::read_proto;
use model_slim::verify::verify;
use model_slim::writeback::{initializer_params, write_slimmed_onnx};
use model_slim::Slimmer;
use tract_core::internal::*;

const HIDDEN: usize = 64;
const HEAD_DIM: usize = 16;

fn import_options(fixture: &Fixture) -> ImportOptions {
    ImportOptions {
        inputs: fixture
            .input_specs()
            .iter()
            .map(|s| s.parse::<InputSpec>().unwrap())
            .collect(),
        sets: vec![],
    }
}

/// Parameters slimming removes from the ONNX file, from the manifest: each removed FFN channel
/// is a first-layer column and bias entry (gate and up for LLaMA) and a second-layer row; each
/// removed head its Q, K, V columns and bias entries and its output-projection rows. A layer
/// that loses everything keeps one zeroed unit in ONNX.
fn expected_removed(fixture: &Fixture) -> usize {
    let producers = if fixture.name.starts_with("llama") {
        2
    } else {
        1
    };
    fixture
        .layers
        .iter()
        .map(|l| {
            let channels = l.ffn_width - l.ffn_kept.max(1);
            let heads = if l.heads == 0 {
                0
            } else {
                l.heads - l.heads_kept.max(1)
            };
            channels * (producers * (HIDDEN + 1) + HIDDEN)
                + heads * (3 * (HIDDEN * HEAD_DIM + HEAD_DIM) + HEAD_DIM * HIDDEN)
        })
        .sum()
}

/// Slims a fixture and writes it back to ONNX at `output`.
fn slim_to_onnx(
    fixture: &Fixture,
    original: &TypedModel,
    options: &ImportOptions,
    output: &std::path::Path,
) {
    let slimmed = Slimmer::new().unwrap().slim(original).unwrap();
    let values = SymbolValues::default();
    write_slimmed_onnx(
        &fixture.path(),
        output,
        options,
        original,
        &slimmed.model,
        &values,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", fixture.name));
}

#[test]
fn every_fixture_round_trips_through_onnx() {
    let dir = tempfile::tempdir().unwrap();
    for fixture in manifest().fixtures {
        let name = &fixture.name;
        let options = import_options(&fixture);
        let original = fixture.load();
        let output = dir.path().join(format!("{name}.onnx"));
        slim_to_onnx(&fixture, &original, &options, &output);

        let reloaded = import_onnx(&output, &options).unwrap();
        let v = verify(&original, &reloaded, 5, &SymbolValues::default()).unwrap();
        assert!(v.passed, "{name}: {:?}", v.outputs);

        // Slimmed widths: each layer keeps the manifest's units (a collapsed one keeps one).
        let found = groups(&reloaded).unwrap();
        for layer in &fixture.layers {
            let units = |kind: Kind, index: usize| {
                found
                    .iter()
                    .filter(|g| g.kind == kind)
                    .nth(index)
                    .map(|g| (base_name(&g.name).to_string(), g.units))
            };
            if layer.ffn_kept > 0 {
                assert_eq!(
                    units(Kind::Ffn, layer.layer).map(|u| u.1),
                    Some(layer.ffn_kept),
                    "{name}: FFN {}",
                    layer.layer
                );
            }
            if layer.heads_kept > 0 {
                assert_eq!(
                    units(Kind::Heads, layer.layer).map(|u| u.1),
                    Some(layer.heads_kept),
                    "{name}: heads {}",
                    layer.layer
                );
            }
        }

        if fixture.variant == "dense" {
            // Nothing to cut: the file comes out byte for byte, fields tract does not know
            // (the dynamo exporter's metadata) included.
            let (source, written) = (
                std::fs::read(fixture.path()).unwrap(),
                std::fs::read(&output).unwrap(),
            );
            assert!(source == written, "{name}: a dense model's file changed");
        }
        let before = initializer_params(&read_proto(&fixture.path()).unwrap());
        let after = initializer_params(&read_proto(&output).unwrap());
        assert_eq!(
            before - after,
            expected_removed(&fixture),
            "{name}: removed parameters"
        );
    }
}

#[test]
fn symbolic_dims_stay_symbolic() {
    let fixture = manifest()
        .fixtures
        .into_iter()
        .find(|f| f.name == "bert_mixed_dynamo")
        .unwrap();
    let options = ImportOptions::default();
    let original = import_onnx(&fixture.path(), &options).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("slim.onnx");
    slim_to_onnx(&fixture, &original, &options, &output);
    let proto = read_proto(&output).unwrap();
    let graph = proto.graph.unwrap();
    for input in &graph.input {
        let dims = format!("{:?}", input.r#type);
        assert!(
            dims.contains("batch") && dims.contains("sequence"),
            "{}: {dims}",
            input.name
        );
    }
    let reloaded = import_onnx(&output, &options).unwrap();
    assert!(reloaded
        .input_fact(0)
        .unwrap()
        .shape
        .iter()
        .any(|d| d.to_i64().is_err()));
}
