//! What calibration data says about each group, over real tokens only.
//!
//! Calibration sentences are padded: most positions of a 128-token sample are padding, and
//! their activations describe nothing a user will see. Every statistic here is weighted by the
//! model's attention mask (a model input whose name contains `mask`), flattened over the
//! consumer's token axes (for a generation step, the new tokens' end of it); without such an
//! input, or when its shape does not line up with the token axes, every position counts.
//!
//! The consumer of a group is seen as a matrix product `X · W (+ b)`: `X` has one row per token
//! and one column per contracted input position (a channel, or one element of a head), `W` one
//! row per input position and one column per output feature ([`MatrixForm`]). From one pass
//! over the samples this gathers, per group: per-column means and variances, the units' scores,
//! and the Gram matrix of `[X, 1]` split into folds for the least-squares refit
//! ([`crate::autoslim::refit`]).

use crate::autoslim::calibration::Calibration;
use crate::model::discover::{Group, Kind, Units};
use crate::model::stats::weight_of;
use crate::util::parallel::in_parallel;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Mat, Par};
use std::ops::Range;
use std::sync::Mutex;
use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;
use tract_ndarray::{Array2, ArrayView2, Axis as NdAxis};

/// Folds of the Gram matrices, by sample (sample `i` goes to fold `i % FOLDS`).
pub const FOLDS: usize = 3;

/// A consumer EinSum as a matrix product between its computed input and its weight.
#[derive(Clone, Debug)]
pub struct MatrixForm {
    /// The activation's axes: token axes (carried to the output) then contracted ones.
    activation_order: Vec<usize>,
    /// How many leading axes of `activation_order` are token axes.
    token_axes: usize,
    /// The weight's axes: contracted ones (in the activation's order) then output features.
    weight_order: Vec<usize>,
    /// The weight's shape.
    weight_shape: Vec<usize>,
    /// Rows of the matrix form (contracted positions).
    pub inputs: usize,
    /// Columns of the weight matrix (output features).
    pub outputs: usize,
    /// The rows of each unit.
    pub unit_rows: Vec<Vec<usize>>,
    /// The consumer's output shape with every axis but the features set to 1: the shape of a
    /// bias term in the output's layout.
    pub bias_shape: Vec<usize>,
}

impl MatrixForm {
    /// The matrix form of a group's consumer, when its EinSum is a plain product: every letter
    /// in the activation is a token (kept in the output, absent from the weight) or contracted
    /// with the weight once; every other weight letter is an output feature.
    pub fn of(model: &TypedModel, group: &Group) -> TractResult<MatrixForm> {
        let node = model.node(group.consumer);
        let einsum = node
            .op_as::<EinSum>()
            .context("consumer is not an EinSum")?;
        let weight_slot = node
            .inputs
            .iter()
            .position(|i| i.node == group.weight)
            .context("consumer does not read its weight")?;
        let input_slot = 1 - weight_slot;
        let activation_fact = model.outlet_fact(node.inputs[input_slot])?;
        let activation_shape: Vec<usize> = activation_fact
            .shape
            .iter()
            .map(|d| d.to_usize().map_err(|e| format_err!("{e:?}")))
            .collect::<TractResult<_>>()?;
        let weight_shape = weight_of(model, group.weight)?.shape().to_vec();
        let Letters {
            tokens,
            contracted,
            features,
        } = letters(einsum, input_slot, weight_slot)
            .with_context(|| format!("consumer `{}`", node.name))?;
        let output_shape = &model.outlet_fact(OutletId::new(group.consumer, 0))?.shape;
        let bias_shape = bias_layout(einsum, weight_slot, &features, output_shape)
            .with_context(|| format!("consumer `{}`", node.name))?;
        let mut activation_order = tokens.clone();
        activation_order.extend(contracted.iter().map(|(a, _)| *a));
        let mut weight_order: Vec<usize> = contracted.iter().map(|(_, w)| *w).collect();
        weight_order.extend(&features);
        let inputs = contracted
            .iter()
            .map(|(a, _)| activation_shape[*a])
            .product();
        let outputs = features.iter().map(|w| weight_shape[*w]).product();
        let contracted_axes: Vec<usize> = contracted.iter().map(|(a, _)| *a).collect();
        let unit_rows = unit_rows(
            &activation_shape,
            &contracted_axes,
            group.activation_units,
            group.units,
        )?;
        Ok(MatrixForm {
            activation_order,
            token_axes: tokens.len(),
            weight_order,
            weight_shape,
            inputs,
            outputs,
            unit_rows,
            bias_shape,
        })
    }

