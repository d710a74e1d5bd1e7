//! Random models in the family the pass targets, for soundness checks and differential testing:
//! FFN-shaped layers (random activations, gates, softmax, axis ops, residuals), attention blocks
//! (1–4 heads, masks; and as default exports write them: grouped-query heads, rotary embeddings,
//! sdpa's NaN guard, -inf masks), and stacks of blocks with layer norms, shared weights and ops
//! the rules do not know; random shapes and random zero structure (whole channels and heads, partial ones
//! that must stay, zero weights under non-zero biases). The same seed gives the same model.

use rand::rngs::StdRng;
use rand::Rng;
use tract_core::internal::*;
use tract_core::ops::array::TypedConcat;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::math::{add, max, mul};
use tract_core::ops::nn::{sigmoid, Softmax, SoftmaxKind};

/// A random f32 tensor, uniform in [-1, 1).
pub fn random_tensor(rng: &mut StdRng, shape: &[usize]) -> Tensor {
    let data: Vec<f32> = (0..shape.iter().product())
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    tract_ndarray::ArrayD::from_shape_vec(shape, data)
        .unwrap()
        .into_tensor()
}

/// Zeroes random slices of `axis`: some whole (removable), some all but one element (must stay).
pub fn zero_random_slices(rng: &mut StdRng, t: &mut Tensor, axis: usize) {
    let n = t.shape()[axis];
    let mut view = t.to_plain_array_view_mut::<f32>().unwrap();
    for i in 0..n {
        let roll = rng.gen_range(0..10);
        let mut slice = view.index_axis_mut(tract_ndarray::Axis(axis), i);
        if roll < 4 {
            slice.fill(0.0);
        } else if roll == 4 {
            let keep = *slice.iter().next().unwrap();
            slice.fill(0.0);
            *slice.iter_mut().next().unwrap() = keep + 2.0;
        }
    }
}

/// An f32 EinSum from its expression.
pub fn einsum(expr: &str) -> EinSum {
    EinSum::new(expr.parse().unwrap(), f32::datum_type())
}

/// A random model, and how much of it the pass must cut.
pub struct Planted {
    /// The model.
    pub model: TypedModel,
    /// Weight elements the pass must remove: the consumers' whole zero input slices (FFN
    /// channels, heads of output projections) where the other operand is provably finite.
    /// Partial zeros and zeros behind ops the rules do not know are not counted.
    pub removable_weights: usize,
    /// For a model with a KV cache: its heads, and those the pass must keep in it (the heads
    /// the output projection does not drop). Where it drops every head the block is a bias
    /// and the cache is left whole: it is not cut to nothing.
    pub cache_heads: Option<(usize, usize)>,
}

/// Elements of `t` in whole zero blocks of `width` consecutive slices of `axis`.
pub fn zero_block_elements(t: &Tensor, axis: usize, width: usize) -> usize {
    let view = t.to_plain_array_view::<f32>().unwrap();
    let per_slice = t.len() / t.shape()[axis];
    let zero_slice = |i: usize| {
        view.index_axis(tract_ndarray::Axis(axis), i)
            .iter()
            .all(|v| *v == 0.0)
    };
    let blocks = t.shape()[axis] / width;
    let zero_blocks = (0..blocks)
        .filter(|b| (b * width..(b + 1) * width).all(zero_slice))
        .count();
    zero_blocks * width * per_slice
}

/// A producer of `f` channels from `x` (`[1, s, h]`): an EinSum with its weight on either side,
/// plus a bias on either side, with random zero channels in both.
fn ffn_producer(
    m: &mut TypedModel,
    rng: &mut StdRng,
    name: &str,
    x: OutletId,
    f: usize,
) -> OutletId {
    let h = m.outlet_fact(x).unwrap().shape[2].to_usize().unwrap();
    let mut w = random_tensor(rng, &[h, f]);
    if rng.gen_bool(0.3) {
        zero_random_slices(rng, &mut w, 1);
    }
    let y = if rng.gen_bool(0.5) {
        let w = m.add_const(format!("{name}.w"), w).unwrap();
        m.wire_node(name, einsum("amk,kn->amn"), &[x, w]).unwrap()[0]
    } else {
        let w = m
            .add_const(format!("{name}.w"), w.permute_axes(&[1, 0]).unwrap())
            .unwrap();
        m.wire_node(name, einsum("nk,amk->amn"), &[w, x]).unwrap()[0]
    };
    let mut b = random_tensor(rng, &[1, 1, f]);
    if rng.gen_bool(0.3) {
        zero_random_slices(rng, &mut b, 2);
    }
    let b = m.add_const(format!("{name}.b"), b).unwrap();
    let operands = if rng.gen_bool(0.5) { [y, b] } else { [b, y] };
    m.wire_node(format!("{name}.bias"), add(), &operands)
        .unwrap()[0]
}

