//! Writing slimmed models back to ONNX: for every fixture of both exporters, the written file
//! loads in tract, computes the original's outputs, has the slimmed widths, and holds exactly the
//! removed parameters fewer; symbolic dims stay symbolic.

mod common;

use common::{check_every_fixture, manifest, Fixture, Layer};
use model_slim::read_proto;
use model_slim::verify;
use model_slim::Slimmer;
use model_slim::{groups, Kind};
use model_slim::{import_onnx, ImportOptions, InputSpec};
use model_slim::{initializer_params, write_slimmed_onnx};
use model_slim::{ArtifactCheck, Expected};
use tract_core::internal::*;

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
/// is a first-layer column and bias entry per first layer (gate and up for gated MLPs) and a
/// second-layer row; each removed query head its Q columns (and bias) and output-projection
/// rows; each removed KV head its K and V columns (and biases). A layer that loses everything
/// keeps one zeroed unit in ONNX. Constants folded into a layer without a bias give it one.
fn expected_removed(fixture: &Fixture) -> isize {
    let dims = &fixture.dims;
    let (h, d) = (dims.hidden, dims.head_dim);
    let bias = |has: bool| has as usize;
    fixture
        .layers
        .iter()
        .map(|l| {
            let channels = l.ffn_width - l.ffn_kept.max(1);
            let ffn = channels * (dims.ffn_producers * (h + bias(dims.ffn_bias)) + h);
            if l.heads == 0 {
                return ffn;
            }
            let heads = l.heads - l.heads_kept.max(1);
            let kv = l.kv_heads - l.kv_heads_kept.max(1);
            let qkv = d * (h + bias(dims.qkv_bias));
            ffn + heads * (qkv + d * h) + 2 * kv * qkv
        })
        .map(|removed| removed as isize)
        .sum::<isize>()
        - fixture
            .layers
            .iter()
            .map(|l| added_biases(fixture, l))
            .sum::<isize>()
}

/// Biases slimming adds to a layer: folding constant channels (non-zero only with first-layer
/// biases) or constant heads (non-zero only with V biases) into a consumer that had none.
fn added_biases(fixture: &Fixture, l: &Layer) -> isize {
    let dims = &fixture.dims;
    let ffn = !l.ffn_constant.is_empty() && dims.ffn_bias && !dims.ffn_out_bias;
    let heads = !l.heads_constant.is_empty()
        && !l.heads_constant_kept
        && dims.qkv_bias
        && !dims.attn_out_bias;
    (ffn as isize + heads as isize) * dims.hidden as isize
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
    let expected = Expected::of(original.clone(), 0, &values).unwrap();
    let check = ArtifactCheck {
        expected: &expected,
        values: &values,
    };
    let v = write_slimmed_onnx(
        &fixture.path(),
        output,
        options,
        original.clone(),
        slimmed.model.clone(),
        check,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", fixture.name));
    assert!(v.passed, "{}: {:?}", fixture.name, v.outputs);
    assert_eq!(v.artifact.as_deref(), output.to_str());
}

/// Writes a fixture back to ONNX and checks the file: it loads, computes the original's
/// outputs, has the manifest's widths, and holds exactly the removed parameters fewer.
fn check_round_trip(fixture: &Fixture, dir: &std::path::Path) {
    let name = &fixture.name;
    let options = import_options(fixture);
    let original = fixture.load();
    let output = dir.join(format!("{name}.onnx"));
    slim_to_onnx(fixture, &original, &options, &output);

    let reloaded = import_onnx(&output, &options).unwrap();
    let v = verify(&original, &reloaded, 5, &SymbolValues::default()).unwrap();
    assert!(v.passed, "{name}: {:?}", v.outputs);

    // Slimmed widths: each layer keeps the manifest's units (a collapsed one keeps one).
    let found = groups(&reloaded).unwrap();
    let units = |kind: Kind, index: usize| {
        found
            .iter()
            .filter(|g| g.kind == kind)
            .nth(index)
            .map(|g| (g.units, g.kv_heads))
    };
    for layer in &fixture.layers {
        if layer.ffn_kept > 0 {
            assert_eq!(
                units(Kind::Ffn, layer.layer).map(|u| u.0),
                Some(layer.ffn_kept),
                "{name}: FFN {}",
                layer.layer
            );
        }
        if layer.heads_kept > 0 {
            assert_eq!(
                units(Kind::Heads, layer.layer),
                Some((layer.heads_kept, layer.kv_heads_kept)),
                "{name}: query and KV heads {}",
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
    let before = initializer_params(&read_proto(&fixture.path()).unwrap()) as isize;
    let after = initializer_params(&read_proto(&output).unwrap()) as isize;
    assert_eq!(
        before - after,
        expected_removed(fixture),
        "{name}: removed parameters"
    );
}

#[test]
fn every_fixture_round_trips_through_onnx() {
    let dir = tempfile::tempdir().unwrap();
    check_every_fixture(&manifest().fixtures, |fixture| {
        check_round_trip(fixture, dir.path())
    });
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
