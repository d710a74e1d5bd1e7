//! The guard library: the computations and conditions rule files may call.
//!
//! A rule clause `let ?a ?b = name(args)` or `if name(args)` calls one of the functions below.
//! Arguments are pattern variables (e-classes) or integer literals. A function answers with zero
//! or more *alternatives*, each binding the clause's output variables: no alternative means the
//! rule does not fire, several mean it fires once per alternative. A condition (`if`) binds
//! nothing and answers one empty alternative when it holds.
//!
//! Every function is exact: it only states facts about the e-graph (shapes, constant data, op
//! parameters) or builds parameters (axis numbers, index sets, sliced constants).
//!
//! Each guard declares the [`Sort`] of every argument and binding, and the parser checks them
//! against the sorts the rule's pattern gives its variables: a rule passing a tensor where an op
//! is expected is a parse error, not a rule that never fires.
//!
//! The guards, generated from [`GUARDS`] (`rules/GUARDS.md`, which a test keeps equal to it):
//!
#![doc = include_str!("../../../rules/GUARDS.md")]

use crate::egraph::analysis::{const_of, infer, num_of, op_of, set_key_of, set_of, SlimGraph};
use crate::egraph::known;
use crate::egraph::lang::{Key, Sort, TensorLang};
use crate::model::ops;
use egg::Id;
use std::sync::Arc;
use tract_core::internal::*;
use tract_core::ops::array::{MultiBroadcastTo, TypedConcat};
use tract_core::ops::einsum::EinSum;
use tract_core::ops::nn::Softmax;
use Sort as S;

mod conv;

/// An argument of a guard call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// An e-class (a bound pattern variable).
    Class(Id),
    /// An integer literal.
    Int(i64),
}

/// Alternatives a guard answers: each is one binding of the clause's outputs.
pub type Alternatives = Vec<Vec<Id>>;

/// One function of the library.
pub struct Guard {
    /// The name rules call it by.
    pub name: &'static str,
    /// Arguments: a name for messages and docs (`?x`, or `K` for an integer literal), and the
    /// sort each must have.
    pub params: &'static [(&'static str, Sort)],
    /// The sort of each e-class an alternative binds, in order.
    pub binds: &'static [Sort],
    /// What it answers.
    pub doc: &'static str,
    /// The computation.
    pub run: fn(&mut SlimGraph, &[Arg]) -> Alternatives,
}