/// GELU, tanh, sigmoid, ReLU (as `max` with zero on either side) or nothing, on `a`.
fn ffn_activation(m: &mut TypedModel, rng: &mut StdRng, a: OutletId) -> OutletId {
    match rng.gen_range(0..5) {
        0 => m
            .wire_node("gelu", tract_core::ops::nn::gelu_exact::gelu_exact(), &[a])
            .unwrap()[0],
        1 => m
            .wire_node("tanh", tract_core::ops::math::tanh(), &[a])
            .unwrap()[0],
        2 => m.wire_node("sigmoid", sigmoid(), &[a]).unwrap()[0],
        3 => {
            let zero = m.add_const("zero", tensor3(&[[[0f32]]])).unwrap();
            let operands = if rng.gen_bool(0.5) {
                [a, zero]
            } else {
                [zero, a]
            };
            m.wire_node("relu", max(), &operands).unwrap()[0]
        }
        _ => a,
    }
}

/// A random FFN-shaped model: producers → element-wise stuff → consumer with zero input slices.
pub fn random_ffn(rng: &mut StdRng) -> Planted {
    let (s, h, f, p) = (
        rng.gen_range(1..5),
        rng.gen_range(2..9),
        rng.gen_range(2..13),
        rng.gen_range(1..7),
    );
    let mut m = TypedModel::default();
    let x = m.add_source("x", f32::fact([1, s, h])).unwrap();
    let mut a = ffn_producer(&mut m, rng, "up", x, f);
    a = ffn_activation(&mut m, rng, a);
    // A gate: an element-wise product, written as `Mul` or as a Hadamard EinSum.
    let gate: Option<Box<dyn TypedOp>> = match rng.gen_range(0..3) {
        0 => Some(Box::new(mul())),
        1 => Some(Box::new(einsum("amn,amn->amn"))),
        _ => None,
    };
    if let Some(gate) = gate {
        let g = ffn_producer(&mut m, rng, "gate", x, f);
        a = m.wire_node("gated", gate, &[a, g]).unwrap()[0];
    }
    if rng.gen_bool(0.4) {
        let softmax = Softmax {
            axes: tvec!(1),
            quant_output_dt: None,
            kind: SoftmaxKind::default(),
        };
        a = m.wire_node("softmax", softmax, &[a]).unwrap()[0];
    }
    if rng.gen_bool(0.4) {
        a = m.wire_node("squeeze", AxisOp::Rm(0), &[a]).unwrap()[0];
        a = m.wire_node("unsqueeze", AxisOp::Add(0), &[a]).unwrap()[0];
    }
    let residual = rng.gen_bool(0.5);
    let p = if residual { h } else { p };
    let mut w2 = random_tensor(rng, &[f, p]);
    if rng.gen_bool(0.2) {
        w2 = Tensor::zero::<f32>(&[f, p]).unwrap();
    } else {
        zero_random_slices(rng, &mut w2, 0);
    }
    // Every function between the linears keeps finite values finite: its zero rows go, and an
    // all-zero block goes when a residual connection absorbs it (else it is the output).
    let zero_rows = zero_block_elements(&w2, 0, 1);
    let removable_weights = if zero_rows == w2.len() && !residual {
        0
    } else {
        zero_rows
    };
    let w2 = m.add_const("down.w", w2).unwrap();
    let mut y = m
        .wire_node("down", einsum("amn,np->amp"), &[a, w2])
        .unwrap()[0];
    if rng.gen_bool(0.5) {
        let b2 = m
            .add_const("down.b", random_tensor(rng, &[1, 1, p]))
            .unwrap();
        y = m.wire_node("down.bias", add(), &[y, b2]).unwrap()[0];
    }
    if residual {
        let operands = if rng.gen_bool(0.5) { [y, x] } else { [x, y] };
        y = m.wire_node("residual", add(), &operands).unwrap()[0];
    }
    m.select_output_outlets(&[y]).unwrap();
    Planted {
        model: m,
        removable_weights,
        cache_heads: None,
    }
}

/// Zeroes whole heads (blocks of `head_dim` slices of `axis`) at random; returns how many.
pub fn zero_random_heads(
    rng: &mut StdRng,
    t: &mut Tensor,
    axis: usize,
    head_dim: usize,
    p: f64,
) -> usize {
    let heads = t.shape()[axis] / head_dim;
    let mut view = t.to_plain_array_view_mut::<f32>().unwrap();
    let mut zeroed = 0;
    for h in 0..heads {
        if rng.gen_bool(p) {
            zeroed += 1;
            for d in 0..head_dim {
                view.index_axis_mut(tract_ndarray::Axis(axis), h * head_dim + d)
                    .fill(0.0);
            }
        }
    }
    zeroed
}