    /// The activation as a `tokens × inputs` matrix.
    pub fn activation_matrix(&self, activation: &Tensor) -> TractResult<Array2<f32>> {
        let data = activation.cast_to::<f32>()?;
        let view = data.to_plain_array_view::<f32>()?;
        let permuted = view.permuted_axes(self.activation_order.clone());
        let tokens: usize = permuted.shape()[..self.token_axes].iter().product();
        Ok(permuted
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((tokens, self.inputs))?)
    }

    /// The weight as an `inputs × outputs` matrix.
    pub fn weight_matrix(&self, weight: &Tensor) -> TractResult<Array2<f32>> {
        let data = weight.cast_to::<f32>()?;
        let view = data.to_plain_array_view::<f32>()?;
        Ok(view
            .permuted_axes(self.weight_order.clone())
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((self.inputs, self.outputs))?)
    }

    /// A weight matrix back in the weight's own layout and type.
    pub fn weight_tensor(&self, matrix: ArrayView2<f32>, dt: DatumType) -> TractResult<Tensor> {
        let permuted_shape: Vec<usize> = self
            .weight_order
            .iter()
            .map(|a| self.weight_shape[*a])
            .collect();
        let permuted = matrix
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(permuted_shape)?;
        let mut inverse = vec![0; self.weight_order.len()];
        for (position, axis) in self.weight_order.iter().enumerate() {
            inverse[*axis] = position;
        }
        let back = permuted
            .permuted_axes(inverse)
            .as_standard_layout()
            .into_owned();
        Ok(back.into_tensor().cast_to_dt(dt)?.into_owned())
    }
}

/// The axes of a consumer seen as a matrix product, each list sorted.
struct Letters {
    /// The activation's token axes (kept in the output).
    tokens: Vec<usize>,
    /// The (activation, weight) axis pairs it contracts.
    contracted: Vec<(usize, usize)>,
    /// The weight's feature axes (kept in the output).
    features: Vec<usize>,
}

/// The consumer's [`Letters`]; an EinSum of another shape is not a matrix product.
fn letters(einsum: &EinSum, input_slot: usize, weight_slot: usize) -> TractResult<Letters> {
    let (mut tokens, mut contracted, mut features) = (vec![], vec![], vec![]);
    for letter in einsum.axes.iter_all_axes() {
        let (a, w, o) = (
            &letter.inputs[input_slot],
            &letter.inputs[weight_slot],
            &letter.outputs[0],
        );
        match (a.len(), w.len(), o.len()) {
            (1, 0, 1) => tokens.push(a[0]),
            (1, 1, 0) => contracted.push((a[0], w[0])),
            (0, 1, 1) => features.push(w[0]),
            (0, 0, _) => {}
            _ => bail!("not a plain matrix product (axis {})", letter.repr),
        }
    }
    tokens.sort_unstable();
    contracted.sort_unstable();
    features.sort_unstable();
    Ok(Letters {
        tokens,
        contracted,
        features,
    })
}

/// The output's shape with every axis but the weight's features set to 1; the features must
/// come in the weight's order, so that a vector over them reshapes into it.
fn bias_layout(
    einsum: &EinSum,
    weight_slot: usize,
    features: &[usize],
    output_shape: &ShapeFact,
) -> TractResult<Vec<usize>> {
    let mut bias_shape = vec![1; output_shape.len()];
    let mut last_position = None;
    for w in features {
        let letter = einsum
            .axes
            .axis((InOut::In(weight_slot), *w))
            .context("weight axis without a letter")?;
        let position = letter.outputs[0][0];
        ensure!(
            last_position.is_none_or(|p| p < position),
            "the output reorders the weight's features"
        );
        last_position = Some(position);
        bias_shape[position] = output_shape[position]
            .to_usize()
            .map_err(|e| format_err!("{e:?}"))?;
    }
    Ok(bias_shape)
}

/// The flattened contracted positions of each unit.
fn unit_rows(
    shape: &[usize],
    contracted: &[usize],
    units: Units,
    count: usize,
) -> TractResult<Vec<Vec<usize>>> {
    let unit_axes: Vec<usize> = (units.axis..units.axis + units.merged).collect();
    ensure!(
        unit_axes.iter().all(|a| contracted.contains(a)),
        "the units do not lie along contracted axes"
    );
    let sizes: Vec<usize> = contracted.iter().map(|a| shape[*a]).collect();
    let total: usize = sizes.iter().product();
    let mut rows = vec![vec![]; count];
    for flat in 0..total {
        // The multi-index of `flat` over the contracted axes, row-major.
        let mut rest = flat;
        let mut index = vec![0; sizes.len()];
        for (k, size) in sizes.iter().enumerate().rev() {
            index[k] = rest % size;
            rest /= size;
        }
        let mut merged = 0;
        for axis in &unit_axes {
            let k = contracted.iter().position(|a| a == axis).unwrap_or(0);
            merged = merged * sizes[k] + index[k];
        }
        let unit = merged / units.block.max(1);
        ensure!(unit < count, "position {flat} beyond the group's units");
        rows[unit].push(flat);
    }
    Ok(rows)
}

