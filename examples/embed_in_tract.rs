//! Embedding model-slim in a tract deployment: load an ONNX model the usual way, apply the
//! `model-slim` transform from tract's registry, optimize and run.
//!
//! ```sh
//! cargo run --release --example embed_in_tract [-- MODEL.onnx]
//! ```

use tract_core::internal::*;
use tract_onnx::prelude::{Framework, InferenceModelExt};

fn main() -> TractResult<()> {
    model_slim::ensure_linked();
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/fixtures/bert_mixed_dynamo.onnx".into());
    let mut model = tract_onnx::onnx()
        .model_for_path(&path)?
        .into_typed()?
        .into_decluttered()?;
    let before = model_slim::params(&model);

    let slim = tract_core::transform::get_transform("model-slim")?
        .context("model-slim is not registered")?;
    slim.transform(&mut model)?;
    println!(
        "{path}: {before} parameters before, {} after `{}`",
        model_slim::params(&model),
        slim.name()
    );

    let runnable = model.into_optimized()?.into_runnable()?;
    let inputs: TVec<TValue> = runnable
        .model()
        .input_outlets()?
        .iter()
        .map(|&o| {
            let fact = runnable.model().outlet_fact(o)?;
            let shape: Vec<usize> = fact
                .shape
                .iter()
                .map(|d| d.to_usize().unwrap_or(8))
                .collect();
            Ok(Tensor::zero_dt(fact.datum_type, &shape)?.into_tvalue())
        })
        .collect::<TractResult<_>>()?;
    let outputs = runnable.run(inputs)?;
    println!("ran: first output has shape {:?}", outputs[0].shape());
    Ok(())
}
