//! The e-class analysis: what is known of every tensor e-class, one fact per module — its type
//! (datum type and shape), its all-zero slices ([`crate::egraph::zeros`]), its slices of known
//! constant values ([`crate::egraph::known`]), the axes it sums to one along, and whether it is
//! provably finite — plus the side tables that [`Key`] leaves point into.

use crate::egraph::consts::{kept_positions, ConstStore};
use crate::egraph::known::{self, KnownSlices};
use crate::egraph::lang::{Key, TensorLang};
use crate::egraph::zeros::{self, union};
use crate::model::ops;
use crate::util::slices::ZeroSlices;
use egg::{Analysis, DidMerge, EGraph, Id};
use std::collections::HashMap;
use std::sync::Arc;
use tract_core::internal::*;
use tract_core::ops::nn::Softmax;

/// The e-graph type of model-slim.
pub type SlimGraph = EGraph<TensorLang, SlimAnalysis>;

/// What the analysis knows of one e-class.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// The tensor's type; `None` for parameter leaves (ops, numbers, sets).
    pub fact: Option<TypedFact>,
    /// Slices known to be all zero.
    pub zeros: ZeroSlices,
    /// Other slices whose values are known constants (see [`crate::egraph::known`]).
    pub known: KnownSlices,
    /// Axes along which the tensor sums to one (a softmax's output).
    pub sums_to_one: TVec<usize>,
    /// Whether every value is provably finite: finite constants, model inputs (assumed finite),
    /// and ops that keep finite values finite (not division, reciprocals, roots, logarithms).
    pub finite: bool,
}

impl TensorInfo {
    fn parameter() -> TensorInfo {
        TensorInfo {
            fact: None,
            zeros: vec![],
            known: vec![],
            sums_to_one: tvec!(),
            finite: false,
        }
    }

    fn tensor(fact: TypedFact, zeros: ZeroSlices) -> TensorInfo {
        let rank = fact.rank();
        TensorInfo {
            fact: Some(fact),
            zeros,
            known: vec![vec![]; rank],
            sums_to_one: tvec!(),
            finite: false,
        }
    }

    /// Zero slices of `axis` (empty when the axis is out of range).
    pub fn zeros_on(&self, axis: usize) -> &[usize] {
        self.zeros.get(axis).map(|z| z.as_slice()).unwrap_or(&[])
    }

    /// Whether the tensor is known to be all zero: every slice of some (concrete) axis is.
    pub fn is_all_zero(&self) -> bool {
        zeros::all_zero(&self.zeros, |axis| self.dim(axis))
    }

    /// Concrete size of `axis`, if known.
    pub fn dim(&self, axis: usize) -> Option<usize> {
        self.fact.as_ref()?.shape.get(axis)?.to_usize().ok()
    }
}

/// Data behind [`Key`] leaves, and caches that keep rule applications deterministic.
#[derive(Default)]
pub struct Tables {
    /// Tract operators behind `op` leaves.
    pub ops: Vec<Box<dyn TypedOp>>,
    /// Name of the source model node each op comes from (derived ops keep it; empty for ops
    /// that rules introduce from nothing).
    pub op_names: Vec<String>,
    /// Constants behind `const` leaves.
    pub consts: ConstStore,
    /// Index selections behind `set` leaves (the slices a `keep` takes, in order).
    pub sets: Vec<Arc<Vec<usize>>>,
    set_index: HashMap<Arc<Vec<usize>>, u32>,
    /// Facts of the model inputs behind `input` leaves, in order.
    pub inputs: Vec<TypedFact>,
    /// The element-wise addition op that guards hand to rules, once created.
    addition: Option<u32>,
    /// Ops built by guards, by their full description, so a rule yields the same node every time.
    built_ops: HashMap<String, u32>,
    /// `(op, axis, set) -> op` built from them by a guard, for the same reason.
    derived_ops: HashMap<(u32, usize, u32), u32>,
    zero_preserving: HashMap<u32, bool>,
}