/// Real tokens gathered, about, before they go into the Gram matrices (one product per fold):
/// each product reads and writes every fold's `(inputs + 1)²` accumulator, so fewer, larger
/// products cost less, while the activations held stay bounded by tokens, not samples.
const CHUNK_TOKENS: usize = 1536;

/// Samples run together at most.
const CHUNK_SAMPLES: usize = 64;

/// Consecutive ranges of samples holding about [`CHUNK_TOKENS`] real tokens each (at most
/// [`CHUNK_SAMPLES`] samples).
fn chunks(calibration: &Calibration) -> TractResult<Vec<Range<usize>>> {
    let mut found = vec![];
    let (mut start, mut tokens) = (0, 0);
    for (i, sample) in calibration.samples.iter().enumerate() {
        tokens += sample_tokens(calibration, sample)?;
        if tokens >= CHUNK_TOKENS || i + 1 - start == CHUNK_SAMPLES {
            found.push(start..i + 1);
            (start, tokens) = (i + 1, 0);
        }
    }
    if start < calibration.samples.len() {
        found.push(start..calibration.samples.len());
    }
    Ok(found)
}

/// A sample's real tokens by its mask, or the length of its first input without one.
fn sample_tokens(calibration: &Calibration, sample: &[TValue]) -> TractResult<usize> {
    let Some(mask) = calibration.mask else {
        return Ok(sample.first().map_or(1, |v| v.len()));
    };
    let mask = sample[mask].cast_to::<f32>()?;
    let marks = mask.try_as_plain_ram()?.as_slice::<f32>()?;
    Ok(marks.iter().filter(|m| **m > 0.0).count())
}

/// The rows of `x` whose token weight is positive (all of them without weights).
fn real_tokens(x: Array2<f32>, weights: Option<&[f64]>) -> Array2<f32> {
    let Some(weights) = weights else {
        return x;
    };
    let rows: Vec<usize> = (0..x.nrows()).filter(|t| weights[*t] > 0.0).collect();
    x.select(NdAxis(0), &rows)
}

/// Per-token weights of a sample (1 for a real token, 0 for padding) in the order of the
/// activation matrix's rows, or `None` when every position counts. A generation step's mask
/// spans the cached tokens and then the new ones, whose activations these are: each row's last
/// entries are theirs.
fn token_weights(mask: Option<&Tensor>, tokens: usize) -> TractResult<Option<Vec<f64>>> {
    let Some(mask) = mask else {
        return Ok(None);
    };
    let Some(new) = new_tokens_per_row(mask.shape(), tokens) else {
        return Ok(None);
    };
    let mask = mask.cast_to::<f32>()?;
    let rows = mask.try_as_plain_ram()?.as_slice::<f32>()?;
    let row_length = mask.shape().last().copied().unwrap_or(1).max(1);
    let weights: Vec<f64> = rows
        .chunks(row_length)
        .flat_map(|row| &row[row.len() - new..])
        .map(|m| if *m > 0.0 { 1.0 } else { 0.0 })
        .collect();
    Ok(Some(weights))
}

/// How many of the last entries of each row of a mask shaped `shape` the `tokens` rows of an
/// activation stand for: all of them, or, for a `[batch, past + new]` mask, `new`.
fn new_tokens_per_row(shape: &[usize], tokens: usize) -> Option<usize> {
    let len: usize = shape.iter().product();
    let row_length = shape.last().copied().unwrap_or(1).max(1);
    let rows = len / row_length;
    if len == tokens {
        Some(row_length)
    } else if shape.len() == 2 && tokens.is_multiple_of(rows) && tokens / rows <= row_length {
        Some(tokens / rows)
    } else {
        None
    }
}