/// A random multi-head attention block with a residual: Q, K, V projections (with biases),
/// split into heads, scaled scores, an optional additive mask, softmax over the keys, context,
/// heads merged back, output projection. Random zeros: whole heads in the output projection's
/// input (removable), whole heads of the V projection (constant heads, folded), and partial ones.
pub fn random_attention(rng: &mut StdRng) -> Planted {
    attention_block(rng, false)
}

/// [`random_attention`] as one generation step: K and V of the new tokens are appended to a
/// cache of any length (inputs `past_key_values.0.key`/`.value`, `[1, past, heads, d]`, `past`
/// symbolic), the attention reads the whole, and the updated cache is returned
/// (`present.0.key`/`.value`) beside the block's output; no mask. The heads the output
/// projection drops are removable from the cache too.
pub fn random_cached_attention(rng: &mut StdRng) -> Planted {
    attention_block(rng, true)
}

fn attention_block(rng: &mut StdRng, cached: bool) -> Planted {
    let (s, hidden, heads, d) = (
        rng.gen_range(1..5),
        rng.gen_range(2..9),
        rng.gen_range(1..5),
        rng.gen_range(1..4),
    );
    let inner = heads * d;
    let mut m = TypedModel::default();
    let x = m.add_source("x", f32::fact([1, s, hidden])).unwrap();
    let past: TDim = m.symbols.sym("past").into();
    let mut caches = vec![];
    for kv in ["key", "value"].iter().filter(|_| cached) {
        let shape = tvec![1.into(), past.clone(), heads.into(), d.into()];
        let name = format!("past_key_values.0.{kv}");
        caches.push(m.add_source(name, f32::fact(shape)).unwrap());
    }
    let project = |m: &mut TypedModel, name: &str, rng: &mut StdRng, zero_heads: f64| {
        let mut w = random_tensor(rng, &[hidden, inner]);
        let zeroed = zero_random_heads(rng, &mut w, 1, d, zero_heads);
        let w = m.add_const(format!("{name}.w"), w).unwrap();
        let y = m.wire_node(name, einsum("amk,kn->amn"), &[x, w]).unwrap()[0];
        let b = m
            .add_const(format!("{name}.b"), random_tensor(rng, &[1, 1, inner]))
            .unwrap();
        let y = m.wire_node(format!("{name}.bias"), add(), &[y, b]).unwrap()[0];
        let split = AxisOp::Reshape(2, tvec!(inner.into()), tvec!(heads.into(), d.into()));
        (
            m.wire_node(format!("{name}.heads"), split, &[y]).unwrap()[0],
            zeroed,
        )
    };
    let (q, q_zeroed) = project(&mut m, "q", rng, 0.1);
    let (mut k, k_zeroed) = project(&mut m, "k", rng, 0.1);
    let (mut v, v_zeroed) = project(&mut m, "v", rng, 0.4);
    let mut presents = vec![];
    for (new, past) in [&mut k, &mut v].into_iter().zip(&caches) {
        let name = format!("present.0.{}", ["key", "value"][presents.len()]);
        *new = m
            .wire_node(&name, TypedConcat::new(1), &[*past, *new])
            .unwrap()[0];
        presents.push((*new, name));
    }
    let scores = m
        .wire_node("scores", einsum("ashd,athd->ahst"), &[q, k])
        .unwrap()[0];
    let scale = m.add_const("scale", tensor4(&[[[[0.5f32]]]])).unwrap();
    let mut scores = m.wire_node("scaled", mul(), &[scores, scale]).unwrap()[0];
    if rng.gen_bool(0.5) && !cached {
        let mask: Vec<f32> = (0..s)
            .map(|_| if rng.gen_bool(0.3) { -1e4 } else { 0.0 })
            .collect();
        let mask = tract_ndarray::ArrayD::from_shape_vec(vec![1, 1, 1, s], mask).unwrap();
        let mask = m.add_const("mask", mask.into_tensor()).unwrap();
        scores = m.wire_node("masked", add(), &[scores, mask]).unwrap()[0];
    }
    let softmax = Softmax {
        axes: tvec!(3),
        quant_output_dt: None,
        kind: SoftmaxKind::default(),
    };
    let probs = m.wire_node("softmax", softmax, &[scores]).unwrap()[0];
    let context = m
        .wire_node("context", einsum("ahst,athd->ashd"), &[probs, v])
        .unwrap()[0];
    let merge = AxisOp::Reshape(2, tvec!(heads.into(), d.into()), tvec!(inner.into()));
    let merged = m.wire_node("merged", merge, &[context]).unwrap()[0];
    let mut wo = random_tensor(rng, &[inner, hidden]);
    if zero_random_heads(rng, &mut wo, 0, d, 0.4) == 0 && d > 1 {
        zero_random_slices(rng, &mut wo, 0);
    }
    // Masks are finite, so every softmax row is: zero heads of the output projection go.
    let removable_weights = zero_block_elements(&wo, 0, d);
    let wo = m.add_const("out.w", wo).unwrap();
    let out = m
        .wire_node("out", einsum("ami,io->amo"), &[merged, wo])
        .unwrap()[0];
    let bo = m
        .add_const("out.b", random_tensor(rng, &[1, 1, hidden]))
        .unwrap();
    let out = m.wire_node("out.bias", add(), &[out, bo]).unwrap()[0];
    let operands = if rng.gen_bool(0.5) {
        [out, x]
    } else {
        [x, out]
    };
    let y = m.wire_node("residual", add(), &operands).unwrap()[0];
    let mut outputs = vec![y];
    for (present, name) in presents {
        m.set_outlet_label(present, name).unwrap();
        outputs.push(present);
    }
    m.select_output_outlets(&outputs).unwrap();
    // Claimed only where Q, K and V have no zero heads of their own: with them (constant V
    // heads, bias-only Q or K heads) the pass may leave the cache whole (missed cuts, listed in
    // the README's limits); outputs are compared either way.
    let removable_heads = removable_weights / (d * hidden);
    let plain = q_zeroed + k_zeroed + v_zeroed == 0;
    Planted {
        model: m,
        removable_weights,
        cache_heads: (cached && plain).then_some((heads, heads - removable_heads)),
    }
}

