//! Slices of tensors along one axis: selecting some (in any order, repeats allowed), zeroing
//! some, and finding the all-zero ones. Data is laid out row-major, so a slice of axis `a` is,
//! for every index of the axes before it, one contiguous run of the axes after it: every
//! operation here is a loop over those runs, written once in [`select_runs`] and [`fill_runs`].

use tract_core::internal::*;

/// Indices of all-zero slices, per axis (sorted; empty when none is known).
pub type ZeroSlices = Vec<Vec<usize>>;

/// The runs of `indices` along an axis of `size`, for data of `outer` × `size` × `inner`
/// elements: their elements in that order.
pub fn select_runs<T: Copy>(
    data: &[T],
    outer: usize,
    size: usize,
    inner: usize,
    indices: &[usize],
) -> Vec<T> {
    let mut out = Vec::with_capacity(outer * indices.len() * inner);
    for o in 0..outer {
        for &i in indices {
            let start = (o * size + i) * inner;
            out.extend_from_slice(&data[start..start + inner]);
        }
    }
    out
}

/// Sets the runs of `indices` along an axis of `size` to `value` (layout as in [`select_runs`]).
pub fn fill_runs<T: Copy>(
    data: &mut [T],
    outer: usize,
    size: usize,
    inner: usize,
    indices: &[usize],
    value: T,
) {
    for o in 0..outer {
        for &i in indices {
            let start = (o * size + i) * inner;
            data[start..start + inner].fill(value);
        }
    }
}

/// The (outer, size, inner) split of `shape` around `axis`.
pub fn around(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// Selects `indices` along `axis` of a tensor (any datum type), copying only what is selected:
/// for plain data, one contiguous run per (outer index, selected slice).
pub fn select_slices(tensor: &Tensor, axis: usize, indices: &[usize]) -> TractResult<Tensor> {
    let shape = tensor.shape();
    ensure!(
        axis < shape.len(),
        "axis {axis} out of rank {}",
        shape.len()
    );
    ensure!(
        indices.iter().all(|&i| i < shape[axis]),
        "slice index out of range {}",
        shape[axis]
    );
    fn runs<T: Datum + Copy>(
        tensor: &Tensor,
        axis: usize,
        indices: &[usize],
    ) -> TractResult<Tensor> {
        let shape = tensor.shape();
        let data = tensor.try_as_plain_ram()?.as_slice::<T>()?;
        let (outer, size, inner) = around(shape, axis);
        let mut new_shape = shape.to_vec();
        new_shape[axis] = indices.len();
        let selected = select_runs(data, outer, size, inner, indices);
        Ok(tract_ndarray::ArrayD::from_shape_vec(new_shape, selected)?.into_tensor())
    }
    fn with_ndarray<T: Datum>(
        tensor: &Tensor,
        axis: usize,
        indices: &[usize],
    ) -> TractResult<Tensor> {
        let view = tensor.to_plain_array_view::<T>()?;
        Ok(view
            .select(tract_ndarray::Axis(axis), indices)
            .into_tensor())
    }
    let dt = tensor.datum_type();
    if dt.is_copy() {
        dispatch_copy!(runs(dt)(tensor, axis, indices))
    } else {
        dispatch_datum!(with_ndarray(dt)(tensor, axis, indices))
    }
}

/// Whether a tensor holds no infinity or NaN (non-float data always).
pub fn all_finite(tensor: &Tensor) -> bool {
    if !tensor.datum_type().is_float() {
        return true;
    }
    let Ok(data) = tensor.cast_to::<f32>() else {
        return false;
    };
    data.try_as_plain_ram()
        .and_then(|d| d.as_slice::<f32>().map(|s| s.iter().all(|v| v.is_finite())))
        .unwrap_or(false)
}

/// All-zero slices of a constant, per axis. Only float data is inspected.
pub fn zero_slices_of(tensor: &Tensor) -> ZeroSlices {
    let rank = tensor.rank();
    if !tensor.datum_type().is_float() {
        return vec![vec![]; rank];
    }
    let Ok(data) = tensor.cast_to::<f32>() else {
        return vec![vec![]; rank];
    };
    let Ok(view) = data.to_plain_array_view::<f32>() else {
        return vec![vec![]; rank];
    };
    (0..rank)
        .map(|axis| {
            view.axis_iter(tract_ndarray::Axis(axis))
                .enumerate()
                .filter(|(_, slice)| slice.iter().all(|v| *v == 0.0))
                .map(|(i, _)| i)
                .collect()
        })
        .collect()
}