/// What calibration data says about one group.
#[derive(Clone, Debug)]
pub struct Calibrated {
    /// The consumer as a matrix product.
    pub form: MatrixForm,
    /// Real tokens seen.
    pub tokens: f64,
    /// Samples whose token mask did not line up with the consumer's token axes, so every
    /// position of them counted.
    pub unmasked_samples: usize,
    /// Mean of each input column over real tokens.
    pub mean: Vec<f64>,
    /// Variance of each input column over real tokens.
    pub variance: Vec<f64>,
    /// Mean |x| of each input column over real tokens.
    pub magnitude: Vec<f64>,
    /// Heads: each head's mean contribution norm to the output over real tokens.
    pub head_contribution: Vec<f64>,
    /// Gram matrices of `[X, 1]` over real tokens (`inputs + 1` square): while calibrating,
    /// one per fold; once finished, the first `FOLDS − 1` folds, then the total, so that the
    /// total is read without summing (or allocating) and the last fold costs no extra matrix
    /// (see [`Calibrated::gram`] and [`Calibrated::folds`]).
    grams: Vec<Mat<f64>>,
    /// What is subtracted from each input column before its products are taken (the first
    /// samples' means), until [`Calibrated::finish`] undoes it.
    shift: Vec<f32>,
}

impl Calibrated {
    fn new(form: MatrixForm, units: usize) -> Calibrated {
        let n = form.inputs;
        Calibrated {
            form,
            tokens: 0.0,
            unmasked_samples: 0,
            mean: vec![0.0; n],
            variance: vec![0.0; n],
            magnitude: vec![0.0; n],
            head_contribution: vec![0.0; units],
            grams: (0..FOLDS).map(|_| Mat::zeros(n + 1, n + 1)).collect(),
            shift: vec![],
        }
    }

    /// Shifts the inputs by the mean of the first samples' real tokens, if not done yet.
    fn shift_by_mean_of(&mut self, xs: &[&Array2<f32>]) {
        let rows: usize = xs.iter().map(|x| x.nrows()).sum();
        if !self.shift.is_empty() || rows == 0 {
            return;
        }
        let mut sum = vec![0f64; self.form.inputs];
        for row in xs.iter().flat_map(|x| x.rows()) {
            sum.iter_mut().zip(row).for_each(|(s, v)| *s += *v as f64);
        }
        self.shift = sum.iter().map(|s| (s / rows as f64) as f32).collect();
    }

    /// Adds the real tokens of consecutive samples from `first` on (and whether each one's mask
    /// lined up) to the statistics of `group`, whose consumer weight matrix is `w`.
    fn add_chunk(
        &mut self,
        first: usize,
        samples: &[&(Array2<f32>, bool)],
        (group, w): (&Group, &Array2<f32>),
        (scratch, par): (&mut Mat<f32>, Par),
    ) {
        for (x, unmasked) in samples {
            self.add_moments(x, group, w);
            self.unmasked_samples += *unmasked as usize;
        }
        self.shift_by_mean_of(&samples.iter().map(|(x, _)| x).collect::<Vec<_>>());
        for fold in 0..FOLDS {
            let xs: Vec<&Array2<f32>> = samples
                .iter()
                .enumerate()
                .filter(|(k, _)| (first + k) % FOLDS == fold)
                .map(|(_, (x, _))| x)
                .collect();
            self.add_gram(fold, &xs, scratch, par);
        }
    }

    /// Adds one sample's real tokens (`tokens × inputs`) to the moments.
    fn add_moments(&mut self, x: &Array2<f32>, group: &Group, w: &Array2<f32>) {
        for row in x.rows() {
            for (j, v) in row.iter().enumerate() {
                let v = *v as f64;
                self.mean[j] += v;
                self.variance[j] += v * v;
                self.magnitude[j] += v.abs();
            }
        }
        self.tokens += x.nrows() as f64;
        if group.kind == Kind::Heads {
            self.add_head_contributions(x, w);
        }
    }

    /// Adds the real tokens of some samples of one fold to its Gram matrix, in one product.
    /// The product is taken in f32 (twice the speed of f64) on inputs shifted to about zero
    /// mean, so that rounding is relative to their spread, not to their mean; it is
    /// accumulated in f64 across calls, and [`Calibrated::finish`] undoes the shift exactly.
    /// Only lower triangles are computed; `scratch` (at least `inputs + 1` square) holds the
    /// product, so that no call allocates (and faults in) a matrix of that size.
    fn add_gram(&mut self, fold: usize, xs: &[&Array2<f32>], scratch: &mut Mat<f32>, par: Par) {
        let n = self.form.inputs;
        let rows: usize = xs.iter().map(|x| x.nrows()).sum();
        if rows == 0 {
            return;
        }
        let shift = &self.shift;
        let mut stacked = Mat::<f32>::zeros(rows, n + 1);
        for (r, row) in xs.iter().flat_map(|x| x.rows()).enumerate() {
            for (j, (v, c)) in row.iter().zip(shift).enumerate() {
                stacked[(r, j)] = v - c;
            }
            stacked[(r, n)] = 1.0;
        }
        triangular::matmul(
            scratch.as_mut().submatrix_mut(0, 0, n + 1, n + 1),
            BlockStructure::TriangularLower,
            faer::Accum::Replace,
            stacked.transpose(),
            BlockStructure::Rectangular,
            stacked.as_ref(),
            BlockStructure::Rectangular,
            1.0,
            par,
        );
        let gram = &mut self.grams[fold];
        for j in 0..=n {
            let column = &mut gram.col_as_slice_mut(j)[j..];
            let added = &scratch.col_as_slice(j)[j..=n];
            column
                .iter_mut()
                .zip(added)
                .for_each(|(g, p)| *g += *p as f64);
        }
    }