/// Every guard a rule may call: the one list that the rules README's table, these docs and
/// the parser's checks come from.
pub static GUARDS: &[Guard] = &[
    Guard {
        name: "zero-contraction",
        params: &[("?op", S::Op), ("?x", S::Tensor), ("?y", S::Tensor)],
        binds: &[S::Axis, S::Axis, S::Set],
        doc: "for each axis the EinSum contracts, the slices where x or y is all zero are droppable: binds the axes and the non-zero slices (only when some can go)",
        run: zero_contraction,
    },
    Guard {
        name: "constant-contraction",
        params: &[("?op", S::Op), ("?x", S::Tensor), ("?y", S::Tensor)],
        binds: &[S::Axis, S::Axis, S::Set, S::Tensor, S::Op],
        doc: "for each axis the EinSum contracts where one operand has known constant slices (see `known.rs`) and the other is a constant: the slices to keep, the dropped slices' contribution (their EinSum, computed) and the addition op to add it with",
        run: constant_contraction,
    },
    Guard {
        name: "constant-sum",
        params: &[("?a", S::Tensor), ("?b", S::Tensor)],
        binds: &[S::Tensor],
        doc: "the sum of two constants of one rank",
        run: constant_sum,
    },
    Guard {
        name: "einsum-axis",
        params: &[("?op", S::Op), ("?a", S::Axis), ("K", S::Int), ("?t", S::Tensor)],
        binds: &[S::Axis],
        doc: "the axis of operand K (0 or 1, tensor ?t) that carries output axis ?a at full size",
        run: einsum_axis,
    },
    Guard {
        name: "einsum-lacks",
        params: &[("?op", S::Op), ("?a", S::Axis), ("K", S::Int), ("?t", S::Tensor)],
        binds: &[],
        doc: "operand K does not carry output axis ?a, or only with size 1 (broadcast)",
        run: einsum_lacks,
    },
    Guard {
        name: "all-zero",
        params: &[("?t", S::Tensor)],
        binds: &[],
        doc: "tensor ?t is known to be all zero (every slice of some axis is)",
        run: all_zero,
    },
    Guard {
        name: "addition",
        params: &[("?op", S::Op)],
        binds: &[],
        doc: "?op is element-wise addition",
        run: addition,
    },
    Guard {
        name: "broadcasts-into",
        params: &[("?t", S::Tensor), ("?u", S::Tensor)],
        binds: &[],
        doc: "?t has ?u's rank and each of its axes has ?u's size or 1, so ?t ⊕ ?u has ?u's shape",
        run: broadcasts_into,
    },
    Guard {
        name: "full",
        params: &[("?t", S::Tensor), ("?a", S::Axis)],
        binds: &[],
        doc: "tensor ?t has size other than 1 on axis ?a",
        run: full,
    },
    Guard {
        name: "broadcast",
        params: &[("?t", S::Tensor), ("?a", S::Axis)],
        binds: &[],
        doc: "tensor ?t has size 1 on axis ?a",
        run: broadcast,
    },
    Guard {
        name: "free-axis",
        params: &[("?op", S::Op), ("?a", S::Axis)],
        binds: &[],
        doc: "the `along` op does not work along axis ?a",
        run: free_axis,
    },
    Guard {
        name: "pool-channels",
        params: &[("?op", S::Op), ("?a", S::Axis), ("?i", S::Set)],
        binds: &[S::Op],
        doc: "for a max or average pooling ?op whose channel axis is ?a, the same pooling of as many channels as ?i keeps",
        run: pool_channels,
    },
    Guard {
        name: "axis-source",
        params: &[("?op", S::Op), ("?a", S::Axis)],
        binds: &[S::Axis],
        doc: "the input axis the axis op moves to output axis ?a unchanged",
        run: axis_source,
    },
    Guard {
        name: "reshape-groups",
        params: &[("?op", S::Op), ("?a", S::Axis), ("?i", S::Set)],
        binds: &[S::Axis, S::Set, S::Op],
        doc: "for a reshape that splits one axis into several (channels → heads × head_dim, heads → KV group × head within group) or merges them back, and ?a one of its split (or its merged) output axes: the input axis, the input slices restriction ?i needs, and the reshape of the restricted input (a merge only restricts to whole groups)",
        run: reshape_groups,
    },
    Guard {
        name: "slice-const",
        params: &[("?c", S::Tensor), ("?a", S::Axis), ("?i", S::Set)],
        binds: &[S::Tensor],
        doc: "the constant ?c restricted to slices ?i of axis ?a",
        run: slice_const,
    },
    Guard {
        name: "compose",
        params: &[("?outer", S::Set), ("?inner", S::Set)],
        binds: &[S::Set],
        doc: "keeping ?inner then ?outer keeps this set of the original",
        run: compose,
    },
    Guard {
        name: "canonical-axis-op",
        params: &[("?op", S::Op)],
        binds: &[S::Op],
        doc: "the simpler axis op a reshape amounts to (adding, removing or moving a size-1 axis), when it is one",
        run: canonical_axis_op,
    },
    Guard {
        name: "inverse-axis-ops",
        params: &[("?inner", S::Op), ("?outer", S::Op)],
        binds: &[],
        doc: "the axis op ?outer undoes ?inner (adds back the axis it removed, moves it back, reshapes back)",
        run: inverse_axis_ops,
    },
    Guard {
        name: "restricted",
        params: &[("?t", S::Tensor), ("?a", S::Axis), ("?i", S::Set)],
        binds: &[S::Tensor],
        doc: "`(keep ?a ?i ?t)` when ?t has full size on axis ?a; ?t itself when it is broadcast there (size 1) or a scalar",
        run: restricted,
    },
    Guard {
        name: "concat-other-axis",
        params: &[("?op", S::Op), ("?a", S::Axis)],
        binds: &[],
        doc: "?op concatenates along an axis other than ?a",
        run: concat_other_axis,
    },
    Guard {
        name: "concat-parts",
        params: &[("?op", S::Op), ("?a", S::Axis), ("?i", S::Set), ("?x", S::Tensor)],
        binds: &[S::Set, S::Set],
        doc: "for ?op concatenating ?x and another tensor along ?a, and a strictly increasing restriction ?i of that axis taking slices of both: the slices of ?x and of the other it takes",
        run: concat_parts,
    },
    Guard {
        name: "concat-part",
        params: &[("?op", S::Op), ("?a", S::Axis), ("?i", S::Set), ("?x", S::Tensor), ("K", S::Int)],
        binds: &[S::Set],
        doc: "the same restriction taking slices of operand K (0: ?x, 1: the other) only: those slices within operand K",
        run: concat_part,
    },
    Guard {
        name: "broadcast-restricted",
        params: &[("?op", S::Op), ("?a", S::Axis), ("?i", S::Set)],
        binds: &[S::Op],
        doc: "the broadcast ?op with its target size on axis ?a reduced to the size of ?i",
        run: broadcast_restricted,
    },
    Guard {
        name: "merged-zero-heads",
        params: &[("?op", S::Op), ("?x", S::Tensor), ("?w", S::Tensor), ("K", S::Int)],
        binds: &[S::Op, S::Op, S::Tensor],
        doc: "for two contracted letters adjacent in both operands (KV group × head within group) whose merged slices of the constant ?w (operand K) are zero where neither axis alone shows it: the EinSum over the merged letter, the reshape merging them in ?x, and ?w reshaped",
        run: merged_zero_heads,
    },
    Guard {
        name: "unfolded-split-operand",
        params: &[("?merge", S::Op), ("?op", S::Op), ("?split", S::Op), ("?p", S::Tensor), ("?y", S::Tensor), ("K", S::Int)],
        binds: &[S::Op, S::Op, S::Op, S::Op],
        doc: "for an EinSum whose operand K is attention probabilities ?p split in two axes (`?split`) that `?merge` merges again at the output, and whose other operand ?y has the outer axis only: the EinSum over the whole axis, and the add-axis, broadcast and merge that repeat ?y along the inner one",
        run: unfolded_split_operand,
    },
    Guard {
        name: "repeat-groups",
        params: &[("?merge", S::Op), ("?bc", S::Op), ("?x", S::Tensor), ("?a", S::Axis), ("?i", S::Set)],
        binds: &[S::Set, S::Op, S::Op],
        doc: "for `(axis ?merge (bcast ?bc ?x))` repeating each slice of ?x's axis ?a over a new inner axis then merging both (grouped-query `repeat_kv`), and a restriction ?i keeping the same number of slices of every group it touches: the groups, and the smaller broadcast and merge",
        run: repeat_groups,
    },
    Guard {
        name: "repeat-picks",
        params: &[("?merge", S::Op), ("?bc", S::Op), ("?x", S::Tensor), ("?a", S::Axis), ("?i", S::Set)],
        binds: &[S::Set, S::Op],
        doc: "the same repetition restricted to different numbers of slices per group (or one per group): the group of each kept slice (a selection with repeats) and the op removing the inner axis",
        run: repeat_picks,
    },
    Guard {
        name: "conv-output",
        params: &[("?op", S::Op), ("?a", S::Axis), ("?i", S::Set)],
        binds: &[S::Op],
        doc: "the convolution ?op computing only output channels ?i (a strictly increasing set of its output channel axis ?a), when they are the same number in every group",
        run: conv::conv_output,
    },
    Guard {
        name: "conv-groups",
        params: &[("?op", S::Op), ("?a", S::Axis), ("?i", S::Set)],
        binds: &[S::Axis, S::Set, S::Set, S::Op, S::Set],
        doc: "for a grouped convolution ?op restricted to output channels ?i that leave some groups untouched: the data's channel axis, the input and the output channels of the groups ?i touches, the convolution of those groups alone, and ?i within their outputs",
        run: conv::conv_groups,
    },
    Guard {
        name: "conv-zero-inputs",
        params: &[("?op", S::Op), ("?x", S::Tensor), ("?k", S::Tensor)],
        binds: &[S::Axis, S::Set, S::Set, S::Op],
        doc: "positions within a group whose input channel contributes nothing in every group of the convolution ?op (kernel ?k's input slice zero against finite data ?x, or ?x's channel zero against a finite kernel): the data's channel axis, the data channels and kernel positions to keep, and the smaller convolution (only when some go and some stay)",
        run: conv::conv_zero_inputs,
    },
    Guard {
        name: "conv-constant-inputs",
        params: &[("?op", S::Op), ("?x", S::Tensor), ("?k", S::Tensor), ("?b", S::Tensor)],
        binds: &[S::Axis, S::Set, S::Op, S::Tensor],
        doc: "for a convolution ?op of one group whose windows never reach padding, with a constant kernel ?k and bias ?b, the data channels of ?x known to hold one constant everywhere: the data's channel axis, the other channels (kept), the smaller convolution, and the bias plus the constants' contribution (each constant times the sum of its kernel slice's taps)",
        run: conv::conv_constant_inputs,
    },
    Guard {
        name: "everything",
        params: &[("?i", S::Set), ("?t", S::Tensor), ("?a", S::Axis)],
        binds: &[],
        doc: "set ?i holds every slice of axis ?a of ?t",
        run: everything,
    },
];