impl Tables {
    /// Adds a tract op that came from node `name` (empty when rules made it).
    pub fn add_op(&mut self, op: Box<dyn TypedOp>, name: String) -> Key {
        self.ops.push(op);
        self.op_names.push(name);
        Key::Op(self.ops.len() as u32 - 1)
    }

    /// An op built by a guard (named after the source node `name` when it has one), interned by
    /// its description: the same op gives the same key.
    pub fn intern_op(&mut self, op: Box<dyn TypedOp>, name: &str) -> Key {
        // Per source node, so that rebuilt nodes of different layers keep their own names.
        let description = format!("{name}: {op:?}");
        if let Some(k) = self.built_ops.get(&description) {
            return Key::Op(*k);
        }
        let Key::Op(k) = self.add_op(op, name.to_string()) else {
            unreachable!()
        };
        self.built_ops.insert(description, k);
        Key::Op(k)
    }

    /// Interns a selection of slice indices, in order (repeats select a slice several times).
    pub fn intern_set(&mut self, set: Vec<usize>) -> Key {
        let set = Arc::new(set);
        if let Some(k) = self.set_index.get(&set) {
            return Key::Set(*k);
        }
        self.sets.push(set.clone());
        let k = self.sets.len() as u32 - 1;
        self.set_index.insert(set, k);
        Key::Set(k)
    }

    /// The constant `k` restricted to slices `set` of `axis` (a lazy slice, see
    /// [`ConstStore::slice`]).
    pub fn sliced_const(&mut self, k: u32, axis: usize, set: u32) -> TractResult<Key> {
        let indices = self.sets[set as usize].clone();
        Ok(Key::Const(self.consts.slice(k, axis, set, &indices)?))
    }

    /// Element-wise addition, as an op rules can use.
    pub fn addition_op(&mut self) -> Key {
        if let Some(k) = self.addition {
            return Key::Op(k);
        }
        let Key::Op(k) = self.add_op(Box::new(tract_core::ops::math::add()), String::new()) else {
            unreachable!()
        };
        self.addition = Some(k);
        Key::Op(k)
    }

    /// The op a guard derives from op `k` for a restriction to `set` of `axis`; built by `make`
    /// once per argument triple and cached, so a rule yields the same node every time.
    pub fn derived_op(
        &mut self,
        k: u32,
        axis: usize,
        set: u32,
        make: impl FnOnce(&dyn TypedOp, &[usize]) -> Option<Box<dyn TypedOp>>,
    ) -> Option<Key> {
        if let Some(done) = self.derived_ops.get(&(k, axis, set)) {
            return Some(Key::Op(*done));
        }
        let op = make(self.ops[k as usize].as_ref(), &self.sets[set as usize])?;
        // Interned by value: restricting to every slice gives back the op itself, so a rule
        // meeting its own result adds nothing new.
        let name = self.op_names[k as usize].clone();
        let Key::Op(new) = self.intern_op(op, &name) else {
            unreachable!()
        };
        self.derived_ops.insert((k, axis, set), new);
        Some(Key::Op(new))
    }

    /// Whether the op (unary or binary element-wise) maps zeros to zero.
    fn maps_zero_to_zero(&mut self, op: u32, fact: &TypedFact, arity: usize) -> bool {
        if let Some(known) = self.zero_preserving.get(&op) {
            return *known;
        }
        let known = eval_on_zeros(self.ops[op as usize].as_ref(), fact, arity).unwrap_or(false);
        self.zero_preserving.insert(op, known);
        known
    }
}

fn eval_on_zeros(op: &dyn TypedOp, fact: &TypedFact, arity: usize) -> TractResult<bool> {
    let rank = fact.rank();
    let zero = Tensor::zero_dt(fact.datum_type, &vec![1; rank])?;
    let inputs: TVec<TValue> = (0..arity).map(|_| zero.clone().into_tvalue()).collect();
    let out = op
        .eval_out_of_plan(inputs)?
        .context("no plain evaluation")?;
    let out = out[0].cast_to::<f64>()?;
    Ok(out
        .try_as_plain_ram()?
        .as_slice::<f64>()?
        .iter()
        .all(|v| *v == 0.0))
}

