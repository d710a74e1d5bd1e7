//! Verification: run the original and the slimmed model on the same seeded random inputs and
//! compare every output.
//!
//! Integer inputs that index a constant table (token ids into an embedding) are drawn inside the
//! table; other integer inputs (masks, type ids) take 0 or 1; floats are uniform in [-1, 1).

use crate::model::cost::NOMINAL_DIM;
use crate::model::ops;
use crate::model::state::StateCut;
use crate::util::parallel::in_parallel;
use crate::util::slices::select_slices;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tract_core::internal::*;
use tract_core::ops::array::Gather;
use tract_core::ops::konst::Const;

/// Relative tolerance: the max abs difference allowed, as a fraction of the output's magnitude
/// (its largest absolute element). The one policy for "computes the same up to float rounding":
/// verification of slimmed models and files, and the rule checker ([`compare_output`]).
pub const RELATIVE_TOLERANCE: f32 = 1e-4;

/// The relative tolerance for outputs in float16: its rounding (a relative step of about 1e-3)
/// compounds through a network, and slimming changes the order of accumulation.
pub const HALF_RELATIVE_TOLERANCE: f32 = 1e-2;

/// The relative tolerance for an output of type `dt`.
pub fn relative_tolerance(dt: DatumType) -> f32 {
    if dt == DatumType::F16 {
        HALF_RELATIVE_TOLERANCE
    } else {
        RELATIVE_TOLERANCE
    }
}

/// How one output compares.
#[derive(Clone, Debug, Serialize)]
pub struct OutputDiff {
    /// The output's name.
    pub name: String,
    /// Largest absolute element difference.
    pub max_abs_diff: f32,
    /// Largest absolute element of the original output.
    pub max_magnitude: f32,
    /// The relative tolerance of the output's type ([`relative_tolerance`]).
    pub tolerance: f32,
    /// Whether the difference is within the tolerance.
    pub passed: bool,
}

impl OutputDiff {
    /// The worse of two comparisons of one output (the larger difference for its tolerance).
    fn worse(self, other: OutputDiff) -> OutputDiff {
        let margin = |d: &OutputDiff| {
            d.max_abs_diff / (d.tolerance * d.max_magnitude).max(f32::MIN_POSITIVE)
        };
        let passed = self.passed && other.passed;
        let mut worse = if margin(&other) > margin(&self) {
            other
        } else {
            self
        };
        worse.passed = passed;
        worse
    }
}

/// The verification result.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// Seed of the random inputs.
    pub seed: u64,
    /// Calls compared: more than one where the model was run in a loop, fed its own state.
    pub calls: usize,
    /// Shapes of the inputs used (of the first call).
    pub input_shapes: Vec<Vec<usize>>,
    /// Per output comparison.
    pub outputs: Vec<OutputDiff>,
    /// Whether every output passed.
    pub passed: bool,
    /// The file the compared model was loaded from (`None`: the model in memory).
    pub artifact: Option<String>,
}

impl Verification {
    /// The first output over the tolerance, if any.
    pub fn failure(&self) -> Option<Mismatch> {
        let failed = self.outputs.iter().find(|o| !o.passed)?;
        Some(Mismatch {
            output: failed.name.clone(),
            diff: failed.max_abs_diff,
            tolerance: failed.tolerance * failed.max_magnitude,
        })
    }
}

/// A slimmed model whose outputs differ from the original's beyond float rounding.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "verification failed: output `{output}` differs by {diff:e}, over the tolerance {tolerance:e}"
)]
pub struct Mismatch {
    /// The first output that differs.
    pub output: String,
    /// Its largest absolute difference.
    pub diff: f32,
    /// The tolerance (relative to the output's magnitude).
    pub tolerance: f32,
}