/// The guard table of `rules/GUARDS.md`: every guard a rule may call, with the sorts of its
/// arguments and bindings, and what it answers.
pub fn guards_markdown() -> String {
    let mut md = String::from("| guard | arguments | binds | meaning |\n|---|---|---|---|\n");
    for g in GUARDS {
        let params: Vec<String> = g.params.iter().map(|(n, s)| format!("`{n}` {s}")).collect();
        let binds: Vec<String> = g.binds.iter().map(Sort::to_string).collect();
        let binds = if binds.is_empty() {
            "—".to_string()
        } else {
            binds.join(", ")
        };
        md += &format!(
            "| `{}` | {} | {binds} | {} |\n",
            g.name,
            params.join(", "),
            g.doc
        );
    }
    md
}

/// Looks a guard up by name.
pub fn guard(name: &str) -> Option<&'static Guard> {
    GUARDS.iter().find(|g| g.name == name)
}

fn holds(condition: bool) -> Alternatives {
    if condition {
        vec![vec![]]
    } else {
        vec![]
    }
}

fn class(arg: Arg) -> Option<Id> {
    match arg {
        Arg::Class(id) => Some(id),
        Arg::Int(_) => None,
    }
}

/// An integer argument: a literal, or a class holding a number.
fn int(egraph: &SlimGraph, arg: Arg) -> Option<i64> {
    match arg {
        Arg::Int(v) => Some(v),
        Arg::Class(id) => num_of(egraph, id),
    }
}

fn axis(egraph: &SlimGraph, arg: Arg) -> Option<usize> {
    int(egraph, arg).and_then(|v| usize::try_from(v).ok())
}

fn einsum(egraph: &SlimGraph, arg: Arg) -> Option<&EinSum> {
    let key = op_of(egraph, class(arg)?)?;
    egraph.analysis.tables.ops[key as usize].downcast_ref::<EinSum>()
}

fn dim(egraph: &SlimGraph, tensor: Arg, axis_arg: Arg) -> Option<TDim> {
    let axis = axis(egraph, axis_arg)?;
    egraph[class(tensor)?]
        .data
        .fact
        .as_ref()?
        .shape
        .get(axis)
        .cloned()
}

fn add_num(egraph: &mut SlimGraph, v: usize) -> Id {
    egraph.add(TensorLang::Num(v as i64))
}

fn add_set(egraph: &mut SlimGraph, set: Vec<usize>) -> Id {
    let key = egraph.analysis.tables.intern_set(set);
    egraph.add(TensorLang::Key(key))
}

/// The letters an EinSum contracts between its two operands, one axis in each.
fn contracted_pairs(op: &EinSum) -> Vec<Axis> {
    op.axes
        .iter_all_axes()
        .filter(|l| l.outputs[0].is_empty() && l.inputs[0].len() == 1 && l.inputs[1].len() == 1)
        .cloned()
        .collect()
}

fn zero_contraction(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let (Some(op), Some(x), Some(y)) = (einsum(egraph, args[0]), class(args[1]), class(args[2]))
    else {
        return vec![];
    };
    let mut found = vec![];
    for letter in contracted_pairs(op) {
        let (ax, ay) = (letter.inputs[0][0], letter.inputs[1][0]);
        let (xi, yi) = (&egraph[x].data, &egraph[y].data);
        let (Some(n), Some(m)) = (xi.dim(ax), yi.dim(ay)) else {
            continue;
        };
        if n != m {
            continue;
        }
        // A zero slice contributes nothing only against finite values (0 · NaN is NaN).
        let (x_zeros, y_zeros) = (
            if yi.finite { xi.zeros_on(ax) } else { &[] },
            if xi.finite { yi.zeros_on(ay) } else { &[] },
        );
        let kept: Vec<usize> = (0..n)
            .filter(|i| x_zeros.binary_search(i).is_err() && y_zeros.binary_search(i).is_err())
            .collect();
        // Nothing kept would leave an empty tensor: an all-zero product is blocks.rules' job.
        if kept.len() < n && !kept.is_empty() {
            found.push((ax, ay, kept));
        }
    }
    found
        .into_iter()
        .map(|(ax, ay, kept)| {
            vec![
                add_num(egraph, ax),
                add_num(egraph, ay),
                add_set(egraph, kept),
            ]
        })
        .collect()
}

