//! ONNX import and slimming on arbitrary bytes: an error or a slimmed model, never a panic.
//! Seed the corpus with the fixtures: `cp tests/fixtures/*.onnx fuzz/corpus/import_slim/`.
#![no_main]

use model_slim::import::{import_onnx_bytes, ImportOptions};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(model) = import_onnx_bytes(data, "fuzz.onnx", &ImportOptions::default()) {
        if let Ok(slimmer) = model_slim::Slimmer::new() {
            let _ = slimmer.slim(&model);
        }
    }
});
