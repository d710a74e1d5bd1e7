//! Raising: the extracted choice becomes a tract model again, with the original's inputs and
//! outputs (names, order, types). Nodes keep the names of the source nodes they come from;
//! opaque nodes keep their original op.

use crate::egraph::analysis::{num_of, op_of, set_of, SlimGraph};
use crate::egraph::extract::Choice;
use crate::egraph::lang::{Key, TensorLang};
use crate::model::discover::base_name;
use crate::model::ops::ConstantResize;
use egg::Id;
use std::collections::{HashMap, HashSet};
use tract_core::internal::*;
use tract_core::ops::array::Gather;

/// What the rebuilt model must look like from outside.
pub struct Interface<'a> {
    /// Names of the original model's inputs, in order.
    pub input_names: &'a [String],
    /// Names of the original model's outputs, in order.
    pub output_names: &'a [String],
    /// The e-classes of the outputs.
    pub outputs: &'a [Id],
    /// Inputs replaced by a restriction of them (a cut state, see [`crate::StateCut`]): the
    /// input's position and the analysis input that takes its place, under the same name.
    pub restricted_inputs: &'a [(usize, u32)],
    /// Names of source e-classes (canonical ids).
    pub names: &'a HashMap<Id, String>,
    /// The original model's symbols (the rebuilt model shares them).
    pub symbols: &'a SymbolScope,
}

struct Raiser<'a> {
    egraph: &'a SlimGraph,
    choice: &'a Choice,
    names: &'a HashMap<Id, String>,
    model: TypedModel,
    wired: HashMap<Id, OutletId>,
    /// Multi-output opaque ops are wired once: (op, inputs) -> node.
    opaque: HashMap<(u32, Vec<OutletId>), usize>,
    used_names: HashSet<String>,
    /// Told (classes wired, classes to wire) as nodes are added.
    progress: &'a dyn Fn(usize, usize),
    /// How many classes the outputs need, the inputs among them.
    needed: usize,
}

/// Builds the tract model of a choice.
pub fn raise(
    egraph: &SlimGraph,
    choice: &Choice,
    interface: &Interface,
) -> TractResult<TypedModel> {
    raise_counting(egraph, choice, interface, &|_, _| {})
}

/// [`raise`], telling `progress` (classes wired, classes to wire) as nodes are added: kept
/// weights are copied out of the originals as they are wired.
pub fn raise_counting(
    egraph: &SlimGraph,
    choice: &Choice,
    interface: &Interface,
    progress: &dyn Fn(usize, usize),
) -> TractResult<TypedModel> {
    let mut model = TypedModel {
        symbols: interface.symbols.clone(),
        ..TypedModel::default()
    };
    let mut used_names = HashSet::new();
    // The outlet of each analysis input the model has (its own or the one in its place).
    let mut inputs = HashMap::new();
    for (position, name) in interface.input_names.iter().enumerate() {
        let input = interface
            .restricted_inputs
            .iter()
            .find(|(p, _)| *p == position)
            .map_or(position as u32, |(_, i)| *i);
        let fact = egraph.analysis.tables.inputs[input as usize].clone();
        inputs.insert(input, model.add_source(name, fact)?);
        used_names.insert(name.clone());
    }
    let mut raiser = Raiser {
        egraph,
        choice,
        names: interface.names,
        model,
        wired: HashMap::new(),
        opaque: HashMap::new(),
        used_names,
        progress,
        needed: 0,
    };
    raiser.wire_inputs(&inputs)?;
    raiser.needed = raiser.count_needed(interface.outputs);
    let mut outputs = vec![];
    for root in interface.outputs {
        outputs.push(raiser.wire(egraph.find(*root))?);
    }
    let mut model = raiser.model;
    model.select_output_outlets(&outputs)?;
    for (outlet, name) in outputs.iter().zip(interface.output_names) {
        model.set_outlet_label(*outlet, name.clone())?;
    }
    // tract evaluates a node whose inputs are all constants as it is wired: a chain of them
    // (an activation of a folded bias) leaves each link's constant unread, then dropped here.
    model.compact()?;
    Ok(model)
}

