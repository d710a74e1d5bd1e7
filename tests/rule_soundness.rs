//! Every default rule is checked on random instances: random shapes, random data with random
//! zero slices (whole channels, and partial ones that must stay). After saturation, *every* node
//! of every e-class is extracted in turn, rebuilt as a tract model and run: each must compute
//! what the original graph computes. Every rule must have fired somewhere, so no rule goes
//! unchecked.

use egg::{Id, Language};
use model_slim::analysis::{SlimAnalysis, SlimGraph, Tables};
use model_slim::cost::Nominal;
use model_slim::extract::{extract, extract_forcing};
use model_slim::lang::{Key, TensorLang};
use model_slim::lower::lower;
use model_slim::raise::{raise, Interface};
use model_slim::rules::default_rules;
use model_slim::saturate::{saturate, Limits};
use model_slim::verify::{max_abs_diff, random_inputs, run};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::math::{add, max, mul};
use tract_core::ops::nn::{sigmoid, Softmax, SoftmaxKind};

fn random_tensor(rng: &mut StdRng, shape: &[usize]) -> Tensor {
    let data: Vec<f32> = (0..shape.iter().product())
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    tract_ndarray::ArrayD::from_shape_vec(shape, data)
        .unwrap()
        .into_tensor()
}

/// Zeroes random slices of `axis`: some whole (removable), some all but one element (must stay).
fn zero_random_slices(rng: &mut StdRng, t: &mut Tensor, axis: usize) {
    let n = t.shape()[axis];
    let mut view = t.to_plain_array_view_mut::<f32>().unwrap();
    for i in 0..n {
        let roll = rng.gen_range(0..10);
        let mut slice = view.index_axis_mut(tract_ndarray::Axis(axis), i);
        if roll < 4 {
            slice.fill(0.0);
        } else if roll == 4 {
            let keep = *slice.iter().next().unwrap();
            slice.fill(0.0);
            *slice.iter_mut().next().unwrap() = keep + 2.0;
        }
    }
}

fn einsum(expr: &str) -> EinSum {
    EinSum::new(expr.parse().unwrap(), f32::datum_type())
}

/// A random FFN-shaped model: producers → element-wise stuff → consumer with zero input slices.
fn random_ffn(rng: &mut StdRng) -> TypedModel {
    let (s, h, f, p) = (
        rng.gen_range(1..5),
        rng.gen_range(2..9),
        rng.gen_range(2..13),
        rng.gen_range(1..7),
    );
    let mut m = TypedModel::default();
    let x = m.add_source("x", f32::fact([1, s, h])).unwrap();
    let producer = |m: &mut TypedModel, name: &str, rng: &mut StdRng| -> OutletId {
        let mut w = random_tensor(rng, &[h, f]);
        if rng.gen_bool(0.3) {
            zero_random_slices(rng, &mut w, 1);
        }
        let y = if rng.gen_bool(0.5) {
            let w = m.add_const(format!("{name}.w"), w).unwrap();
            m.wire_node(name, einsum("amk,kn->amn"), &[x, w]).unwrap()[0]
        } else {
            let w = m
                .add_const(format!("{name}.w"), w.permute_axes(&[1, 0]).unwrap())
                .unwrap();
            m.wire_node(name, einsum("nk,amk->amn"), &[w, x]).unwrap()[0]
        };
        let mut b = random_tensor(rng, &[1, 1, f]);
        if rng.gen_bool(0.3) {
            zero_random_slices(rng, &mut b, 2);
        }
        let b = m.add_const(format!("{name}.b"), b).unwrap();
        let operands = if rng.gen_bool(0.5) { [y, b] } else { [b, y] };
        m.wire_node(format!("{name}.bias"), add(), &operands)
            .unwrap()[0]
    };
    let mut a = producer(&mut m, "up", rng);
    a = match rng.gen_range(0..5) {
        0 => m
            .wire_node("gelu", tract_core::ops::nn::gelu_exact::gelu_exact(), &[a])
            .unwrap()[0],
        1 => m
            .wire_node("tanh", tract_core::ops::math::tanh(), &[a])
            .unwrap()[0],
        2 => m.wire_node("sigmoid", sigmoid(), &[a]).unwrap()[0],
        3 => {
            let zero = m.add_const("zero", tensor3(&[[[0f32]]])).unwrap();
            let operands = if rng.gen_bool(0.5) {
                [a, zero]
            } else {
                [zero, a]
            };
            m.wire_node("relu", max(), &operands).unwrap()[0]
        }
        _ => a,
    };
    // A gate: an element-wise product, written as `Mul` or as a Hadamard EinSum.
    let gate: Option<Box<dyn TypedOp>> = match rng.gen_range(0..3) {
        0 => Some(Box::new(mul())),
        1 => Some(Box::new(einsum("amn,amn->amn"))),
        _ => None,
    };
    if let Some(gate) = gate {
        let g = producer(&mut m, "gate", rng);
        a = m.wire_node("gated", gate, &[a, g]).unwrap()[0];
    }
    if rng.gen_bool(0.4) {
        let softmax = Softmax {
            axes: tvec!(1),
            quant_output_dt: None,
            kind: SoftmaxKind::default(),
        };
        a = m.wire_node("softmax", softmax, &[a]).unwrap()[0];
    }
    if rng.gen_bool(0.4) {
        a = m.wire_node("squeeze", AxisOp::Rm(0), &[a]).unwrap()[0];
        a = m.wire_node("unsqueeze", AxisOp::Add(0), &[a]).unwrap()[0];
    }
    let residual = rng.gen_bool(0.5);
    let p = if residual { h } else { p };
    let mut w2 = random_tensor(rng, &[f, p]);
    if rng.gen_bool(0.2) {
        w2 = Tensor::zero::<f32>(&[f, p]).unwrap();
    } else {
        zero_random_slices(rng, &mut w2, 0);
    }
    let w2 = m.add_const("down.w", w2).unwrap();
    let mut y = m
        .wire_node("down", einsum("amn,np->amp"), &[a, w2])
        .unwrap()[0];
    if rng.gen_bool(0.5) {
        let b2 = m
            .add_const("down.b", random_tensor(rng, &[1, 1, p]))
            .unwrap();
        y = m.wire_node("down.bias", add(), &[y, b2]).unwrap()[0];
    }
    if residual {
        let operands = if rng.gen_bool(0.5) { [y, x] } else { [x, y] };
        y = m.wire_node("residual", add(), &operands).unwrap()[0];
    }
    m.select_output_outlets(&[y]).unwrap();
    m
}