    /// Σ over real tokens of ‖x_head · W_head‖ for every head.
    fn add_head_contributions(&mut self, x: &Array2<f32>, w: &Array2<f32>) {
        for (u, unit_rows) in self.form.unit_rows.iter().enumerate() {
            let xs = x.select(NdAxis(1), unit_rows);
            let ws = w.select(NdAxis(0), unit_rows);
            let out = xs.dot(&ws);
            self.head_contribution[u] += out
                .rows()
                .into_iter()
                .map(|r| r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt())
                .sum::<f64>();
        }
    }

    /// Turns sums into means and variances, the Gram matrices' lower triangles of shifted
    /// inputs into whole Gram matrices of the inputs, and the last fold's into the total.
    fn finish(&mut self) {
        let shift = std::mem::take(&mut self.shift);
        for gram in &mut self.grams {
            unshift(gram, &shift);
        }
        if let Some((last, others)) = self.grams.split_last_mut() {
            others.iter().for_each(|fold| *last += fold);
        }
        let count = self.tokens.max(1.0);
        for j in 0..self.mean.len() {
            let mean = self.mean[j] / count;
            self.mean[j] = mean;
            self.variance[j] = (self.variance[j] / count - mean * mean).max(0.0);
            self.magnitude[j] /= count;
        }
        self.head_contribution.iter_mut().for_each(|c| *c /= count);
    }

    /// The Gram matrix over every fold.
    pub fn gram(&self) -> &Mat<f64> {
        &self.grams[FOLDS - 1]
    }

    /// The Gram matrices of every fold but the last, which is [`Calibrated::gram`] minus these.
    pub fn folds(&self) -> &[Mat<f64>] {
        &self.grams[..FOLDS - 1]
    }
}

/// The Gram matrix of `[X, 1]` from the lower triangle of that of `[X − c, 1]`, for the shift
/// `c` (none when empty): with `A = Σ(x−c)(x−c)ᵀ`, `b = Σ(x−c)` and `m` tokens,
/// `Σxxᵀ = A + b cᵀ + c bᵀ + m c cᵀ` and `Σx = b + m c`.
fn unshift(gram: &mut Mat<f64>, shift: &[f32]) {
    let n = gram.nrows() - 1;
    let m = gram[(n, n)];
    let c = |i: usize| shift.get(i).map_or(0.0, |c| *c as f64);
    let b: Vec<f64> = (0..n).map(|i| gram[(n, i)]).collect();
    for j in 0..n {
        for i in j..n {
            gram[(i, j)] += b[i] * c(j) + c(i) * b[j] + m * c(i) * c(j);
        }
        gram[(n, j)] += m * c(j);
    }
    for j in 0..=n {
        for i in 0..j {
            gram[(i, j)] = gram[(j, i)];
        }
    }
}

/// What one pass of the model over the calibration samples gathered.
pub struct CalibrationRun {
    /// Every group's statistics.
    pub stats: Vec<Calibrated>,
    /// The model's outputs on each sample, when asked for (empty otherwise): fidelity on the
    /// calibration data compares with them instead of running the model again.
    pub outputs: Vec<TVec<TValue>>,
}

