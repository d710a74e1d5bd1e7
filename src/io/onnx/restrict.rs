//! Restricting an ONNX graph: given that a tensor is only read at some slices of some axes, the
//! nodes computing it are edited to compute only those slices, back to the weights, which are
//! sliced. This is how a slimming decided on the tract model is replayed on the user's ONNX file
//! ([`crate::io::onnx::writeback`]).
//!
//! A *need* is a selection of slices per axis of a tensor. Needs travel backwards from readers
//! to producers, node by node, in reverse topological order, through a transfer rule per ONNX
//! op (element-wise ops and broadcasting, MatMul and Gemm, Transpose, Reshape, Squeeze and
//! Unsqueeze, Expand, Split, Concat, Slice, Gather, Softmax). A node whose outputs are needed
//! the same way by all their readers is restricted, and its inputs get the needs the rule
//! gives; constants (initializers, `Constant` nodes) are sliced, copies made for this reader
//! when others read them too. Wherever a need cannot travel further — readers that need a
//! tensor differently (a position bias shared by several layers), a model input, an op without
//! a rule — a `Gather` is inserted in front of the readers instead: the result is always exact,
//! only less small. Reshape targets, expand shapes and split sizes that hard-code a restricted
//! size are edited, through the `Concat` of pieces exporters build them from.

use crate::io::onnx::error::{EditError, EditResult};
use crate::io::onnx::proto::{attribute_int, attribute_ints, float_data, opset, set_float_data};
use crate::util::slices::{
    around, bits_hash, fill_runs, select_runs, set_slices_first, slices_first,
};
use std::collections::{BTreeMap, HashMap};
use tract_core::internal::*;
use tract_onnx::pb::tensor_shape_proto::dimension;
use tract_onnx::pb::{
    tensor_proto::DataType, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    TensorProto,
};

/// Slices kept along each restricted axis (axes absent are kept whole).
pub type Need = BTreeMap<usize, Vec<usize>>;

/// The graph being edited, with the shapes of its tensors (from tract's analysis of the file).
pub struct OnnxGraph<'a> {
    proto: &'a mut ModelProto,
    shapes: HashMap<String, TVec<TDim>>,
    fresh: usize,
    /// Model inputs and outputs that carry state from one call to the next (a decoder's KV
    /// cache) and are cut to these slices: see [`OnnxGraph::cut_state`].
    state: HashMap<String, Need>,
    /// Those of them declared with their slices so far.
    declared: Vec<String>,
}

/// Needs asked of one tensor: by which reader (node, input slot), and what.
type Asks = HashMap<String, Vec<(usize, usize, Need)>>;