/// Slices of operand `slot`'s contracted axis `letter` that hold known constants, when the other
/// operand is a constant: the slices kept, and what the others contribute to the output (their
/// EinSum, computed now). At least one slice stays, so no tensor becomes empty.
fn fold_known_slices(
    egraph: &SlimGraph,
    op: &EinSum,
    operands: [Id; 2],
    letter: &Axis,
    slot: usize,
) -> Option<(Vec<usize>, Tensor, String)> {
    let other = 1 - slot;
    let weights = const_of(egraph, operands[other])?;
    let (axis, weights_axis) = (letter.inputs[slot][0], letter.inputs[other][0]);
    let n = egraph[operands[slot]].data.dim(axis)?;
    let mut constant = known::nonzero_known(egraph, operands[slot], axis);
    let mut kept: Vec<usize> = (0..n)
        .filter(|i| constant.binary_search_by_key(i, |(j, _)| *j).is_err())
        .collect();
    if kept.is_empty() && !constant.is_empty() {
        kept.push(constant.remove(0).0);
    }
    if constant.is_empty() {
        return None;
    }
    let dropped: Vec<usize> = constant.iter().map(|(i, _)| *i).collect();
    let values: Vec<Arc<Tensor>> = constant.into_iter().map(|(_, v)| v).collect();
    let tables = &egraph.analysis.tables;
    let weight_slices = tables.consts.select(weights, weights_axis, &dropped).ok()?;
    let folded = along_contracted(op, slot, known::stack(&values, axis)?, &weight_slices)?;
    let mut inputs = [folded, weight_slices];
    if slot == 1 {
        inputs.reverse();
    }
    let inputs: TVec<TValue> = inputs.into_iter().map(|t| t.into_tvalue()).collect();
    let contribution = op.eval_out_of_plan(inputs).ok()??.remove(0).into_tensor();
    let name = format!("{}.folded", tables.consts.name(weights));
    Some((kept, contribution, name))
}

/// A known value (size 1 where it does not vary) broadcast to the weight's size along every
/// other axis the EinSum contracts, since the product sums over them: an EinSum does not
/// broadcast a contracted axis.
fn along_contracted(op: &EinSum, slot: usize, value: Tensor, weight: &Tensor) -> Option<Tensor> {
    let mut shape = value.shape().to_vec();
    for letter in op.axes.iter_all_axes().filter(|l| l.outputs[0].is_empty()) {
        let (&[a], &[w]) = (
            letter.inputs[slot].as_slice(),
            letter.inputs[1 - slot].as_slice(),
        ) else {
            continue;
        };
        if shape[a] == 1 {
            shape[a] = weight.shape()[w];
        }
    }
    value.broadcast_to_shape(&shape).ok()
}

fn constant_contraction(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let (Some(op), Some(x), Some(y)) = (einsum(egraph, args[0]), class(args[1]), class(args[2]))
    else {
        return vec![];
    };
    let op = op.clone();
    let mut found = vec![];
    for letter in contracted_pairs(&op) {
        for slot in [0, 1] {
            if let Some(fold) = fold_known_slices(egraph, &op, [x, y], &letter, slot) {
                found.push((letter.inputs[0][0], letter.inputs[1][0], fold));
            }
        }
    }
    found
        .into_iter()
        .filter_map(|(ax, ay, (kept, contribution, name))| {
            let contribution = egraph
                .analysis
                .tables
                .consts
                .computed(contribution, name)
                .ok()?;
            let addition = egraph.analysis.tables.addition_op();
            Some(vec![
                add_num(egraph, ax),
                add_num(egraph, ay),
                add_set(egraph, kept),
                egraph.add(TensorLang::Key(Key::Const(contribution))),
                egraph.add(TensorLang::Key(addition)),
            ])
        })
        .collect()
}

fn constant_sum(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let sum = (|| {
        let a = const_of(egraph, class(args[0])?)?;
        let b = const_of(egraph, class(args[1])?)?;
        let tables = &egraph.analysis.tables;
        let (a, b, name) = (
            tables.consts.tensor(a).ok()?,
            tables.consts.tensor(b).ok()?,
            tables.consts.name(b).to_string(),
        );
        if a.rank() != b.rank() {
            return None;
        }
        let inputs = tvec!(a.into_tvalue(), b.into_tvalue());
        let add = tract_core::ops::math::add();
        Some((
            add.eval_out_of_plan(inputs).ok()??.remove(0).into_tensor(),
            name,
        ))
    })();
    let Some((sum, name)) = sum else {
        return vec![];
    };
    match egraph.analysis.tables.consts.computed(sum, name) {
        Ok(k) => vec![vec![egraph.add(TensorLang::Key(Key::Const(k)))]],
        Err(_) => vec![],
    }
}

/// The operand-`slot` axis of the letter at output axis `a`, if any.
fn operand_axis(op: &EinSum, a: usize, slot: usize) -> Option<usize> {
    let letter = op.axes.axis((InOut::Out(0), a)).ok()?;
    letter.inputs.get(slot)?.first().copied()
}

fn einsum_axis(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let found = (|| {
        let op = einsum(egraph, args[0])?;
        let operand_ax = operand_axis(op, axis(egraph, args[1])?, axis(egraph, args[2])?)?;
        let size = dim(egraph, args[3], Arg::Int(operand_ax as i64))?;
        (size != TDim::Val(1)).then_some(operand_ax)
    })();
    found
        .map(|ax| vec![vec![add_num(egraph, ax)]])
        .unwrap_or_default()
}

fn einsum_lacks(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let lacks = (|| {
        let op = einsum(egraph, args[0])?;
        match operand_axis(op, axis(egraph, args[1])?, axis(egraph, args[2])?) {
            None => Some(true),
            Some(ax) => Some(dim(egraph, args[3], Arg::Int(ax as i64))? == TDim::Val(1)),
        }
    })();
    holds(lacks == Some(true))
}

fn all_zero(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    holds(class(args[0]).is_some_and(|t| egraph[t].data.is_all_zero()))
}

fn addition(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let is_add = (|| {
        let key = op_of(egraph, class(args[0])?)?;
        Some(ops::is_add(
            egraph.analysis.tables.ops[key as usize].as_op(),
        ))
    })();
    holds(is_add == Some(true))
}

fn broadcasts_into(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let fits = (|| {
        let t = egraph[class(args[0])?].data.fact.as_ref()?;
        let u = egraph[class(args[1])?].data.fact.as_ref()?;
        Some(
            t.rank() == u.rank()
                && t.shape
                    .iter()
                    .zip(u.shape.iter())
                    .all(|(a, b)| a == b || a.is_one()),
        )
    })();
    holds(fits == Some(true))
}

fn full(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    holds(dim(egraph, args[0], args[1]).is_some_and(|d| d != TDim::Val(1)))
}