/// A random attention block as default exports write it: grouped-query attention (1–2 KV
/// heads, each shared by 1–3 query heads, repeated by add-axis, broadcast and merge), rotary
/// position embeddings (`rotate_half`: slices, a negation and a concatenation) on Q and K,
/// sdpa's NaN guard after softmax, and a mask that is finite or -inf. Random zeros: query heads
/// in the output projection (some groups whole, some partly), KV heads in V.
pub fn random_grouped_attention(rng: &mut StdRng) -> Planted {
    random_grouped_attention_checked(rng).expect("a well-formed random attention block")
}

fn random_grouped_attention_checked(rng: &mut StdRng) -> TractResult<Planted> {
    let (s, hidden) = (rng.gen_range(1..5), rng.gen_range(2..9));
    // Mostly several groups of several heads: the case where heads lie along two axes.
    let kv = if rng.gen_bool(0.75) { 2 } else { 1 };
    let per_kv = if rng.gen_bool(0.8) {
        rng.gen_range(2..4)
    } else {
        1
    };
    let d = 2 * rng.gen_range(1..3);
    let heads = kv * per_kv;
    let mut m = TypedModel::default();
    let x = m.add_source("x", f32::fact([1, s, hidden]))?;
    let project = |m: &mut TypedModel, rng: &mut StdRng, name: &str, units: usize, zero: f64| {
        let mut w = random_tensor(rng, &[hidden, units * d]);
        zero_random_heads(rng, &mut w, 1, d, zero);
        let w = m.add_const(format!("{name}.w"), w)?;
        let y = m.wire_node(name, einsum("amk,kn->amn"), &[x, w])?[0];
        let b = m.add_const(format!("{name}.b"), random_tensor(rng, &[1, 1, units * d]))?;
        let y = m.wire_node(format!("{name}.bias"), add(), &[y, b])?[0];
        let split = AxisOp::Reshape(2, tvec!((units * d).into()), tvec!(units.into(), d.into()));
        m.wire_node(format!("{name}.heads"), split, &[y])
            .map(|o| o[0])
    };
    let rope = rng.gen_bool(0.5);
    let mut q = project(&mut m, rng, "q", heads, 0.0)?;
    let mut k = project(&mut m, rng, "k", kv, 0.0)?;
    let v = project(&mut m, rng, "v", kv, 0.3)?;
    if rope {
        q = rotary(&mut m, rng, "q.rope", q, s, d)?;
        k = rotary(&mut m, rng, "k.rope", k, s, d)?;
    }
    let k = repeat_kv(&mut m, "k.repeat", k, s, kv, per_kv, d)?;
    let v = repeat_kv(&mut m, "v.repeat", v, s, kv, per_kv, d)?;
    let (probs, finite_rows) = sdpa_probabilities(&mut m, rng, q, k, s)?;
    // Operands in either order, as exporters and tract's rewrites leave them.
    let swap = rng.gen_bool(0.5);
    let context = if swap {
        m.wire_node("context", einsum("athd,ahst->ashd"), &[v, probs])?[0]
    } else {
        m.wire_node("context", einsum("ahst,athd->ashd"), &[probs, v])?[0]
    };
    let merge = AxisOp::Reshape(2, tvec!(heads.into(), d.into()), tvec!((heads * d).into()));
    let merged = m.wire_node("merged", merge, &[context])?[0];
    let mut wo = random_tensor(rng, &[heads * d, hidden]);
    if rng.gen_bool(0.3) {
        // A whole KV group's query heads.
        let group = rng.gen_range(0..kv);
        let mut view = wo.to_plain_array_view_mut::<f32>()?;
        for row in group * per_kv * d..(group + 1) * per_kv * d {
            view.index_axis_mut(tract_ndarray::Axis(0), row).fill(0.0);
        }
    }
    zero_random_heads(rng, &mut wo, 0, d, 0.4);
    // A fully -inf-masked row is NaN without sdpa's guard, and 0 · NaN is not 0: those stay.
    let removable_weights = if finite_rows {
        zero_block_elements(&wo, 0, d)
    } else {
        0
    };
    let wo = m.add_const("out.w", wo)?;
    let out = if swap {
        m.wire_node("out", einsum("io,ami->amo"), &[wo, merged])?[0]
    } else {
        m.wire_node("out", einsum("ami,io->amo"), &[merged, wo])?[0]
    };
    let bo = m.add_const("out.b", random_tensor(rng, &[1, 1, hidden]))?;
    let out = m.wire_node("out.bias", add(), &[out, bo])?[0];
    let y = m.wire_node("residual", add(), &[x, out])?[0];
    m.select_output_outlets(&[y])?;
    Ok(Planted {
        model: m,
        removable_weights,
        cache_heads: None,
    })
}