/// Concrete shape of an input fact: symbols take their `--set` value, else [`NOMINAL_DIM`].
fn concrete_shape(fact: &TypedFact, values: &SymbolValues) -> TractResult<Vec<usize>> {
    fact.shape
        .iter()
        .map(|d| {
            let mut v = values.clone();
            for s in d.symbols() {
                if values.get(&s).is_none() {
                    v = v.with(&s, NOMINAL_DIM);
                }
            }
            Ok(d.eval(&v).to_usize()?)
        })
        .collect()
}

/// Exclusive upper bound for an integer input: the smallest constant table it indexes, if any.
fn index_bound(model: &TypedModel, input: OutletId) -> Option<usize> {
    let mut frontier = vec![input];
    let mut bound: Option<usize> = None;
    let mut seen = std::collections::HashSet::new();
    while let Some(outlet) = frontier.pop() {
        if !seen.insert(outlet) {
            continue;
        }
        for succ in &model.outlet_successors(outlet).to_vec() {
            let node = model.node(succ.node);
            if let Some(gather) = node.op_as::<Gather>() {
                if succ.slot == 1 {
                    let table = model.node(node.inputs[0].node);
                    if let Some(konst) = table.op_as::<Const>() {
                        let n = konst.val().shape()[gather.axis];
                        bound = Some(bound.map_or(n, |b| b.min(n)));
                    }
                }
            } else if node.op_is::<AxisOp>() || ops::is_cast(node.op.as_op()) {
                frontier.push(OutletId::new(succ.node, 0));
            }
        }
    }
    bound
}

/// Largest input (in elements) generated for running a model: a declared size beyond it is
/// refused rather than allocated.
pub const MAX_INPUT_ELEMENTS: usize = 1 << 30;

/// Seeded random inputs for a model.
pub fn random_inputs(
    model: &TypedModel,
    seed: u64,
    values: &SymbolValues,
) -> TractResult<TVec<TValue>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut inputs = tvec![];
    for &outlet in model.input_outlets()? {
        let fact = model.outlet_fact(outlet)?;
        let shape = concrete_shape(fact, values)?;
        let len = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&len| len <= MAX_INPUT_ELEMENTS)
            .with_context(|| {
                format!("input shape {shape:?} is too large to run (more than {MAX_INPUT_ELEMENTS} elements)")
            })?;
        let dt = fact.datum_type;
        let tensor = if dt.is_float() {
            let data: Vec<f32> = (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect();
            tract_ndarray::ArrayD::from_shape_vec(shape, data)?
                .into_tensor()
                .cast_to_dt(dt)?
                .into_owned()
        } else if dt == bool::datum_type() {
            let data: Vec<bool> = (0..len).map(|_| rng.gen_bool(0.5)).collect();
            tract_ndarray::ArrayD::from_shape_vec(shape, data)?.into_tensor()
        } else {
            let bound = index_bound(model, outlet).unwrap_or(2).max(1) as i64;
            let data: Vec<i64> = (0..len).map(|_| rng.gen_range(0..bound)).collect();
            tract_ndarray::ArrayD::from_shape_vec(shape, data)?
                .into_tensor()
                .cast_to_dt(dt)?
                .into_owned()
        };
        inputs.push(tensor.into_tvalue());
    }
    Ok(inputs)
}

/// Runs a model (optimized for CPU) on the given inputs.
pub fn run(model: &TypedModel, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
    run_consuming(model.clone(), inputs)
}

/// Runs a model given up to its optimized plan: tract packs the weights again for the plan, so
/// a model nothing else holds frees its own weights as they are packed.
fn run_consuming(model: TypedModel, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
    model.into_optimized()?.into_runnable()?.run(inputs)
}

fn max_abs(t: &Tensor) -> TractResult<f32> {
    let t = t.cast_to::<f32>()?;
    Ok(t.try_as_plain_ram()?
        .as_slice::<f32>()?
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs())))
}

