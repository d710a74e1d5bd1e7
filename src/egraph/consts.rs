//! The constant store behind `const` leaves: the model's constants, and slices of them made by
//! rules, kept *lazily* as a selection of indices of a source tensor.
//!
//! Saturation slices a weight many ways (each kept set of each layer, and compositions of them)
//! but extraction uses one; copying a BERT-base weight for every candidate would cost seconds
//! and gigabytes. A slice is therefore only its source and, per axis, the indices it keeps; its
//! type and zero slices are derived from the source's, and its data is copied only when asked
//! for (by raising the chosen graph, or by a guard reading a few slices).

use crate::util::slices::{all_finite, select_slices, zero_slices_of, ZeroSlices};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use tract_core::internal::*;

/// Indices kept along each axis of a source tensor (`None`: the whole axis).
type Selection = Vec<Option<Arc<Vec<usize>>>>;

struct Entry {
    /// The source model's node name (slices keep it).
    name: String,
    source: Arc<Tensor>,
    selection: Selection,
    fact: TypedFact,
    /// Known all-zero slices: the source's, on the kept indices.
    zeros: ZeroSlices,
    /// Whether every value is finite (a slice of a finite tensor is).
    finite: bool,
    data: OnceLock<Arc<Tensor>>,
}

/// Constants by key (the `k` of `Key::Const(k)`).
#[derive(Default)]
pub struct ConstStore {
    entries: Vec<Entry>,
    /// `(const, axis, set key) -> slice`, so a rule yields the same node every time.
    sliced: HashMap<(u32, usize, u32), u32>,
    /// Constants computed by guards, by content: the same computation yields the same node.
    computed: HashMap<Arc<Tensor>, u32>,
}

impl ConstStore {
    /// Adds a constant of the source model.
    pub fn add(&mut self, tensor: Arc<Tensor>, name: String) -> TractResult<u32> {
        let zeros = zero_slices_of(&tensor);
        let finite = all_finite(&tensor);
        let fact = TypedFact::try_from(tensor.clone())?;
        let selection = vec![None; tensor.rank()];
        self.entries.push(Entry {
            name,
            data: OnceLock::from(tensor.clone()),
            source: tensor,
            selection,
            fact,
            zeros,
            finite,
        });
        Ok(self.entries.len() as u32 - 1)
    }

    /// Adds a constant computed by a guard, interned by content.
    pub fn computed(&mut self, tensor: Tensor, name: String) -> TractResult<u32> {
        let tensor = Arc::new(tensor);
        if let Some(k) = self.computed.get(&tensor) {
            return Ok(*k);
        }
        let k = self.add(tensor.clone(), name)?;
        self.computed.insert(tensor, k);
        Ok(k)
    }

    /// Constant `k` restricted to the slices `set` (interned as `set_key`) of `axis`, without
    /// copying data; cached per argument triple.
    pub fn slice(&mut self, k: u32, axis: usize, set_key: u32, set: &[usize]) -> TractResult<u32> {
        if let Some(done) = self.sliced.get(&(k, axis, set_key)) {
            return Ok(*done);
        }
        let entry = &self.entries[k as usize];
        let rank = entry.fact.rank();
        ensure!(axis < rank, "axis {axis} out of rank {rank}");
        let size = entry.fact.shape[axis].to_usize()?;
        ensure!(
            set.iter().all(|&i| i < size),
            "slice index out of range {size}"
        );
        let mut selection = entry.selection.clone();
        selection[axis] = Some(Arc::new(compose(selection[axis].as_deref(), set)));
        let mut shape: TVec<TDim> = entry.fact.shape.iter().cloned().collect();
        shape[axis] = set.len().into();
        let mut zeros = entry.zeros.clone();
        zeros[axis] = kept_positions(&zeros[axis], set);
        let sliced = Entry {
            name: entry.name.clone(),
            source: entry.source.clone(),
            fact: entry.fact.datum_type.fact(shape),
            selection,
            zeros,
            finite: entry.finite,
            data: OnceLock::new(),
        };
        self.entries.push(sliced);
        let new = self.entries.len() as u32 - 1;
        self.sliced.insert((k, axis, set_key), new);
        Ok(new)
    }

    /// The data of constant `k` (copied out of its source on first use).
    pub fn tensor(&self, k: u32) -> TractResult<Arc<Tensor>> {
        let entry = &self.entries[k as usize];
        if let Some(data) = entry.data.get() {
            return Ok(data.clone());
        }
        let data = Arc::new(materialize(&entry.source, &entry.selection)?);
        Ok(entry.data.get_or_init(|| data).clone())
    }

    /// Slices `indices` of `axis` of constant `k`, copying only those.
    pub fn select(&self, k: u32, axis: usize, indices: &[usize]) -> TractResult<Tensor> {
        let entry = &self.entries[k as usize];
        ensure!(axis < entry.selection.len(), "axis {axis} out of rank");
        let mut selection = entry.selection.clone();
        selection[axis] = Some(Arc::new(compose(selection[axis].as_deref(), indices)));
        materialize(&entry.source, &selection)
    }

    /// The type of constant `k` (shape after slicing).
    pub fn fact(&self, k: u32) -> &TypedFact {
        &self.entries[k as usize].fact
    }

    /// The known all-zero slices of constant `k`.
    pub fn zeros(&self, k: u32) -> &ZeroSlices {
        &self.entries[k as usize].zeros
    }

    /// Whether every value of constant `k` is finite.
    pub fn finite(&self, k: u32) -> bool {
        self.entries[k as usize].finite
    }

    /// The source node name of constant `k`.
    pub fn name(&self, k: u32) -> &str {
        &self.entries[k as usize].name
    }

    /// Bytes constant `k` holds once materialized.
    pub fn bytes(&self, k: u32) -> usize {
        let fact = self.fact(k);
        let elements: usize = fact
            .shape
            .iter()
            .map(|d| d.to_usize().unwrap_or(0))
            .product();
        elements * fact.datum_type.size_of()
    }
}

/// Indices of the source kept by selecting `set` out of an axis that already kept `kept`.
fn compose(kept: Option<&Vec<usize>>, set: &[usize]) -> Vec<usize> {
    match kept {
        Some(kept) => set.iter().map(|&i| kept[i]).collect(),
        None => set.to_vec(),
    }
}

/// Positions, within `set`, of the indices listed in `zeros`.
pub fn kept_positions(zeros: &[usize], set: &[usize]) -> Vec<usize> {
    set.iter()
        .enumerate()
        .filter(|(_, i)| zeros.binary_search(i).is_ok())
        .map(|(p, _)| p)
        .collect()
}

fn materialize(source: &Tensor, selection: &Selection) -> TractResult<Tensor> {
    let mut restricted = selection
        .iter()
        .enumerate()
        .filter_map(|(axis, s)| s.as_ref().map(|s| (axis, s)));
    let Some((axis, indices)) = restricted.next() else {
        return Ok(source.clone());
    };
    let mut tensor = select_slices(source, axis, indices)?;
    for (axis, indices) in restricted {
        tensor = select_slices(&tensor, axis, indices)?;
    }
    Ok(tensor)
}
