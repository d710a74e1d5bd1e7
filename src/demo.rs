//! The built-in demo model: a small pre-norm transformer FFN stack built with tract's API, with
//! some FFN channels pruned to zero, so `model-slim demo` needs no file.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::math::add;
use tract_core::ops::nn::gelu_exact::gelu_exact;

/// Hidden width of the demo model.
pub const HIDDEN: usize = 64;
/// FFN width of each demo layer.
pub const FFN: usize = 256;
/// Zeroed FFN channels per demo layer.
pub const ZEROED: [usize; 3] = [128, 192, 64];
/// Sequence length of the demo input.
pub const SEQUENCE: usize = 32;

fn random(rng: &mut StdRng, shape: &[usize]) -> TractResult<Tensor> {
    let data: Vec<f32> = (0..shape.iter().product())
        .map(|_| rng.gen_range(-0.1..0.1))
        .collect();
    Ok(tract_ndarray::ArrayD::from_shape_vec(shape, data)?.into_tensor())
}

/// Builds the demo model: input `x` [1, SEQUENCE, HIDDEN], one residual FFN per entry of
/// [`ZEROED`], each with that many input channels of its second linear layer zeroed.
pub fn demo_model() -> TractResult<TypedModel> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut model = TypedModel::default();
    let mut x = model.add_source("x", f32::fact([1, SEQUENCE, HIDDEN]))?;
    for (layer, &zeroed) in ZEROED.iter().enumerate() {
        let name = |part: &str| format!("layer.{layer}.{part}");
        let w1 = model.add_const(name("up.weight"), random(&mut rng, &[HIDDEN, FFN])?)?;
        let b1 = model.add_const(name("up.bias"), random(&mut rng, &[1, 1, FFN])?)?;
        let mut w2 = random(&mut rng, &[FFN, HIDDEN])?;
        let mut channels: Vec<usize> = (0..FFN).collect();
        for i in 0..zeroed {
            let j = rng.gen_range(i..FFN);
            channels.swap(i, j);
        }
        let mut view = w2.to_plain_array_view_mut::<f32>()?;
        for &c in &channels[..zeroed] {
            view.index_axis_mut(tract_ndarray::Axis(0), c).fill(0.0);
        }
        let w2 = model.add_const(name("down.weight"), w2)?;
        let b2 = model.add_const(name("down.bias"), random(&mut rng, &[1, 1, HIDDEN])?)?;
        let linear = |model: &mut TypedModel,
                      part: &str,
                      x: OutletId,
                      w: OutletId,
                      b: OutletId|
         -> TractResult<OutletId> {
            let mm = model.wire_node(
                format!("layer.{layer}.{part}"),
                EinSum::new("amk,kn->amn".parse()?, f32::datum_type()),
                &[x, w],
            )?;
            Ok(model.wire_node(format!("layer.{layer}.{part}.add_bias"), add(), &[mm[0], b])?[0])
        };
        let up = linear(&mut model, "up", x, w1, b1)?;
        let act = model.wire_node(name("gelu"), gelu_exact(), &[up])?[0];
        let down = linear(&mut model, "down", act, w2, b2)?;
        x = model.wire_node(name("residual"), add(), &[x, down])?[0];
    }
    model.select_output_outlets(&[x])?;
    model.set_outlet_label(x, "y".into())?;
    model.into_decluttered()
}