/// Zeroes whole heads (blocks of `head_dim` slices of `axis`) at random; returns how many.
fn zero_random_heads(
    rng: &mut StdRng,
    t: &mut Tensor,
    axis: usize,
    head_dim: usize,
    p: f64,
) -> usize {
    let heads = t.shape()[axis] / head_dim;
    let mut view = t.to_plain_array_view_mut::<f32>().unwrap();
    let mut zeroed = 0;
    for h in 0..heads {
        if rng.gen_bool(p) {
            zeroed += 1;
            for d in 0..head_dim {
                view.index_axis_mut(tract_ndarray::Axis(axis), h * head_dim + d)
                    .fill(0.0);
            }
        }
    }
    zeroed
}

/// A random multi-head attention block with a residual: Q, K, V projections (with biases),
/// split into heads, scaled scores, an optional additive mask, softmax over the keys, context,
/// heads merged back, output projection. Random zeros: whole heads in the output projection's
/// input (removable), whole heads of the V projection (constant heads, folded), and partial ones.
fn random_attention(rng: &mut StdRng) -> TypedModel {
    let (s, hidden, heads, d) = (
        rng.gen_range(1..5),
        rng.gen_range(2..9),
        rng.gen_range(1..5),
        rng.gen_range(1..4),
    );
    let inner = heads * d;
    let mut m = TypedModel::default();
    let x = m.add_source("x", f32::fact([1, s, hidden])).unwrap();
    let project = |m: &mut TypedModel, name: &str, rng: &mut StdRng, zero_heads: f64| {
        let mut w = random_tensor(rng, &[hidden, inner]);
        zero_random_heads(rng, &mut w, 1, d, zero_heads);
        let w = m.add_const(format!("{name}.w"), w).unwrap();
        let y = m.wire_node(name, einsum("amk,kn->amn"), &[x, w]).unwrap()[0];
        let b = m
            .add_const(format!("{name}.b"), random_tensor(rng, &[1, 1, inner]))
            .unwrap();
        let y = m.wire_node(format!("{name}.bias"), add(), &[y, b]).unwrap()[0];
        let split = AxisOp::Reshape(2, tvec!(inner.into()), tvec!(heads.into(), d.into()));
        m.wire_node(format!("{name}.heads"), split, &[y]).unwrap()[0]
    };
    let q = project(&mut m, "q", rng, 0.1);
    let k = project(&mut m, "k", rng, 0.1);
    let v = project(&mut m, "v", rng, 0.4);
    let scores = m
        .wire_node("scores", einsum("ashd,athd->ahst"), &[q, k])
        .unwrap()[0];
    let scale = m.add_const("scale", tensor4(&[[[[0.5f32]]]])).unwrap();
    let mut scores = m.wire_node("scaled", mul(), &[scores, scale]).unwrap()[0];
    if rng.gen_bool(0.5) {
        let mask: Vec<f32> = (0..s)
            .map(|_| if rng.gen_bool(0.3) { -1e4 } else { 0.0 })
            .collect();
        let mask = tract_ndarray::ArrayD::from_shape_vec(vec![1, 1, 1, s], mask).unwrap();
        let mask = m.add_const("mask", mask.into_tensor()).unwrap();
        scores = m.wire_node("masked", add(), &[scores, mask]).unwrap()[0];
    }
    let softmax = Softmax {
        axes: tvec!(3),
        quant_output_dt: None,
        kind: SoftmaxKind::default(),
    };
    let probs = m.wire_node("softmax", softmax, &[scores]).unwrap()[0];
    let context = m
        .wire_node("context", einsum("ahst,athd->ashd"), &[probs, v])
        .unwrap()[0];
    let merge = AxisOp::Reshape(2, tvec!(heads.into(), d.into()), tvec!(inner.into()));
    let merged = m.wire_node("merged", merge, &[context]).unwrap()[0];
    let mut wo = random_tensor(rng, &[inner, hidden]);
    if zero_random_heads(rng, &mut wo, 0, d, 0.4) == 0 && d > 1 {
        zero_random_slices(rng, &mut wo, 0);
    }
    let wo = m.add_const("out.w", wo).unwrap();
    let out = m
        .wire_node("out", einsum("ami,io->amo"), &[merged, wo])
        .unwrap()[0];
    let bo = m
        .add_const("out.b", random_tensor(rng, &[1, 1, hidden]))
        .unwrap();
    let out = m.wire_node("out.bias", add(), &[out, bo]).unwrap()[0];
    let operands = if rng.gen_bool(0.5) {
        [out, x]
    } else {
        [x, out]
    };
    let y = m.wire_node("residual", add(), &operands).unwrap()[0];
    m.select_output_outlets(&[y]).unwrap();
    m
}

