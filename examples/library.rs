//! Using model-slim as a library: import an ONNX model, slim it, verify it, print the report.
//!
//! ```sh
//! cargo run --release --example library -- tests/fixtures/llama_mlp_ffn_dynamo.onnx
//! ```

use model_slim::verify;
use model_slim::Slimmer;
use model_slim::{import_onnx, ImportOptions};
use tract_core::internal::SymbolValues;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/fixtures/llama_mlp_ffn_dynamo.onnx".into());
    let model = import_onnx(path.as_ref(), &ImportOptions::default())?;
    let mut slimmed = Slimmer::new()?.slim(&model)?;
    slimmed.report.verification =
        Some(verify(&model, &slimmed.model, 0, &SymbolValues::default())?);
    print!("{}", slimmed.report.table());
    Ok(())
}