fn broadcast(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    holds(dim(egraph, args[0], args[1]) == Some(TDim::Val(1)))
}

fn free_axis(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let free = (|| {
        let key = op_of(egraph, class(args[0])?)?;
        let op = egraph.analysis.tables.ops[key as usize].as_op();
        let a = axis(egraph, args[1])?;
        Some(
            ops::is_along(op)
                && !ops::along_axes(op).contains(&a)
                && ops::stated_channel_axis(op) != Some(a),
        )
    })();
    holds(free == Some(true))
}

fn pool_channels(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let found = (|| {
        let key = op_of(egraph, class(args[0])?)?;
        let op = egraph.analysis.tables.ops[key as usize].as_op();
        let kept = set_of(egraph, class(args[2])?)?;
        (ops::stated_channel_axis(op)? == axis(egraph, args[1])?)
            .then(|| ops::with_channels(op, kept.len()))?
    })();
    found
        .map(|op| vec![vec![add_op(egraph, op, Some(args[0]))]])
        .unwrap_or_default()
}

fn axis_source(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let source = (|| {
        let key = op_of(egraph, class(args[0])?)?;
        let op = egraph.analysis.tables.ops[key as usize].downcast_ref::<AxisOp>()?;
        let a = axis(egraph, args[1])?;
        // A reshape states the sizes it reshapes, so only axes outside them are carried (tract
        // would see `[3] → [1, 3]` as adding an axis, but the op keeps saying 3).
        if let AxisOp::Reshape(at, _, to) = op {
            if a >= *at && a < at + to.len() {
                return None;
            }
        }
        op.recip().transform_axis(a)
    })();
    source
        .map(|ax| vec![vec![add_num(egraph, ax)]])
        .unwrap_or_default()
}

fn reshape_groups(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let found = (|| {
        let key = op_of(egraph, class(args[0])?)?;
        let a = axis(egraph, args[1])?;
        let set = set_key_of(egraph, class(args[2])?)?;
        let tables = &mut egraph.analysis.tables;
        let Some(AxisOp::Reshape(at, from, to)) = tables.ops[key as usize].downcast_ref() else {
            return None;
        };
        let at = *at;
        let position = a.checked_sub(at)?;
        let (input_set, from, to) =
            restrict_reshape(from, to, position, &tables.sets[set as usize])?;
        let op = tables.derived_op(key, a, set, |_, _| {
            Some(Box::new(AxisOp::Reshape(at, from, to)))
        })?;
        Some((at, input_set, op))
    })();
    let Some((a, input_set, op)) = found else {
        return vec![];
    };
    vec![vec![
        add_num(egraph, a),
        add_set(egraph, input_set),
        egraph.add(TensorLang::Key(op)),
    ]]
}

/// A reshape of one axis into several (`from = [n]`, `to = [outer.., size, inner..]`),
/// restricted to `kept` slices of its output's reshaped axis at `position`, or back (`from =
/// [groups, ...]`, `to = [n]`) restricted to `kept` slices of its output: the input slices
/// needed and the restricted reshape's `from` and `to`. A split keeps, for every outer index,
/// the kept blocks of inner elements, in order (query heads at the same position in every KV
/// group are a restriction of the inner axis of KV group × head within group); a merge only
/// restricts to whole groups. `None` for any other reshape.
pub fn restrict_reshape(
    from: &[TDim],
    to: &[TDim],
    position: usize,
    kept: &[usize],
) -> Option<(Vec<usize>, TVec<TDim>, TVec<TDim>)> {
    if kept.is_empty() || position >= to.len() {
        return None;
    }
    let block = |dims: &[TDim]| -> Option<usize> {
        dims.iter()
            .map(|d| d.to_usize().ok())
            .product::<Option<usize>>()
    };
    if from.len() == 1 && to.len() >= 2 {
        let outer = block(&to[..position])?;
        let size = to[position].to_usize().ok()?;
        let inner = block(&to[position + 1..])?;
        let needed = (0..outer)
            .flat_map(|o| kept.iter().map(move |k| (o * size + k) * inner))
            .flat_map(|start| start..start + inner)
            .collect();
        let mut restricted_to: TVec<TDim> = to.into();
        restricted_to[position] = kept.len().into();
        return Some((
            needed,
            tvec!((outer * kept.len() * inner).into()),
            restricted_to,
        ));
    }
    if to.len() == 1 && from.len() >= 2 {
        let size = block(&from[1..])?;
        if size == 0 || !kept.len().is_multiple_of(size) {
            return None;
        }
        let groups: Vec<usize> = kept
            .chunks(size)
            .map(|chunk| {
                let g = chunk[0] / size;
                let whole = chunk.iter().enumerate().all(|(r, &c)| c == g * size + r);
                whole.then_some(g)
            })
            .collect::<Option<_>>()?;
        let mut restricted_from: TVec<TDim> = tvec!(groups.len().into());
        restricted_from.extend(from[1..].iter().cloned());
        return Some((groups, restricted_from, tvec!(kept.len().into())));
    }
    None
}

fn slice_const(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let request = (|| {
        let konst = const_of(egraph, class(args[0])?)?;
        let set = set_key_of(egraph, class(args[2])?)?;
        Some((konst, axis(egraph, args[1])?, set))
    })();
    let Some((konst, ax, set)) = request else {
        return vec![];
    };
    match egraph.analysis.tables.sliced_const(konst, ax, set) {
        Ok(key) => vec![vec![egraph.add(TensorLang::Key(key))]],
        Err(_) => vec![],
    }
}

fn compose(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let (Some(outer), Some(inner)) = (class(args[0]), class(args[1])) else {
        return vec![];
    };
    let (Some(outer), Some(inner)) = (set_of(egraph, outer), set_of(egraph, inner)) else {
        return vec![];
    };
    let Some(composed) = outer
        .iter()
        .map(|&p| inner.get(p).copied())
        .collect::<Option<Vec<_>>>()
    else {
        return vec![];
    };
    vec![vec![add_set(egraph, composed)]]
}

fn everything(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let all = (|| {
        let set = set_of(egraph, class(args[0])?)?;
        let n = dim(egraph, args[1], args[2])?.to_usize().ok()?;
        Some(set.len() == n && set.iter().enumerate().all(|(p, &i)| p == i))
    })();
    holds(all == Some(true))
}