/// Attention probabilities as sdpa exports compute them from `q` and `k` (`[1, s, heads, d]`):
/// scores scaled (by the scale, or q and k each by its square root), an optional finite or
/// -inf mask, softmax over the keys, and often sdpa's NaN guard. Also whether every row is
/// provably finite (not when a -inf mask meets no guard).
fn sdpa_probabilities(
    m: &mut TypedModel,
    rng: &mut StdRng,
    mut q: OutletId,
    mut k: OutletId,
    s: usize,
) -> TractResult<(OutletId, bool)> {
    let mut scores = if rng.gen_bool(0.6) {
        // sdpa: q and k each scaled by the square root of the scale.
        let root = m.add_const("scale.root", tensor4(&[[[[0.7f32]]]]))?;
        // The scale on the left, as exports write `√s · q`.
        q = m.wire_node("q.scaled", mul(), &[root, q])?[0];
        k = m.wire_node("k.scaled", mul(), &[k, root])?[0];
        m.wire_node("scores", einsum("ashd,athd->ahst"), &[q, k])?[0]
    } else {
        let scores = m.wire_node("scores", einsum("ashd,athd->ahst"), &[q, k])?[0];
        let scale = m.add_const("scale", tensor4(&[[[[0.5f32]]]]))?;
        m.wire_node("scaled", mul(), &[scores, scale])?[0]
    };
    let mut infinite_mask = false;
    if rng.gen_bool(0.6) {
        infinite_mask = rng.gen_bool(0.5);
        let masked = if infinite_mask {
            f32::NEG_INFINITY
        } else {
            -1e4
        };
        let mask: Vec<f32> = (0..s)
            .map(|_| if rng.gen_bool(0.3) { masked } else { 0.0 })
            .collect();
        let mask = tract_ndarray::ArrayD::from_shape_vec(vec![1, 1, 1, s], mask)?;
        let mask = m.add_const("mask", mask.into_tensor())?;
        scores = m.wire_node("masked", add(), &[scores, mask])?[0];
    }
    let softmax = Softmax {
        axes: tvec!(3),
        quant_output_dt: None,
        kind: SoftmaxKind::default(),
    };
    let mut probs = m.wire_node("softmax", softmax, &[scores])?[0];
    let nan_guard = rng.gen_bool(0.7);
    if nan_guard {
        // sdpa: rows that are all NaN (every key masked with -inf) become zeros.
        let nan = m.wire_node("isnan", tract_core::ops::math::is_nan(), &[probs])?[0];
        let zero = m.add_const("zero", tensor4(&[[[[0f32]]]]))?;
        probs = m.wire_node("guarded", tract_core::ops::logic::Iff, &[nan, zero, probs])?[0];
    }
    Ok((probs, !infinite_mask || nan_guard))
}