/// Largest absolute element difference of two tensors of one shape (NaN against a number is infinite).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> TractResult<f32> {
    ensure!(
        a.shape() == b.shape(),
        "shapes differ: {:?} vs {:?}",
        a.shape(),
        b.shape()
    );
    let (a, b) = (a.cast_to::<f32>()?, b.cast_to::<f32>()?);
    let (a, b) = (
        a.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
        b.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
    );
    // NaN anywhere counts as an infinite difference.
    Ok(a.iter()
        .zip(&b)
        .map(|(x, y)| {
            if x.is_nan() != y.is_nan() {
                f32::INFINITY
            } else {
                (x - y).abs()
            }
        })
        .fold(0.0, f32::max))
}

/// The name of a model's output `ix`: its label, else its node's name.
pub fn output_name(model: &TypedModel, ix: usize) -> TractResult<String> {
    let outlet = model.output_outlets()?[ix];
    Ok(model
        .outlet_label(outlet)
        .map(String::from)
        .unwrap_or_else(|| model.node(outlet.node).name.clone()))
}

/// How close an approximation's output is to the reference's, pooled over samples.
#[derive(Clone, Debug, Serialize)]
pub struct OutputFidelity {
    /// The output's name.
    pub name: String,
    /// Cosine similarity of the flattened outputs.
    pub cosine: f64,
    /// ‖approximation − reference‖ / ‖reference‖.
    pub relative_l2: f64,
    /// For a `[1, tokens, features]` output (not named as logits) and inputs with a token mask:
    /// the cosine between the mean-pooled real tokens of both, averaged over samples (sentence
    /// embeddings).
    pub pooled_cosine: Option<f64>,
    /// For a `[1, tokens, features]` output named as logits and inputs with a token mask: the
    /// fraction of real tokens whose predicted token (largest logit) is the same in both.
    pub same_next_token: Option<f64>,
}

/// Mean of the rows of a `tokens × features` output whose `mask` is positive.
fn pooled(values: &[f32], mask: &[f32], features: usize) -> Vec<f64> {
    let mut sum = vec![0f64; features];
    let mut count = 0f64;
    for (row, m) in values.chunks(features).zip(mask) {
        if *m > 0.0 {
            count += 1.0;
            sum.iter_mut().zip(row).for_each(|(s, v)| *s += *v as f64);
        }
    }
    sum.iter().map(|s| s / count.max(1.0)).collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b)).max(f64::MIN_POSITIVE)
}

/// Whether `output` is a `[1, tokens, features]` embedding with one `mask` value per token,
/// so that its real tokens can be mean-pooled into a sentence embedding.
pub fn pools(output: &Tensor, mask: &Tensor) -> bool {
    let shape = output.shape();
    shape.len() == 3 && shape[0] == 1 && mask.len() == shape[1]
}

/// What one sample's `[1, tokens, features]` output shows over its real tokens: the cosine of
/// the mean-pooled embeddings, and on how many real tokens the largest feature is the same one
/// (for logits: the same next token).
struct TokenMeasures {
    pooled_cosine: f64,
    same_argmax: usize,
    tokens: usize,
}

/// The token measures of one sample's output, when it is `[1, tokens, features]` and the mask
/// has one value per token.
fn token_measures(
    r: &Tensor,
    a: &Tensor,
    mask: Option<&Tensor>,
) -> TractResult<Option<TokenMeasures>> {
    let Some(mask) = mask.filter(|m| pools(r, m)) else {
        return Ok(None);
    };
    let features = r.shape()[2];
    let mask = mask.cast_to::<f32>()?;
    let mask = mask.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    let (r, a) = (r.cast_to::<f32>()?, a.cast_to::<f32>()?);
    let (r, a) = (
        r.try_as_plain_ram()?.as_slice::<f32>()?,
        a.try_as_plain_ram()?.as_slice::<f32>()?,
    );
    let real_rows = || {
        r.chunks(features)
            .zip(a.chunks(features))
            .zip(&mask)
            .filter(|(_, m)| **m > 0.0)
            .map(|(rows, _)| rows)
    };
    Ok(Some(TokenMeasures {
        pooled_cosine: cosine(&pooled(r, &mask, features), &pooled(a, &mask, features)),
        same_argmax: real_rows().filter(|(x, y)| argmax(x) == argmax(y)).count(),
        tokens: real_rows().count(),
    }))
}

