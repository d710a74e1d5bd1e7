//! Synthetic pruned encoders built with tract's API: the model of `model-slim demo` (so the demo
//! needs no file), and BERT-base-sized models for measurements, generated rather than committed.
//!
//! The encoder is BERT's post-norm layer: multi-head self-attention (Q, K, V projections with
//! biases, heads split by a reshape, scaled scores, softmax over the keys, heads merged back,
//! output projection), residual and layer norm, then a GELU FFN, residual and layer norm. Pruning
//! is written into the weights the way a structured-pruning tool leaves it:
//!
//! - a *pruned* head has its rows of the output projection zeroed; a pruned FFN channel its row
//!   of the second linear layer;
//! - a *constant* head has its V projection columns zeroed (not its V bias); a constant FFN
//!   channel its first-layer column (not its bias). Slimming folds these into the next bias.
//!
//! ```
//! use model_slim::EncoderSpec;
//! let spec = EncoderSpec::demo();
//! let model = spec.build().unwrap();
//! assert_eq!(spec.kept(), (2, 128)); // heads and FFN channels per layer after slimming
//! let built = model_slim::params(&model) as f64;
//! assert!((built - spec.params(false) as f64).abs() < 1e-3 * built);
//! ```

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::math::{add, mul, sub};
use tract_core::ops::nn::gelu_exact::gelu_exact;
use tract_core::ops::nn::{Reduce, Reducer, RmsNorm, Softmax, SoftmaxKind};

/// Shape and pruning of a synthetic encoder (counts are per layer).
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderSpec {
    /// Encoder layers.
    pub layers: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Attention heads per layer (hidden / heads is the head size).
    pub heads: usize,
    /// FFN width.
    pub ffn: usize,
    /// Sequence length of the (batch 1) input.
    pub sequence: usize,
    /// Heads per layer zeroed in the output projection.
    pub pruned_heads: usize,
    /// Heads per layer zeroed in the V projection (constant heads).
    pub constant_heads: usize,
    /// FFN channels per layer zeroed in the second linear layer.
    pub pruned_ffn: usize,
    /// FFN channels per layer zeroed in the first linear layer (constant channels).
    pub constant_ffn: usize,
    /// Seed of the weights and of which units are pruned.
    pub seed: u64,
}

impl EncoderSpec {
    /// The `model-slim demo` model: 3 layers, hidden 64, 4 heads, FFN 256, sequence 32; per
    /// layer one head pruned and one constant, 96 FFN channels pruned and 32 constant.
    pub fn demo() -> EncoderSpec {
        EncoderSpec {
            layers: 3,
            hidden: 64,
            heads: 4,
            ffn: 256,
            sequence: 32,
            pruned_heads: 1,
            constant_heads: 1,
            pruned_ffn: 96,
            constant_ffn: 32,
            seed: 7,
        }
    }

    /// BERT-base's size (12 layers, hidden 768, 12 heads, FFN 3072) at sequence 128, with half
    /// the heads and half the FFN channels of every layer pruned.
    pub fn bert_base_half_pruned() -> EncoderSpec {
        EncoderSpec {
            layers: 12,
            hidden: 768,
            heads: 12,
            ffn: 3072,
            sequence: 128,
            pruned_heads: 6,
            constant_heads: 0,
            pruned_ffn: 1536,
            constant_ffn: 0,
            seed: 11,
        }
    }

    fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Heads and FFN channels per layer that survive slimming.
    pub fn kept(&self) -> (usize, usize) {
        (
            self.heads - self.pruned_heads - self.constant_heads,
            self.ffn - self.pruned_ffn - self.constant_ffn,
        )
    }

    /// Parameters of the model, computed from the spec: dense, or fully slimmed (every pruned
    /// and constant head and channel gone). Besides weights and biases, each layer holds a score
    /// scale and a mean factor per layer norm (tract merges equal ones across layers, so a
    /// built model holds a few less).
    pub fn params(&self, slimmed: bool) -> usize {
        let (heads, ffn) = if slimmed {
            self.kept()
        } else {
            (self.heads, self.ffn)
        };
        let (h, inner) = (self.hidden, heads * self.head_dim());
        let attention = 3 * (h * inner + inner) + inner * h + h;
        let feed_forward = h * ffn + ffn + ffn * h + h;
        let norms = 2 * (2 * h + 1);
        self.layers * (attention + feed_forward + norms + 1)
    }

