//! Lowering: a typed, decluttered tract model becomes an e-graph, one e-node per tract output.
//!
//! Ops the rules know get their family's node ([`TensorLang`]); every other op becomes an `opaque`
//! node that keeps its original tract op, so an unknown op only limits what can be slimmed.

use crate::egraph::analysis::{const_of, SlimAnalysis, SlimGraph, Tables};
use crate::egraph::lang::{Key, TensorLang};
use crate::model::ops::{self, ConstantResize, Family};
use egg::Id;
use std::collections::HashMap;
use tract_core::internal::*;
use tract_core::ops::konst::Const;
use tract_core::ops::source::TypedSource;

/// A model in e-graph form, with what raising needs to rebuild a tract model.
pub struct Lowered {
    /// The e-graph, with its analysis and tables.
    pub egraph: SlimGraph,
    /// E-class of each model output, in order.
    pub outputs: Vec<Id>,
    /// Names of the model's inputs and outputs, in order.
    pub input_names: Vec<String>,
    /// Names of the model's outputs, in order.
    pub output_names: Vec<String>,
    /// Source node name of each lowered e-class (names for the rebuilt nodes).
    pub names: HashMap<Id, String>,
}

/// Lowers a typed model. The model should be decluttered first, so ops come in canonical form.
pub fn lower(model: &TypedModel) -> TractResult<Lowered> {
    lower_counting(model, &|_, _| {})
}

/// [`lower`], telling `progress` (nodes lowered, nodes in all) after each node: constants are
/// scanned for zeros as they are lowered, which takes seconds on a model of a billion weights.
pub fn lower_counting(model: &TypedModel, progress: &dyn Fn(usize, usize)) -> TractResult<Lowered> {
    // Stored facts can be stale after tract's own rewrites (an `Iff` keeping a pre-declutter
    // shape); the e-graph types nodes with `output_facts`, so lower a refreshed copy.
    let mut refreshed = model.clone();
    refreshed.refresh_output_facts()?;
    let model = &refreshed;
    let mut tables = Tables::default();
    for input in model.input_outlets()? {
        tables.inputs.push(model.outlet_fact(*input)?.clone());
    }
    let mut egraph = SlimGraph::new(SlimAnalysis::new(tables));
    let mut outlets: HashMap<OutletId, Id> = HashMap::new();
    let mut names = HashMap::new();
    let order = model.eval_order()?;
    for (done, &node_id) in order.iter().enumerate() {
        let node = &model.nodes()[node_id];
        let inputs: Vec<Id> = node.inputs.iter().map(|i| outlets[i]).collect();
        let input_ix = model
            .input_outlets()?
            .iter()
            .position(|o| o.node == node_id);
        for slot in 0..node.outputs.len() {
            let enode = lower_outlet(&mut egraph, node, slot, &inputs, input_ix)?;
            let id = egraph.add(enode);
            let expected = &node.outputs[slot].fact;
            check_lowered_fact(&egraph, id, expected, node)?;
            names.entry(id).or_insert_with(|| node.name.clone());
            outlets.insert(OutletId::new(node_id, slot), id);
        }
        progress(done + 1, order.len());
    }
    egraph.rebuild();
    let outputs = model
        .output_outlets()?
        .iter()
        .map(|o| egraph.find(outlets[o]))
        .collect();
    let input_names = model
        .input_outlets()?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    let output_names = model
        .output_outlets()?
        .iter()
        .map(|o| {
            model
                .outlet_label(*o)
                .map(|s| s.to_string())
                .unwrap_or_else(|| model.node(o.node).name.clone())
        })
        .collect();
    Ok(Lowered {
        egraph,
        outputs,
        input_names,
        output_names,
        names,
    })
}

fn lower_outlet(
    egraph: &mut SlimGraph,
    node: &TypedNode,
    slot: usize,
    inputs: &[Id],
    input_ix: Option<usize>,
) -> TractResult<TensorLang> {
    let op: &dyn TypedOp = node.op.as_ref();
    if op.is::<TypedSource>() {
        let ix = input_ix.context("source node that is not a model input")?;
        return Ok(TensorLang::Key(Key::Input(ix as u32)));
    }
    if let Some(konst) = op.downcast_ref::<Const>() {
        let k = egraph
            .analysis
            .tables
            .consts
            .add(konst.val().clone(), node.name.clone())?;
        return Ok(TensorLang::Key(Key::Const(k)));
    }
    // A resampling by constant scales is an op of its data alone.
    let constants: Option<Vec<Arc<Tensor>>> = inputs
        .get(1..)
        .unwrap_or_default()
        .iter()
        .map(|&id| {
            egraph
                .analysis
                .tables
                .consts
                .tensor(const_of(egraph, id)?)
                .ok()
        })
        .collect();
    if let Some(resize) = constants.and_then(|c| ConstantResize::of(op, c)) {
        let op_key = egraph
            .analysis
            .tables
            .add_op(Box::new(resize), node.name.clone());
        let op_leaf = egraph.add(TensorLang::Key(op_key));
        return Ok(TensorLang::Along([op_leaf, inputs[0]]));
    }
    let op_key = egraph
        .analysis
        .tables
        .add_op(node.op.clone(), node.name.clone());
    let op_leaf = egraph.add(TensorLang::Key(op_key));
    let single = node.outputs.len() == 1;
    let with_op = |rest: &[Id]| -> Vec<Id> {
        std::iter::once(op_leaf)
            .chain(rest.iter().copied())
            .collect()
    };
    let family = if single {
        ops::family(op, inputs.len())
    } else {
        Family::Opaque
    };
    let enode = match (family, inputs) {
        (Family::Map, &[x]) => TensorLang::Map([op_leaf, x]),
        (Family::Bin, &[a, b]) => TensorLang::Bin([op_leaf, a, b]),
        (Family::EinSum, &[a, b]) => TensorLang::EinSum([op_leaf, a, b]),
        (Family::Along, &[x]) => TensorLang::Along([op_leaf, x]),
        (Family::Axis, &[x]) => TensorLang::Axis([op_leaf, x]),
        (Family::Where, &[c, x, y]) => TensorLang::Where([op_leaf, c, x, y]),
        (Family::Bcast, &[x]) => TensorLang::Bcast([op_leaf, x]),
        (Family::Concat, &[x, y]) => TensorLang::Concat([op_leaf, x, y]),
        (Family::Conv, &[x, k, b]) => TensorLang::Conv([op_leaf, x, k, b]),
        _ => {
            let slot = egraph.add(TensorLang::Num(slot as i64));
            let mut children = with_op(&[slot]);
            children.extend_from_slice(inputs);
            TensorLang::Opaque(children.into_boxed_slice())
        }
    };
    Ok(enode)
}

/// The e-graph must type every tensor exactly as tract did; anything else is a lowering bug.
fn check_lowered_fact(
    egraph: &SlimGraph,
    id: Id,
    expected: &TypedFact,
    node: &TypedNode,
) -> TractResult<()> {
    let got = egraph[id].data.fact.as_ref();
    let same =
        got.is_some_and(|f| f.datum_type == expected.datum_type && f.shape == expected.shape);
    ensure!(
        same,
        "lowering node #{} \"{}\" ({}): typed as {got:?}, tract says {expected:?}",
        node.id,
        node.name,
        node.op.name()
    );
    Ok(())
}