/// The analysis itself: owns the side tables.
#[derive(Default)]
pub struct SlimAnalysis {
    /// The data `Key` leaves point into.
    pub tables: Tables,
}

impl SlimAnalysis {
    /// An analysis over these tables.
    pub fn new(tables: Tables) -> SlimAnalysis {
        SlimAnalysis { tables }
    }
}

/// The op behind an op leaf e-class.
pub fn op_of(egraph: &SlimGraph, id: Id) -> Option<u32> {
    egraph[id].nodes.iter().find_map(|n| match n {
        TensorLang::Key(Key::Op(k)) => Some(*k),
        _ => None,
    })
}

/// The integer behind a number leaf e-class.
pub fn num_of(egraph: &SlimGraph, id: Id) -> Option<i64> {
    egraph[id].nodes.iter().find_map(|n| match n {
        TensorLang::Num(v) => Some(*v),
        _ => None,
    })
}

/// The set behind a set leaf e-class.
pub fn set_of(egraph: &SlimGraph, id: Id) -> Option<Arc<Vec<usize>>> {
    egraph[id].nodes.iter().find_map(|n| match n {
        TensorLang::Key(Key::Set(k)) => Some(egraph.analysis.tables.sets[*k as usize].clone()),
        _ => None,
    })
}

/// The key of the set behind a set leaf e-class.
pub fn set_key_of(egraph: &SlimGraph, id: Id) -> Option<u32> {
    egraph[id].nodes.iter().find_map(|n| match n {
        TensorLang::Key(Key::Set(k)) => Some(*k),
        _ => None,
    })
}

/// The constant in an e-class, if it has one.
pub fn const_of(egraph: &SlimGraph, id: Id) -> Option<u32> {
    egraph[id].nodes.iter().find_map(|n| match n {
        TensorLang::Key(Key::Const(k)) => Some(*k),
        _ => None,
    })
}

/// Computes what an e-node produces from its children's info; an error means the node is
/// ill-typed (rules must never add such a node).
pub fn infer(egraph: &mut SlimGraph, node: &TensorLang) -> TractResult<TensorInfo> {
    let fact = |id: Id| -> TractResult<TypedFact> {
        egraph[id]
            .data
            .fact
            .clone()
            .with_context(|| format!("e-class {id} is not a tensor"))
    };
    match node {
        TensorLang::Num(_) | TensorLang::Key(Key::Op(_)) | TensorLang::Key(Key::Set(_)) => {
            Ok(TensorInfo::parameter())
        }
        TensorLang::Key(Key::Const(k)) => {
            let consts = &egraph.analysis.tables.consts;
            let mut info = TensorInfo::tensor(consts.fact(*k).clone(), consts.zeros(*k).clone());
            info.finite = consts.finite(*k);
            Ok(info)
        }
        TensorLang::Key(Key::Input(i)) => {
            let fact = egraph.analysis.tables.inputs[*i as usize].clone();
            let rank = fact.rank();
            let mut info = TensorInfo::tensor(fact, vec![vec![]; rank]);
            info.finite = true;
            Ok(info)
        }
        TensorLang::Keep([axis, set, x]) => {
            let axis = num_of(egraph, *axis).context("keep axis is not a number")? as usize;
            let set = set_of(egraph, *set).context("keep set is not a set")?;
            let mut fact = fact(*x)?;
            ensure!(
                axis < fact.rank(),
                "keep axis {axis} out of rank {}",
                fact.rank()
            );
            if let Ok(dim) = fact.shape[axis].to_usize() {
                ensure!(
                    set.iter().all(|&i| i < dim),
                    "keep index out of range {dim}"
                );
            }
            let mut shape: TVec<TDim> = fact.shape.iter().cloned().collect();
            shape[axis] = set.len().into();
            fact = fact.datum_type.fact(shape);
            let source = &egraph[*x].data;
            let mut zeros = source.zeros.clone();
            zeros[axis] = kept_positions(&zeros[axis], &set);
            let known = known::through_keep(&source.known, axis, &set);
            let sums_to_one = source
                .sums_to_one
                .iter()
                .copied()
                .filter(|a| *a != axis)
                .collect();
            let mut info = TensorInfo::tensor(fact, zeros);
            info.known = known;
            info.sums_to_one = sums_to_one;
            info.finite = source.finite;
            Ok(info)
        }
        _ => infer_op(egraph, node),
    }
}