impl<'a> OnnxGraph<'a> {
    /// Wraps a model whose tensors have the given shapes.
    pub fn new(proto: &'a mut ModelProto, shapes: HashMap<String, TVec<TDim>>) -> OnnxGraph<'a> {
        OnnxGraph {
            proto,
            shapes,
            fresh: 0,
            state: HashMap::new(),
            declared: vec![],
        }
    }

    /// Cuts model input or output `name` to `need`, a state slimming found exact: an output
    /// then counts as a reader needing only those slices, so that the need of the nodes
    /// computing it can travel back; an input is declared with only those slices when every
    /// reader needs only them. [`OnnxGraph::undeclared_state`] lists what did not happen.
    pub fn cut_state(&mut self, name: &str, need: Need) {
        self.state.insert(name.to_string(), need);
    }

    /// The state inputs and outputs not declared with their slices: the needs of their readers
    /// (an input) or of the model (an output) did not meet the edits of their neighbours.
    pub fn undeclared_state(&self) -> Vec<String> {
        let mut left: Vec<String> = self
            .state
            .keys()
            .filter(|name| !self.declared.contains(name))
            .cloned()
            .collect();
        left.sort();
        left
    }

    /// Declares model input or output `name` with the slices `need` keeps.
    fn declare(&mut self, name: &str, need: &Need) {
        let graph = self.graph_mut();
        let value = graph
            .input
            .iter_mut()
            .chain(graph.output.iter_mut())
            .find(|v| v.name == name);
        let dims = value
            .and_then(|v| v.r#type.as_mut()?.value.as_mut())
            .and_then(|type_proto::Value::TensorType(t)| t.shape.as_mut());
        if let Some(shape) = dims {
            for (&axis, kept) in need {
                if let Some(dim) = shape.dim.get_mut(axis) {
                    dim.value = Some(dimension::Value::DimValue(kept.len() as i64));
                }
            }
        }
        if let Some(mut dims) = self.dims(name) {
            for (&axis, kept) in need {
                dims[axis] = kept.len().into();
            }
            self.shapes.insert(name.to_string(), dims);
        }
        self.declared.push(name.to_string());
    }

    /// The model being edited.
    pub fn proto(&self) -> &ModelProto {
        self.proto
    }

    /// Keeps slices `kept` of `axis` of the constant read by (`reader`, `slot`), in a copy of
    /// its own when others read it too.
    pub fn restrict_constant(
        &mut self,
        reader: usize,
        slot: usize,
        axis: usize,
        kept: &[usize],
    ) -> EditResult<()> {
        self.slice_constant(reader, slot, &Need::from([(axis, kept.to_vec())]))
    }

    /// Zeroes slices `zeroed` of `axis` of the float constant read by (`reader`, `slot`), in a
    /// copy of its own when others read it too.
    pub fn zero_constant(
        &mut self,
        reader: usize,
        slot: usize,
        axis: usize,
        zeroed: &[usize],
    ) -> EditResult<()> {
        self.edit_float_constant(reader, slot, axis, |_, data, (outer, size, inner)| {
            fill_runs(data, outer, size, inner, zeroed, 0.0);
            Ok(())
        })
    }

    /// Replaces the values of the float constant read by (`reader`, `slot`) with `values`,
    /// given slice by slice along `axis` (as [`slices_first`] orders them), in a copy of its own
    /// when others read it too. Its values in that order must hash to `original` (see
    /// [`bits_hash`]): the ones the new values were computed from, in the same layout.
    pub fn set_constant_slices(
        &mut self,
        reader: usize,
        slot: usize,
        axis: usize,
        values: &[f32],
        original: u64,
    ) -> EditResult<()> {
        self.edit_float_constant(reader, slot, axis, |name, data, (outer, size, inner)| {
            let same = bits_hash(&slices_first(data, outer, size, inner)) == original;
            if !same || values.len() != data.len() {
                return Err(EditError::RefitLayout(name.to_string()));
            }
            set_slices_first(data, outer, size, inner, values);
            Ok(())
        })
    }

    /// Edits the values of the float constant read by (`reader`, `slot`), in a copy of its own
    /// when others read it too: `edit` gets its name, its values (in f32) and their
    /// (outer, size, inner) split around `axis`.
    fn edit_float_constant(
        &mut self,
        reader: usize,
        slot: usize,
        axis: usize,
        edit: impl FnOnce(&str, &mut [f32], (usize, usize, usize)) -> EditResult<()>,
    ) -> EditResult<()> {
        let name = self.own_input(reader, slot);
        let ix = self
            .initializer(&name)
            .ok_or_else(|| EditError::NotInitializer(name.clone()))?;
        let t = &mut self.graph_mut().initializer[ix];
        let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        let mut data = float_data(t)?;
        edit(&t.name, &mut data, around(&dims, axis))?;
        set_float_data(t, &data);
        Ok(())
    }

    /// Adds `delta` to the bias of linear node `linear`: Gemm's C, or the constant operand of
    /// the Add reading its output (through `Identity` nodes, which the TorchScript exporter puts
    /// in front of initializers it merged), in a copy of its own.
    pub fn add_to_bias(&mut self, linear: usize, delta: &[f32]) -> EditResult<()> {
        let Some((mut reader, mut slot)) = self.bias_input(linear) else {
            return self.add_bias(linear, delta);
        };
        loop {
            let name = self.node(reader).input[slot].clone();
            match self.producer(&name) {
                Some(p) if self.node(p).op_type == "Identity" => {
                    self.own_input(reader, slot);
                    let name = self.node(reader).input[slot].clone();
                    reader = self
                        .producer(&name)
                        .ok_or_else(|| EditError::NotInitializer(name.clone()))?;
                    slot = 0;
                }
                _ => break,
            }
        }
        let name = self.own_input(reader, slot);
        let ix = self
            .initializer(&name)
            .ok_or_else(|| EditError::NotInitializer(name.clone()))?;
        let t = &mut self.graph_mut().initializer[ix];
        let mut data = float_data(t)?;
        if data.len() != delta.len() {
            return Err(EditError::BiasLength {
                bias: t.name.clone(),
                has: data.len(),
                folded: delta.len(),
            });
        }
        data.iter_mut().zip(delta).for_each(|(d, x)| *d += x);
        set_float_data(t, &data);
        Ok(())
    }

    /// Gives a linear node without bias one: an `Add` of `bias` after it, read where its output
    /// was.
    fn add_bias(&mut self, linear: usize, bias: &[f32]) -> EditResult<()> {
        let output = self.node(linear).output[0].clone();
        if self.is_output(&output) {
            return Err(EditError::OutputWithoutBias(output));
        }
        let readers = self.readers(&output);
        let name = self.fresh_name(&output, "bias");
        let mut t = TensorProto {
            name: name.clone(),
            dims: vec![bias.len() as i64],
            data_type: self.weight_type(linear),
            ..TensorProto::default()
        };
        set_float_data(&mut t, bias);
        self.graph_mut().initializer.push(t);
        let sum = self.fresh_name(&output, "biased");
        self.graph_mut().node.push(NodeProto {
            name: sum.clone(),
            op_type: "Add".into(),
            input: vec![output.clone(), name],
            output: vec![sum.clone()],
            ..NodeProto::default()
        });
        for (r, s) in readers {
            self.graph_mut().node[r].input[s] = sum.clone();
        }
        if let Some(d) = self.shapes.get(&output).cloned() {
            self.shapes.insert(sum, d);
        }
        Ok(())
    }

    /// The float type of a linear node's constant operand (a bias added to its output is of
    /// that type); float32 when none is found.
    fn weight_type(&self, linear: usize) -> i32 {
        self.node(linear)
            .input
            .iter()
            .filter_map(|name| self.initializer(name))
            .map(|ix| self.graph().initializer[ix].data_type)
            .next()
            .unwrap_or(DataType::Float as i32)
    }

    /// The (node, slot) reading a linear node's bias.
    fn bias_input(&self, linear: usize) -> Option<(usize, usize)> {
        let node = self.node(linear);
        if node.op_type == "Gemm" {
            return node
                .input
                .get(2)
                .filter(|c| !c.is_empty())
                .map(|_| (linear, 2));
        }
        let output = node.output.first()?;
        let (add, slot) = self
            .readers(output)
            .into_iter()
            .find(|(r, _)| self.node(*r).op_type == "Add")?;
        let other = 1 - slot;
        let constant = |name: &str| {
            let mut name = name.to_string();
            loop {
                if self.initializer(&name).is_some() {
                    return true;
                }
                match self.producer(&name) {
                    Some(p) if self.node(p).op_type == "Identity" => {
                        name = self.node(p).input[0].clone()
                    }
                    _ => return false,
                }
            }
        };
        constant(&self.node(add).input[other]).then_some((add, other))
    }

    fn graph(&self) -> &GraphProto {
        self.proto.graph.as_ref().expect("checked by the caller")
    }

    fn graph_mut(&mut self) -> &mut GraphProto {
        self.proto.graph.as_mut().expect("checked by the caller")
    }

    /// The node computing tensor `name`.
    pub fn producer(&self, name: &str) -> Option<usize> {
        self.graph()
            .node
            .iter()
            .position(|n| n.output.iter().any(|o| o == name))
    }

    /// The (node, input slot) pairs reading tensor `name`.
    fn readers(&self, name: &str) -> Vec<(usize, usize)> {
        let mut found = vec![];
        for (ix, node) in self.graph().node.iter().enumerate() {
            for (slot, input) in node.input.iter().enumerate() {
                if input == name {
                    found.push((ix, slot));
                }
            }
        }
        found
    }

    fn is_output(&self, name: &str) -> bool {
        self.graph().output.iter().any(|o| o.name == name)
    }

    fn initializer(&self, name: &str) -> Option<usize> {
        self.graph().initializer.iter().position(|t| t.name == name)
    }

    /// The dimensions of a tensor, when known.
    pub fn dims(&self, name: &str) -> Option<TVec<TDim>> {
        if let Some(ix) = self.initializer(name) {
            return Some(
                self.graph().initializer[ix]
                    .dims
                    .iter()
                    .map(|&d| (d as usize).into())
                    .collect(),
            );
        }
        self.shapes.get(name).cloned()
    }

    fn rank(&self, name: &str) -> Option<usize> {
        self.dims(name).map(|d| d.len())
    }

    fn node(&self, ix: usize) -> &NodeProto {
        &self.graph().node[ix]
    }

    fn fresh_name(&mut self, base: &str, what: &str) -> String {
        loop {
            self.fresh += 1;
            let name = format!("{base}.{what}{}", self.fresh);
            let taken = self.graph().initializer.iter().any(|t| t.name == name)
                || self
                    .graph()
                    .node
                    .iter()
                    .any(|n| n.output.contains(&name) || n.name == name);
            if !taken {
                return name;
            }
        }
    }

    /// Makes input `slot` of node `node` read a tensor of its own when others read it too:
    /// an initializer is copied; a computed value's producer node is copied. Returns the
    /// (possibly new) name.
    fn own_input(&mut self, node: usize, slot: usize) -> String {
        let name = self.node(node).input[slot].clone();
        let shared = self.readers(&name).len() > 1 || self.is_output(&name);
        if !shared {
            return name;
        }
        let copy = self.fresh_name(&name, "slim");
        if let Some(ix) = self.initializer(&name) {
            let mut t = self.graph().initializer[ix].clone();
            t.name = copy.clone();
            self.graph_mut().initializer.push(t);
        } else if let Some(p) = self.producer(&name) {
            let mut n = self.node(p).clone();
            n.output = vec![copy.clone()];
            n.name = format!("{}.{}", n.name, copy.rsplit('.').next().unwrap_or("slim"));
            self.graph_mut().node.push(n);
        } else {
            return name;
        }
        if let Some(d) = self.shapes.get(&name).cloned() {
            self.shapes.insert(copy.clone(), d);
        }
        self.graph_mut().node[node].input[slot] = copy.clone();
        copy
    }

    /// Restricts tensor `name`, read by (`reader`, `slot`), to `need`; then carries the needs
    /// back through the graph as far as they go.
    pub fn restrict(&mut self, reader: usize, slot: usize, need: Need) -> EditResult<()> {
        let mut asks: Asks = HashMap::new();
        self.ask(&mut asks, reader, slot, need)?;
        let nodes = self.graph().node.len();
        for ix in (0..nodes).rev() {
            self.visit(&mut asks, ix)?;
        }
        // What is left was asked of tensors no node computes (model inputs): a state input
        // is declared narrower when its readers agree on its cut, others are gathered from.
        for (name, asked) in asks {
            let cut = self.state.get(&name).cloned();
            match cut.filter(|cut| self.agreed(&name, &asked).as_ref() == Some(cut)) {
                Some(cut) => self.declare(&name, &cut),
                None => self.gather_for(&name, &asked)?,
            }
        }
        Ok(())
    }

    /// Records that (`reader`, `slot`) needs only `need` of its input; constants are sliced
    /// right away.
    fn ask(&mut self, asks: &mut Asks, reader: usize, slot: usize, need: Need) -> EditResult<()> {
        let need: Need = need
            .into_iter()
            .filter(|(a, kept)| !self.keeps_all(reader, slot, *a, kept))
            .collect();
        if need.is_empty() {
            return Ok(());
        }
        let name = self.node(reader).input[slot].clone();
        if self.initializer(&name).is_some() || self.constant_node(&name).is_some() {
            return self.slice_constant(reader, slot, &need);
        }
        asks.entry(name).or_default().push((reader, slot, need));
        Ok(())
    }

    /// Whether `kept` is every slice of axis `axis` of the input, in order.
    fn keeps_all(&self, reader: usize, slot: usize, axis: usize, kept: &[usize]) -> bool {
        let name = &self.node(reader).input[slot];
        let Some(size) = self.dims(name).and_then(|d| d.get(axis)?.to_usize().ok()) else {
            return false;
        };
        kept.len() == size && kept.iter().enumerate().all(|(p, &i)| p == i)
    }

    fn constant_node(&self, name: &str) -> Option<usize> {
        let p = self.producer(name)?;
        (self.node(p).op_type == "Constant").then_some(p)
    }

    /// Slices the constant read by (`reader`, `slot`) to `need`, in a copy of its own.
    fn slice_constant(&mut self, reader: usize, slot: usize, need: &Need) -> EditResult<()> {
        let name = self.own_input(reader, slot);
        let tensor = if let Some(ix) = self.initializer(&name) {
            &mut self.graph_mut().initializer[ix]
        } else {
            let without_value = || EditError::ConstantWithoutValue(name.clone());
            let p = self.producer(&name).ok_or_else(without_value)?;
            let attribute = self.graph_mut().node[p]
                .attribute
                .iter_mut()
                .find(|a| a.name == "value")
                .ok_or_else(without_value)?;
            attribute.t.as_mut().ok_or_else(without_value)?
        };
        for (&axis, kept) in need {
            select(tensor, axis, kept)?;
        }
        let dims: TVec<TDim> = tensor.dims.iter().map(|&d| (d as usize).into()).collect();
        self.shapes.insert(name, dims);
        Ok(())
    }

    /// Handles node `ix` if its outputs are asked for: restricts it when every reader asks the
    /// same, else puts gathers in front of the readers that ask.
    fn visit(&mut self, asks: &mut Asks, ix: usize) -> EditResult<()> {
        let outputs = self.node(ix).output.clone();
        let mut needs: Vec<Option<Need>> = vec![None; outputs.len()];
        let mut any = false;
        for (k, output) in outputs.iter().enumerate() {
            let Some(asked) = asks.remove(output) else {
                continue;
            };
            match self.agreed(output, &asked) {
                Some(need) => {
                    needs[k] = Some(need);
                    any = true;
                }
                None => self.gather_for(output, &asked)?,
            }
        }
        if !any {
            return Ok(());
        }
        match self.transfer(ix, &needs)? {
            Some(plan) => self.apply(asks, ix, &needs, plan),
            None => {
                for (k, need) in needs.iter().enumerate() {
                    if let Some(need) = need {
                        // Every reader, those of its shape too, reads the gathered tensor.
                        let asked: Vec<_> = self
                            .readers(&outputs[k])
                            .into_iter()
                            .map(|(r, s)| (r, s, need.clone()))
                            .collect();
                        self.gather_for(&outputs[k], &asked)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// The need every reader of `output` agrees on, if they all ask the same (readers of its
    /// shape only do not count: the shape they read shrinks with it).
    ///
    /// A model output cut as state is read by the model at its cut, any other by the model as
    /// a whole.
    fn agreed(&self, output: &str, asked: &[(usize, usize, Need)]) -> Option<Need> {
        let model_reads = match self.is_output(output) {
            true => Some(self.state.get(output)?),
            false => None,
        };
        let readers: Vec<(usize, usize)> = self
            .readers(output)
            .into_iter()
            .filter(|(r, _)| self.node(*r).op_type != "Shape")
            .collect();
        let first = &asked.first()?.2;
        let all_ask = readers
            .iter()
            .all(|(r, s)| asked.iter().any(|(ar, as_, _)| ar == r && as_ == s));
        let same =
            asked.iter().all(|(_, _, n)| n == first) && model_reads.is_none_or(|n| n == first);
        (all_ask && same).then(|| first.clone())
    }

    /// Puts `Gather`s selecting each asked need in front of the readers asking it.
    fn gather_for(&mut self, name: &str, asked: &[(usize, usize, Need)]) -> EditResult<()> {
        let mut done: Vec<(Need, String)> = vec![];
        for (reader, slot, need) in asked {
            let gathered = match done.iter().find(|(n, _)| n == need) {
                Some((_, g)) => g.clone(),
                None => {
                    let g = self.insert_gathers(name, need)?;
                    done.push((need.clone(), g.clone()));
                    g
                }
            };
            self.graph_mut().node[*reader].input[*slot] = gathered;
        }
        Ok(())
    }

    /// Appends `Gather` nodes selecting `need` of tensor `name`; returns the result's name.
    fn insert_gathers(&mut self, name: &str, need: &Need) -> EditResult<String> {
        let mut current = name.to_string();
        let mut dims = self.dims(name);
        for (&axis, kept) in need {
            let indices = self.fresh_name(name, "indices");
            self.graph_mut().initializer.push(int64_tensor(
                &indices,
                &[kept.len() as i64],
                kept.iter().map(|&i| i as i64),
            ));
            let output = self.fresh_name(name, "gathered");
            let node = gather_node(&output, &current, &indices, axis);
            self.graph_mut().node.push(node);
            if let Some(d) = dims.as_mut() {
                if let Some(slot) = d.get_mut(axis) {
                    *slot = kept.len().into();
                }
                self.shapes.insert(output.clone(), d.clone());
            }
            current = output;
        }
        Ok(current)
    }

    /// Applies a node's plan: its edits, its new output shapes, and the needs of its inputs.
    fn apply(
        &mut self,
        asks: &mut Asks,
        ix: usize,
        needs: &[Option<Need>],
        plan: Plan,
    ) -> EditResult<()> {
        for edit in plan.edits {
            self.edit(ix, edit)?;
        }
        let outputs = self.node(ix).output.clone();
        if let Some((axis, held, picks)) = &plan.then_gather {
            // The output holds more than its need: that size, then the gather for every reader.
            if let Some(mut dims) = self.dims(&outputs[0]) {
                dims[*axis] = (*held).into();
                self.shapes.insert(outputs[0].clone(), dims);
            }
            let picks = Need::from([(*axis, picks.clone())]);
            let readers: Vec<_> = self
                .readers(&outputs[0])
                .into_iter()
                .map(|(r, s)| (r, s, picks.clone()))
                .collect();
            self.gather_for(&outputs[0], &readers)?;
        } else {
            for (k, need) in needs.iter().enumerate() {
                let (Some(need), Some(mut dims)) = (need, self.dims(&outputs[k])) else {
                    continue;
                };
                for (&axis, kept) in need {
                    dims[axis] = kept.len().into();
                }
                self.shapes.insert(outputs[k].clone(), dims);
                if self.is_output(&outputs[k]) {
                    self.declare(&outputs[k].clone(), need);
                }
            }
        }
        for (slot, need) in plan.inputs {
            self.ask(asks, ix, slot, need)?;
        }
        Ok(())
    }

    fn edit(&mut self, ix: usize, edit: Edit) -> EditResult<()> {
        match edit {
            Edit::IntInput {
                slot,
                position,
                value,
            } => self.set_int_entry(ix, slot, position, value),
            Edit::IntsAttribute { name, values } => {
                let node = &mut self.graph_mut().node[ix];
                match node.attribute.iter_mut().find(|a| a.name == name) {
                    Some(a) => a.ints = values,
                    None => node.attribute.push(ints_attribute(&name, values)),
                }
                Ok(())
            }
        }
    }

    /// The integer at `position` of the 1-D integer tensor read by input `slot` of node `ix`:
    /// `Some(Some(v))` for a constant entry, `Some(None)` for one computed at run time (from
    /// tensor shapes), `None` when it cannot be told.
    fn int_entry(&self, ix: usize, slot: usize, position: usize) -> Option<Option<i64>> {
        let name = self.node(ix).input.get(slot)?;
        if let Some(t) = self.initializer(name).map(|i| &self.graph().initializer[i]) {
            return Some(Some(*int_values(t)?.get(position)?));
        }
        let p = self.producer(name)?;
        let node = self.node(p);
        match node.op_type.as_str() {
            "Constant" => {
                let t = node.attribute.iter().find_map(|a| a.t.as_ref())?;
                Some(Some(*int_values(t)?.get(position)?))
            }
            "Concat" => {
                let (piece, at) = self.concat_piece(p, position)?;
                self.int_entry(p, piece, at)
            }
            _ => match shape_source(node, position) {
                Some((slot, at)) => self.int_entry(p, slot, at),
                None => Some(None),
            },
        }
    }

    /// The input of Concat node `p` holding element `position`, and the position there.
    fn concat_piece(&self, p: usize, mut position: usize) -> Option<(usize, usize)> {
        for (slot, input) in self.node(p).input.iter().enumerate() {
            let len = self.dims(input)?.first()?.to_usize().ok()?;
            if position < len {
                return Some((slot, position));
            }
            position -= len;
        }
        None
    }

    /// Sets the integer at `position` of the tensor read by input `slot` of node `ix` (see
    /// [`OnnxGraph::int_entry`]), in copies of its own; entries computed at run time are left.
    fn set_int_entry(
        &mut self,
        ix: usize,
        slot: usize,
        position: usize,
        value: i64,
    ) -> EditResult<()> {
        let unreadable = |graph: &Self| EditError::UnreadableShape(graph.node(ix).name.clone());
        match self.int_entry(ix, slot, position) {
            None => return Err(unreadable(self)),
            Some(None) => return Ok(()),
            Some(Some(_)) => {}
        }
        // `int_entry` read the entry, so each step below finds what it found.
        let name = self.own_input(ix, slot);
        if let Some(i) = self.initializer(&name) {
            return set_int_at(&mut self.graph_mut().initializer[i], position, value);
        }
        let p = self.producer(&name).ok_or_else(|| unreadable(self))?;
        match self.node(p).op_type.as_str() {
            "Constant" => {
                let t = self.graph_mut().node[p]
                    .attribute
                    .iter_mut()
                    .find_map(|a| a.t.as_mut())
                    .ok_or_else(|| EditError::ConstantWithoutValue(name.clone()))?;
                set_int_at(t, position, value)
            }
            "Concat" => {
                let (piece, at) = self
                    .concat_piece(p, position)
                    .ok_or_else(|| unreadable(self))?;
                self.set_int_entry(p, piece, at, value)
            }
            _ => {
                let (slot, at) =
                    shape_source(self.node(p), position).ok_or_else(|| unreadable(self))?;
                self.set_int_entry(p, slot, at, value)
            }
        }
    }
}

/// Where entry `position` of a shape vector computed by `node` comes from, for ops that carry
/// entries unchanged: a cast, an unsqueezed or squeezed scalar, a reshaped vector, and the
/// `where(shape == -1, 1, shape)` TorchScript puts in front of `Expand` (its last operand).
fn shape_source(node: &NodeProto, position: usize) -> Option<(usize, usize)> {
    match node.op_type.as_str() {
        "Cast" | "Identity" | "Reshape" => Some((0, position)),
        "Unsqueeze" | "Squeeze" if position == 0 => Some((0, 0)),
        "Where" => Some((2, position)),
        _ => None,
    }
}

/// What restricting one node takes: edits to it, and the needs of its inputs.
struct Plan {
    edits: Vec<Edit>,
    inputs: Vec<(usize, Need)>,
    /// When the restricted output still holds more than its need (a repetition restricted to
    /// whole groups only): the axis, how many slices it holds, and those to gather for every
    /// reader.
    then_gather: Option<(usize, usize, Vec<usize>)>,
}

impl Plan {
    fn inputs(inputs: Vec<(usize, Need)>) -> Option<Plan> {
        Some(Plan {
            edits: vec![],
            inputs,
            then_gather: None,
        })
    }
}

enum Edit {
    /// Set entry `position` of the integer tensor read by input `slot`.
    IntInput {
        slot: usize,
        position: usize,
        value: i64,
    },
    /// Set an integer-list attribute.
    IntsAttribute { name: String, values: Vec<i64> },
}

/// ONNX ops computing each output position from the same position of their one input.
pub(crate) const POSITION_WISE: &[&str] = &[
    "Relu",
    "Gelu",
    "Erf",
    "Tanh",
    "Sigmoid",
    "Neg",
    "Cast",
    "IsNaN",
    "Not",
    "Identity",
    "Sqrt",
    "Exp",
    "Log",
    "Abs",
    "Softplus",
    "Reciprocal",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Sin",
    "Cos",
    "HardSigmoid",
    "HardSwish",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Mish",
    "Dropout",
];

/// ONNX ops computing each output position from the same position of their inputs, broadcast
/// NumPy's way (`Clip`'s bounds are scalars).
pub(crate) const BROADCASTING: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Where",
    "Equal",
    "And",
    "Or",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "Mod",
    "PRelu",
    "Sum",
    "Mean",
    "Clip",
];

impl OnnxGraph<'_> {
    /// The rule of a node's op: given what is needed of its outputs, what it needs of its
    /// inputs and how it changes. `None`: no rule (the caller gathers instead).
    fn transfer(&self, ix: usize, needs: &[Option<Need>]) -> EditResult<Option<Plan>> {
        let node = self.node(ix);
        let op = node.op_type.as_str();
        if op == "Split" {
            return Ok(self.split(ix, needs));
        }
        // Other ops: one needed output.
        let Some(need) = needs.first().cloned().flatten() else {
            return Ok(None);
        };
        let out = &node.output[0];
        let Some(out_rank) = self.rank(out) else {
            return Ok(None);
        };
        let plan = Plan::inputs;
        Ok(match op {
            op if POSITION_WISE.contains(&op) => plan(vec![(0, need)]),
            "Softmax" | "LogSoftmax" => {
                let axis = attribute_int(node, "axis").unwrap_or(if opset(self.proto) >= 13 {
                    -1
                } else {
                    1
                });
                let axis = normalize(axis, out_rank);
                if need.contains_key(&axis) {
                    None
                } else {
                    Plan::inputs(vec![(0, need)])
                }
            }
            op if BROADCASTING.contains(&op) => self.broadcasting(ix, &need, out_rank),
            "Transpose" => {
                let perm: Vec<usize> = match attribute_ints(node, "perm") {
                    Some(p) => p.iter().map(|&p| p as usize).collect(),
                    None => (0..out_rank).rev().collect(),
                };
                plan(vec![(
                    0,
                    need.into_iter().map(|(a, k)| (perm[a], k)).collect(),
                )])
            }
            "Unsqueeze" => self.unsqueeze(ix, need, out_rank),
            "Squeeze" => self.squeeze(ix, need),
            "MatMul" => self.matmul(ix, need, out_rank),
            "Gemm" => self.gemm(ix, need),
            "Reshape" => self.reshape(ix, &need),
            "Expand" => self.expand(ix, &need, out_rank),
            "Concat" => self.concat(ix, need, out_rank),
            "Slice" => self.slice(ix, need, out_rank),
            "Gather" => self.gather(ix, need),
            _ => None,
        })
    }

    /// NumPy broadcasting: each input carries the output's axes it has at full size.
    fn broadcasting(&self, ix: usize, need: &Need, out_rank: usize) -> Option<Plan> {
        let node = self.node(ix);
        let mut inputs = vec![];
        for (slot, input) in node.input.iter().enumerate() {
            let dims = self.dims(input)?;
            let offset = out_rank.checked_sub(dims.len())?;
            let carried: Need = need
                .iter()
                .filter(|(a, _)| **a >= offset && !dims[**a - offset].is_one())
                .map(|(a, k)| (a - offset, k.clone()))
                .collect();
            if !carried.is_empty() {
                inputs.push((slot, carried));
            }
        }
        Plan::inputs(inputs)
    }

    /// The axes listed by an attribute or (opset ≥ 13) by a constant second input.
    fn axes_of(&self, ix: usize, rank: usize) -> Option<Vec<usize>> {
        let node = self.node(ix);
        let raw = match attribute_ints(node, "axes") {
            Some(a) => a.to_vec(),
            None => {
                let n = node.input.get(1)?;
                let values = (0..self.dims(n)?.first()?.to_usize().ok()?)
                    .map(|p| self.int_entry(ix, 1, p).flatten())
                    .collect::<Option<Vec<i64>>>()?;
                values
            }
        };
        let mut axes: Vec<usize> = raw.iter().map(|&a| normalize(a, rank)).collect();
        axes.sort_unstable();
        Some(axes)
    }

    fn unsqueeze(&self, ix: usize, need: Need, out_rank: usize) -> Option<Plan> {
        let added = self.axes_of(ix, out_rank)?;
        let mut inputs = Need::new();
        for (a, k) in need {
            if added.contains(&a) {
                return None;
            }
            inputs.insert(a - added.iter().filter(|&&x| x < a).count(), k);
        }
        Plan::inputs(vec![(0, inputs)])
    }

    fn squeeze(&self, ix: usize, need: Need) -> Option<Plan> {
        let input_rank = self.rank(&self.node(ix).input[0])?;
        let removed = self.axes_of(ix, input_rank)?;
        let kept_axes: Vec<usize> = (0..input_rank).filter(|a| !removed.contains(a)).collect();
        let inputs = need
            .into_iter()
            .map(|(a, k)| Some((*kept_axes.get(a)?, k)))
            .collect::<Option<Need>>()?;
        Plan::inputs(vec![(0, inputs)])
    }

    fn matmul(&self, ix: usize, need: Need, out_rank: usize) -> Option<Plan> {
        let node = self.node(ix);
        let ranks = [self.rank(&node.input[0])?, self.rank(&node.input[1])?];
        let mut per_input = [Need::new(), Need::new()];
        for (a, k) in need {
            if a + 1 == out_rank {
                per_input[1].insert(ranks[1] - 1, k);
            } else if a + 2 == out_rank {
                per_input[0].insert(ranks[0] - 2, k);
            } else {
                for slot in 0..2 {
                    let offset = out_rank.checked_sub(ranks[slot])?;
                    let dims = self.dims(&node.input[slot])?;
                    if a >= offset && !dims[a - offset].is_one() {
                        per_input[slot].insert(a - offset, k.clone());
                    }
                }
            }
        }
        Plan::inputs(
            per_input
                .into_iter()
                .enumerate()
                .filter(|(_, n)| !n.is_empty())
                .collect(),
        )
    }

    fn gemm(&self, ix: usize, need: Need) -> Option<Plan> {
        let node = self.node(ix);
        let trans_a = attribute_int(node, "transA") == Some(1);
        let trans_b = attribute_int(node, "transB") == Some(1);
        let mut inputs: Vec<(usize, Need)> = vec![];
        for (a, k) in need {
            if a == 0 {
                inputs.push((0, Need::from([(trans_a as usize, k.clone())])));
            } else {
                inputs.push((1, Need::from([((!trans_b) as usize, k.clone())])));
            }
            if let Some(c) = node.input.get(2).filter(|c| !c.is_empty()) {
                let dims = self.dims(c)?;
                let offset = 2usize.checked_sub(dims.len())?;
                if a >= offset && !dims[a - offset].is_one() {
                    inputs.push((2, Need::from([(a - offset, k)])));
                }
            }
        }
        Plan::inputs(merge_needs(inputs))
    }

    /// A reshape that leaves a needed axis whole, splits it off a larger one, or merges it from
    /// whole groups; the target entry of a needed axis is edited when it is a constant size.
    fn reshape(&self, ix: usize, need: &Need) -> Option<Plan> {
        let node = self.node(ix);
        let from = self.dims(&node.input[0])?;
        let to = self.dims(&node.output[0])?;
        let mut inputs = Need::new();
        let mut edits = vec![];
        for (&a, kept) in need {
            let before: TDim = to[..a].iter().product();
            let size = to[a].to_usize().ok()?;
            // Input axes starting where output axis `a` starts, the last first (past leading
            // size-1 axes, which carry nothing).
            let starts: Vec<usize> = (0..from.len())
                .filter(|&i| from[..i].iter().product::<TDim>() == before)
                .collect();
            let found = starts
                .iter()
                .rev()
                .find_map(|&i| Some((i, reshaped_slices(&from, &to, i, a, size, kept)?)));
            let (input_axis, carried) = match found {
                Some(found) => found,
                None if need.len() == 1 => return self.repetition(ix, a, kept, &from, &starts),
                None => return None,
            };
            if inputs.insert(input_axis, carried).is_some() {
                return None;
            }
            edits.push(self.reshape_entry(ix, a, kept.len())?);
        }
        Some(Plan {
            edits: edits.into_iter().flatten().collect(),
            inputs: vec![(0, inputs)],
            then_gather: None,
        })
    }

    /// A reshape merging groups × copies of a repetition (`repeat_kv`: an `Expand` of a
    /// size-1 axis, then the merge), restricted to some merged slices: the groups they touch
    /// are kept (so no KV head that no kept query head reads is computed), all their copies,
    /// then a gather picks the kept slices.
    fn repetition(
        &self,
        ix: usize,
        a: usize,
        kept: &[usize],
        from: &[TDim],
        starts: &[usize],
    ) -> Option<Plan> {
        let node = self.node(ix);
        let expand = self.producer(&node.input[0])?;
        if self.node(expand).op_type != "Expand" {
            return None;
        }
        let expanded = self.dims(&self.node(expand).input[0])?;
        let offset = from.len().checked_sub(expanded.len())?;
        let i = *starts.iter().rev().find(|&&i| {
            i + 1 >= offset && expanded.get(i + 1 - offset).is_some_and(|d| d.is_one())
        })?;
        let copies = from.get(i + 1)?.to_usize().ok()?;
        let mut groups: Vec<usize> = kept.iter().map(|k| k / copies).collect();
        groups.dedup();
        if groups.windows(2).any(|w| w[1] <= w[0]) {
            return None;
        }
        let picks: Vec<usize> = kept
            .iter()
            .map(|k| {
                groups
                    .iter()
                    .position(|g| *g == k / copies)
                    .map(|p| p * copies + k % copies)
            })
            .collect::<Option<_>>()?;
        let held = groups.len() * copies;
        let edits = self.reshape_entry(ix, a, held)?.into_iter().collect();
        Some(Plan {
            edits,
            inputs: vec![(0, Need::from([(i, groups)]))],
            then_gather: Some((a, held, picks)),
        })
    }

    /// The edit setting the reshape target's entry for output axis `a` to `size`, unless it
    /// is inferred (-1), copied from the input (0) or computed at run time.
    fn reshape_entry(&self, ix: usize, a: usize, size: usize) -> Option<Option<Edit>> {
        match self.int_entry(ix, 1, a)? {
            Some(v) if v > 0 => Some(Some(Edit::IntInput {
                slot: 1,
                position: a,
                value: size as i64,
            })),
            _ => Some(None),
        }
    }

    /// Expand: an axis the input has at full size carries the need; an axis it broadcasts
    /// (size 1) does not. Target sizes of needed axes are edited.
    fn expand(&self, ix: usize, need: &Need, out_rank: usize) -> Option<Plan> {
        let node = self.node(ix);
        let dims = self.dims(&node.input[0])?;
        let offset = out_rank.checked_sub(dims.len())?;
        let shape_len = self.dims(node.input.get(1)?)?.first()?.to_usize().ok()?;
        let shape_offset = out_rank.checked_sub(shape_len)?;
        let mut inputs = Need::new();
        let mut edits = vec![];
        for (&a, kept) in need {
            if a >= offset && !dims[a - offset].is_one() {
                inputs.insert(a - offset, kept.clone());
            }
            if a >= shape_offset {
                if let Some(v) = self.int_entry(ix, 1, a - shape_offset)? {
                    if v > 1 {
                        edits.push(Edit::IntInput {
                            slot: 1,
                            position: a - shape_offset,
                            value: kept.len() as i64,
                        });
                    }
                }
            }
        }
        let inputs = if inputs.is_empty() {
            vec![]
        } else {
            vec![(0, inputs)]
        };
        Some(Plan {
            edits,
            inputs,
            then_gather: None,
        })
    }

    fn concat(&self, ix: usize, need: Need, out_rank: usize) -> Option<Plan> {
        let node = self.node(ix);
        let axis = normalize(attribute_int(node, "axis")?, out_rank);
        let mut inputs = vec![];
        let mut offset = 0;
        for (slot, input) in node.input.iter().enumerate() {
            let mut mine = need.clone();
            // Only a need along the concatenation axis asks for its sizes (a cache's length is
            // symbolic).
            if let Some(kept) = need.get(&axis) {
                let len = self.dims(input)?.get(axis)?.to_usize().ok()?;
                let local: Vec<usize> = kept
                    .iter()
                    .filter(|&&i| i >= offset && i < offset + len)
                    .map(|i| i - offset)
                    .collect();
                // The kept slices must come input by input, in order.
                mine.insert(axis, local);
                offset += len;
            }
            inputs.push((slot, mine));
        }
        if let Some(kept) = need.get(&axis) {
            if kept.windows(2).any(|w| w[1] <= w[0])
                || inputs.iter().any(|(_, n)| n[&axis].is_empty())
            {
                return None;
            }
        }
        Plan::inputs(inputs)
    }

    /// Slice along other axes than the needed ones.
    fn slice(&self, ix: usize, need: Need, out_rank: usize) -> Option<Plan> {
        let node = self.node(ix);
        let sliced: Vec<usize> = match node.input.get(3).filter(|n| !n.is_empty()) {
            Some(axes) => {
                let n = self.dims(axes)?.first()?.to_usize().ok()?;
                (0..n)
                    .map(|p| {
                        self.int_entry(ix, 3, p)
                            .flatten()
                            .map(|a| normalize(a, out_rank))
                    })
                    .collect::<Option<_>>()?
            }
            None => (0..self.dims(node.input.get(1)?)?.first()?.to_usize().ok()?).collect(),
        };
        if need.keys().any(|a| sliced.contains(a)) {
            return None;
        }
        Plan::inputs(vec![(0, need)])
    }

    /// Gather: output axes before and after the gathered one come from the data.
    fn gather(&self, ix: usize, need: Need) -> Option<Plan> {
        let node = self.node(ix);
        let data_rank = self.rank(&node.input[0])?;
        let axis = normalize(attribute_int(node, "axis").unwrap_or(0), data_rank);
        let indices_rank = self.rank(&node.input[1])?;
        let mut data = Need::new();
        for (a, k) in need {
            if a < axis {
                data.insert(a, k);
            } else if a >= axis + indices_rank {
                data.insert(a + 1 - indices_rank, k);
            } else {
                return None;
            }
        }
        Plan::inputs(vec![(0, data)])
    }

    /// Split along a needed axis: each output's kept slices, shifted by its offset; along
    /// another axis, every output must need the same.
    fn split(&self, ix: usize, needs: &[Option<Need>]) -> Option<Plan> {
        let node = self.node(ix);
        let rank = self.rank(&node.input[0])?;
        let axis = normalize(attribute_int(node, "axis").unwrap_or(0), rank);
        let sizes: Vec<usize> = node
            .output
            .iter()
            .map(|o| self.dims(o)?.get(axis)?.to_usize().ok())
            .collect::<Option<_>>()?;
        let first = needs.iter().flatten().next()?;
        let others_same =
            first.keys().all(|&a| a == axis) || needs.iter().all(|n| n.as_ref() == Some(first));
        if !others_same {
            return None;
        }
        let mut input = first.clone();
        input.remove(&axis);
        if first.contains_key(&axis) {
            let mut kept = vec![];
            let mut new_sizes = vec![];
            let mut offset = 0;
            for (k, size) in sizes.iter().enumerate() {
                let local = needs[k]
                    .as_ref()
                    .and_then(|n| n.get(&axis).cloned())
                    .unwrap_or_else(|| (0..*size).collect());
                kept.extend(local.iter().map(|i| i + offset));
                new_sizes.push(local.len() as i64);
                offset += size;
            }
            input.insert(axis, kept);
            let edits = self.split_sizes(ix, new_sizes)?;
            return Some(Plan {
                edits,
                inputs: vec![(0, input)],
                then_gather: None,
            });
        }
        Plan::inputs(vec![(0, input)])
    }

    /// The edits giving a Split new part sizes: its `split` attribute or input, or, for an
    /// equal split with neither, nothing when the parts stay equal.
    fn split_sizes(&self, ix: usize, sizes: Vec<i64>) -> Option<Vec<Edit>> {
        let node = self.node(ix);
        if attribute_ints(node, "split").is_some() {
            return Some(vec![Edit::IntsAttribute {
                name: "split".into(),
                values: sizes,
            }]);
        }
        if node.input.get(1).is_some_and(|s| !s.is_empty()) {
            let mut edits = vec![];
            for (p, &size) in sizes.iter().enumerate() {
                self.int_entry(ix, 1, p)??;
                edits.push(Edit::IntInput {
                    slot: 1,
                    position: p,
                    value: size,
                });
            }
            return Some(edits);
        }
        sizes.windows(2).all(|w| w[0] == w[1]).then(Vec::new)
    }
}

/// The slices of input axis `i` that slices `kept` of output axis `a` (of `size`) of a reshape
/// `from → to` come from: the same ones when the axis is unchanged; whole blocks when it is
/// split off a larger one (heads out of channels); whole groups when it merges two (channels out
/// of heads), which must then be whole.
fn reshaped_slices(
    from: &[TDim],
    to: &[TDim],
    i: usize,
    a: usize,
    size: usize,
    kept: &[usize],
) -> Option<Vec<usize>> {
    let source = from.get(i)?.to_usize().ok()?;
    if source == size {
        return Some(kept.to_vec());
    }
    if source % size == 0 && to.get(a + 1).and_then(|d| d.to_usize().ok()) == Some(source / size) {
        let block = source / size;
        return Some(
            kept.iter()
                .flat_map(|g| g * block..(g + 1) * block)
                .collect(),
        );
    }
    let inner = from.get(i + 1)?.to_usize().ok()?;
    if source * inner == size {
        return whole_blocks(kept, inner);
    }
    None
}

/// Needs of the same input slot merged (axes of both).
fn merge_needs(needs: Vec<(usize, Need)>) -> Vec<(usize, Need)> {
    let mut merged: BTreeMap<usize, Need> = BTreeMap::new();
    for (slot, need) in needs {
        merged.entry(slot).or_default().extend(need);
    }
    merged.into_iter().collect()
}

/// The groups of `block` slices that `kept` consists of, if it consists of whole groups.
fn whole_blocks(kept: &[usize], block: usize) -> Option<Vec<usize>> {
    if block == 0 || !kept.len().is_multiple_of(block) {
        return None;
    }
    kept.chunks(block)
        .map(|chunk| {
            let g = chunk[0] / block;
            chunk
                .iter()
                .enumerate()
                .all(|(r, &c)| c == g * block + r)
                .then_some(g)
        })
        .collect()
}

fn normalize(axis: i64, rank: usize) -> usize {
    if axis < 0 {
        (axis + rank as i64) as usize
    } else {
        axis as usize
    }
}

/// A `Gather` node `output` taking slices `indices` (an int64 initializer) of `axis` of `data`.
pub(crate) fn gather_node(output: &str, data: &str, indices: &str, axis: usize) -> NodeProto {
    let mut node = NodeProto {
        name: output.into(),
        op_type: "Gather".into(),
        input: vec![data.into(), indices.into()],
        output: vec![output.into()],
        ..NodeProto::default()
    };
    node.attribute.push(int_attribute("axis", axis as i64));
    node
}

pub(crate) fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: value,
        r#type: tract_onnx::pb::attribute_proto::AttributeType::Int as i32,
        ..AttributeProto::default()
    }
}

fn ints_attribute(name: &str, values: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: values,
        r#type: tract_onnx::pb::attribute_proto::AttributeType::Ints as i32,
        ..AttributeProto::default()
    }
}

/// A 1-D or N-D int64 initializer.
pub fn int64_tensor(name: &str, dims: &[i64], values: impl Iterator<Item = i64>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Int64 as i32,
        raw_data: values.flat_map(|v| v.to_le_bytes()).collect(),
        ..TensorProto::default()
    }
}

/// The integer values of an int64 or int32 tensor.
pub fn int_values(t: &TensorProto) -> Option<Vec<i64>> {
    let width = match DataType::try_from(t.data_type).ok()? {
        DataType::Int64 => 8,
        DataType::Int32 => 4,
        _ => return None,
    };
    if !t.raw_data.is_empty() {
        return Some(
            t.raw_data
                .chunks_exact(width)
                .map(|b| {
                    if width == 8 {
                        i64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
                    } else {
                        i32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as i64
                    }
                })
                .collect(),
        );
    }
    Some(if width == 8 {
        t.int64_data.clone()
    } else {
        t.int32_data.iter().map(|&v| v as i64).collect()
    })
}

pub(crate) fn set_int_at(t: &mut TensorProto, position: usize, value: i64) -> EditResult<()> {
    let mut values = int_values(t).ok_or_else(|| EditError::NotInteger(t.name.clone()))?;
    *values
        .get_mut(position)
        .ok_or_else(|| EditError::EntryOutOfRange {
            tensor: t.name.clone(),
            position,
        })? = value;
    let int32 = t.data_type == DataType::Int32 as i32;
    t.int64_data.clear();
    t.int32_data.clear();
    t.raw_data = if int32 {
        values
            .iter()
            .flat_map(|&v| (v as i32).to_le_bytes())
            .collect()
    } else {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    };
    Ok(())
}

/// Bytes per element of a tensor's type (types with a fixed size).
fn element_size(data_type: i32) -> Option<usize> {
    Some(match DataType::try_from(data_type).ok()? {
        DataType::Float | DataType::Int32 | DataType::Uint32 => 4,
        DataType::Double | DataType::Int64 | DataType::Uint64 => 8,
        DataType::Float16 | DataType::Bfloat16 | DataType::Int16 | DataType::Uint16 => 2,
        DataType::Int8 | DataType::Uint8 | DataType::Bool => 1,
        _ => return None,
    })
}

/// Keeps `kept` slices of `axis` of a tensor, whatever its element type.
pub fn select(t: &mut TensorProto, axis: usize, kept: &[usize]) -> EditResult<()> {
    let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    if axis >= dims.len() {
        return Err(EditError::AxisOutOfRank {
            tensor: t.name.clone(),
            axis,
            rank: dims.len(),
        });
    }
    if kept.iter().any(|&i| i >= dims[axis]) {
        return Err(EditError::SliceOutOfRange {
            tensor: t.name.clone(),
            size: dims[axis],
        });
    }
    let (outer, size, inner) = around(&dims, axis);
    if !t.raw_data.is_empty() {
        // Raw little-endian data: the same runs, `width` bytes an element.
        let width =
            element_size(t.data_type).ok_or_else(|| EditError::UnsupportedType(t.name.clone()))?;
        t.raw_data = select_runs(&t.raw_data, outer, size, inner * width, kept);
    } else if !t.float_data.is_empty() {
        t.float_data = select_runs(&t.float_data, outer, size, inner, kept);
    } else if !t.int64_data.is_empty() {
        t.int64_data = select_runs(&t.int64_data, outer, size, inner, kept);
    } else if !t.int32_data.is_empty() {
        t.int32_data = select_runs(&t.int32_data, outer, size, inner, kept);
    } else if !t.double_data.is_empty() {
        t.double_data = select_runs(&t.double_data, outer, size, inner, kept);
    } else if dims.iter().product::<usize>() > 0 {
        float_data(t)?;
        return Err(EditError::ExternalData(t.name.clone()));
    }
    t.dims[axis] = kept.len() as i64;
    Ok(())
}
