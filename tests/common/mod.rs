//! Helpers shared by the integration tests: the fixture manifest, model loading and running the
//! command line.

#![allow(dead_code)]

use model_slim::{import_onnx, ImportOptions, InputSpec};
use serde::Deserialize;
use std::path::PathBuf;
use tract_core::internal::*;

#[derive(Deserialize, Debug)]
pub struct Manifest {
    pub fixtures: Vec<Fixture>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Fixture {
    pub name: String,
    pub file: String,
    pub model: String,
    pub variant: String,
    pub exporter: String,
    pub inputs: Vec<FixtureInput>,
    pub dims: Dims,
    pub layers: Vec<Layer>,
}

/// Sizes to count matrix-product FLOPs by hand.
#[derive(Deserialize, Debug, Clone)]
pub struct Dims {
    pub hidden: usize,
    pub head_dim: usize,
    pub tokens: usize,
    pub ffn_producers: usize,
    pub ffn_bias: bool,
    pub ffn_out_bias: bool,
    pub qkv_bias: bool,
    pub attn_out_bias: bool,
}

#[derive(Deserialize, Debug, Clone)]
pub struct FixtureInput {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: String,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Layer {
    pub layer: usize,
    pub ffn_width: usize,
    pub ffn_kept: usize,
    pub ffn_constant: Vec<usize>,
    pub heads_constant: Vec<usize>,
    pub heads_zeroed: Vec<usize>,
    #[serde(default)]
    pub heads_constant_kept: bool,
    pub heads: usize,
    pub heads_kept: usize,
    pub kv_heads: usize,
    pub kv_heads_kept: usize,
}

impl Layer {
    /// FLOPs of the layer's matrix products (two per multiply-add) with `heads` query heads,
    /// `kv` KV heads and `ffn` FFN channels kept: Q, K and V projections, scores, softmax · V,
    /// output projection, and the FFN's layers.
    pub fn product_flops(dims: &Dims, heads: usize, kv: usize, ffn: usize) -> f64 {
        let (s, h, d) = (dims.tokens as f64, dims.hidden as f64, dims.head_dim as f64);
        let (heads, kv, ffn) = (heads as f64, kv as f64, ffn as f64);
        let attention = 2.0 * s * h * d * (heads + 2.0 * kv) // q, k, v projections
            + 2.0 * 2.0 * s * s * d * heads // q·kᵀ and p·v
            + 2.0 * s * heads * d * h; // output projection
        let mlp = 2.0 * s * h * ffn * (dims.ffn_producers as f64 + 1.0);
        attention + mlp
    }
}

pub fn fixtures_dir() -> PathBuf {
    model_slim::testing::checkout().join("tests/fixtures")
}

pub fn manifest() -> Manifest {
    let text =
        std::fs::read_to_string(fixtures_dir().join("manifest.json")).expect("manifest.json");
    serde_json::from_str(&text).expect("manifest parses")
}

/// The fixtures exported from untouched (dense) models.
pub fn dense_fixtures() -> Vec<Fixture> {
    manifest()
        .fixtures
        .into_iter()
        .filter(|f| f.variant == "dense")
        .collect()
}

impl Fixture {
    pub fn path(&self) -> PathBuf {
        fixtures_dir().join(&self.file)
    }

    /// The `--input` flags that give this fixture its recorded shapes.
    pub fn input_specs(&self) -> Vec<String> {
        self.inputs
            .iter()
            .map(|i| {
                let dims: Vec<String> = i.shape.iter().map(|d| d.to_string()).collect();
                let ty = if i.dtype == "int64" { "i64" } else { "f32" };
                format!("{}:{},{ty}", i.name, dims.join(","))
            })
            .collect()
    }

