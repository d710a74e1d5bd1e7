//! Loop-carried state in the e-graph (see [`StateCut`]): a state input whose readers restrict
//! it to some slices of one axis becomes a smaller input, and its paired output is restricted
//! to the same slices.
//!
//! [`offer_state_cuts`] only *offers* each cut: the restricted input becomes a new input leaf
//! equal to `(keep axis kept input)` (and every narrower restriction read of it, a restriction
//! of that leaf), and the restricted output a new root `(keep axis kept output)`, which the
//! rules then carry back through the graph (through the concatenation of past and new K/V).
//! A cut holds only when the extracted graph reads nothing of the original input
//! ([`full_inputs_read`]): then the output's kept slices come from the input's kept slices
//! alone, and every other reader needs no other slice.

use crate::egraph::analysis::{num_of, set_of, SlimGraph};
use crate::egraph::extract::Choice;
use crate::egraph::lang::{Key, TensorLang};
use crate::model::state::{StateCut, StatePair};
use egg::Id;
use tract_core::internal::*;

/// A cut offered to extraction: the cut, the input leaf of the restricted state and the class
/// of the restricted output.
#[derive(Clone, Debug)]
pub struct OfferedCut {
    /// What is cut.
    pub cut: StateCut,
    /// The index of the restricted input among the analysis' inputs.
    pub restricted_input: u32,
    /// The class of the restricted output.
    pub restricted_output: Id,
}

/// Offers a cut of each pair (`(pair, input position, output position)`) whose input is read
/// only through restrictions of one axis other than the first (batch) that together leave some
/// slices out. `outputs` are the classes of the model outputs.
pub fn offer_state_cuts(
    egraph: &mut SlimGraph,
    outputs: &[Id],
    pairs: &[(StatePair, usize, usize)],
) -> Vec<OfferedCut> {
    let mut offered = vec![];
    for (pair, input, output) in pairs {
        let class = egraph.lookup(TensorLang::Key(Key::Input(*input as u32)));
        let Some(class) = class else {
            continue; // an input nothing reads
        };
        let Some((axis, kept, before)) = slices_read(egraph, class) else {
            continue;
        };
        let cut = StateCut {
            pair: pair.clone(),
            input: *input,
            output: *output,
            axis,
            before,
            kept,
        };
        offered.push(offer(egraph, class, outputs[*output], cut));
    }
    egraph.rebuild();
    offered
}

/// The axis the class's readers restrict it along, the slices they read together (sorted) and
/// the axis' size, when they all restrict along that one axis and leave some slice out.
fn slices_read(egraph: &SlimGraph, class: Id) -> Option<(usize, Vec<usize>, usize)> {
    let restrictions = restrictions_of(egraph, class);
    let (_, axis, _) = restrictions.first()?;
    let axis = *axis;
    if axis == 0 || restrictions.iter().any(|(_, a, _)| *a != axis) {
        return None;
    }
    let read: std::collections::BTreeSet<usize> = restrictions
        .iter()
        .flat_map(|(_, _, set)| set.iter().copied())
        .collect();
    let fact = egraph[class].data.fact.as_ref()?;
    let before = fact.shape[axis].to_usize().ok()?;
    (read.len() < before).then(|| (axis, read.into_iter().collect(), before))
}

fn offer(egraph: &mut SlimGraph, class: Id, output: Id, cut: StateCut) -> OfferedCut {
    let tables = &mut egraph.analysis.tables;
    let fact = tables.inputs[cut.input].clone();
    let mut shape: TVec<TDim> = fact.shape.iter().cloned().collect();
    shape[cut.axis] = cut.kept.len().into();
    tables.inputs.push(fact.datum_type.fact(shape));
    let restricted_input = tables.inputs.len() as u32 - 1;
    let leaf = egraph.add(TensorLang::Key(Key::Input(restricted_input)));
    let whole = keep(egraph, cut.axis, cut.kept.clone(), class);
    egraph.union(whole, leaf);
    // Every narrower restriction read of the input is that restriction of the new leaf.
    let narrower = restrictions_of(egraph, class);
    for (reader, _, set) in narrower.into_iter().filter(|(_, _, set)| *set != cut.kept) {
        let positions = set
            .iter()
            .map(|i| cut.kept.binary_search(i).expect("a slice read is kept"))
            .collect();
        let restricted = keep(egraph, cut.axis, positions, leaf);
        egraph.union(reader, restricted);
    }
    let restricted_output = keep(egraph, cut.axis, cut.kept.clone(), output);
    OfferedCut {
        cut,
        restricted_input,
        restricted_output,
    }
}

/// The classes holding a restriction of `class`, with its axis and the slices it keeps. A
/// restriction the class holds itself keeps every slice (an identity): left out.
fn restrictions_of(egraph: &SlimGraph, class: Id) -> Vec<(Id, usize, Vec<usize>)> {
    let mut found = vec![];
    for parent in egraph[class].parents() {
        let parent = egraph.find(parent);
        if parent == class {
            continue;
        }
        for node in egraph[parent].iter() {
            let TensorLang::Keep([axis, set, x]) = node else {
                continue;
            };
            if egraph.find(*x) != class {
                continue;
            }
            if let (Some(axis), Some(set)) = (num_of(egraph, *axis), set_of(egraph, *set)) {
                found.push((parent, axis as usize, set.to_vec()));
            }
        }
    }
    found
}

fn keep(egraph: &mut SlimGraph, axis: usize, set: Vec<usize>, x: Id) -> Id {
    let axis = egraph.add(TensorLang::Num(axis as i64));
    let set = egraph.analysis.tables.intern_set(set);
    let set = egraph.add(TensorLang::Key(set));
    egraph.add(TensorLang::Keep([axis, set, x]))
}

/// For a cut that does not hold: the class of its restricted input leaf, and the node that
/// spells it as a restriction of the original input (extraction is forced to it, so that the
/// restricted input never appears).
pub fn spelled_as_restriction(egraph: &SlimGraph, offered: &OfferedCut) -> (Id, TensorLang) {
    let leaf = TensorLang::Key(Key::Input(offered.restricted_input));
    let class = egraph.lookup(leaf).expect("the restricted input's leaf");
    let original = egraph
        .lookup(TensorLang::Key(Key::Input(offered.cut.input as u32)))
        .expect("the original input's leaf");
    let spelled = egraph[class]
        .iter()
        .find(|n| matches!(n, TensorLang::Keep([_, _, x]) if egraph.find(*x) == original))
        .expect("the restriction the leaf was made equal to")
        .clone();
    (class, spelled)
}

/// The positions of the original inputs `cuts` restrict that the choice still reads whole:
/// their cuts do not hold.
pub fn full_inputs_read(choice: &Choice, cuts: &[OfferedCut]) -> Vec<usize> {
    cuts.iter()
        .map(|c| c.cut.input)
        .filter(|input| {
            choice
                .nodes
                .values()
                .any(|n| *n == TensorLang::Key(Key::Input(*input as u32)))
        })
        .collect()
}
