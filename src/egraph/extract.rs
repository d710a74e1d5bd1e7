//! Extraction: pick, for every e-class the outputs need, the node that makes the whole graph
//! cheapest under the [`Nominal`] cost model.
//!
//! Costs are counted on the DAG, not the tree: a sub-graph shared by several users (the
//! activation feeding Q, K and V; the residual stream) is paid once. The greedy extractor below
//! keeps, per e-class, the set of e-classes its best choice needs with their costs, and compares
//! choices by the total of that set; a second pass then lets a class reuse what other classes
//! need anyway ([`reuse_needed`]).

use crate::egraph::analysis::SlimGraph;
use crate::egraph::lang::{Key, TensorLang};
use crate::model::cost::Nominal;
use egg::{Id, Language};
use serde::Serialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;

/// The cost of a graph, split as the report shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct GraphCost {
    /// Floating-point operations at nominal shapes.
    pub flops: f64,
    /// Bytes of constants.
    pub weight_bytes: f64,
}

impl GraphCost {
    /// The single number extraction minimises: FLOPs plus weight bytes.
    pub fn total(&self) -> f64 {
        self.flops + self.weight_bytes
    }
}

/// The chosen node of every needed e-class.
pub struct Choice {
    /// The chosen node of each needed e-class.
    pub nodes: HashMap<Id, TensorLang>,
}

/// Cost of one node alone (its children not included).
pub fn node_cost(egraph: &SlimGraph, nominal: &Nominal, class: Id, node: &TensorLang) -> GraphCost {
    let tables = &egraph.analysis.tables;
    match node {
        TensorLang::Key(Key::Const(k)) => GraphCost {
            flops: 0.0,
            weight_bytes: tables.consts.bytes(*k) as f64,
        },
        TensorLang::Num(_) | TensorLang::Key(_) => GraphCost::default(),
        TensorLang::Keep([_, _, x]) => {
            // A gather copies what it keeps: priced like an element-wise op on its output.
            let fact = egraph[*x].data.fact.as_ref();
            let kept = fact.map(|f| nominal.elements(f)).unwrap_or(0.0);
            GraphCost {
                flops: kept,
                weight_bytes: 0.0,
            }
        }
        _ => {
            let Some(op) = node
                .op_child()
                .and_then(|c| crate::egraph::analysis::op_of(egraph, c))
            else {
                return GraphCost::default();
            };
            let inputs: Vec<_> = node
                .operands()
                .iter()
                .filter_map(|c| egraph[*c].data.fact.as_ref())
                .collect();
            let Some(out) = egraph[class].data.fact.as_ref() else {
                return GraphCost::default();
            };
            GraphCost {
                flops: nominal.op_flops(tables.ops[op as usize].as_ref(), &inputs, out),
                weight_bytes: 0.0,
            }
        }
    }
}

/// Best known choice of one e-class: the node, and every class it needs with its own cost.
struct Best {
    node: TensorLang,
    needs: Rc<Vec<(Id, f64)>>,
    total: f64,
}

/// Greedy DAG extraction of the classes `roots` need.
pub fn extract(egraph: &SlimGraph, roots: &[Id], nominal: &Nominal) -> Choice {
    extract_forcing(egraph, roots, nominal, &HashMap::new())
        .expect("every lowered class has a node without cycles")
}

