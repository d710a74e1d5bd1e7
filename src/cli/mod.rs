//! The `model-slim` command line: arguments, subcommands, and progress/logging.

pub mod args;
pub mod commands;
pub mod progress;