/// Extracts each node of each class in turn and checks the rebuilt model against `expected`.
fn check_every_alternative(
    egraph: &SlimGraph,
    interface: &Interface,
    inputs: &TVec<TValue>,
    expected: &TVec<TValue>,
    what: &str,
) -> usize {
    let nominal = Nominal::default();
    let mut checked = 0;
    for class in egraph.classes() {
        if class.nodes.len() < 2 || class.data.fact.is_none() {
            continue;
        }
        for node in &class.nodes {
            let forced = HashMap::from([(class.id, node.clone())]);
            let Some(choice) = extract_forcing(egraph, interface.outputs, &nominal, &forced) else {
                continue;
            };
            if !choice.nodes.contains_key(&class.id) {
                continue; // this class is not needed by the outputs
            }
            let model = raise(egraph, &choice, interface).unwrap();
            let got = run(&model, inputs.clone()).unwrap();
            for (e, g) in expected.iter().zip(got.iter()) {
                let scale = e
                    .try_as_plain_ram()
                    .unwrap()
                    .as_slice::<f32>()
                    .unwrap()
                    .iter()
                    .fold(1.0f32, |m, v| m.max(v.abs()));
                let diff = max_abs_diff(e, g).unwrap();
                assert!(
                    diff <= 1e-5 * scale,
                    "{what}: node {node:?} of class {} differs by {diff}",
                    class.id
                );
            }
            checked += 1;
        }
    }
    checked
}

fn merge_applied(total: &mut BTreeMap<String, usize>, applied: &BTreeMap<String, usize>) {
    for (rule, n) in applied {
        *total.entry(rule.clone()).or_insert(0) += n;
    }
}

