//! Hostile and broken inputs, generated here: each gives one clear error line and a non-zero
//! exit, or passes through where it is valid — never a panic, an abort or a partial output file.

use prost::Message;
use std::process::{Command, Output};
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
use tract_onnx::pb::type_proto::{Tensor as TensorType, Value as TypeValue};
use tract_onnx::pb::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
};

const FLOAT: i32 = 1;
const INT8: i32 = 3;
const FLOAT16: i32 = 10;

fn value(name: &str, elem_type: i32, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            denotation: String::new(),
            value: Some(dimension::Value::DimValue(d)),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(TypeValue::TensorType(TensorType {
                elem_type,
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

fn initializer(name: &str, elem_type: i32, dims: &[i64], bytes_per: usize) -> TensorProto {
    let len: i64 = dims.iter().product();
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: elem_type,
        raw_data: (0..len as usize * bytes_per)
            .map(|i| (i % 7) as u8)
            .collect(),
        ..Default::default()
    }
}

fn model(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            name: "g".into(),
            node: nodes,
            input: inputs,
            output: outputs,
            initializer: inits,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The corpus: (name, bytes, whether the file is a valid model).
fn corpus() -> Vec<(&'static str, Vec<u8>, bool)> {
    let fixture =
        std::fs::read(model_slim::testing::checkout().join("tests/fixtures/bert_ffn_dynamo.onnx"))
            .unwrap();
    let x = || value("x", FLOAT, &[1, 4]);
    let y = || value("y", FLOAT, &[1, 4]);
    vec![
        ("empty", vec![], false),
        (
            "random-bytes",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
            false,
        ),
        ("truncated", fixture[..fixture.len() / 2].to_vec(), false),
        (
            "cycle",
            model(
                vec![node("Add", &["x", "b"], "a"), node("Add", &["a", "x"], "b")],
                vec![x()],
                vec![value("b", FLOAT, &[1, 4])],
                vec![],
            ),
            false,
        ),
        (
            "missing-initializer",
            model(
                vec![node("MatMul", &["x", "w"], "y")],
                vec![x()],
                vec![y()],
                vec![],
            ),
            false,
        ),
        (
            "unknown-op",
            model(
                vec![node("FrobnicateTensor", &["x"], "y")],
                vec![x()],
                vec![y()],
                vec![],
            ),
            false,
        ),
        (
            "no-outputs",
            model(vec![node("Relu", &["x"], "y")], vec![x()], vec![], vec![]),
            false,
        ),
        (
            "absurd-dims",
            model(
                vec![node("Relu", &["x"], "y")],
                vec![value("x", FLOAT, &[1, 1 << 40])],
                vec![value("y", FLOAT, &[1, 1 << 40])],
                vec![],
            ),
            true,
        ),
        (
            "float16-weights",
            model(
                vec![node("MatMul", &["x", "w"], "y")],
                vec![value("x", FLOAT16, &[1, 4])],
                vec![value("y", FLOAT16, &[1, 4])],
                vec![initializer("w", FLOAT16, &[4, 4], 2)],
            ),
            true,
        ),
        (
            "int8-weights",
            model(
                vec![node("Add", &["x", "w"], "y")],
                vec![value("x", INT8, &[1, 4])],
                vec![value("y", INT8, &[1, 4])],
                vec![initializer("w", INT8, &[1, 4], 1)],
            ),
            true,
        ),
    ]
}

fn model_slim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_model-slim"))
        .args(args)
        .output()
        .expect("binary runs")
}

#[test]
fn hostile_inputs_fail_cleanly_or_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes, valid) in corpus() {
        let input = dir.path().join(format!("{name}.onnx"));
        std::fs::write(&input, &bytes).unwrap();
        for subcommand in ["slim", "show", "prune"] {
            let output = dir.path().join(format!("{name}.{subcommand}.nnef.tgz"));
            let mut args = vec![subcommand, input.to_str().unwrap()];
            if subcommand != "show" {
                args.extend(["-o", output.to_str().unwrap()]);
            }
            if subcommand == "prune" {
                args.extend(["--ffn-sparsity", "0.5"]);
            }
            let out = model_slim(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let code = out.status.code();
            assert!(
                code.is_some(),
                "{name} {subcommand}: killed by a signal ({stderr})"
            );
            assert!(
                !stderr.contains("panicked") && !stderr.contains("internal error"),
                "{name} {subcommand}: {stderr}"
            );
            if out.status.success() {
                assert!(valid, "{name} {subcommand}: an invalid model was accepted");
                continue;
            }
            assert_eq!(code, Some(1), "{name} {subcommand}: {stderr}");
            let errors: Vec<&str> = stderr
                .lines()
                .filter(|l| l.starts_with("model-slim: error:"))
                .collect();
            assert_eq!(errors.len(), 1, "{name} {subcommand}: {stderr}");
            assert!(
                !output.exists(),
                "{name} {subcommand}: left {}",
                output.display()
            );
            println!("{name} {subcommand}: {}", errors[0]);
        }
    }
}
