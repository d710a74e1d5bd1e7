//! Least-squares reconstruction of a consumer on its kept units.
//!
//! With `X̃ = [X, 1]` the consumer's input on the calibration tokens (a ones column for the
//! bias) and `W̃ = [W; b]` its weight and bias, removing units `P` and keeping `S` is best
//! repaired by the weights `Ŵ` on `S̃ = S ∪ {1}` minimising `‖X̃_S̃ Ŵ − X̃ W̃‖² + λ‖Ŵ_S − W_S‖²`:
//! `(G_S̃S̃ + λD) Ŵ = G_S̃· W̃ + λD W̃_S̃` with `G = X̃ᵀX̃` (the bias row is not penalised). The
//! ridge pulls towards the dense weights, so removing units that contribute nothing changes
//! nothing. A small `λ`
//! overfits the calibration tokens (a few thousand tokens for over a thousand unknowns per
//! output), so `λ = α · mean(diag G_SS)` is chosen among [`RIDGES`] by cross-validation over the
//! [`FOLDS`](crate::autoslim::calibrated::FOLDS) folds of calibration samples: fit on the other
//! folds, measure `‖X̃_f (Ŵ − W̃)‖²` on the held-out one, all from Gram matrices.

use crate::autoslim::calibrated::{from_faer, to_faer, Calibrated};
use crate::autoslim::choice::{Candidates, Selection, Step};
use faer::linalg::solvers::{DenseSolveCore, SolveCore};
use faer::{Mat, Side};
use tract_core::internal::*;
use tract_ndarray::Array2;

/// Ridge strengths tried, relative to the mean diagonal of the kept inputs' Gram matrix.
pub const RIDGES: &[f64] = &[1e-3, 1e-2, 1e-1, 1.0];

/// A consumer refit on its kept units.
#[derive(Clone, Debug)]
pub struct Refit {
    /// The new weight matrix (`inputs × outputs`), zero on the removed units' rows.
    pub weight: Array2<f32>,
    /// What to add to the consumer's bias (per output).
    pub bias_delta: Vec<f32>,
    /// The relative ridge strength cross-validation chose.
    pub ridge: f64,
}

/// The normal equations of one refit: the kept rows (then the ones column), `W̃`, the Gram
/// matrix over every fold and the ridge's scale.
struct Problem<'a> {
    dropped: Vec<bool>,
    kept: Vec<usize>,
    full: Mat<f64>,
    total: &'a Mat<f64>,
    scale: f64,
}

impl<'a> Problem<'a> {
    fn new(
        stats: &'a Calibrated,
        w: &Array2<f32>,
        bias: Option<&[f32]>,
        removed: &[usize],
    ) -> Problem<'a> {
        let n = stats.form.inputs;
        let mut dropped = vec![false; n];
        for u in removed {
            for r in &stats.form.unit_rows[*u] {
                dropped[*r] = true;
            }
        }
        let mut kept: Vec<usize> = (0..n).filter(|r| !dropped[*r]).collect();
        kept.push(n);
        let mut full = Mat::<f64>::zeros(n + 1, w.ncols());
        full.as_mut()
            .submatrix_mut(0, 0, n, w.ncols())
            .copy_from(to_faer(w.view()));
        if let Some(b) = bias {
            for (j, v) in b.iter().enumerate() {
                full[(n, j)] = *v as f64;
            }
        }
        let total = stats.gram();
        let scale = kept[..kept.len() - 1]
            .iter()
            .map(|r| total[(*r, *r)])
            .sum::<f64>()
            / (kept.len() - 1).max(1) as f64;
        Problem {
            dropped,
            kept,
            full,
            total,
            scale,
        }
    }
}

/// The ridge cross-validation chooses for refitting without `removed`.
pub fn cross_validated_ridge(
    stats: &Calibrated,
    w: &Array2<f32>,
    removed: &[usize],
) -> TractResult<f64> {
    let p = Problem::new(stats, w, None, removed);
    choose_ridge(stats, &p.full, &p.kept, p.scale)
}

