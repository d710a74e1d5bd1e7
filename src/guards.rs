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
//! | function | arguments | binds | meaning |
//! |---|---|---|---|
//! | `zero-contraction` | `?op ?x ?y` | axis in x, axis in y, kept set | for each axis the EinSum contracts, the slices where x or y is all zero are droppable: binds the axes and the non-zero slices (only when some can go) |
//! | `constant-contraction` | `?op ?x ?y` | axis in x, axis in y, kept set, tensor, op | for each axis the EinSum contracts where one operand has known constant slices (see `known.rs`) and the other is a constant: the slices to keep, the dropped slices' contribution (their EinSum, computed) and the addition op to add it with |
//! | `constant-sum` | `?a ?b` | tensor | the sum of two constants of one rank |
//! | `einsum-axis` | `?op ?a K ?t` | axis | the axis of operand K (0 or 1, tensor ?t) that carries output axis ?a at full size |
//! | `einsum-lacks` | `?op ?a K ?t` | — | operand K does not carry output axis ?a, or only with size 1 (broadcast) |
//! | `all-zero` | `?t` | — | tensor ?t is known to be all zero (every slice of some axis is) |
//! | `addition` | `?op` | — | ?op is element-wise addition |
//! | `broadcasts-into` | `?t ?u` | — | ?t has ?u's rank and each of its axes has ?u's size or 1, so ?t ⊕ ?u has ?u's shape |
//! | `full` | `?t ?a` | — | tensor ?t has size other than 1 on axis ?a |
//! | `broadcast` | `?t ?a` | — | tensor ?t has size 1 on axis ?a |
//! | `free-axis` | `?op ?a` | — | the `along` op does not work along axis ?a |
//! | `axis-source` | `?op ?a` | axis | the input axis the axis op moves to output axis ?a unchanged |
//! | `reshape-groups` | `?op ?a ?i` | axis, set, op | for a reshape that splits one axis into groups × rest (channels → heads × head_dim) or merges them back, and ?a its group (or merged) output axis: the input axis, the input slices restriction ?i needs, and the reshape of the restricted input (a merge only restricts to whole groups) |
//! | `slice-const` | `?c ?a ?i` | tensor | the constant ?c restricted to slices ?i of axis ?a |
//! | `compose` | `?outer ?inner` | set | keeping ?inner then ?outer keeps this set of the original |
//! | `everything` | `?i ?t ?a` | — | set ?i holds every slice of axis ?a of ?t |

use crate::analysis::{const_of, num_of, op_of, set_key_of, set_of, SlimGraph};
use crate::known;
use crate::lang::{Key, TensorLang};
use egg::Id;
use std::sync::Arc;
use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::einsum::EinSum;

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
    /// Argument names, for error messages and docs (`?x` for tensors, `K` for integers).
    pub params: &'static [&'static str],
    /// How many e-classes each alternative binds.
    pub binds: usize,
    /// One line saying what it answers.
    pub doc: &'static str,
    /// The computation.
    pub run: fn(&mut SlimGraph, &[Arg]) -> Alternatives,
}