    /// Builds the encoder (decluttered, as the pass gets models): input `x` [1, sequence,
    /// hidden], output `y`.
    pub fn build(&self) -> TractResult<TypedModel> {
        let mut builder = Builder {
            model: TypedModel::default(),
            rng: StdRng::seed_from_u64(self.seed),
            spec: self.clone(),
        };
        let mut x = builder
            .model
            .add_source("x", f32::fact([1, self.sequence, self.hidden]))?;
        for layer in 0..self.layers {
            x = builder.layer(layer, x)?;
        }
        let mut model = builder.model;
        model.select_output_outlets(&[x])?;
        model.set_outlet_label(x, "y".into())?;
        model.into_decluttered()
    }
}

struct Builder {
    model: TypedModel,
    rng: StdRng,
    spec: EncoderSpec,
}

impl Builder {
    fn random(&mut self, shape: &[usize], scale: f32) -> TractResult<Tensor> {
        let data: Vec<f32> = (0..shape.iter().product())
            .map(|_| self.rng.gen_range(-scale..scale))
            .collect();
        Ok(tract_ndarray::ArrayD::from_shape_vec(shape, data)?.into_tensor())
    }

    fn konst(&mut self, name: String, tensor: Tensor) -> TractResult<OutletId> {
        self.model.add_const(name, tensor)
    }

    /// `count` distinct random groups out of `n`, excluding `taken`.
    fn pick(&mut self, n: usize, count: usize, taken: &[usize]) -> Vec<usize> {
        let mut free: Vec<usize> = (0..n).filter(|g| !taken.contains(g)).collect();
        free.shuffle(&mut self.rng);
        free.truncate(count);
        free.sort_unstable();
        free
    }

    /// `x · w + b` for a `[in, out]` weight and `[1, 1, out]` bias.
    fn linear(
        &mut self,
        name: &str,
        x: OutletId,
        weight: Tensor,
        bias: Tensor,
    ) -> TractResult<OutletId> {
        let w = self.konst(format!("{name}.weight"), weight)?;
        let b = self.konst(format!("{name}.bias"), bias)?;
        let einsum = EinSum::new("amk,kn->amn".parse()?, f32::datum_type());
        let y = self.model.wire_node(name, einsum, &[x, w])?[0];
        Ok(self
            .model
            .wire_node(format!("{name}.add_bias"), add(), &[y, b])?[0])
    }

    /// A projection's weight `[in, out]` and bias with the given output-channel blocks zeroed
    /// in the weight (so those channels are their bias).
    fn projection(
        &mut self,
        inputs: usize,
        outputs: usize,
        zero: &[usize],
        block: usize,
    ) -> TractResult<(Tensor, Tensor)> {
        let scale = 1.0 / (inputs as f32).sqrt();
        let mut weight = self.random(&[inputs, outputs], scale)?;
        zero_blocks(&mut weight, 1, zero, block)?;
        Ok((weight, self.random(&[1, 1, outputs], 0.1)?))
    }