/// Refits the consumer described by `stats`, of weight `w` and bias `bias`, without `removed`,
/// with the relative `ridge` given or else cross-validated.
pub fn refit(
    stats: &Calibrated,
    w: &Array2<f32>,
    bias: Option<&[f32]>,
    removed: &[usize],
    ridge: Option<f64>,
) -> TractResult<Refit> {
    let n = stats.form.inputs;
    let p = Problem::new(stats, w, bias, removed);
    let ridge = match ridge {
        Some(ridge) => ridge,
        None => choose_ridge(stats, &p.full, &p.kept, p.scale)?,
    };
    let solved = solve(p.total, &p.full, &p.kept, ridge * p.scale)?;
    let padded = pad(&solved, &p.kept, n + 1);
    let mut weight = from_faer(&padded.as_ref().submatrix(0, 0, n, w.ncols()).to_owned());
    for r in (0..n).filter(|r| p.dropped[*r]) {
        weight.row_mut(r).fill(0.0);
    }
    let bias_delta = (0..w.ncols())
        .map(|j| (padded[(n, j)] - p.full[(n, j)]) as f32)
        .collect();
    Ok(Refit {
        weight,
        bias_delta,
        ridge,
    })
}

/// Outputs cross-validation measures the error on, at most: the ridge is one number per
/// layer, and an evenly spread sample of the outputs traces its error curve as all of them do,
/// at a fraction of the cost.
pub const CV_OUTPUTS: usize = 64;

/// Every k-th column of `full`, at most [`CV_OUTPUTS`] of them.
fn output_sample(full: &Mat<f64>) -> Mat<f64> {
    let step = full.ncols().div_ceil(CV_OUTPUTS).max(1);
    let columns = full.ncols().div_ceil(step);
    Mat::<f64>::from_fn(full.nrows(), columns, |i, j| full[(i, j * step)])
}

/// The ridge of [`RIDGES`] with the least held-out error over the folds (the second smallest
/// when there are too few samples to hold any out), measured on [`CV_OUTPUTS`] outputs at most.
/// The held-out error of a fit `Ŵ` on fold `f` is
/// `‖X̃_f,k Ŵ − X̃_f W̃‖² = tr(Ŵᵀ G_f,kk Ŵ) − 2 tr(Ŵᵀ (G_f W̃)_k) + tr(W̃ᵀ G_f W̃)`, and it is
/// fitted on the other folds, whose terms are the total's minus the fold's.
fn choose_ridge(
    stats: &Calibrated,
    full: &Mat<f64>,
    kept: &[usize],
    scale: f64,
) -> TractResult<f64> {
    let full = &output_sample(full);
    let whole = HeldOut::new(stats.gram(), full, kept);
    let mut folds: Vec<HeldOut> = stats
        .folds()
        .iter()
        .map(|fold| HeldOut::new(fold, full, kept))
        .collect();
    // Every term is linear in the Gram matrix, so the last fold's are the total's minus the
    // others'.
    let last = folds.iter().fold(whole.clone(), HeldOut::minus);
    folds.push(last);
    folds.retain(|fold| fold.tokens() > 0.0);
    if folds.len() < 2 {
        return Ok(RIDGES[1]);
    }
    let error = |ridge: f64| -> TractResult<f64> {
        let mut error = 0.0;
        for fold in &folds {
            let train = &whole.kept - &fold.kept;
            let rhs = &whole.rhs - &fold.rhs;
            let solved = solve_normal(train, full, kept, rhs, ridge * scale)?;
            error += fold.error(&solved);
        }
        Ok(error)
    };
    Ok(RIDGES[descend(RIDGES.len(), 1, |i| error(RIDGES[i]))?])
}

/// What one fold's held-out error needs: its Gram matrix on the kept rows, their right-hand
/// side `(G_f W̃)_k` and the constant `tr(W̃ᵀ G_f W̃)`.
#[derive(Clone)]
struct HeldOut {
    kept: Mat<f64>,
    rhs: Mat<f64>,
    constant: f64,
}

impl HeldOut {
    fn new(fold: &Mat<f64>, full: &Mat<f64>, kept: &[usize]) -> HeldOut {
        let fold_full = fold * full;
        HeldOut {
            kept: kept_block(fold, kept),
            rhs: rows_of(&fold_full, kept),
            constant: trace_of_product(full, &fold_full),
        }
    }

    /// The terms of the Gram matrix `G − G_other`.
    fn minus(mut self, other: &HeldOut) -> HeldOut {
        self.kept -= &other.kept;
        self.rhs -= &other.rhs;
        self.constant -= other.constant;
        self
    }

    /// The fold's tokens: the ones column's entry (kept last).
    fn tokens(&self) -> f64 {
        let last = self.kept.nrows() - 1;
        self.kept[(last, last)]
    }

