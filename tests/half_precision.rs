//! Half-precision models (`make_fixtures.py half`: Qwen2 with grouped-query attention, converted
//! to float16 or bfloat16 before export): float16 stays float16 through slimming to NNEF and to
//! ONNX, is cut, and matches within float16's tolerance; bfloat16, which tract cannot run, is a
//! clear error rather than a silent upcast.

mod common;

use model_slim::HALF_RELATIVE_TOLERANCE;
use model_slim::{compare_output, import_onnx, random_inputs, run, ImportOptions, Slimmer};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;
use tract_core::internal::*;
use tract_core::ops::konst::Const;
use tract_onnx::pb::ModelProto;

const F16: &str = "qwen2_mixed_f16_torchscript.onnx";
const BF16: &str = "qwen2_mixed_bf16_dynamo.onnx";
const INPUTS: [&str; 4] = ["-i", "input_ids:1,16,i64", "-i", "attention_mask:1,16,i64"];

fn options() -> ImportOptions {
    ImportOptions {
        inputs: ["input_ids:1,16,i64", "attention_mask:1,16,i64"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect(),
        sets: vec![],
        states: vec![],
    }
}

/// Weight elements (constants of rank 2 or more) per datum type.
fn weights_by_type(model: &TypedModel) -> HashMap<DatumType, usize> {
    let mut found = HashMap::new();
    for node in model.nodes() {
        if let Some(k) = node.op_as::<Const>() {
            let t = k.val();
            if t.rank() >= 2 {
                *found.entry(t.datum_type()).or_default() += t.len();
            }
        }
    }
    found
}

/// Initializer types of an ONNX file by name.
fn initializer_types(path: &Path) -> HashMap<String, i32> {
    let proto = ModelProto::decode(&std::fs::read(path).unwrap()[..]).unwrap();
    proto
        .graph
        .unwrap()
        .initializer
        .into_iter()
        .map(|t| (t.name, t.data_type))
        .collect()
}

/// `loaded` computes the float16 output of `original` within float16's tolerance.
fn matches(original: &TypedModel, loaded: &TypedModel) {
    for seed in 0..2 {
        let inputs = random_inputs(original, seed, &SymbolValues::default()).unwrap();
        let expected = run(original, inputs.clone()).unwrap();
        let got = run(loaded, inputs).unwrap();
        assert_eq!(expected[0].datum_type(), DatumType::F16);
        assert_eq!(
            got[0].datum_type(),
            DatumType::F16,
            "the output stays float16"
        );
        let diff = compare_output("last_hidden_state".into(), &expected[0], &got[0]).unwrap();
        assert!(diff.passed, "{diff:?}");
        assert_eq!(diff.tolerance, HALF_RELATIVE_TOLERANCE);
    }
}

#[test]
fn float16_stays_float16_through_slimming_to_nnef_and_onnx() {
    let source = common::fixtures_dir().join(F16);
    let original = import_onnx(&source, &options()).unwrap();
    let before = weights_by_type(&original);
    assert!(before[&DatumType::F16] > 0, "{before:?}");

    let slimmed = Slimmer::new().unwrap().slim(&original).unwrap();
    assert!(
        slimmed.report.params_after < slimmed.report.params_before,
        "nothing was cut"
    );
    let after = weights_by_type(&slimmed.model);
    assert!(
        after.get(&DatumType::F32).copied().unwrap_or(0)
            <= before.get(&DatumType::F32).copied().unwrap_or(0),
        "weights were upcast: {before:?} → {after:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let nnef = dir.path().join("slim.nnef.tgz");
    common::assert_success(&common::slim_to(&source, &nnef, &INPUTS));
    let loaded = tract_nnef::nnef()
        .model_for_path(&nnef)
        .unwrap()
        .into_decluttered()
        .unwrap();
    assert!(weights_by_type(&loaded)[&DatumType::F16] < before[&DatumType::F16]);
    matches(&original, &loaded);

    let onnx = dir.path().join("slim.onnx");
    common::assert_success(&common::slim_to(&source, &onnx, &INPUTS));
    let (source_types, written_types) = (initializer_types(&source), initializer_types(&onnx));
    for (name, ty) in &written_types {
        if let Some(source_ty) = source_types.get(name) {
            assert_eq!(ty, source_ty, "initializer `{name}` changed type");
        }
    }
    matches(&original, &import_onnx(&onnx, &options()).unwrap());
}

#[test]
fn bfloat16_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("slim.nnef.tgz");
    let out = common::slim_to(&common::fixtures_dir().join(BF16), &output, &INPUTS);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bfloat16") && stderr.contains("tract cannot run"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!output.exists());
}