/// Runs the model once over the calibration samples and gathers every group's statistics, and
/// with `keep_outputs` the model's outputs.
pub fn calibrate(
    model: &TypedModel,
    groups: &[Group],
    calibration: &Calibration,
    keep_outputs: bool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> TractResult<CalibrationRun> {
    let forms: Vec<MatrixForm> = groups
        .iter()
        .map(|g| MatrixForm::of(model, g).with_context(|| format!("group `{}`", g.name)))
        .collect::<TractResult<_>>()?;
    let weights: Vec<Array2<f32>> = groups
        .iter()
        .zip(&forms)
        .map(|(g, f)| {
            let w = weight_of(model, g.weight)?;
            f.weight_matrix(&w)
        })
        .collect::<TractResult<_>>()?;
    let stats: Vec<Calibrated> = forms
        .iter()
        .cloned()
        .zip(groups)
        .map(|(f, g)| Calibrated::new(f, g.units))
        .collect();
    let mut probe = model.clone();
    let mut taps: Vec<OutletId> = groups.iter().map(|g| g.activation).collect();
    if keep_outputs {
        taps.extend(model.output_outlets()?);
    }
    probe.select_output_outlets(&taps)?;
    let plan = probe.into_optimized()?.into_runnable()?;
    let samples = &calibration.samples;
    let mut outputs = vec![];
    let widest = stats.iter().map(|s| s.form.inputs + 1).max().unwrap_or(0);
    // Groups take their chunk in parallel, each product on one core; one scratch per thread.
    let par = if stats.len() > 1 {
        Par::Seq
    } else {
        Par::rayon(0)
    };
    let scratches = Mutex::new(vec![]);
    let stats: Vec<Mutex<Calibrated>> = stats.into_iter().map(Mutex::new).collect();
    for range in chunks(calibration)? {
        progress(range.start, samples.len());
        let chunk = &samples[range.clone()];
        // Each sample's real tokens per group (and whether its mask lined up), run in parallel.
        let runs = in_parallel(
            chunk.len(),
            |k| {
                let sample = &chunk[k];
                let mask = calibration.mask.map(|m| sample[m].clone().into_tensor());
                let mut values = plan.run(sample.clone())?;
                let sample_outputs: TVec<TValue> = values.drain(stats.len()..).collect();
                let tokens = values
                    .iter()
                    .zip(&forms)
                    .map(|(value, form)| {
                        let x = form.activation_matrix(value)?;
                        let weights = token_weights(mask.as_ref(), x.nrows())?;
                        let unmasked = mask.is_some() && weights.is_none();
                        Ok((real_tokens(x, weights.as_deref()), unmasked))
                    })
                    .collect::<TractResult<Vec<_>>>()?;
                Ok((tokens, sample_outputs))
            },
            &|_, _| (),
        )?;
        let (runs, chunk_outputs): (Vec<_>, Vec<_>) = runs.into_iter().unzip();
        if keep_outputs {
            outputs.extend(chunk_outputs);
        }
        in_parallel(
            stats.len(),
            |g| {
                let mut scratch = lock(&scratches)?
                    .pop()
                    .unwrap_or_else(|| Mat::<f32>::zeros(widest, widest));
                let sample_tokens: Vec<&(Array2<f32>, bool)> =
                    runs.iter().map(|run| &run[g]).collect();
                lock(&stats[g])?.add_chunk(
                    range.start,
                    &sample_tokens,
                    (&groups[g], &weights[g]),
                    (&mut scratch, par),
                );
                lock(&scratches)?.push(scratch);
                Ok(())
            },
            &|_, _| (),
        )?;
    }
    let mut stats: Vec<Calibrated> = stats
        .into_iter()
        .map(|s| {
            s.into_inner()
                .map_err(|_| format_err!("a worker thread panicked"))
        })
        .collect::<TractResult<_>>()?;
    stats.iter_mut().for_each(Calibrated::finish);
    Ok(CalibrationRun { stats, outputs })
}

/// The value behind `mutex`; a poisoned one means a worker thread panicked.
fn lock<T>(mutex: &Mutex<T>) -> TractResult<std::sync::MutexGuard<'_, T>> {
    mutex
        .lock()
        .map_err(|_| format_err!("a worker thread panicked"))
}

/// The view of an `inputs × outputs` array as a faer matrix (copied, in f64).
pub fn to_faer(a: ArrayView2<f32>) -> Mat<f64> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| a[(i, j)] as f64)
}

/// A faer matrix as an ndarray matrix of f32.
pub fn from_faer(m: &Mat<f64>) -> Array2<f32> {
    Array2::from_shape_fn((m.nrows(), m.ncols()), |(i, j)| m[(i, j)] as f32)
}

/// How calibrated scores rank a group's units (higher: more important).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Criterion {
    /// FFN channels: mean |activation| times the consumer row's norm. Heads: mean norm of the
    /// head's contribution to the output projection.
    Activation,
    /// The variance of the unit's contribution to the consumer's output over real tokens (FLAP's
    /// fluctuation): what no bias can restore. FFN channels: `Var(x_j) · ‖W_j‖²`; heads:
    /// `tr(W_hᵀ Cov_h W_h)`.
    Fluctuation,
    /// Greedy least-squares removal (ZipLM / SlimGPT): the widths come from the fluctuation
    /// ranking, then units go one at a time, each the one whose removal — with the consumer
    /// refit on the rest — costs least on the calibration tokens
    /// (greedy removal with the same Hessian as the least-squares refit).
    RemovalCost,
}