/// Rotary embeddings on `[1, s, heads, d]`: `t·cos + rotate_half(t)·sin`, where `rotate_half`
/// concatenates the negated second half of the head size with its first half.
fn rotary(
    m: &mut TypedModel,
    rng: &mut StdRng,
    name: &str,
    t: OutletId,
    s: usize,
    d: usize,
) -> TractResult<OutletId> {
    use tract_core::ops::array::{Slice, TypedConcat};
    let cos = m.add_const(format!("{name}.cos"), random_tensor(rng, &[1, s, 1, d]))?;
    let sin = m.add_const(format!("{name}.sin"), random_tensor(rng, &[1, s, 1, d]))?;
    let first = m.wire_node(format!("{name}.first"), Slice::new(3, 0, d / 2), &[t])?[0];
    let second = m.wire_node(format!("{name}.second"), Slice::new(3, d / 2, d), &[t])?[0];
    let negated = m.wire_node(
        format!("{name}.neg"),
        tract_core::ops::math::neg(),
        &[second],
    )?[0];
    let rotated = m.wire_node(
        format!("{name}.rotated"),
        TypedConcat::new(3),
        &[negated, first],
    )?[0];
    let a = m.wire_node(format!("{name}.cos_t"), mul(), &[t, cos])?[0];
    let b = m.wire_node(format!("{name}.sin_t"), mul(), &[rotated, sin])?[0];
    m.wire_node(name, add(), &[a, b]).map(|o| o[0])
}

/// `repeat_kv` on `[1, s, kv, d]`: each KV head repeated for the `per_kv` query heads of its
/// group, as `[1, s, kv·per_kv, d]`.
fn repeat_kv(
    m: &mut TypedModel,
    name: &str,
    t: OutletId,
    s: usize,
    kv: usize,
    per_kv: usize,
    d: usize,
) -> TractResult<OutletId> {
    use tract_core::ops::array::MultiBroadcastTo;
    let added = m.wire_node(format!("{name}.axis"), AxisOp::Add(3), &[t])?[0];
    let shape: TVec<TDim> = [1, s, kv, per_kv, d].iter().map(|&v| v.into()).collect();
    let broadcast = m.wire_node(
        format!("{name}.expand"),
        MultiBroadcastTo::new(shape.into()),
        &[added],
    )?[0];
    let merge = AxisOp::Reshape(
        2,
        tvec!(kv.into(), per_kv.into()),
        tvec!((kv * per_kv).into()),
    );
    m.wire_node(name, merge, &[broadcast]).map(|o| o[0])
}

/// A linear layer `x · w (+ b)` over the last axis, with random zero structure in `w` and `b`:
/// whole output channels, partial ones, and zero weights under a non-zero bias.
fn linear(
    m: &mut TypedModel,
    rng: &mut StdRng,
    name: &str,
    x: OutletId,
    from: usize,
    to: usize,
) -> TractResult<OutletId> {
    let mut w = random_tensor(rng, &[from, to]);
    if rng.gen_bool(0.5) {
        zero_random_slices(rng, &mut w, 1);
    }
    if rng.gen_bool(0.5) {
        zero_random_slices(rng, &mut w, 0);
    }
    let w = m.add_const(format!("{name}.w"), w)?;
    let y = m.wire_node(name, einsum("amk,kn->amn"), &[x, w])?[0];
    if rng.gen_bool(0.2) {
        return Ok(y);
    }
    let mut b = random_tensor(rng, &[1, 1, to]);
    if rng.gen_bool(0.3) {
        zero_random_slices(rng, &mut b, 2);
    }
    let b = m.add_const(format!("{name}.b"), b)?;
    Ok(m.wire_node(format!("{name}.bias"), add(), &[y, b])?[0])
}