/// Extraction where the classes of `forced` must use the given node (used to check that every
/// node of an e-class computes the same tensor). `None` when a forced node makes a root
/// unreachable (a cycle).
pub fn extract_forcing(
    egraph: &SlimGraph,
    roots: &[Id],
    nominal: &Nominal,
    forced: &HashMap<Id, TensorLang>,
) -> Option<Choice> {
    let mut best: HashMap<Id, Best> = HashMap::new();
    let mut queue: VecDeque<Id> = egraph.classes().map(|c| c.id).collect();
    let mut queued: HashSet<Id> = queue.iter().copied().collect();
    while let Some(class) = queue.pop_front() {
        queued.remove(&class);
        let mut improved = false;
        let candidates: Vec<&TensorLang> = match forced.get(&class) {
            Some(node) => vec![node],
            None => egraph[class].iter().collect(),
        };
        for node in candidates {
            let Some(candidate) = evaluate(egraph, nominal, &best, class, node) else {
                continue;
            };
            if best.get(&class).is_none_or(|b| candidate.total < b.total) {
                best.insert(class, candidate);
                improved = true;
            }
        }
        if improved {
            for parent in egraph[class].parents() {
                let parent = egraph.find(parent);
                if queued.insert(parent) {
                    queue.push_back(parent);
                }
            }
        }
    }
    let chosen: HashMap<Id, TensorLang> = best.into_iter().map(|(c, b)| (c, b.node)).collect();
    let (_, nodes) = needed(egraph, roots, nominal, &chosen, &HashMap::new())?;
    Some(Choice {
        nodes: reuse_needed(egraph, roots, nominal, forced, nodes, &chosen),
    })
}

/// The classes `roots` need under the choice `chosen` (each class's node, else `fallback`'s),
/// and their total cost; `None` when a needed class has no choice or the choice has a cycle.
fn needed(
    egraph: &SlimGraph,
    roots: &[Id],
    nominal: &Nominal,
    chosen: &HashMap<Id, TensorLang>,
    fallback: &HashMap<Id, TensorLang>,
) -> Option<(f64, HashMap<Id, TensorLang>)> {
    enum Visit {
        Enter(Id),
        Leave(Id),
    }
    let mut nodes = HashMap::new();
    let mut open = HashSet::new();
    let mut total = 0.0;
    let mut stack: Vec<Visit> = roots
        .iter()
        .map(|r| Visit::Enter(egraph.find(*r)))
        .collect();
    while let Some(visit) = stack.pop() {
        let class = match visit {
            Visit::Leave(class) => {
                open.remove(&class);
                continue;
            }
            Visit::Enter(class) => class,
        };
        if open.contains(&class) {
            return None; // reached again while its own children are being visited: a cycle
        }
        if nodes.contains_key(&class) {
            continue;
        }
        let node = chosen.get(&class).or_else(|| fallback.get(&class))?;
        total += node_cost(egraph, nominal, class, node).total();
        open.insert(class);
        stack.push(Visit::Leave(class));
        stack.extend(
            node.children()
                .iter()
                .map(|c| Visit::Enter(egraph.find(*c))),
        );
        nodes.insert(class, node.clone());
    }
    Some((total, nodes))
}

/// Improves a choice where a class can reuse what the graph computes anyway. The greedy pass
/// compares a class's nodes by everything each needs on its own, so a restriction recomputed
/// from sliced weights beats a gather of a tensor whose whole the outputs need too (a KV
/// projection restricted for attention and whole for the cache): both get paid; and a gather
/// of a whole product beats the product of gathered operands when one operand is needed whole
/// anyway (a squeeze-and-excitation gate's input). A class is switched to a gather of a tensor
/// needed anyway, and a gather to any other node, when the whole graph then costs less; the
/// node's children not needed yet take a node that reuses what is, or their greedy choice
/// (`greedy`), whichever is cheaper. Repeated until no switch helps; `forced` classes stay.
fn reuse_needed(
    egraph: &SlimGraph,
    roots: &[Id],
    nominal: &Nominal,
    forced: &HashMap<Id, TensorLang>,
    mut nodes: HashMap<Id, TensorLang>,
    greedy: &HashMap<Id, TensorLang>,
) -> HashMap<Id, TensorLang> {
    let Some((mut total, _)) = needed(egraph, roots, nominal, &nodes, greedy) else {
        return nodes;
    };
    loop {
        let mut classes: Vec<Id> = nodes.keys().copied().collect();
        classes.sort_unstable();
        let mut improved = false;
        for class in classes.into_iter().filter(|c| !forced.contains_key(c)) {
            let Some(current) = nodes.get(&class).cloned() else {
                continue; // no longer needed after an earlier switch
            };
            // A gather may give way to any node; any node to a gather of what is needed.
            let gathers = matches!(current, TensorLang::Keep(_));
            let candidates = egraph[class]
                .iter()
                .filter(|n| **n != current && (gathers || is_gather_of_needed(egraph, n, &nodes)));
            'nodes: for node in candidates {
                for switched in switches(egraph, &nodes, class, node) {
                    match needed(egraph, roots, nominal, &switched, greedy) {
                        Some((cost, kept)) if cost < total => {
                            (total, nodes, improved) = (cost, kept, true);
                            break 'nodes;
                        }
                        _ => {}
                    }
                }
            }
        }
        if !improved {
            return nodes;
        }
    }
}

