//! Writing slimmed models back to ONNX: for every fixture of both exporters, the written file
//! loads in tract, computes the original's outputs, has the slimmed widths, and holds exactly the
//! removed parameters fewer; symbolic dims stay symbolic.

mod common;

use common::{check_every_fixture, dense_fixtures, manifest, Fixture, Layer};
use model_slim::read_proto;
use model_slim::verify;
use model_slim::Slimmer;
use model_slim::{auto_slim, random_inputs, AutoOptions, AutoSlimmed, Calibration, Repair};
use model_slim::{groups, Kind};
use model_slim::{import_onnx, ImportOptions, InputSpec};
use model_slim::{initializer_params, write_pruned_onnx, write_slimmed_onnx};
use model_slim::{ArtifactCheck, Expected};
use model_slim::{Cut, IoError, Targets, Verification};
use tract_core::internal::*;

fn import_options(fixture: &Fixture) -> ImportOptions {
    ImportOptions {
        inputs: fixture
            .input_specs()
            .iter()
            .map(|s| s.parse::<InputSpec>().unwrap())
            .collect(),
        sets: vec![],
        states: vec![],
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
        cuts: &[],
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

/// Auto-slim of a fixture with least-squares refits on random calibration inputs, and its
/// plan as edits of the fixture's file.
fn refit_of(fixture: &Fixture) -> (AutoSlimmed, Vec<Cut>) {
    let model = fixture.load();
    let samples = (0..6)
        .map(|seed| random_inputs(&model, seed, &SymbolValues::default()).unwrap())
        .collect();
    let attention = fixture.layers.iter().any(|l| l.heads > 0);
    let targets = Targets::per_layer(0.5, if attention { 0.5 } else { 0.0 });
    let auto = AutoOptions {
        calibration: Some(Calibration::new(&model, samples)),
        repair: Repair::LeastSquares,
        ..AutoOptions::new(targets)
    };
    let result = auto_slim(&model, &Slimmer::new().unwrap(), &auto).unwrap();
    let edits = result.onnx_edits(&model).unwrap();
    assert!(!edits.is_empty() && edits.iter().all(|cut| cut.refit.is_some()));
    (result, edits)
}

/// Writes the pruned and slimmed model of `refit_of` as an edit of the fixture's file.
fn write_refit(
    fixture: &Fixture,
    result: &AutoSlimmed,
    edits: &[Cut],
    dir: &std::path::Path,
) -> Result<Verification, IoError> {
    let values = SymbolValues::default();
    let check = ArtifactCheck {
        expected: &result.expected,
        values: &values,
        cuts: &[],
    };
    write_pruned_onnx(
        &fixture.path(),
        &dir.join(format!("{}_refit.onnx", fixture.name)),
        &import_options(fixture),
        edits,
        &result.pruned,
        Some(&result.slimmed),
        check,
    )
}

#[test]
fn least_squares_refits_are_written_into_every_dense_fixture() {
    // The refit weights replace the file's own, whichever way it stores them: the written file
    // computes what the pruned model computes.
    let dir = tempfile::tempdir().unwrap();
    check_every_fixture(&dense_fixtures(), |fixture| {
        let (result, edits) = refit_of(fixture);
        let v = write_refit(fixture, &result, &edits, dir.path()).unwrap();
        assert!(v.passed, "{:?}", v.outputs);
    });
}

#[test]
fn a_refit_of_other_weights_than_the_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = dense_fixtures()
        .into_iter()
        .find(|f| f.name == "bert_dense_torchscript")
        .unwrap();
    let (result, mut edits) = refit_of(&fixture);
    edits[0].refit.as_mut().unwrap().original ^= 1;
    let error = write_refit(&fixture, &result, &edits, dir.path()).unwrap_err();
    assert!(
        error.to_string().contains("refit cannot be written"),
        "{error}"
    );
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}