fn restricted(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let (Some(t), Some(a), Some(set)) = (class(args[0]), axis(egraph, args[1]), class(args[2]))
    else {
        return vec![];
    };
    let scalar = egraph[t].data.fact.as_ref().is_some_and(|f| f.rank() == 0);
    match dim(egraph, args[0], args[1]) {
        _ if scalar => vec![vec![t]],
        Some(d) if d.is_one() => vec![vec![t]],
        Some(_) => {
            let axis = add_num(egraph, a);
            let keep = TensorLang::Keep([axis, set, t]);
            if egraph.lookup(keep.clone()).is_none() && infer(egraph, &keep).is_err() {
                return vec![];
            }
            vec![vec![egraph.add(keep)]]
        }
        None => vec![],
    }
}

fn concat_other_axis(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let other = (|| {
        let key = op_of(egraph, class(args[0])?)?;
        let concat = egraph.analysis.tables.ops[key as usize].downcast_ref::<TypedConcat>()?;
        Some(concat.axis != axis(egraph, args[1])?)
    })();
    holds(other == Some(true))
}

/// A strictly increasing restriction `?i` of the axis `?op` concatenates `?x` and another
/// tensor along: its slices within `?x`, and within the other.
fn concat_split(egraph: &SlimGraph, args: &[Arg]) -> Option<(Vec<usize>, Vec<usize>)> {
    let key = op_of(egraph, class(args[0])?)?;
    let concat = egraph.analysis.tables.ops[key as usize].downcast_ref::<TypedConcat>()?;
    let a = axis(egraph, args[1])?;
    let kept = set_of(egraph, class(args[2])?)?;
    let left = egraph[class(args[3])?].data.dim(a)?;
    if concat.axis != a || !kept.windows(2).all(|w| w[0] < w[1]) {
        return None;
    }
    let (x, y): (Vec<usize>, Vec<usize>) = kept.iter().partition(|&&i| i < left);
    Some((x, y.iter().map(|i| i - left).collect()))
}

fn concat_parts(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    match concat_split(egraph, args) {
        Some((x, y)) if !x.is_empty() && !y.is_empty() => {
            vec![vec![add_set(egraph, x), add_set(egraph, y)]]
        }
        _ => vec![],
    }
}

fn concat_part(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let (Some((x, y)), Some(slot)) = (concat_split(egraph, args), int(egraph, args[4])) else {
        return vec![];
    };
    match slot {
        0 if y.is_empty() => vec![vec![add_set(egraph, x)]],
        1 if x.is_empty() => vec![vec![add_set(egraph, y)]],
        _ => vec![],
    }
}

fn broadcast_restricted(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let op = (|| {
        let key = op_of(egraph, class(args[0])?)?;
        let a = axis(egraph, args[1])?;
        let set = set_key_of(egraph, class(args[2])?)?;
        egraph.analysis.tables.derived_op(key, a, set, |op, kept| {
            let broadcast = op.downcast_ref::<MultiBroadcastTo>()?;
            let mut shape: TVec<TDim> = broadcast.shape.iter().cloned().collect();
            *shape.get_mut(a)? = kept.len().into();
            Some(Box::new(MultiBroadcastTo::new(shape.into())))
        })
    })();
    op.map(|k| vec![vec![egraph.add(TensorLang::Key(k))]])
        .unwrap_or_default()
}

/// Adds an op built by a guard, named after the source node of the op in class `like` (so a
/// rebuilt node keeps its source's name).
fn add_op(egraph: &mut SlimGraph, op: Box<dyn TypedOp>, like: Option<Arg>) -> Id {
    let name = like
        .and_then(class)
        .and_then(|c| op_of(egraph, c))
        .map(|k| egraph.analysis.tables.op_names[k as usize].clone())
        .unwrap_or_default();
    let key = egraph.analysis.tables.intern_op(op, &name);
    egraph.add(TensorLang::Key(key))
}

/// Contracted letters `(outer, inner)` adjacent in this order in both operands, with the outer
/// one's position in each.
fn adjacent_contracted(op: &EinSum) -> Vec<(char, char, [usize; 2])> {
    let pairs = contracted_pairs(op);
    let mut found = vec![];
    for outer in &pairs {
        for inner in &pairs {
            let (o, i) = (&outer.inputs, &inner.inputs);
            if i[0][0] == o[0][0] + 1 && i[1][0] == o[1][0] + 1 {
                found.push((outer.repr, inner.repr, [o[0][0], o[1][0]]));
            }
        }
    }
    found
}

/// `AxisOp::Reshape` merging `sizes` at `at` into one axis.
fn merge_op(at: usize, sizes: &[usize]) -> AxisOp {
    let from: TVec<TDim> = sizes.iter().map(|&d| d.into()).collect();
    AxisOp::Reshape(at, from, tvec!(sizes.iter().product::<usize>().into()))
}

fn merged_zero_heads(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let (Some(op), Some(x), Some(w), Some(slot)) = (
        einsum(egraph, args[0]).cloned(),
        class(args[1]),
        class(args[2]),
        axis(egraph, args[3]),
    ) else {
        return vec![];
    };
    let Some(konst) = const_of(egraph, w) else {
        return vec![];
    };
    let mut found = vec![];
    // Heads split in KV group × head within group leave the head size contracted besides them;
    // a pair that is all the contraction (heads × head size) is channels, not heads.
    if contracted_pairs(&op).len() < 3 {
        return vec![];
    }
    for (_, inner, positions) in adjacent_contracted(&op) {
        let (at_w, at_x) = (positions[slot.min(1)], positions[1 - slot.min(1)]);
        let Some(merged) = merged_weight(egraph, konst, at_w) else {
            continue;
        };
        let sizes = [merged.sizes[0], merged.sizes[1]];
        let fits = (0..2).all(|k| egraph[x].data.dim(at_x + k) == Some(sizes[k]));
        if !fits || !merged.reveals_zeros {
            continue;
        }
        let Ok(axes) = op.axes.remove_axis(inner) else {
            continue;
        };
        let name = egraph.analysis.tables.consts.name(konst).to_string();
        let Ok(w2) = egraph
            .analysis
            .tables
            .consts
            .computed(merged.tensor, format!("{name}.merged"))
        else {
            continue;
        };
        let merged_op = EinSum { axes, ..op.clone() };
        found.push(vec![
            add_op(egraph, Box::new(merged_op), Some(args[0])),
            add_op(egraph, Box::new(merge_op(at_x, &sizes)), Some(args[0])),
            egraph.add(TensorLang::Key(Key::Const(w2))),
        ]);
    }
    found
}