    /// Imports the fixture at its recorded (concrete) shapes.
    pub fn load(&self) -> TypedModel {
        let inputs = self
            .input_specs()
            .iter()
            .map(|s| s.parse::<InputSpec>().unwrap())
            .collect();
        import_onnx(
            &self.path(),
            &ImportOptions {
                inputs,
                sets: vec![],
                states: vec![],
            },
        )
        .expect("fixture imports")
    }
}

/// Runs `check` on every fixture and fails with every failure, not just the first.
pub fn check_every_fixture(
    fixtures: &[Fixture],
    check: impl Fn(&Fixture) + std::panic::RefUnwindSafe,
) {
    let failures: Vec<String> = fixtures
        .iter()
        .filter_map(|fixture| {
            std::panic::catch_unwind(|| check(fixture))
                .err()
                .map(|e| panic_message(&fixture.name, e))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
}

/// The message of a caught panic, prefixed with what was being checked.
fn panic_message(what: &str, payload: Box<dyn std::any::Any + Send>) -> String {
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    format!("{what}: {}", message.lines().next().unwrap_or_default())
}

/// FLOPs of a model's matrix products (EinSums) at its concrete shapes.
pub fn product_flops(model: &TypedModel) -> f64 {
    let nominal = model_slim::Nominal::default();
    model
        .nodes()
        .iter()
        .filter_map(|n| {
            let einsum = n.op_as::<tract_core::ops::einsum::EinSum>()?;
            let facts = model.node_input_facts(n.id).ok()?;
            Some(nominal.einsum_flops(einsum, &facts))
        })
        .sum()
}

/// Pairs of float constants of `model` (by node name) where the first is a restriction of the
/// second: along one axis, where it is shorter, each of its slices is a slice of the second.
/// Such a model pays for one weight twice, whole and restricted, where one gather of the
/// whole's result would do. Constants of fewer than 16 elements are left out.
pub fn restricted_copies(model: &TypedModel) -> Vec<(String, String)> {
    let consts: Vec<(String, Tensor)> = model
        .nodes()
        .iter()
        .filter_map(|n| {
            let c = n.op_as::<tract_core::ops::konst::Const>()?;
            let t = c.val();
            (t.datum_type().is_float() && t.len() >= 16)
                .then(|| (n.name.clone(), t.cast_to::<f32>().unwrap().into_owned()))
        })
        .collect();
    let mut found = vec![];
    for (a_name, a) in &consts {
        for (b_name, b) in &consts {
            if restricts(a, b) {
                found.push((a_name.clone(), b_name.clone()));
            }
        }
    }
    found
}

/// Whether `a` is `b` restricted along one axis: the same shape but there, where `a` is
/// shorter, and every slice of `a` along it one of `b`'s.
fn restricts(a: &Tensor, b: &Tensor) -> bool {
    let (sa, sb) = (a.shape(), b.shape());
    if sa.len() != sb.len() {
        return false;
    }
    let differing: Vec<usize> = (0..sa.len()).filter(|&k| sa[k] != sb[k]).collect();
    let [axis] = differing[..] else {
        return false;
    };
    if sa[axis] >= sb[axis] {
        return false;
    }
    let slices = |t: &Tensor| -> Vec<Vec<u32>> {
        let view = t.to_plain_array_view::<f32>().unwrap();
        view.axis_iter(tract_ndarray::Axis(axis))
            .map(|s| s.iter().map(|x| x.to_bits()).collect())
            .collect()
    };
    let whole: std::collections::HashSet<Vec<u32>> = slices(b).into_iter().collect();
    slices(a).iter().all(|s| whole.contains(s))
}

/// A readable summary of a graph: one line per computing node, its op, inputs and output shape.
/// Constants appear inline as `const[shape]` (tract merges identical constants, renaming them).
pub fn graph_summary(model: &TypedModel) -> String {
    let mut out = String::new();
    let shape = |o: OutletId| format!("{:?}", model.outlet_fact(o).unwrap().shape);
    for id in model.eval_order().unwrap() {
        let node = model.node(id);
        if node.op.name() == "Const" {
            continue;
        }
        let inputs: Vec<String> = node
            .inputs
            .iter()
            .map(|i| {
                if model.node(i.node).op.name() == "Const" {
                    format!("const[{}]", shape(*i))
                } else {
                    model.node(i.node).name.clone()
                }
            })
            .collect();
        out += &format!(
            "{} = {}({}) : {}\n",
            node.name,
            node.op.name(),
            inputs.join(", "),
            shape(OutletId::new(id, 0))
        );
    }
    out
}

/// Fails with the first differing line of two summaries.
pub fn assert_same_summary(got: &str, expected: &str, what: &str) {
    for (g, e) in got.lines().zip(expected.lines()) {
        assert_eq!(g, e, "{what}");
    }
    assert_eq!(
        got.lines().count(),
        expected.lines().count(),
        "{what}: node counts differ"
    );
}

/// Runs the `model-slim` binary with `args`.
pub fn model_slim(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_model-slim"))
        .args(args)
        .output()
        .expect("binary runs")
}

/// Asserts a successful run and returns its standard output.
pub fn assert_success(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `model-slim slim model -o output` with `extra` arguments.
pub fn slim_to(
    model: &std::path::Path,
    output: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "slim",
        model.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ];
    args.extend(extra);
    model_slim(&args)
}