#[test]
fn every_rule_is_sound_on_random_models() {
    let rules = default_rules().unwrap();
    let mut applied = BTreeMap::new();
    let mut checked = 0;
    for seed in 0..120 {
        let mut rng = StdRng::seed_from_u64(seed);
        let model = if seed % 2 == 0 {
            random_ffn(&mut rng)
        } else {
            random_attention(&mut rng)
        };
        // Half the models as the pass gets them from tract (decluttered: the merge reshape is
        // folded into the output weights), half as built.
        let model = if rng.gen_bool(0.5) {
            model.into_decluttered().unwrap()
        } else {
            model
        };
        let inputs = random_inputs(&model, seed, &SymbolValues::default()).unwrap();
        let expected = run(&model, inputs.clone()).unwrap();
        let lowered = lower(&model).unwrap();
        let (egraph, report) = saturate(lowered.egraph, &rules, &Limits::default()).unwrap();
        assert_eq!(
            report.refused_instantiations, 0,
            "seed {seed}: ill-typed rule output"
        );
        merge_applied(&mut applied, &report.applied);
        let names: HashMap<Id, String> = lowered
            .names
            .iter()
            .map(|(id, n)| (egraph.find(*id), n.clone()))
            .collect();
        let interface = Interface {
            input_names: &lowered.input_names,
            output_names: &lowered.output_names,
            outputs: &lowered.outputs,
            names: &names,
            symbols: &model.symbols,
        };
        checked += check_every_alternative(
            &egraph,
            &interface,
            &inputs,
            &expected,
            &format!("seed {seed}"),
        );
    }
    let missing: Vec<_> = rules
        .iter()
        .map(|r| r.name.as_str())
        .filter(|r| !applied.contains_key(*r) && !["keep-keep", "keep-everything"].contains(r))
        .collect();
    assert!(
        missing.is_empty(),
        "rules never exercised by the random models: {missing:?}"
    );
    assert!(checked > 100, "only {checked} alternatives checked");
}

/// Rules that the FFN rules never produce the left side of, checked on direct random terms.
#[test]
fn keep_composition_rules_are_sound() {
    let rules = default_rules().unwrap();
    let mut applied = BTreeMap::new();
    for seed in 0..20 {
        let mut rng = StdRng::seed_from_u64(seed);
        let (rows, cols) = (rng.gen_range(1..4), rng.gen_range(2..9));
        let fact = f32::fact([rows, cols]);
        let mut tables = Tables::default();
        tables.inputs.push(fact.clone());
        let mut egraph = SlimGraph::new(SlimAnalysis::new(tables));
        let x = egraph.add(TensorLang::Key(Key::Input(0)));
        let axis = egraph.add(TensorLang::Num(1));
        let mut subset = |egraph: &mut SlimGraph, n: usize| -> (Id, usize) {
            let set: Vec<usize> = (0..n).filter(|_| rng.gen_bool(0.6)).collect();
            let set = if set.is_empty() { vec![0] } else { set };
            let len = set.len();
            let key = egraph.analysis.tables.intern_set(set);
            (egraph.add(TensorLang::Key(key)), len)
        };
        let (inner, inner_len) = subset(&mut egraph, cols);
        let (outer, _) = subset(&mut egraph, inner_len);
        let kept = egraph.add(TensorLang::Keep([axis, inner, x]));
        let twice = egraph.add(TensorLang::Keep([axis, outer, kept]));
        let all = egraph.analysis.tables.intern_set((0..cols).collect());
        let all = egraph.add(TensorLang::Key(all));
        let everything = egraph.add(TensorLang::Keep([axis, all, x]));
        let roots = vec![twice, everything];
        egraph.rebuild();

        let input_names = vec!["x".to_string()];
        let output_names = vec!["twice".to_string(), "everything".to_string()];
        let names = HashMap::new();
        let symbols = SymbolScope::default();
        let interface = Interface {
            input_names: &input_names,
            output_names: &output_names,
            outputs: &roots,
            names: &names,
            symbols: &symbols,
        };
        let reference = raise(
            &egraph,
            &extract(&egraph, &roots, &Nominal::default()),
            &interface,
        )
        .unwrap();
        let inputs = random_inputs(&reference, seed, &SymbolValues::default()).unwrap();
        let expected = run(&reference, inputs.clone()).unwrap();

        let (egraph, report) = saturate(egraph, &rules, &Limits::default()).unwrap();
        merge_applied(&mut applied, &report.applied);
        let roots: Vec<Id> = roots.iter().map(|r| egraph.find(*r)).collect();
        let interface = Interface {
            outputs: &roots,
            ..interface
        };
        let checked = check_every_alternative(
            &egraph,
            &interface,
            &inputs,
            &expected,
            &format!("seed {seed}"),
        );
        assert!(checked >= 1, "seed {seed}: nothing rewritten");
        assert!(
            egraph[roots[1]]
                .nodes
                .iter()
                .any(|n| n.children().is_empty()),
            "keep of everything is the input itself"
        );
    }
    assert!(
        applied.contains_key("keep-keep") && applied.contains_key("keep-everything"),
        "{applied:?}"
    );
}
