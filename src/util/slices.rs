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

/// The starts of the runs of data laid out as in [`select_runs`], slice after slice along the
/// axis of `size` (each slice's runs in the order of the axes before it).
fn slice_major_starts(outer: usize, size: usize, inner: usize) -> impl Iterator<Item = usize> {
    (0..size).flat_map(move |i| (0..outer).map(move |o| (o * size + i) * inner))
}

/// The elements in the order of their slices along an axis of `size` (slice after slice, each
/// in the layout's order of the other axes), for data laid out as in [`select_runs`]: the same
/// weight stored with its axes in another order reads the same this way.
pub fn slices_first<T: Copy>(data: &[T], outer: usize, size: usize, inner: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(data.len());
    for start in slice_major_starts(outer, size, inner) {
        out.extend_from_slice(&data[start..start + inner]);
    }
    out
}

/// Writes `values`, in the order of [`slices_first`] (as many as `data` holds), back into data
/// of that layout.
pub fn set_slices_first<T: Copy>(
    data: &mut [T],
    outer: usize,
    size: usize,
    inner: usize,
    values: &[T],
) {
    debug_assert_eq!(values.len(), data.len());
    let runs = slice_major_starts(outer, size, inner).zip(values.chunks_exact(inner));
    for (start, run) in runs {
        data[start..start + inner].copy_from_slice(run);
    }
}

/// A hash of float values' bits: equal for the same values in the same order.
pub fn bits_hash<'a>(values: impl IntoIterator<Item = &'a f32>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    values
        .into_iter()
        .for_each(|v| v.to_bits().hash(&mut hasher));
    hasher.finish()
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
    let finite = match tensor.datum_type() {
        DatumType::F16 => in_values::<f16>(tensor, |v| v.iter().all(|x| x.is_finite())),
        DatumType::F32 => in_values::<f32>(tensor, |v| v.iter().all(|x| x.is_finite())),
        DatumType::F64 => in_values::<f64>(tensor, |v| v.iter().all(|x| x.is_finite())),
        _ => in_f32_copy(tensor, |v| v.iter().all(|x| x.is_finite())),
    };
    finite.unwrap_or(false)
}

/// All-zero slices of a constant, per axis. Only float data is inspected.
pub fn zero_slices_of(tensor: &Tensor) -> ZeroSlices {
    let found = match tensor.datum_type() {
        DatumType::F16 => zero_slices_in::<f16>(tensor, f16::ZERO),
        DatumType::F32 => zero_slices_in::<f32>(tensor, 0.0),
        DatumType::F64 => zero_slices_in::<f64>(tensor, 0.0),
        dt if dt.is_float() => tensor
            .cast_to::<f32>()
            .ok()
            .and_then(|data| zero_slices_in::<f32>(&data, 0.0)),
        _ => None,
    };
    found.unwrap_or_else(|| vec![vec![]; tensor.rank()])
}

/// `test` on the values of a tensor of type `T`, read in place: scanning a billion weights
/// must not copy them (a half-precision model cast to f32 would take twice its size again).
fn in_values<T: Datum>(tensor: &Tensor, test: impl Fn(&[T]) -> bool) -> Option<bool> {
    Some(test(tensor.try_as_plain_ram().ok()?.as_slice::<T>().ok()?))
}

/// `test` on a float tensor of another type, cast to f32.
fn in_f32_copy(tensor: &Tensor, test: impl Fn(&[f32]) -> bool) -> Option<bool> {
    let data = tensor.cast_to::<f32>().ok()?;
    in_values::<f32>(&data, test)
}

/// The all-zero slices along each axis of a tensor of type `T` (`None`: not of that type).
fn zero_slices_in<T: Datum + PartialEq>(tensor: &Tensor, zero: T) -> Option<ZeroSlices> {
    let view = tensor.to_plain_array_view::<T>().ok()?;
    let slices = (0..tensor.rank())
        .map(|axis| {
            view.axis_iter(tract_ndarray::Axis(axis))
                .enumerate()
                .filter(|(_, slice)| slice.iter().all(|v| *v == zero))
                .map(|(i, _)| i)
                .collect()
        })
        .collect();
    Some(slices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_is_scanned_like_single() {
        // Row 1 and column 2 are zero (one entry a negative zero), one value is infinite.
        let values = [[1.0, 2.0, 0.0], [0.0, -0.0, 0.0], [3.0, f32::INFINITY, 0.0]];
        let single = tensor2(&values);
        let half = single.cast_to::<f16>().unwrap().into_owned();
        assert_eq!(zero_slices_of(&single), vec![vec![1], vec![2]]);
        assert_eq!(zero_slices_of(&half), zero_slices_of(&single));
        assert!(!all_finite(&single) && !all_finite(&half));
        let finite = tensor2(&[[1.0f32, 0.0]])
            .cast_to::<f16>()
            .unwrap()
            .into_owned();
        assert!(all_finite(&finite));
    }

    #[test]
    fn slices_first_reads_a_transposed_weight_alike() {
        // A 2 × 3 weight whose slices are its columns, and the same weight stored transposed.
        let stored = [1, 2, 3, 4, 5, 6];
        let transposed = [1, 4, 2, 5, 3, 6];
        let columns = slices_first(&stored, 2, 3, 1);
        assert_eq!(columns, slices_first(&transposed, 1, 3, 2));
        assert_eq!(columns, [1, 4, 2, 5, 3, 6]);
        let mut written = [0; 6];
        set_slices_first(&mut written, 2, 3, 1, &columns);
        assert_eq!(written, stored);
    }
}