/// The index of a row's largest value (the first of equals).
fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, v)| {
            if *v > best.1 {
                (i, *v)
            } else {
                best
            }
        })
        .0
}

/// Fidelity of `approximation` to `reference` on the given input samples, per output; `mask`
/// is the input marking real tokens, for pooled-embedding cosines.
pub fn fidelity(
    reference: &TypedModel,
    approximation: &TypedModel,
    samples: &[TVec<TValue>],
    mask: Option<usize>,
) -> TractResult<Vec<OutputFidelity>> {
    let plan = reference.clone().into_optimized()?.into_runnable()?;
    let names = output_names(reference)?;
    let reference_run = |k: usize| plan.run(samples[k].clone());
    fidelity_with(&names, &reference_run, approximation, samples, mask)
}

/// Fidelity of `approximation` to the reference outputs `expected` (one per sample, the
/// outputs named `names`), as [`fidelity`] measures it, without running the reference again.
pub fn fidelity_to_outputs(
    names: &[String],
    expected: &[TVec<TValue>],
    approximation: &TypedModel,
    samples: &[TVec<TValue>],
    mask: Option<usize>,
) -> TractResult<Vec<OutputFidelity>> {
    ensure!(
        expected.len() == samples.len(),
        "{} reference outputs for {} samples",
        expected.len(),
        samples.len()
    );
    let reference_run = |k: usize| Ok(expected[k].clone());
    fidelity_with(names, &reference_run, approximation, samples, mask)
}

/// The names of a model's inputs, in order.
pub fn input_names(model: &TypedModel) -> TractResult<Vec<String>> {
    Ok(model
        .input_outlets()?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect())
}

/// The names of a model's outputs, in order.
pub fn output_names(model: &TypedModel) -> TractResult<Vec<String>> {
    (0..model.output_outlets()?.len())
        .map(|ix| output_name(model, ix))
        .collect()
}

/// Fidelity of `approximation` to the reference outputs `reference_run` gives for sample `k`.
fn fidelity_with(
    names: &[String],
    reference_run: &(dyn Fn(usize) -> TractResult<TVec<TValue>> + Sync),
    approximation: &TypedModel,
    samples: &[TVec<TValue>],
    mask: Option<usize>,
) -> TractResult<Vec<OutputFidelity>> {
    let approximation_plan = approximation.clone().into_optimized()?.into_runnable()?;
    let outputs = names.len();
    // Per sample and output: [Σ r·a, Σ r², Σ a², Σ (a − r)²] and the token measures.
    let per_sample = in_parallel(
        samples.len(),
        |k| {
            let sample = &samples[k];
            let r = reference_run(k)?;
            let a = approximation_plan.run(sample.clone())?;
            let token_mask = mask.map(|m| sample[m].clone().into_tensor());
            (0..outputs)
                .map(|ix| {
                    let tokens = token_measures(&r[ix], &a[ix], token_mask.as_ref())?;
                    Ok((element_sums(&r[ix], &a[ix])?, tokens))
                })
                .collect::<TractResult<Vec<_>>>()
        },
        &|_, _| (),
    )?;
    let mut sums = vec![[0f64; 4]; outputs];
    let mut tokens: Vec<Vec<TokenMeasures>> = (0..outputs).map(|_| vec![]).collect();
    for sample in per_sample {
        for (ix, (sample_sums, sample_tokens)) in sample.into_iter().enumerate() {
            sums[ix]
                .iter_mut()
                .zip(sample_sums)
                .for_each(|(s, x)| *s += x);
            tokens[ix].extend(sample_tokens);
        }
    }
    sums.iter()
        .enumerate()
        .map(|(ix, [ra, rr, aa, dd])| {
            Ok(OutputFidelity {
                name: names[ix].clone(),
                cosine: ra / (rr.sqrt() * aa.sqrt()).max(f64::MIN_POSITIVE),
                relative_l2: (dd / rr.max(f64::MIN_POSITIVE)).sqrt(),
                pooled_cosine: every_sample(&tokens[ix], samples.len())
                    .filter(|_| !names_logits(&names[ix]))
                    .map(|t| t.iter().map(|m| m.pooled_cosine).sum::<f64>() / t.len() as f64),
                same_next_token: every_sample(&tokens[ix], samples.len())
                    .filter(|_| names_logits(&names[ix]))
                    .map(|t| {
                        let same: usize = t.iter().map(|m| m.same_argmax).sum();
                        same as f64 / t.iter().map(|m| m.tokens).sum::<usize>().max(1) as f64
                    }),
            })
        })
        .collect()
}