fn infer_op(egraph: &mut SlimGraph, node: &TensorLang) -> TractResult<TensorInfo> {
    let op_key = op_of(egraph, node.op_child().context("no op")?).context("op leaf missing")?;
    let inputs: Vec<TypedFact> = node
        .operands()
        .iter()
        .map(|id| {
            egraph[*id]
                .data
                .fact
                .clone()
                .context("operand is not a tensor")
        })
        .collect::<TractResult<_>>()?;
    let input_refs: TVec<&TypedFact> = inputs.iter().collect();
    let op = &egraph.analysis.tables.ops[op_key as usize];
    check_reshape(op.as_ref(), &inputs)?;
    let mut outputs = op.output_facts(&input_refs)?;
    let slot = match node {
        TensorLang::Opaque(c) => num_of(egraph, c[1]).context("opaque slot")? as usize,
        _ => 0,
    };
    ensure!(slot < outputs.len(), "op has no output {slot}");
    let mut fact = outputs.remove(slot);
    fact.konst = None;
    fact.uniform = None;
    let zero_to_zero = match node {
        TensorLang::Map(_) => egraph
            .analysis
            .tables
            .maps_zero_to_zero(op_key, &inputs[0], 1),
        TensorLang::Bin(_) => egraph
            .analysis
            .tables
            .maps_zero_to_zero(op_key, &inputs[0], 2),
        _ => false,
    };
    let op = egraph.analysis.tables.ops[op_key as usize].as_ref();
    let operands: Vec<zeros::Operand> = node
        .operands()
        .iter()
        .zip(&inputs)
        .map(|(id, fact)| zeros::Operand {
            fact,
            zeros: &egraph[*id].data.zeros,
            finite: egraph[*id].data.finite,
        })
        .collect();
    let zeros = zeros::propagate(node, op, zero_to_zero, &operands, &fact);
    let mut known = known::propagate(egraph, node, op, &fact);
    for (axis, slices) in known.iter_mut().enumerate() {
        slices.retain(|(i, _)| zeros[axis].binary_search(i).is_err());
    }
    let sums_to_one = match node {
        // A softmax row sums to one only when no score is infinite or NaN.
        TensorLang::Along([_, scores]) if egraph[*scores].data.finite => known::softmax_axes(op),
        TensorLang::Axis(_) => carried_axes(egraph, node, op),
        TensorLang::Where([_, c, zero, p]) => nan_guarded_axes(egraph, *c, *zero, *p),
        _ => tvec!(),
    };
    let finite = node.family().is_some_and(|f| ops::keeps_finite(f, op))
        && node.operands().iter().enumerate().all(|(slot, id)| {
            // A choice's condition is not a value of the output.
            (matches!(node, TensorLang::Where(_)) && slot == 0) || egraph[*id].data.finite
        })
        || guards_a_softmax(egraph, node);
    let mut info = TensorInfo::tensor(fact, zeros);
    info.known = known;
    info.sums_to_one = sums_to_one;
    info.finite = finite;
    Ok(info)
}

/// `where(isnan(p), 0, p)`, the guard sdpa exports put after softmax so that fully masked rows
/// give zeros instead of NaN: when `p` is a softmax of finite scores it has no NaN, so the guard
/// returns `p` and sums to one where `p` does.
fn nan_guarded_axes(egraph: &SlimGraph, condition: Id, zero: Id, p: Id) -> TVec<usize> {
    if is_nan_of(egraph, condition, p) && egraph[zero].data.is_all_zero() {
        egraph[p].data.sums_to_one.clone()
    } else {
        tvec!()
    }
}