/// One of the element-wise activations of transformer FFNs.
fn activation(
    m: &mut TypedModel,
    rng: &mut StdRng,
    name: &str,
    x: OutletId,
) -> TractResult<OutletId> {
    Ok(match rng.gen_range(0..6) {
        0 => m.wire_node(name, tract_core::ops::nn::gelu_exact::gelu_exact(), &[x])?[0],
        1 => {
            // GELU, tanh form: 0.5·x·(1 + tanh(0.79788·(x + 0.044715·x³))).
            let cube = m.wire_node(format!("{name}.x2"), mul(), &[x, x])?[0];
            let cube = m.wire_node(format!("{name}.x3"), mul(), &[cube, x])?[0];
            let k = m.add_const(format!("{name}.k"), tensor3(&[[[0.044715f32]]]))?;
            let inner = m.wire_node(format!("{name}.kx3"), mul(), &[cube, k])?[0];
            let inner = m.wire_node(format!("{name}.sum"), add(), &[x, inner])?[0];
            let c = m.add_const(format!("{name}.c"), tensor3(&[[[0.797_884_6f32]]]))?;
            let inner = m.wire_node(format!("{name}.scaled"), mul(), &[inner, c])?[0];
            let t = m.wire_node(
                format!("{name}.tanh"),
                tract_core::ops::math::tanh(),
                &[inner],
            )?[0];
            let one = m.add_const(format!("{name}.one"), tensor3(&[[[1f32]]]))?;
            let t = m.wire_node(format!("{name}.1p"), add(), &[t, one])?[0];
            let half = m.add_const(format!("{name}.half"), tensor3(&[[[0.5f32]]]))?;
            let hx = m.wire_node(format!("{name}.hx"), mul(), &[x, half])?[0];
            m.wire_node(name, mul(), &[hx, t])?[0]
        }
        2 => {
            let zero = m.add_const(format!("{name}.zero"), tensor3(&[[[0f32]]]))?;
            m.wire_node(name, max(), &[x, zero])?[0]
        }
        3 => {
            let s = m.wire_node(format!("{name}.sigmoid"), sigmoid(), &[x])?[0];
            m.wire_node(name, mul(), &[x, s])?[0]
        }
        4 => m.wire_node(name, tract_core::ops::math::tanh(), &[x])?[0],
        _ => m.wire_node(name, sigmoid(), &[x])?[0],
    })
}

/// Layer norm over the last axis, as tract declutters it.
fn layer_norm(
    m: &mut TypedModel,
    rng: &mut StdRng,
    name: &str,
    x: OutletId,
    width: usize,
) -> TractResult<OutletId> {
    let sum = tract_core::ops::nn::Reduce {
        axes: tvec!(2),
        reducer: tract_core::ops::nn::Reducer::Sum,
    };
    let total = m.wire_node(format!("{name}.sum"), sum, &[x])?[0];
    let inv = m.add_const(format!("{name}.inv"), tensor3(&[[[1.0 / width as f32]]]))?;
    let mean = m.wire_node(format!("{name}.mean"), mul(), &[total, inv])?[0];
    let centred = m.wire_node(
        format!("{name}.centred"),
        tract_core::ops::math::sub(),
        &[x, mean],
    )?[0];
    let rms = tract_core::ops::nn::RmsNorm {
        axis: 2,
        eps: rctensor0(1e-5f32),
    };
    let normed = m.wire_node(format!("{name}.rms"), rms, &[centred])?[0];
    let gamma = m.add_const(format!("{name}.gamma"), random_tensor(rng, &[1, 1, width]))?;
    let scaled = m.wire_node(format!("{name}.scaled"), mul(), &[normed, gamma])?[0];
    let beta = m.add_const(format!("{name}.beta"), random_tensor(rng, &[1, 1, width]))?;
    m.wire_node(name.to_string(), add(), &[scaled, beta])
        .map(|o| o[0])
}

/// A random stack of blocks on `x` [1, s, h]: FFNs (random activation, optional gate), multi-head
/// attention (1–8 heads; separate or fused QKV, the fused one split by slices; optional mask),
/// layer norms, residuals, a concatenation the rules do not know, and a weight shared by two
/// layers.
pub fn random_stack(rng: &mut StdRng) -> Planted {
    random_stack_checked(rng).expect("a well-formed random stack")
}

fn random_stack_checked(rng: &mut StdRng) -> TractResult<Planted> {
    let (s, h) = (rng.gen_range(1..5), rng.gen_range(2..9));
    let mut m = TypedModel::default();
    let mut x = m.add_source("x", f32::fact([1, s, h]))?;
    let mut shared: Option<OutletId> = None;
    let mut removable_weights = 0;
    for block in 0..rng.gen_range(1..4) {
        let name = |part: &str| format!("b{block}.{part}");
        let y = match rng.gen_range(0..4) {
            0 | 1 => {
                let f = rng.gen_range(2..13);
                let mut a = linear(&mut m, rng, &name("up"), x, h, f)?;
                a = activation(&mut m, rng, &name("act"), a)?;
                if rng.gen_bool(0.3) {
                    let g = linear(&mut m, rng, &name("gate"), x, h, f)?;
                    a = m.wire_node(name("gated"), mul(), &[a, g])?[0];
                }
                let mut w = random_tensor(rng, &[f, h]);
                zero_random_slices(rng, &mut w, 0);
                removable_weights += zero_block_elements(&w, 0, 1);
                let w = m.add_const(name("down.w"), w)?;
                m.wire_node(name("down"), einsum("amk,kn->amn"), &[a, w])?[0]
            }
            2 => {
                let (out, removable) = attention(&mut m, rng, &name("attn"), x, h)?;
                removable_weights += removable;
                out
            }
            _ => {
                // An op the rules do not know, between two linear layers.
                let concat = tract_core::ops::array::TypedConcat::new(2);
                let both = m.wire_node(name("concat"), concat, &[x, x])?[0];
                let w = match shared {
                    Some(w) => w,
                    None => {
                        let mut w = random_tensor(rng, &[2 * h, h]);
                        zero_random_slices(rng, &mut w, 0);
                        let w = m.add_const(name("shared.w"), w)?;
                        shared = Some(w);
                        w
                    }
                };
                m.wire_node(name("mix"), einsum("amk,kn->amn"), &[both, w])?[0]
            }
        };
        x = m.wire_node(name("residual"), add(), &[x, y])?[0];
        if rng.gen_bool(0.5) {
            x = layer_norm(&mut m, rng, &name("norm"), x, h)?;
        }
    }
    m.select_output_outlets(&[x])?;
    Ok(Planted {
        model: m,
        removable_weights,
        cache_heads: None,
    })
}