/// A constant with two adjacent axes merged, and whether that shows zero slices which neither
/// axis shows alone (some head of some group is zero, not a whole group nor one head of all).
struct MergedWeight {
    tensor: Tensor,
    sizes: [usize; 2],
    reveals_zeros: bool,
}

fn merged_weight(egraph: &SlimGraph, konst: u32, at: usize) -> Option<MergedWeight> {
    let consts = &egraph.analysis.tables.consts;
    let tensor = consts.tensor(konst).ok()?;
    let shape = tensor.shape().to_vec();
    let sizes = [*shape.get(at)?, *shape.get(at + 1)?];
    let mut merged_shape = shape[..at].to_vec();
    merged_shape.push(sizes[0] * sizes[1]);
    merged_shape.extend_from_slice(&shape[at + 2..]);
    let merged = (*tensor).clone().into_shape(&merged_shape).ok()?;
    let zeros = crate::util::slices::zero_slices_of(&merged);
    let per_axis = consts.zeros(konst);
    let implied = |m: &usize| {
        per_axis[at].binary_search(&(m / sizes[1])).is_ok()
            || per_axis[at + 1].binary_search(&(m % sizes[1])).is_ok()
    };
    let reveals_zeros = zeros[at].iter().any(|m| !implied(m));
    Some(MergedWeight {
        tensor: merged,
        sizes,
        reveals_zeros,
    })
}

/// A reshape splitting axis `at` into exactly two.
fn split_of(op: &AxisOp) -> Option<(usize, [usize; 2])> {
    match op {
        AxisOp::Reshape(at, from, to) if from.len() == 1 && to.len() == 2 => {
            Some((*at, [to[0].to_usize().ok()?, to[1].to_usize().ok()?]))
        }
        _ => None,
    }
}

/// A reshape merging exactly two axes at `at`.
fn merge_of(op: &AxisOp) -> Option<(usize, [usize; 2])> {
    match op {
        AxisOp::Reshape(at, from, to) if from.len() == 2 && to.len() == 1 => {
            Some((*at, [from[0].to_usize().ok()?, from[1].to_usize().ok()?]))
        }
        _ => None,
    }
}

fn axis_op(egraph: &SlimGraph, arg: Arg) -> Option<&AxisOp> {
    let key = op_of(egraph, class(arg)?)?;
    egraph.analysis.tables.ops[key as usize].downcast_ref::<AxisOp>()
}

fn unfolded_split_operand(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let built = (|| {
        let (at, sizes) = merge_of(axis_op(egraph, args[0])?)?;
        let op = einsum(egraph, args[1])?.clone();
        let (split_at, split_sizes) = split_of(axis_op(egraph, args[2])?)?;
        let slot = axis(egraph, args[5])?.min(1);
        if split_sizes != sizes {
            return None;
        }
        let outer = op.axes.axis((InOut::Out(0), at)).ok()?;
        let inner = op.axes.axis((InOut::Out(0), at + 1)).ok()?;
        // The split operand carries both letters where it was split; the other, the outer only.
        let split_ok = outer.inputs[slot].as_slice() == [split_at]
            && inner.inputs[slot].as_slice() == [split_at + 1];
        let other = 1 - slot;
        let (&[j], true) = (
            outer.inputs[other].as_slice(),
            inner.inputs[other].is_empty(),
        ) else {
            return None;
        };
        // Only attention probabilities are split that way by tract; repeating the other operand
        // of anything else would just make a larger product.
        if !split_ok || !holds_probabilities(egraph, class(args[3])?, 4) {
            return None;
        }
        let axes = op.axes.remove_axis(inner.repr).ok()?;
        let y = egraph[class(args[4])?].data.fact.clone()?;
        let mut target: TVec<TDim> = y.shape.iter().cloned().collect();
        target.insert(j + 1, sizes[1].into());
        Some((
            EinSum { axes, ..op },
            AxisOp::Add(j + 1),
            MultiBroadcastTo::new(target.into()),
            merge_op(j, &sizes),
        ))
    })();
    let Some((op, add, broadcast, merge)) = built else {
        return vec![];
    };
    vec![vec![
        add_op(egraph, Box::new(op), Some(args[1])),
        add_op(egraph, Box::new(add), Some(args[1])),
        add_op(egraph, Box::new(broadcast), Some(args[1])),
        add_op(egraph, Box::new(merge), Some(args[1])),
    ]]
}

/// A repetition `(axis ?merge (bcast ?bc ?x))` of ?x's axis `a` (G groups) over a new inner
/// axis (R copies), restricted to `kept` slices of the merged axis: G, R and the kept slices'
/// groups, when it is one.
struct Repetition {
    groups: usize,
    copies: usize,
    kept: Arc<Vec<usize>>,
}

impl Repetition {
    fn of(egraph: &SlimGraph, args: &[Arg]) -> Option<Repetition> {
        let (at, [groups, copies]) = merge_of(axis_op(egraph, args[0])?)?;
        let key = op_of(egraph, class(args[1])?)?;
        let broadcast =
            egraph.analysis.tables.ops[key as usize].downcast_ref::<MultiBroadcastTo>()?;
        let x = &egraph[class(args[2])?].data;
        let a = axis(egraph, args[3])?;
        let kept = set_of(egraph, class(args[4])?)?;
        let repeats = a == at
            && x.dim(a) == Some(groups)
            && x.dim(a + 1) == Some(1)
            && broadcast.shape.get(a + 1)?.to_usize().ok() == Some(copies);
        (repeats && !kept.is_empty()).then_some(Repetition {
            groups,
            copies,
            kept,
        })
    }

