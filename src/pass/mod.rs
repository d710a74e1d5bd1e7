//! The slimming pass as a whole: the [`crate::Slimmer`] builder running lower → saturate →
//! extract → raise, and the report of what it found and did.

pub(crate) mod report;
pub(crate) mod slimmer;