    fn layer(&mut self, layer: usize, x: OutletId) -> TractResult<OutletId> {
        let spec = self.spec.clone();
        let (h, d) = (spec.hidden, spec.head_dim());
        let name = |part: &str| format!("layer.{layer}.{part}");
        let pruned_heads = self.pick(spec.heads, spec.pruned_heads, &[]);
        let constant_heads = self.pick(spec.heads, spec.constant_heads, &pruned_heads);

        let mut heads = vec![];
        for (part, zero) in [
            ("query", &[][..]),
            ("key", &[][..]),
            ("value", &constant_heads[..]),
        ] {
            let (w, b) = self.projection(h, h, zero, d)?;
            let y = self.linear(&name(&format!("attention.{part}")), x, w, b)?;
            let split =
                AxisOp::Reshape(2, tvec!(h.to_dim()), tvec!(spec.heads.to_dim(), d.to_dim()));
            heads.push(
                self.model
                    .wire_node(name(&format!("attention.{part}.heads")), split, &[y])?[0],
            );
        }
        let einsum = |expr: &str| -> TractResult<EinSum> {
            Ok(EinSum::new(expr.parse()?, f32::datum_type()))
        };
        let scores = self.model.wire_node(
            name("attention.scores"),
            einsum("ashd,athd->ahst")?,
            &[heads[0], heads[1]],
        )?[0];
        let scale = self.konst(
            name("attention.scale"),
            tensor4(&[[[[1.0 / (d as f32).sqrt()]]]]),
        )?;
        let scores = self
            .model
            .wire_node(name("attention.scaled"), mul(), &[scores, scale])?[0];
        let softmax = Softmax {
            axes: tvec!(3),
            quant_output_dt: None,
            kind: SoftmaxKind::Softmax,
        };
        let probs = self
            .model
            .wire_node(name("attention.softmax"), softmax, &[scores])?[0];
        let context = self.model.wire_node(
            name("attention.context"),
            einsum("ahst,athd->ashd")?,
            &[probs, heads[2]],
        )?[0];
        let merge = AxisOp::Reshape(2, tvec!(spec.heads.to_dim(), d.to_dim()), tvec!(h.to_dim()));
        let context = self
            .model
            .wire_node(name("attention.merged"), merge, &[context])?[0];
        let (mut w, b) = self.projection(h, h, &[], d)?;
        zero_blocks(&mut w, 0, &pruned_heads, d)?;
        let attended = self.linear(&name("attention.output"), context, w, b)?;
        let x = self
            .model
            .wire_node(name("attention.residual"), add(), &[x, attended])?[0];
        let x = self.layer_norm(&name("attention.norm"), x)?;

        let pruned_ffn = self.pick(spec.ffn, spec.pruned_ffn, &[]);
        let constant_ffn = self.pick(spec.ffn, spec.constant_ffn, &pruned_ffn);
        let (w1, b1) = self.projection(h, spec.ffn, &constant_ffn, 1)?;
        let up = self.linear(&name("ffn.up"), x, w1, b1)?;
        let act = self
            .model
            .wire_node(name("ffn.gelu"), gelu_exact(), &[up])?[0];
        let (mut w2, b2) = self.projection(spec.ffn, h, &[], 1)?;
        zero_blocks(&mut w2, 0, &pruned_ffn, 1)?;
        let down = self.linear(&name("ffn.down"), act, w2, b2)?;
        let x = self
            .model
            .wire_node(name("ffn.residual"), add(), &[x, down])?[0];
        self.layer_norm(&name("ffn.norm"), x)
    }

    /// Layer norm over the hidden axis, as tract declutters ONNX's: mean, centre, RMS-normalise,
    /// scale and shift.
    fn layer_norm(&mut self, name: &str, x: OutletId) -> TractResult<OutletId> {
        let h = self.spec.hidden;
        let sum = Reduce {
            axes: tvec!(2),
            reducer: Reducer::Sum,
        };
        let total = self.model.wire_node(format!("{name}.sum"), sum, &[x])?[0];
        let inverse = self.konst(
            format!("{name}.inverse_width"),
            tensor3(&[[[1.0 / h as f32]]]),
        )?;
        let mean = self
            .model
            .wire_node(format!("{name}.mean"), mul(), &[total, inverse])?[0];
        let centred = self
            .model
            .wire_node(format!("{name}.centred"), sub(), &[x, mean])?[0];
        let rms = RmsNorm {
            axis: 2,
            eps: rctensor0(1e-12f32),
        };
        let normed = self
            .model
            .wire_node(format!("{name}.rms"), rms, &[centred])?[0];
        let gamma = self.random(&[1, 1, h], 0.1)?;
        let gamma = gamma
            .to_plain_array_view::<f32>()?
            .mapv(|g| 1.0 + g)
            .into_tensor();
        let gamma = self.konst(format!("{name}.gamma"), gamma)?;
        let beta = self.random(&[1, 1, h], 0.1)?;
        let beta = self.konst(format!("{name}.beta"), beta)?;
        let scaled = self
            .model
            .wire_node(format!("{name}.scaled"), mul(), &[normed, gamma])?[0];
        Ok(self.model.wire_node(name, add(), &[scaled, beta])?[0])
    }
}

/// Zeroes blocks `[g·block, (g+1)·block)` of `axis` for each `g` in `groups`.
fn zero_blocks(t: &mut Tensor, axis: usize, groups: &[usize], block: usize) -> TractResult<()> {
    let mut view = t.to_plain_array_view_mut::<f32>()?;
    for g in groups {
        for i in g * block..(g + 1) * block {
            view.index_axis_mut(tract_ndarray::Axis(axis), i).fill(0.0);
        }
    }
    Ok(())
}