/// Whether `node` keeps slices of a tensor `nodes` computes anyway.
fn is_gather_of_needed(
    egraph: &SlimGraph,
    node: &TensorLang,
    nodes: &HashMap<Id, TensorLang>,
) -> bool {
    matches!(node, TensorLang::Keep([_, _, x]) if nodes.contains_key(&egraph.find(*x)))
}

/// `nodes` with `class` switched to `node`, in every way its children not needed yet can
/// come: each from a node whose own children are all needed already (or parameters), when it
/// has one, or from its greedy choice.
fn switches(
    egraph: &SlimGraph,
    nodes: &HashMap<Id, TensorLang>,
    class: Id,
    node: &TensorLang,
) -> Vec<HashMap<Id, TensorLang>> {
    let available = |c: &Id| {
        let c = egraph.find(*c);
        nodes.contains_key(&c) || egraph[c].data.fact.is_none()
    };
    let mut switched = nodes.clone();
    switched.insert(class, node.clone());
    let mut reusable = vec![];
    for child in node.children() {
        let child = egraph.find(*child);
        if switched.contains_key(&child) {
            continue;
        }
        let reusing = egraph[child]
            .iter()
            .find(|n| n.children().iter().all(available));
        match reusing {
            // A parameter costs nothing: no choice to make.
            Some(leaf) if egraph[child].data.fact.is_none() => {
                switched.insert(child, leaf.clone());
            }
            Some(reusing) => reusable.push((child, reusing.clone())),
            None => {}
        }
    }
    // Three operands at most (a conv's, a choice's): eight ways, not one per subset of an
    // opaque op's many inputs.
    reusable.truncate(3);
    (0..1usize << reusable.len())
        .map(|mask| {
            let mut way = switched.clone();
            for (bit, (child, reusing)) in reusable.iter().enumerate() {
                if mask & (1 << bit) != 0 {
                    way.insert(*child, reusing.clone());
                }
            }
            way
        })
        .collect()
}

fn evaluate(
    egraph: &SlimGraph,
    nominal: &Nominal,
    best: &HashMap<Id, Best>,
    class: Id,
    node: &TensorLang,
) -> Option<Best> {
    let mut needs: Vec<(Id, f64)> = vec![];
    for child in node.children() {
        let child = egraph.find(*child);
        let b = best.get(&child)?;
        needs.extend(b.needs.iter().copied());
    }
    needs.sort_unstable_by_key(|(id, _)| *id);
    needs.dedup_by_key(|(id, _)| *id);
    if needs.binary_search_by_key(&class, |(id, _)| *id).is_ok() {
        return None; // the node needs its own class: a cycle
    }
    let own = node_cost(egraph, nominal, class, node).total();
    let pos = needs.partition_point(|(id, _)| *id < class);
    needs.insert(pos, (class, own));
    let total = needs.iter().map(|(_, c)| c).sum();
    Some(Best {
        node: node.clone(),
        needs: Rc::new(needs),
        total,
    })
}

/// The DAG cost of a choice: every needed class paid once.
pub fn choice_cost(egraph: &SlimGraph, nominal: &Nominal, choice: &Choice) -> GraphCost {
    choice
        .nodes
        .iter()
        .fold(GraphCost::default(), |acc, (class, node)| {
            let c = node_cost(egraph, nominal, *class, node);
            GraphCost {
                flops: acc.flops + c.flops,
                weight_bytes: acc.weight_bytes + c.weight_bytes,
            }
        })
}