/// Whether a node is sdpa's NaN guard `where(isnan(p), 0, p)` over a softmax: finite whatever
/// the scores, since a softmax gives values in [0, 1] or NaN, and the guard replaces NaN.
fn guards_a_softmax(egraph: &SlimGraph, node: &TensorLang) -> bool {
    let TensorLang::Where([_, c, zero, p]) = node else {
        return false;
    };
    let softmax = egraph[*p].nodes.iter().any(|n| match n {
        TensorLang::Along([op, _]) => op_of(egraph, *op)
            .is_some_and(|k| egraph.analysis.tables.ops[k as usize].is::<Softmax>()),
        _ => false,
    });
    softmax
        && is_nan_of(egraph, *c, *p)
        && egraph[*zero].data.is_all_zero()
        && egraph[*zero].data.finite
}

/// Whether e-class `condition` holds `isnan(p)`.
fn is_nan_of(egraph: &SlimGraph, condition: Id, p: Id) -> bool {
    egraph[condition].nodes.iter().any(|n| match n {
        TensorLang::Map([op, x]) => {
            egraph.find(*x) == egraph.find(p)
                && op_of(egraph, *op).is_some_and(|k| {
                    ops::is_nan_test(egraph.analysis.tables.ops[k as usize].as_op())
                })
        }
        _ => false,
    })
}

/// The operand's sums-to-one axes that an axis op carries through unchanged.
fn carried_axes(egraph: &SlimGraph, node: &TensorLang, op: &dyn TypedOp) -> TVec<usize> {
    let Some(axis_op) = op.downcast_ref::<AxisOp>() else {
        return tvec!();
    };
    egraph[node.operands()[0]]
        .data
        .sums_to_one
        .iter()
        .filter_map(|a| axis_op.transform_axis(*a))
        .collect()
}

/// A reshape states the sizes it reshapes; tract's typing trusts them, so a reshape applied to
/// other sizes (a rule restricting a tensor under it) is refused here.
fn check_reshape(op: &dyn TypedOp, inputs: &[TypedFact]) -> TractResult<()> {
    if let Some(AxisOp::Reshape(at, from, _)) = op.downcast_ref::<AxisOp>() {
        let input = &inputs.first().context("reshape without input")?.shape;
        let got: TVec<TDim> = input.iter().skip(*at).take(from.len()).cloned().collect();
        ensure!(
            got.len() == from.len() && got.iter().zip(from).all(|(a, b)| a == b),
            "reshape of {from:?} applied to {got:?}"
        );
    }
    Ok(())
}

impl Analysis<TensorLang> for SlimAnalysis {
    type Data = TensorInfo;

    fn make(egraph: &mut SlimGraph, enode: &TensorLang, _id: Id) -> TensorInfo {
        // Appliers check nodes with `infer` before adding them, so an error here means a lowering
        // bug; an untyped class is never extracted.
        infer(egraph, enode).unwrap_or_else(|_| TensorInfo::parameter())
    }

    fn merge(&mut self, to: &mut TensorInfo, from: TensorInfo) -> DidMerge {
        let mut to_changed = false;
        let mut from_differs = false;
        if to.fact.is_none() && from.fact.is_some() {
            to.fact = from.fact.clone();
            to_changed = true;
        }
        if to.zeros.len() < from.zeros.len() {
            to.zeros.resize(from.zeros.len(), vec![]);
        }
        for (axis, z) in from.zeros.iter().enumerate() {
            let merged = union(&to.zeros[axis], z);
            if merged.len() != to.zeros[axis].len() {
                to.zeros[axis] = merged.clone();
                to_changed = true;
            }
            if merged.len() != z.len() {
                from_differs = true;
            }
        }
        if known::merge(&mut to.known, &from.known) {
            to_changed = true;
        }
        if to.known.iter().map(Vec::len).sum::<usize>()
            != from.known.iter().map(Vec::len).sum::<usize>()
        {
            from_differs = true;
        }
        if from.finite && !to.finite {
            to.finite = true;
            to_changed = true;
        }
        if to.finite && !from.finite {
            from_differs = true;
        }
        for axis in &from.sums_to_one {
            if !to.sums_to_one.contains(axis) {
                to.sums_to_one.push(*axis);
                to_changed = true;
            }
        }
        if to.sums_to_one.len() != from.sums_to_one.len() {
            from_differs = true;
        }
        DidMerge(to_changed, from_differs)
    }
}