    /// `‖X̃_f,k Ŵ − X̃_f W̃‖²` for the fit `solved` on the kept rows.
    fn error(&self, solved: &Mat<f64>) -> f64 {
        trace_of_product(solved, &(&self.kept * solved)) - 2.0 * trace_of_product(solved, &self.rhs)
            + self.constant
    }
}

/// The index in `0..len` of the least `error`, walking downhill from `start`: held-out error
/// falls then rises with the ridge, so this finds the grid's minimum with fewer fits (each a
/// Cholesky factorization) than trying every value.
fn descend(
    len: usize,
    start: usize,
    mut error: impl FnMut(usize) -> TractResult<f64>,
) -> TractResult<usize> {
    let (mut best, mut best_error) = (start, error(start)?);
    for step in [1isize, -1] {
        let mut moved = false;
        while let Some(next) = best.checked_add_signed(step).filter(|n| *n < len) {
            let e = error(next)?;
            if e >= best_error {
                break;
            }
            (best, best_error, moved) = (next, e, true);
        }
        if moved {
            break;
        }
    }
    Ok(best)
}

/// `tr(aᵀ b)` for two matrices of one shape.
fn trace_of_product(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    (0..a.ncols())
        .map(|j| (0..a.nrows()).map(|i| a[(i, j)] * b[(i, j)]).sum::<f64>())
        .sum()
}

/// The rows `kept` of a Gram matrix.
fn rows_of(gram: &Mat<f64>, kept: &[usize]) -> Mat<f64> {
    Mat::<f64>::from_fn(kept.len(), gram.ncols(), |i, j| gram[(kept[i], j)])
}

/// The rows and columns `kept` of a Gram matrix.
fn kept_block(gram: &Mat<f64>, kept: &[usize]) -> Mat<f64> {
    Mat::<f64>::from_fn(kept.len(), kept.len(), |i, j| gram[(kept[i], kept[j])])
}

/// Solves `(G_kk + λD) Ŵ = G_k· W̃` for the kept rows `k` (the last being the unpenalised ones
/// column).
fn solve(gram: &Mat<f64>, full: &Mat<f64>, kept: &[usize], lambda: f64) -> TractResult<Mat<f64>> {
    solve_normal(
        kept_block(gram, kept),
        full,
        kept,
        rows_of(gram, kept) * full,
        lambda,
    )
}

/// Solves `(G_kk + λD) Ŵ = rhs + λD W̃_k`, given `G_kk`: the ridge pulls the kept weights
/// towards their dense values, not towards zero, so that units whose removal changes nothing
/// leave the consumer exactly as it was.
fn solve_normal(
    mut a: Mat<f64>,
    full: &Mat<f64>,
    kept: &[usize],
    mut rhs: Mat<f64>,
    lambda: f64,
) -> TractResult<Mat<f64>> {
    for (i, r) in kept[..kept.len() - 1].iter().enumerate() {
        for j in 0..full.ncols() {
            rhs[(i, j)] += lambda * full[(*r, j)];
        }
    }
    let m = kept.len();
    for i in 0..m - 1 {
        a[(i, i)] += lambda;
    }
    // A tiny term on the bias keeps the system definite when a fold has no tokens.
    a[(m - 1, m - 1)] += 1e-9 * (1.0 + lambda);
    let llt = a.llt(Side::Lower).map_err(|e| {
        format_err!("the refit's normal equations are not positive definite: {e:?}")
    })?;
    llt.solve_in_place_with_conj(faer::Conj::No, rhs.as_mut());
    Ok(rhs)
}

/// The kept rows of `solved` placed among `rows` rows, zeros elsewhere.
fn pad(solved: &Mat<f64>, kept: &[usize], rows: usize) -> Mat<f64> {
    let mut padded = Mat::<f64>::zeros(rows, solved.ncols());
    for (i, r) in kept.iter().enumerate() {
        for j in 0..solved.ncols() {
            padded[(*r, j)] = solved[(i, j)];
        }
    }
    padded
}