impl Calibrated {
    /// The score of every unit of `group`, whose consumer weight matrix is `w`.
    pub fn scores(&self, group: &Group, w: &Array2<f32>, criterion: Criterion) -> Vec<f32> {
        let row_norm2 = |r: usize| w.row(r).iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
        let gram =
            (group.kind == Kind::Heads && criterion != Criterion::Activation).then(|| self.gram());
        self.form
            .unit_rows
            .iter()
            .enumerate()
            .map(|(u, rows)| {
                let score = match (group.kind, criterion) {
                    (Kind::Heads, Criterion::Activation) => self.head_contribution[u],
                    (Kind::Heads, _) => gram
                        .as_ref()
                        .map_or(0.0, |g| self.contribution_variance(g, rows, w)),
                    (Kind::Ffn, Criterion::Activation) => {
                        let magnitude = rows.iter().map(|r| self.magnitude[*r]).sum::<f64>()
                            / rows.len().max(1) as f64;
                        magnitude * rows.iter().map(|r| row_norm2(*r)).sum::<f64>().sqrt()
                    }
                    (Kind::Ffn, _) => rows
                        .iter()
                        .map(|r| self.variance[*r] * row_norm2(*r))
                        .sum::<f64>(),
                };
                score as f32
            })
            .collect()
    }

    /// The variance over real tokens of the contribution `x_rows · W_rows` of some rows to the
    /// output, summed over outputs: `tr(W_rowsᵀ Cov_rows W_rows)`, from the Gram matrix.
    /// `gram` is [`Calibrated::gram`].
    fn contribution_variance(&self, gram: &Mat<f64>, rows: &[usize], w: &Array2<f32>) -> f64 {
        let count = self.tokens.max(1.0);
        let mut total = 0.0;
        for j in 0..w.ncols() {
            for &a in rows {
                for &b in rows {
                    let covariance = gram[(a, b)] / count - self.mean[a] * self.mean[b];
                    total += w[(a, j)] as f64 * covariance * w[(b, j)] as f64;
                }
            }
        }
        total
    }

