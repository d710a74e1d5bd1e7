//! model-slim as one of tract's model transforms: linking this crate registers it under the name
//! `model_slim`, so a tract deployment finds it like tract's own transforms
//! (`get_transform("model-slim")` and `get_transform("model_slim")` both do).
//!
//! ```
//! use tract_core::transform::get_transform;
//! # fn main() -> tract_core::internal::TractResult<()> {
//! # model_slim::ensure_linked();
//! let transform = get_transform("model-slim")?.expect("registered");
//! let mut model = model_slim::EncoderSpec::demo().build()?;
//! let params = model_slim::params(&model);
//! transform.transform(&mut model)?;
//! assert!(model_slim::params(&model) < params);
//! # Ok(()) }
//! ```

use crate::pass::slimmer::Slimmer;
use tract_core::internal::*;
use tract_core::transform::ModelTransform;

/// The slimming pass with its default rules and limits, verifying its result (seed 0): a model
/// whose outputs would change is left as it was, with an error.
#[derive(Debug, Default)]
pub struct SlimTransform;

impl ModelTransform for SlimTransform {
    fn name(&self) -> StaticName {
        "model_slim".into()
    }

    fn transform(&self, model: &mut TypedModel) -> TractResult<()> {
        let slimmed = Slimmer::new()
            .and_then(|s| s.with_verification(Some(0)).slim(model))
            .map_err(|e| anyhow!("model-slim: {e}"))?;
        *model = slimmed.model;
        Ok(())
    }
}

tract_core::register_simple_model_transform!("model_slim", SlimTransform);

/// Makes sure the linker keeps this module (and so the registration) in a binary that names
/// nothing else from it.
pub fn ensure_linked() {}