/// Whether an output's name says it holds a language model's logits (`transformers` and its
/// exporters name them so), whose largest feature is the predicted token; for other outputs
/// the largest feature means nothing, and mean-pooled logits are no sentence embedding.
pub(crate) fn names_logits(name: &str) -> bool {
    name.to_ascii_lowercase().contains("logits")
}

/// An output's token measures, when each of the `samples` had them.
fn every_sample(measures: &[TokenMeasures], samples: usize) -> Option<&[TokenMeasures]> {
    Some(measures).filter(|m| samples > 0 && m.len() == samples)
}

/// `[Σ r·a, Σ r², Σ a², Σ (a − r)²]` over the elements of two tensors of one shape.
fn element_sums(r: &TValue, a: &TValue) -> TractResult<[f64; 4]> {
    let (r, a) = (r.cast_to::<f32>()?, a.cast_to::<f32>()?);
    let (r, a) = (
        r.try_as_plain_ram()?.as_slice::<f32>()?,
        a.try_as_plain_ram()?.as_slice::<f32>()?,
    );
    let mut sums = [0f64; 4];
    for (x, y) in r.iter().zip(a) {
        let (x, y) = (*x as f64, *y as f64);
        sums[0] += x * y;
        sums[1] += x * x;
        sums[2] += y * y;
        sums[3] += (y - x) * (y - x);
    }
    Ok(sums)
}

/// Compares one output with the reference's under the tolerance of its type (in f32).
pub fn compare_output(name: String, expected: &Tensor, got: &Tensor) -> TractResult<OutputDiff> {
    let max_magnitude = max_abs(expected)?;
    let max_abs_diff = max_abs_diff(expected, got)?;
    let tolerance = relative_tolerance(expected.datum_type());
    let passed = max_abs_diff <= tolerance * max_magnitude.max(f32::MIN_POSITIVE);
    Ok(OutputDiff {
        name,
        max_abs_diff,
        max_magnitude,
        tolerance,
        passed,
    })
}

/// A model's outputs on seeded random inputs, kept to compare other models with after the model
/// itself is gone (a large model and its optimized plan need not stay in memory while the
/// written file is loaded back and run).
#[derive(Clone, Debug)]
pub struct Expected {
    seed: u64,
    /// Each call's inputs and outputs: one call, or a loop where each call's state inputs are
    /// the previous call's state outputs.
    calls: Vec<(TVec<TValue>, TVec<TValue>)>,
    /// The state pairs the loop carries, as (input, output) positions.
    states: Vec<(usize, usize)>,
    names: Vec<String>,
}

/// Calls of a state model checked in a loop (a prefill-sized first call and decode steps).
pub const LOOP_CALLS: usize = 8;

impl Expected {
    /// Runs `model` on the inputs of `seed`. The model is given up to its optimized plan (pass
    /// a clone, which shares the weights, to keep it): a model only this holds is never in
    /// memory beside its plan.
    pub fn of(model: TypedModel, seed: u64, values: &SymbolValues) -> TractResult<Expected> {
        let inputs = random_inputs(&model, seed, values)?;
        let names = output_names(&model)?;
        let outputs = run_consuming(model, inputs.clone()).context(DOES_NOT_RUN)?;
        Ok(Expected {
            seed,
            calls: vec![(inputs, outputs)],
            states: vec![],
            names,
        })
    }