    /// The mean contribution of the `removed` units to the consumer's output, in the output's
    /// layout ([`MatrixForm::bias_shape`]): what bias compensation adds to the bias.
    pub fn mean_contribution(&self, w: &Array2<f32>, removed: &[usize]) -> TractResult<Tensor> {
        let mut delta = vec![0f32; self.form.outputs];
        for u in removed {
            for r in &self.form.unit_rows[*u] {
                for (j, d) in delta.iter_mut().enumerate() {
                    *d += (self.mean[*r] * w[(*r, j)] as f64) as f32;
                }
            }
        }
        tract_ndarray::ArrayD::from_shape_vec(self.form.bias_shape.clone(), delta)
            .map(|a| a.into_tensor())
            .map_err(|e| format_err!("{e}"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::io::import::{import_onnx, ImportOptions};
    use crate::model::discover::groups;
    use rand::{Rng, SeedableRng};

    #[test]
    fn a_step_mask_weighs_the_new_tokens_by_its_last_entries() {
        let weights = |mask: Tensor, tokens| token_weights(Some(&mask), tokens).unwrap();
        let padded = tensor2(&[[0i64, 1, 1, 1]]);
        assert_eq!(weights(padded.clone(), 4), Some(vec![0.0, 1.0, 1.0, 1.0]));
        // One new token after three cached ones, in each of two rows.
        let step = tensor2(&[[1i64, 1, 0, 1], [0, 1, 1, 0]]);
        assert_eq!(weights(step, 2), Some(vec![1.0, 0.0]));
        // More tokens than the mask has entries: every position counts.
        assert_eq!(weights(padded, 8), None);
    }

    /// The BERT fixture (TorchScript, default attention) at its fixture shapes.
    pub(crate) fn bert() -> TypedModel {
        // The checkout as cargo runs the test, not as it was compiled (see `testing::checkout`).
        let path = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap())
            .join("tests/fixtures/bert_dense_torchscript.onnx");
        let options = ImportOptions {
            inputs: [
                "input_ids:1,16,i64",
                "attention_mask:1,16,i64",
                "token_type_ids:1,16,i64",
            ]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect(),
            sets: vec![],
            states: vec![],
        };
        import_onnx(&path, &options).unwrap()
    }

    /// [`bert`] with `samples` padded sentences: the first tokens of each are real; `padding`
    /// gives the padded positions' token ids.
    fn padded_bert(
        samples: usize,
        padding: impl Fn(&mut rand::rngs::StdRng) -> i64,
    ) -> (TypedModel, Calibration) {
        let model = bert();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // Padding draws from its own generator, so the real tokens are the same either way.
        let mut padding_rng = rand::rngs::StdRng::seed_from_u64(8);
        let inputs = (0..samples)
            .map(|_| {
                let real = rng.gen_range(3..12);
                let ids: Vec<i64> = (0..16)
                    .map(|t| {
                        if t < real {
                            rng.gen_range(0..10)
                        } else {
                            padding(&mut padding_rng)
                        }
                    })
                    .collect();
                let mask: Vec<i64> = (0..16).map(|t| (t < real) as i64).collect();
                let tensor = |v: Vec<i64>| {
                    tract_ndarray::Array2::from_shape_vec((1, 16), v)
                        .unwrap()
                        .into_tensor()
                        .into_tvalue()
                };
                tvec![tensor(ids), tensor(mask), tensor(vec![0; 16])]
            })
            .collect();
        let calibration = Calibration::new(&model, inputs);
        (model, calibration)
    }

    fn means(model: &TypedModel, calibration: &Calibration) -> Vec<Vec<f64>> {
        let groups = groups(model).unwrap();
        calibrate(model, &groups, calibration, false, &|_, _| ())
            .unwrap()
            .stats
            .into_iter()
            .map(|s| s.mean)
            .collect()
    }

    #[test]
    fn statistics_ignore_padded_positions() {
        let (model, quiet) = padded_bert(6, |_| 0);
        let (_, extreme) = padded_bert(6, |rng| rng.gen_range(1..10));
        assert_eq!(quiet.mask, Some(1), "the attention mask is found by name");
        let (a, b) = (means(&model, &quiet), means(&model, &extreme));
        for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()), "{x} vs {y}");
        }
        // Without the mask the padded positions count, and the statistics differ.
        let unmasked = |c: &Calibration| Calibration {
            mask: None,
            ..c.clone()
        };
        let (a, b) = (
            means(&model, &unmasked(&quiet)),
            means(&model, &unmasked(&extreme)),
        );
        let differ = a
            .iter()
            .flatten()
            .zip(b.iter().flatten())
            .any(|(x, y)| (x - y).abs() > 1e-3);
        assert!(
            differ,
            "padding changed nothing: the test does not test the mask"
        );
    }

    /// `[X, 1]ᵀ[X, 1]`, directly.
    fn direct_gram(x: &Array2<f64>) -> Mat<f64> {
        let (rows, n) = x.dim();
        let ones = Mat::<f64>::from_fn(rows, n + 1, |r, j| if j < n { x[(r, j)] } else { 1.0 });
        ones.transpose() * &ones
    }

    #[test]
    fn shifted_products_give_the_gram_matrix_of_the_inputs() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let x = Array2::from_shape_fn((40, 5), |(_, j)| {
            100.0 * j as f64 + rng.gen_range(-1.0..1.0)
        });
        let shift: Vec<f32> = (0..5).map(|j| 100.0 * j as f32 + 0.3).collect();
        let shifted = Array2::from_shape_fn((40, 5), |(r, j)| x[(r, j)] - shift[j] as f64);
        // Only the lower triangle is given.
        let mut gram = direct_gram(&shifted);
        for j in 0..6 {
            for i in 0..j {
                gram[(i, j)] = f64::NAN;
            }
        }
        unshift(&mut gram, &shift);
        let expected = direct_gram(&x);
        for j in 0..6 {
            for i in 0..6 {
                let (got, want) = (gram[(i, j)], expected[(i, j)]);
                assert!(
                    (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                    "({i}, {j}): {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn calibration_keeps_the_outputs_fidelity_compares_with() {
        let (model, calibration) = padded_bert(4, |_| 0);
        let found = groups(&model).unwrap();
        let run = calibrate(&model, &found, &calibration, true, &|_, _| ()).unwrap();
        assert_eq!(run.outputs.len(), calibration.samples.len());
        for (sample, kept) in calibration.samples.iter().zip(&run.outputs) {
            let direct = crate::model::verify::run(&model, sample.clone()).unwrap();
            assert_eq!(direct.len(), kept.len());
            for (a, b) in direct.iter().zip(kept) {
                assert_eq!(crate::model::verify::max_abs_diff(a, b).unwrap(), 0.0);
            }
        }
        let names = crate::model::verify::output_names(&model).unwrap();
        let given = crate::model::verify::fidelity_to_outputs(
            &names,
            &run.outputs,
            &model,
            &calibration.samples,
            calibration.mask,
        )
        .unwrap();
        let computed =
            crate::model::verify::fidelity(&model, &model, &calibration.samples, calibration.mask)
                .unwrap();
        assert_eq!(format!("{given:?}"), format!("{computed:?}"));
        let without = calibrate(&model, &found, &calibration, false, &|_, _| ()).unwrap();
        assert!(without.outputs.is_empty());
    }
}