/// Multi-head attention on `x` [1, s, h]: the output projection's result, and the weights of
/// its zero heads (removable: masks are finite).
fn attention(
    m: &mut TypedModel,
    rng: &mut StdRng,
    name: &str,
    x: OutletId,
    h: usize,
) -> TractResult<(OutletId, usize)> {
    let (heads, d) = (rng.gen_range(1..9), rng.gen_range(1..4));
    let inner = heads * d;
    let s = m.outlet_fact(x)?.shape[1].to_usize()?;
    let split = |m: &mut TypedModel, part: &str, y: OutletId| -> TractResult<OutletId> {
        let op = AxisOp::Reshape(2, tvec!(inner.into()), tvec!(heads.into(), d.into()));
        Ok(m.wire_node(format!("{name}.{part}.heads"), op, &[y])?[0])
    };
    let qkv: Vec<OutletId> = if rng.gen_bool(0.5) {
        let fused = linear(m, rng, &format!("{name}.qkv"), x, h, 3 * inner)?;
        (0..3)
            .map(|k| {
                let slice = tract_core::ops::array::Slice::new(2, k * inner, (k + 1) * inner);
                let part = m.wire_node(format!("{name}.part{k}"), slice, &[fused])?[0];
                split(m, &format!("p{k}"), part)
            })
            .collect::<TractResult<_>>()?
    } else {
        ["q", "k", "v"]
            .iter()
            .map(|p| {
                let y = linear(m, rng, &format!("{name}.{p}"), x, h, inner)?;
                split(m, p, y)
            })
            .collect::<TractResult<_>>()?
    };
    let scores = m.wire_node(
        format!("{name}.scores"),
        einsum("ashd,athd->ahst"),
        &[qkv[0], qkv[1]],
    )?[0];
    let scale = m.add_const(format!("{name}.scale"), tensor4(&[[[[0.5f32]]]]))?;
    let mut scores = m.wire_node(format!("{name}.scaled"), mul(), &[scores, scale])?[0];
    if rng.gen_bool(0.5) {
        let mask: Vec<f32> = (0..s)
            .map(|_| if rng.gen_bool(0.3) { -1e4 } else { 0.0 })
            .collect();
        let mask = tract_ndarray::ArrayD::from_shape_vec(vec![1, 1, 1, s], mask)?;
        let mask = m.add_const(format!("{name}.mask"), mask.into_tensor())?;
        scores = m.wire_node(format!("{name}.masked"), add(), &[scores, mask])?[0];
    }
    let softmax = Softmax {
        axes: tvec!(3),
        quant_output_dt: None,
        kind: SoftmaxKind::default(),
    };
    let probs = m.wire_node(format!("{name}.softmax"), softmax, &[scores])?[0];
    let context = m.wire_node(
        format!("{name}.context"),
        einsum("ahst,athd->ashd"),
        &[probs, qkv[2]],
    )?[0];
    let merge = AxisOp::Reshape(2, tvec!(heads.into(), d.into()), tvec!(inner.into()));
    let merged = m.wire_node(format!("{name}.merged"), merge, &[context])?[0];
    let mut wo = random_tensor(rng, &[inner, h]);
    zero_random_heads(rng, &mut wo, 0, d, 0.4);
    let removable = zero_block_elements(&wo, 0, d);
    let wo = m.add_const(format!("{name}.out.w"), wo)?;
    let out = m.wire_node(format!("{name}.out"), einsum("ami,io->amo"), &[merged, wo])?[0];
    Ok((out, removable))
}