    /// [`Expected::of`] for a model without state, [`Expected::of_loop`] over [`LOOP_CALLS`]
    /// calls for one with `states` (input, output positions).
    pub fn of_state(
        model: TypedModel,
        seed: u64,
        values: &SymbolValues,
        states: &[(usize, usize)],
    ) -> TractResult<Expected> {
        match states.is_empty() {
            true => Expected::of(model, seed, values),
            false => Expected::of_loop(model, seed, values, states, LOOP_CALLS),
        }
    }

    /// Runs `model` in a loop of up to `calls` calls, each fed the previous call's outputs of
    /// the `states` pairs (input, output positions) and fresh random inputs otherwise, at the
    /// lengths the state has grown to. The loop needs the state's growing length to be a
    /// symbol of the model's inputs; with a fixed length it stops after the first call.
    pub fn of_loop(
        model: TypedModel,
        seed: u64,
        values: &SymbolValues,
        states: &[(usize, usize)],
        calls: usize,
    ) -> TractResult<Expected> {
        let names = output_names(&model)?;
        let facts: Vec<TypedFact> = (0..model.inputs.len())
            .map(|i| model.input_fact(i).cloned())
            .collect::<TractResult<_>>()?;
        let plan = model.clone().into_optimized()?.into_runnable()?;
        let mut done: Vec<(TVec<TValue>, TVec<TValue>)> = vec![];
        let mut values = values.clone();
        for call in 0..calls {
            let mut inputs = random_inputs(&model, seed + call as u64, &values)?;
            if let Some((_, previous)) = done.last() {
                for (input, output) in states {
                    inputs[*input] = previous[*output].clone();
                }
            }
            let outputs = plan.run(inputs.clone()).context(DOES_NOT_RUN)?;
            let grown = grown_values(&facts, states, &outputs, &values);
            done.push((inputs, outputs));
            match grown {
                Some(next) => values = next,
                None => break,
            }
        }
        Ok(Expected {
            seed,
            calls: done,
            states: states.to_vec(),
            names,
        })
    }

    /// Calls checked: more than one for a loop.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Runs `other` on the same inputs and compares its outputs; `other` is given up to its
    /// optimized plan, as in [`Expected::of`].
    pub fn compare(&self, other: TypedModel) -> TractResult<Verification> {
        self.compare_cut(other, &[])
    }

    /// [`Expected::compare`] for a model whose state `cuts` restrict (see [`StateCut`]): it is
    /// fed the kept slices of the state inputs on the first call and its own state after, and
    /// its state outputs are compared with the kept slices of the expected ones. Each output's
    /// comparison is its worst over the calls.
    pub fn compare_cut(&self, other: TypedModel, cuts: &[StateCut]) -> TractResult<Verification> {
        let plan = other.into_optimized()?.into_runnable()?;
        let mut worst: Vec<OutputDiff> = vec![];
        let mut previous: Option<TVec<TValue>> = None;
        let mut first_inputs = tvec![];
        for (inputs, expected) in &self.calls {
            let mut inputs = inputs.clone();
            let mut expected = expected.clone();
            for cut in cuts {
                inputs[cut.input] = select_slices(&inputs[cut.input], cut.axis, &cut.kept)?.into();
                expected[cut.output] =
                    select_slices(&expected[cut.output], cut.axis, &cut.kept)?.into();
            }
            if let Some(previous) = &previous {
                for (input, output) in &self.states {
                    inputs[*input] = previous[*output].clone();
                }
            } else {
                first_inputs = inputs.clone();
            }
            let got = plan.run(inputs).context("the slimmed model does not run")?;
            let diffs = expected
                .iter()
                .zip(got.iter())
                .zip(&self.names)
                .map(|((e, g), name)| compare_output(name.clone(), e, g))
                .collect::<TractResult<Vec<_>>>()?;
            worst = if worst.is_empty() {
                diffs
            } else {
                worst
                    .into_iter()
                    .zip(diffs)
                    .map(|(w, d)| w.worse(d))
                    .collect()
            };
            previous = Some(got);
        }
        let passed = worst.iter().all(|o| o.passed);
        Ok(Verification {
            seed: self.seed,
            calls: self.calls.len(),
            input_shapes: first_inputs.iter().map(|t| t.shape().to_vec()).collect(),
            outputs: worst,
            passed,
            artifact: None,
        })
    }
}