/// The first `steps` of the greedy least-squares removal order over `candidates` (ZipLM /
/// SlimGPT style, with the ridge `ridge` of [`RIDGES`]). From the ridge fit `Ŵ = H⁻¹ G W̃` on
/// every unit (`H = G + λD`), each step removes the eligible candidate whose removal, with the
/// consumer's remaining weights and bias refit, adds least to the regularised calibration error
/// — `tr(Ŵ_Uᵀ [H⁻¹]_UU⁻¹ Ŵ_U)` over its rows `U` — and updates `H⁻¹` and `Ŵ`
/// (`Ŵ ← Ŵ − H⁻¹_·U [H⁻¹]_UU⁻¹ Ŵ_U`, `H⁻¹ ← H⁻¹ − H⁻¹_·U [H⁻¹]_UU⁻¹ H⁻¹_U·`). A step's cost is
/// that error relative to the dense output's energy `tr(W̃ᵀ G W̃)`, so that costs compare across
/// layers.
pub fn greedy_removal(
    stats: &Calibrated,
    w: &Array2<f32>,
    ridge: f64,
    candidates: &Candidates,
    steps: usize,
) -> TractResult<Vec<Step>> {
    let RidgeFit {
        inverse,
        weights,
        energy,
    } = RidgeFit::of(stats, w, ridge)?;
    let rows: Vec<Vec<usize>> = candidates
        .units
        .iter()
        .map(|units| {
            units
                .iter()
                .flat_map(|u| stats.form.unit_rows[*u].iter().copied())
                .collect()
        })
        .collect();
    let selection = Selection::new(candidates);
    let order = if rows.iter().all(|r| r.len() == 1) {
        let rows: Vec<usize> = rows.iter().map(|r| r[0]).collect();
        greedy_rows(&inverse, weights, &rows, selection, steps)
    } else {
        greedy_blocks(inverse, weights, &rows, selection, steps)?
    };
    Ok(order
        .into_iter()
        .map(|(candidate, cost)| Step {
            candidate,
            cost: cost / energy,
        })
        .collect())
}

/// The ridge fit on every unit that greedy removal starts from.
struct RidgeFit {
    /// `H⁻¹`, with `H = G + λD`.
    inverse: Mat<f64>,
    /// `Ŵ = H⁻¹ G W̃`.
    weights: Mat<f64>,
    /// The dense output's energy `tr(W̃ᵀ G W̃)`.
    energy: f64,
}

impl RidgeFit {
    fn of(stats: &Calibrated, w: &Array2<f32>, ridge: f64) -> TractResult<RidgeFit> {
        let n = stats.form.inputs;
        let gram = stats.gram();
        let mut h = gram.clone();
        let scale = (0..n).map(|r| h[(r, r)]).sum::<f64>() / n.max(1) as f64;
        for r in 0..n {
            h[(r, r)] += ridge * scale;
        }
        h[(n, n)] += 1e-9 * (1.0 + ridge * scale);
        let llt = h
            .llt(Side::Lower)
            .map_err(|e| format_err!("the Gram matrix is not positive definite: {e:?}"))?;
        let inverse = llt.inverse();
        // Start from the ridge fit on every unit, where the removal costs are exact: a unit
        // whose inputs are always zero has no weight there, and costs nothing.
        let mut dense = Mat::<f64>::zeros(n + 1, w.ncols());
        dense
            .as_mut()
            .submatrix_mut(0, 0, n, w.ncols())
            .copy_from(to_faer(w.view()));
        let gram_dense = gram * &dense;
        let energy = trace_of_product(&dense, &gram_dense).max(f64::MIN_POSITIVE);
        let weights = &inverse * &gram_dense;
        Ok(RidgeFit {
            inverse,
            weights,
            energy,
        })
    }
}