    /// How many kept slices each group has.
    fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.groups];
        for i in self.kept.iter() {
            counts[i / self.copies] += 1;
        }
        counts
    }
}

fn repeat_groups(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let Some(repetition) = Repetition::of(egraph, args) else {
        return vec![];
    };
    let counts = repetition.counts();
    let touched: Vec<usize> = (0..repetition.groups).filter(|&g| counts[g] > 0).collect();
    let per_group = counts[touched[0]];
    // One slice per group needs no repetition at all: `repeat-picks` selects the groups.
    if per_group < 2 || touched.iter().any(|&g| counts[g] != per_group) {
        return vec![];
    }
    let (Some(a), Some(key)) = (
        axis(egraph, args[3]),
        class(args[1]).and_then(|c| op_of(egraph, c)),
    ) else {
        return vec![];
    };
    let Some(broadcast) =
        egraph.analysis.tables.ops[key as usize].downcast_ref::<MultiBroadcastTo>()
    else {
        return vec![];
    };
    let mut shape: TVec<TDim> = broadcast.shape.iter().cloned().collect();
    shape[a] = touched.len().into();
    shape[a + 1] = per_group.into();
    let groups = add_set(egraph, touched.clone());
    vec![vec![
        groups,
        add_op(
            egraph,
            Box::new(MultiBroadcastTo::new(shape.into())),
            Some(args[1]),
        ),
        add_op(
            egraph,
            Box::new(merge_op(a, &[touched.len(), per_group])),
            Some(args[0]),
        ),
    ]]
}

fn repeat_picks(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let Some(repetition) = Repetition::of(egraph, args) else {
        return vec![];
    };
    let counts = repetition.counts();
    let touched: Vec<&usize> = counts.iter().filter(|c| **c > 0).collect();
    let equal = touched.windows(2).all(|w| w[0] == w[1]);
    if equal && *touched[0] > 1 {
        return vec![];
    }
    let Some(a) = axis(egraph, args[3]) else {
        return vec![];
    };
    let picks: Vec<usize> = repetition
        .kept
        .iter()
        .map(|i| i / repetition.copies)
        .collect();
    vec![vec![
        add_set(egraph, picks),
        add_op(egraph, Box::new(AxisOp::Rm(a + 1)), Some(args[0])),
    ]]
}

fn canonical_axis_op(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let Some(op) = axis_op(egraph, args[0]).cloned() else {
        return vec![];
    };
    let canonical = op.canonical().into_owned();
    if !matches!(op, AxisOp::Reshape(..)) || matches!(canonical, AxisOp::Reshape(..)) {
        return vec![];
    }
    vec![vec![add_op(egraph, Box::new(canonical), Some(args[0]))]]
}

fn inverse_axis_ops(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let inverse = match (axis_op(egraph, args[0]), axis_op(egraph, args[1])) {
        (Some(inner), Some(outer)) => inner.recip().canonical() == outer.canonical(),
        _ => false,
    };
    holds(inverse)
}

/// Whether an e-class holds attention probabilities: a softmax, possibly behind sdpa's NaN guard
/// (`where(isnan(p), 0, p)`, whose last operand is `p`), looked for `depth` guards deep.
fn holds_probabilities(egraph: &SlimGraph, id: Id, depth: usize) -> bool {
    egraph[id].nodes.iter().any(|n| match n {
        TensorLang::Along([op, _]) => op_of(egraph, *op)
            .is_some_and(|k| egraph.analysis.tables.ops[k as usize].is::<Softmax>()),
        TensorLang::Where([_, _, _, p]) if depth > 0 => holds_probabilities(egraph, *p, depth - 1),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_table_is_generated_from_the_registry() {
        let expected = guards_markdown();
        let written = include_str!("../../../rules/GUARDS.md");
        assert!(
            written == expected,
            "rules/GUARDS.md differs from the registry; write this:\n{expected}"
        );
        let readme = include_str!("../../../rules/README.md");
        assert!(
            readme.contains("(GUARDS.md)"),
            "rules/README.md must link GUARDS.md"
        );
    }

    #[test]
    fn guard_names_are_unique() {
        for (i, g) in GUARDS.iter().enumerate() {
            assert!(
                GUARDS[..i].iter().all(|h| h.name != g.name),
                "{} twice",
                g.name
            );
        }
    }

    fn dims(sizes: &[usize]) -> TVec<TDim> {
        sizes.iter().map(|s| (*s).into()).collect()
    }

    #[test]
    fn a_split_restricted_on_its_outer_axis_keeps_whole_blocks() {
        // 6 channels → 3 heads × 2: heads 2 and 0 are channels 4, 5 and 0, 1.
        let (needed, from, to) = restrict_reshape(&dims(&[6]), &dims(&[3, 2]), 0, &[2, 0]).unwrap();
        assert_eq!(needed, vec![4, 5, 0, 1]);
        assert_eq!((from, to), (dims(&[4]), dims(&[2, 2])));
    }

    #[test]
    fn a_split_restricted_on_an_inner_axis_keeps_those_positions_in_every_outer_slice() {
        // 6 query heads → 2 KV groups × 3: position 1 dropped from each group keeps heads 0, 2, 3, 5.
        let (needed, from, to) = restrict_reshape(&dims(&[6]), &dims(&[2, 3]), 1, &[0, 2]).unwrap();
        assert_eq!(needed, vec![0, 2, 3, 5]);
        assert_eq!((from, to), (dims(&[4]), dims(&[2, 2])));
        // With an axis inside it (groups × heads × head_dim of 2): whole heads' channels.
        let (needed, _, to) = restrict_reshape(&dims(&[12]), &dims(&[2, 3, 2]), 1, &[2]).unwrap();
        assert_eq!(needed, vec![4, 5, 10, 11]);
        assert_eq!(to, dims(&[2, 1, 2]));
    }

    #[test]
    fn a_merge_restricts_to_whole_groups_only() {
        let whole = restrict_reshape(&dims(&[2, 3]), &dims(&[6]), 0, &[3, 4, 5]).unwrap();
        assert_eq!(whole.0, vec![1]);
        assert!(restrict_reshape(&dims(&[2, 3]), &dims(&[6]), 0, &[0, 2, 3, 5]).is_none());
    }
}