impl Raiser<'_> {
    fn wire_inputs(&mut self, inputs: &HashMap<u32, OutletId>) -> TractResult<()> {
        for (class, node) in &self.choice.nodes {
            if let TensorLang::Key(Key::Input(i)) = node {
                let outlet = inputs.get(i).with_context(|| {
                    format!("the choice reads input {i}, which the model lacks")
                })?;
                self.wired.insert(*class, *outlet);
            }
        }
        Ok(())
    }

    fn unique_name(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 1;
        while !self.used_names.insert(name.clone()) {
            name = format!("{base}.{n}");
            n += 1;
        }
        name
    }

    /// A name for a class: its source node's; for a class made by rules that restricts a
    /// tensor (it holds a `keep` node), the restricted tensor's name with `.kept`; for another
    /// class made by rules, the name of the source node of its op with `.slim`.
    fn class_name(&self, class: Id, depth: usize) -> Option<String> {
        if let Some(name) = self.names.get(&class) {
            return Some(name.clone());
        }
        if depth == 0 {
            return None;
        }
        let nodes = &self.egraph[class].nodes;
        let restricted = nodes.iter().find_map(|n| match n {
            TensorLang::Keep([_, _, x]) => self
                .class_name(self.egraph.find(*x), depth - 1)
                .map(|n| format!("{}.kept", base_name(&n))),
            _ => None,
        });
        restricted.or_else(|| {
            nodes.iter().find_map(|n| {
                let op = op_of(self.egraph, n.op_child()?)?;
                let name = &self.egraph.analysis.tables.op_names[op as usize];
                (!name.is_empty()).then(|| format!("{}.slim", base_name(name)))
            })
        })
    }

    fn base_name(&self, class: Id, inputs: &[OutletId]) -> String {
        self.class_name(class, 8)
            .or_else(|| {
                inputs
                    .first()
                    .map(|i| format!("{}.slim", self.model.node(i.node).name))
            })
            .unwrap_or_else(|| "slim".into())
    }

    /// The classes wiring `roots` reaches, with the (already wired) inputs: the total that
    /// progress counts towards.
    fn count_needed(&self, roots: &[Id]) -> usize {
        let mut seen: HashSet<Id> = self.wired.keys().copied().collect();
        let mut stack: Vec<Id> = roots.iter().map(|r| self.egraph.find(*r)).collect();
        while let Some(class) = stack.pop() {
            if !seen.insert(class) {
                continue;
            }
            if let Some(node) = self.choice.nodes.get(&class) {
                stack.extend(node.operands().iter().map(|c| self.egraph.find(*c)));
            }
        }
        seen.len()
    }

    fn wire(&mut self, class: Id) -> TractResult<OutletId> {
        // Iterative post-order walk: models are deep enough to overflow a recursive one.
        let mut stack = vec![(class, false)];
        while let Some((class, expanded)) = stack.pop() {
            if self.wired.contains_key(&class) {
                continue;
            }
            let node = self
                .choice
                .nodes
                .get(&class)
                .with_context(|| format!("e-class {class} was not extracted"))?;
            let operands: Vec<Id> = node
                .operands()
                .iter()
                .map(|c| self.egraph.find(*c))
                .collect();
            if !expanded {
                stack.push((class, true));
                stack.extend(
                    operands
                        .iter()
                        .filter(|c| !self.wired.contains_key(c))
                        .map(|c| (*c, false)),
                );
                continue;
            }
            let inputs: Vec<OutletId> = operands.iter().map(|c| self.wired[c]).collect();
            let outlet = self.wire_node(class, node, &inputs)?;
            self.wired.insert(class, outlet);
            (self.progress)(self.wired.len(), self.needed);
        }
        Ok(self.wired[&class])
    }

    fn wire_node(
        &mut self,
        class: Id,
        node: &TensorLang,
        inputs: &[OutletId],
    ) -> TractResult<OutletId> {
        let base = self.base_name(class, inputs);
        let egraph = self.egraph;
        let tables = &egraph.analysis.tables;
        match node {
            TensorLang::Key(Key::Const(k)) => {
                let name = self.unique_name(tables.consts.name(*k));
                self.model.add_const(name, tables.consts.tensor(*k)?)
            }
            TensorLang::Keep([axis, set, _]) => {
                let axis = num_of(self.egraph, *axis).context("keep axis")? as usize;
                let set = set_of(self.egraph, *set).context("keep set")?;
                let indices = tensor1(&set.iter().map(|&i| i as i64).collect::<Vec<_>>());
                let name = self.unique_name(&format!("{base}.indices"));
                let indices = self.model.add_const(name, indices)?;
                let name = self.unique_name(&base);
                Ok(self
                    .model
                    .wire_node(name, Gather::new(axis), &[inputs[0], indices])?[0])
            }
            TensorLang::Opaque(children) => {
                let op = op_of(self.egraph, children[0]).context("opaque op")?;
                let slot = num_of(self.egraph, children[1]).context("opaque slot")? as usize;
                let key = (op, inputs.to_vec());
                let node_id = match self.opaque.get(&key) {
                    Some(id) => *id,
                    None => {
                        let name = self.unique_name(&base);
                        let op = tables.ops[op as usize].clone();
                        let id = self.model.wire_node(name, op, inputs)?[0].node;
                        self.opaque.insert(key, id);
                        id
                    }
                };
                Ok(OutletId::new(node_id, slot))
            }
            TensorLang::Num(_) | TensorLang::Key(_) => {
                bail!("e-class {class} is a parameter, not a tensor")
            }
            _ => {
                let op = op_of(self.egraph, node.op_child().context("op")?).context("op leaf")?;
                let op = &tables.ops[op as usize];
                let name = self.unique_name(&base);
                // A resampling that took its constant scales in is wired with them again.
                if let Some(resize) = op.downcast_ref::<ConstantResize>() {
                    let mut operands = vec![inputs[0]];
                    for (slot, constant) in resize.constants.iter().enumerate() {
                        let name = self.unique_name(&format!("{base}.{}", slot + 1));
                        operands.push(self.model.add_const(name, constant.clone())?);
                    }
                    let op = resize.resize.clone();
                    return Ok(self.model.wire_node(name, op, &operands)?[0]);
                }
                Ok(self.model.wire_node(name, op.clone(), inputs)?[0])
            }
        }
    }
}