/// Greedy removal when every candidate is one row, with the inverse downdated lazily: the
/// current `H⁻¹` is `H₀⁻¹ − Σ_s u_s u_sᵀ` with `u_s = H⁻¹_·r / √[H⁻¹]_rr` of each removed
/// row `r`, so a step needs one column of it (`O(n · steps)`) and its diagonal, not all of it
/// (`O(n²)`). Each step reads the updates once and updates the weights in one pass that also
/// gives the next step's row norms; both are kept in f32 (half the memory traffic): the order
/// only needs costs to rank candidates, and the refit that follows solves again in f64.
fn greedy_rows(
    initial: &Mat<f64>,
    weights: Mat<f64>,
    rows: &[usize],
    mut selection: Selection,
    steps: usize,
) -> Vec<(usize, f64)> {
    let size = initial.nrows();
    let mut weights = Mat::<f32>::from_fn(size, weights.ncols(), |i, j| weights[(i, j)] as f32);
    let mut diagonal: Vec<f64> = (0..size).map(|i| initial[(i, i)]).collect();
    let mut updates: Vec<Vec<f32>> = vec![];
    let mut order = vec![];
    // ‖w_r‖² for every row (columns are contiguous), kept up to date by each step's update pass.
    let mut norms = vec![0f32; size];
    for j in 0..weights.ncols() {
        norms
            .iter_mut()
            .zip(weights.col_as_slice(j))
            .for_each(|(s, w)| *s += w * w);
    }
    while order.len() < steps {
        let cost = |c: usize| norms[rows[c]] as f64 / diagonal[rows[c]].max(f64::MIN_POSITIVE);
        let Some(c) = selection.cheapest(cost) else {
            break;
        };
        order.push((c, cost(c)));
        selection.take(c);
        let r = rows[c];
        let mut column = initial.col_as_slice(r).to_vec();
        for u in &updates {
            let scale = u[r] as f64;
            column
                .iter_mut()
                .zip(u)
                .for_each(|(x, v)| *x -= *v as f64 * scale);
        }
        let root = column[r].max(f64::MIN_POSITIVE).sqrt();
        let column: Vec<f32> = column.iter().map(|x| (x / root) as f32).collect();
        norms.fill(0.0);
        for j in 0..weights.ncols() {
            let col = weights.col_as_slice_mut(j);
            let scale = col[r] / root as f32;
            col.iter_mut()
                .zip(&column)
                .zip(&mut norms)
                .for_each(|((w, u), s)| {
                    *w -= u * scale;
                    *s += *w * *w;
                });
        }
        diagonal
            .iter_mut()
            .zip(&column)
            .for_each(|(d, u)| *d -= (*u as f64).powi(2));
        updates.push(column);
    }
    order
}

/// Greedy removal of candidates of several rows each: block costs, and the inverse downdated
/// in full at each step.
fn greedy_blocks(
    mut inverse: Mat<f64>,
    mut weights: Mat<f64>,
    rows: &[Vec<usize>],
    mut selection: Selection,
    steps: usize,
) -> TractResult<Vec<(usize, f64)>> {
    let mut order = vec![];
    while order.len() < steps {
        let costs: Vec<Option<(f64, Mat<f64>)>> = (0..rows.len())
            .map(|c| {
                selection
                    .eligible(c)
                    .then(|| block_cost(&inverse, &weights, &rows[c]))
                    .transpose()
            })
            .collect::<TractResult<_>>()?;
        let cost = |c: usize| costs[c].as_ref().map_or(f64::INFINITY, |(cost, _)| *cost);
        let Some(c) = selection.cheapest(cost) else {
            break;
        };
        let (cost, block_inverse) = costs[c].as_ref().context("an eligible candidate")?;
        remove_block(&mut inverse, &mut weights, &rows[c], block_inverse);
        selection.take(c);
        order.push((c, *cost));
    }
    Ok(order)
}

/// The removal cost of the rows `rows` and `[H⁻¹]_rows,rows⁻¹`.
fn block_cost(
    inverse: &Mat<f64>,
    weights: &Mat<f64>,
    rows: &[usize],
) -> TractResult<(f64, Mat<f64>)> {
    let k = rows.len();
    let block = Mat::<f64>::from_fn(k, k, |i, j| inverse[(rows[i], rows[j])]);
    let block_inverse = if k == 1 {
        Mat::<f64>::from_fn(1, 1, |_, _| 1.0 / block[(0, 0)].max(f64::MIN_POSITIVE))
    } else {
        let llt = block.llt(Side::Lower).map_err(|e| {
            format_err!("a unit's inverse Hessian block is not positive definite: {e:?}")
        })?;
        let mut identity = Mat::<f64>::identity(k, k);
        llt.solve_in_place_with_conj(faer::Conj::No, identity.as_mut());
        identity
    };
    let w_rows = Mat::<f64>::from_fn(k, weights.ncols(), |i, j| weights[(rows[i], j)]);
    let cost = trace_of_product(&w_rows, &(&block_inverse * &w_rows));
    Ok((cost, block_inverse))
}