const DOES_NOT_RUN: &str =
    "the original model does not run in tract at these shapes (give concrete ones with --input or --set)";

/// The symbol values of the next call of a loop: each state input whose size along an axis is
/// a symbol takes its state output's size there. `None` when no state input has such a symbol
/// (the state cannot grow).
fn grown_values(
    facts: &[TypedFact],
    states: &[(usize, usize)],
    outputs: &[TValue],
    values: &SymbolValues,
) -> Option<SymbolValues> {
    let mut next = values.clone();
    let mut grows = false;
    for (input, output) in states {
        for (axis, dim) in facts[*input].shape.iter().enumerate() {
            if let TDim::Sym(symbol) = dim {
                next = next.with(symbol, outputs[*output].shape()[axis] as i64);
                grows = true;
            }
        }
    }
    grows.then_some(next)
}

/// Compares the two models' outputs on seeded random inputs.
pub fn verify(
    original: &TypedModel,
    slim: &TypedModel,
    seed: u64,
    values: &SymbolValues,
) -> TractResult<Verification> {
    verify_cut(original, slim, (&[], &[]), seed, values)
}

/// [`verify`] for a slimmed model whose state `cuts` restrict, run in a loop of
/// [`LOOP_CALLS`] calls where the model has `states` (input, output positions; see
/// [`Expected::of_loop`] and [`Expected::compare_cut`]).
pub fn verify_cut(
    original: &TypedModel,
    slim: &TypedModel,
    (states, cuts): (&[(usize, usize)], &[StateCut]),
    seed: u64,
    values: &SymbolValues,
) -> TractResult<Verification> {
    Expected::of_state(original.clone(), seed, values, states)?.compare_cut(slim.clone(), cuts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `[1, tokens, 3]` output.
    fn output(rows: &[[f32; 3]]) -> Tensor {
        Tensor::from_shape(&[1, rows.len(), 3], &rows.concat()).unwrap()
    }

    #[test]
    fn token_measures_count_real_tokens_only() {
        let mask = Tensor::from_shape(&[1, 3], &[1i64, 1, 0]).unwrap();
        let reference = output(&[[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [5.0, 0.0, 0.0]]);
        let padded_differs = output(&[[2.0, 1.0, 0.0], [0.0, 1.0, 2.0], [0.0, 0.0, 9.0]]);
        let padded_same = output(&[[2.0, 1.0, 0.0], [0.0, 1.0, 2.0], [5.0, 0.0, 0.0]]);
        let measure = |a: &Tensor| token_measures(&reference, a, Some(&mask)).unwrap().unwrap();
        let (m, same) = (measure(&padded_differs), measure(&padded_same));
        // The first real token predicts the same feature, the second does not.
        assert_eq!((m.same_argmax, m.tokens), (1, 2));
        // Pooled over the real tokens: [1.5, 1.5, 0.5] against [1, 1, 1].
        let expected = 3.5 / (4.75f64.sqrt() * 3f64.sqrt());
        assert!((m.pooled_cosine - expected).abs() < 1e-12);
        assert_eq!(m.pooled_cosine, same.pooled_cosine);
        assert!(token_measures(&reference, &reference, None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn only_logits_have_a_next_token() {
        assert!(names_logits("logits") && names_logits("/lm_head/Logits"));
        assert!(!names_logits("last_hidden_state"));
    }
}