/// Every guard a rule may call.
pub static GUARDS: &[Guard] = &[
    Guard {
        name: "zero-contraction",
        params: &["?op", "?x", "?y"],
        binds: 3,
        doc: "Contracted EinSum axes with all-zero slices in either operand: (axis in x, axis in y, kept set).",
        run: zero_contraction,
    },
    Guard {
        name: "constant-contraction",
        params: &["?op", "?x", "?y"],
        binds: 5,
        doc: "Contracted EinSum axes where one operand has known constant slices and the other is a constant: (axis in x, axis in y, kept set, their contribution, addition).",
        run: constant_contraction,
    },
    Guard {
        name: "constant-sum",
        params: &["?a", "?b"],
        binds: 1,
        doc: "The sum of two constants of one rank (broadcasting).",
        run: constant_sum,
    },
    Guard {
        name: "einsum-axis",
        params: &["?op", "?a", "K", "?t"],
        binds: 1,
        doc: "Axis of EinSum operand K carrying output axis ?a at full size.",
        run: einsum_axis,
    },
    Guard {
        name: "einsum-lacks",
        params: &["?op", "?a", "K", "?t"],
        binds: 0,
        doc: "EinSum operand K does not carry output axis ?a, or carries it with size 1.",
        run: einsum_lacks,
    },
    Guard {
        name: "all-zero",
        params: &["?t"],
        binds: 0,
        doc: "Tensor ?t is known to be all zero.",
        run: all_zero,
    },
    Guard {
        name: "addition",
        params: &["?op"],
        binds: 0,
        doc: "?op is element-wise addition.",
        run: addition,
    },
    Guard {
        name: "broadcasts-into",
        params: &["?t", "?u"],
        binds: 0,
        doc: "Tensor ?t has ?u's rank, and each axis of ?t has ?u's size or size 1.",
        run: broadcasts_into,
    },
    Guard { name: "full", params: &["?t", "?a"], binds: 0, doc: "Axis ?a of ?t has size other than 1.", run: full },
    Guard { name: "broadcast", params: &["?t", "?a"], binds: 0, doc: "Axis ?a of ?t has size 1.", run: broadcast },
    Guard {
        name: "free-axis",
        params: &["?op", "?a"],
        binds: 0,
        doc: "The along-op ?op does not work along axis ?a.",
        run: free_axis,
    },
    Guard {
        name: "axis-source",
        params: &["?op", "?a"],
        binds: 1,
        doc: "Input axis that the axis op carries unchanged to output axis ?a.",
        run: axis_source,
    },
    Guard {
        name: "reshape-groups",
        params: &["?op", "?a", "?i"],
        binds: 3,
        doc: "Reshape splitting an axis into groups (or merging groups) at output axis ?a: input axis, input slices restriction ?i needs, and the restricted reshape.",
        run: reshape_groups,
    },
    Guard {
        name: "slice-const",
        params: &["?c", "?a", "?i"],
        binds: 1,
        doc: "The constant ?c restricted to slices ?i of axis ?a.",
        run: slice_const,
    },
    Guard {
        name: "compose",
        params: &["?outer", "?inner"],
        binds: 1,
        doc: "The set kept by keeping ?inner, then ?outer.",
        run: compose,
    },
    Guard {
        name: "everything",
        params: &["?i", "?t", "?a"],
        binds: 0,
        doc: "Set ?i holds every slice of axis ?a of ?t.",
        run: everything,
    },
];

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
        let kept: Vec<usize> = (0..n)
            .filter(|i| {
                xi.zeros_on(ax).binary_search(i).is_err()
                    && yi.zeros_on(ay).binary_search(i).is_err()
            })
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
    let folded = known::stack(&values, axis)?;
    let weight_slices = tables.consts.select(weights, weights_axis, &dropped).ok()?;
    let mut inputs = [folded, weight_slices];
    if slot == 1 {
        inputs.reverse();
    }
    let inputs: TVec<TValue> = inputs.into_iter().map(|t| t.into_tvalue()).collect();
    let contribution = op.eval_out_of_plan(inputs).ok()??.remove(0).into_tensor();
    let name = format!("{}.folded", tables.consts.name(weights));
    Some((kept, contribution, name))
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
        let op = egraph.analysis.tables.ops[key as usize].downcast_ref::<TypedBinOp>()?;
        Some(op.0.name() == "Add")
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
        Some(
            crate::analysis::is_along(op)
                && !crate::analysis::along_axes(op).contains(&axis(egraph, args[1])?),
        )
    })();
    holds(free == Some(true))
}

fn axis_source(egraph: &mut SlimGraph, args: &[Arg]) -> Alternatives {
    let source = (|| {
        let key = op_of(egraph, class(args[0])?)?;
        let op = egraph.analysis.tables.ops[key as usize].downcast_ref::<AxisOp>()?;
        op.recip().transform_axis(axis(egraph, args[1])?)
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
        if *at != a {
            return None;
        }
        let (input_set, from, to) = restrict_reshape(from, to, &tables.sets[set as usize])?;
        let op = tables.derived_op(key, a, set, |_, _| {
            Some(Box::new(AxisOp::Reshape(a, from, to)))
        })?;
        Some((a, input_set, op))
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

/// A reshape of one axis into groups × rest (`from = [n]`, `to = [groups, ...]`), or back
/// (`from = [groups, ...]`, `to = [n]`), restricted to `kept` slices of its output's first
/// reshaped axis: the input slices needed and the restricted reshape's `from` and `to`. A merge
/// only restricts to whole groups. `None` for any other reshape.
pub fn restrict_reshape(
    from: &[TDim],
    to: &[TDim],
    kept: &[usize],
) -> Option<(Vec<usize>, TVec<TDim>, TVec<TDim>)> {
    if kept.is_empty() {
        return None;
    }
    let block = |dims: &[TDim]| -> Option<usize> {
        dims.iter()
            .map(|d| d.to_usize().ok())
            .product::<Option<usize>>()
    };
    if from.len() == 1 && to.len() >= 2 {
        let size = block(&to[1..])?;
        let needed = kept.iter().flat_map(|g| g * size..(g + 1) * size).collect();
        let mut restricted_to: TVec<TDim> = tvec!(kept.len().into());
        restricted_to.extend(to[1..].iter().cloned());
        return Some((needed, tvec!((kept.len() * size).into()), restricted_to));
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