/// Removes the rows `rows` (with `[H⁻¹]_rows,rows⁻¹` = `block_inverse`): refits the weights and
/// downdates the inverse.
fn remove_block(
    inverse: &mut Mat<f64>,
    weights: &mut Mat<f64>,
    rows: &[usize],
    block_inverse: &Mat<f64>,
) {
    let k = rows.len();
    let columns = Mat::<f64>::from_fn(inverse.nrows(), k, |i, j| inverse[(i, rows[j])]);
    let w_rows = Mat::<f64>::from_fn(k, weights.ncols(), |i, j| weights[(rows[i], j)]);
    let step = &columns * block_inverse;
    *weights -= &step * &w_rows;
    let downdate = &step * columns.transpose();
    *inverse -= &downdate;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoslim::calibrated::calibrate;
    use crate::autoslim::calibration::Calibration;
    use crate::model::discover::{groups, Group, Kind};
    use crate::model::stats::weight_of;
    use crate::model::verify::random_inputs;

    /// BERT's first FFN group, its statistics on `samples` random sentences and its consumer's
    /// weight matrix.
    fn first_ffn(samples: u64) -> (Group, Calibrated, Array2<f32>) {
        let model = crate::autoslim::calibrated::tests::bert();
        let group = groups(&model)
            .unwrap()
            .into_iter()
            .find(|g| g.kind == Kind::Ffn)
            .unwrap();
        let inputs = (0..samples)
            .map(|s| random_inputs(&model, s, &SymbolValues::default()).unwrap())
            .collect();
        let calibration = Calibration::new(&model, inputs);
        let found = [group];
        let stats = calibrate(&model, &found, &calibration, false, &|_, _| ())
            .unwrap()
            .stats;
        let [group] = found;
        let w = stats[0]
            .form
            .weight_matrix(&weight_of(&model, group.weight).unwrap())
            .unwrap();
        (group, stats.into_iter().next().unwrap(), w)
    }

    /// The ridge chosen for BERT's first FFN layer with half its channels removed, calibrated
    /// on `samples` random sentences.
    fn ridge_with(samples: u64) -> f64 {
        let (group, stats, w) = first_ffn(samples);
        let removed: Vec<usize> = (0..group.units / 2).collect();
        refit(&stats, &w, None, &removed, None).unwrap().ridge
    }

    #[test]
    fn lazy_downdates_remove_in_the_order_full_downdates_do() {
        let (group, stats, w) = first_ffn(8);
        let fit = RidgeFit::of(&stats, &w, RIDGES[1]).unwrap();
        let candidates = Candidates::of(&group, crate::autoslim::choice::KvLayout::Equal);
        let rows: Vec<usize> = (0..group.units)
            .map(|u| stats.form.unit_rows[u][0])
            .collect();
        let blocks: Vec<Vec<usize>> = rows.iter().map(|r| vec![*r]).collect();
        let steps = group.units * 3 / 4;
        let lazy = greedy_rows(
            &fit.inverse,
            fit.weights.clone(),
            &rows,
            Selection::new(&candidates),
            steps,
        );
        let full = greedy_blocks(
            fit.inverse.clone(),
            fit.weights,
            &blocks,
            Selection::new(&candidates),
            steps,
        )
        .unwrap();
        assert_eq!(lazy.len(), steps);
        for ((a, cost_a), (b, cost_b)) in lazy.iter().zip(&full) {
            assert_eq!(a, b, "{lazy:?} vs {full:?}");
            assert!(
                (cost_a - cost_b).abs() <= 1e-6 * (1.0 + cost_b.abs()),
                "{cost_a} vs {cost_b}"
            );
        }
    }

    #[test]
    fn cross_validation_picks_a_larger_ridge_when_tokens_are_few() {
        let (few, many) = (ridge_with(3), ridge_with(60));
        assert!(few > many, "ridge {few} with 3 samples, {many} with 60");
    }

    #[test]
    fn descending_finds_the_grid_minimum_with_fewer_fits() {
        for errors in [
            [4.0, 3.0, 1.0, 2.0],
            [1.0, 2.0, 3.0, 4.0],
            [4.0, 3.0, 2.0, 1.0],
            [3.0, 1.0, 2.0, 5.0],
        ] {
            let mut fits = 0;
            let best = descend(4, 1, |i| {
                fits += 1;
                Ok(errors[i])
            })
            .unwrap();
            let minimum = (0..4)
                .min_by(|a, b| errors[*a].total_cmp(&errors[*b]))
                .unwrap();
            assert_eq!(best, minimum, "{errors:?}");
            assert!(fits <= 3 || minimum == 3, "{fits} fits for {errors:?}");
        }
    }
}
