//! The `model-slim` command line.

mod cli;

use clap::Parser;
use cli::args::Cli;
use cli::commands::{run, Context, Failure};
use cli::progress::{init_logging, Progress};
use std::process::ExitCode;

/// Exit code of a user error (bad file, bad flag, bad rule, bad plan).
const EXIT_USER_ERROR: u8 = 1;
/// Exit code when verification finds the slimmed model's outputs differ.
const EXIT_VERIFY_FAILED: u8 = 2;
/// Exit code of an internal error (a bug: please report it).
const EXIT_INTERNAL: u8 = 70;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A panic is a bug; report it in one line rather than a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("model-slim: internal error{place}: {message} (please report this)");
    }));
    init_logging(cli.quiet, cli.verbose);
    let ctx = Context {
        quiet: cli.quiet,
        progress: Progress::new(cli.quiet),
    };
    match std::panic::catch_unwind(|| run(&ctx, cli.command)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(Failure::User(e))) => {
            eprintln!("model-slim: error: {e}");
            ExitCode::from(EXIT_USER_ERROR)
        }
        Ok(Err(Failure::VerifyFailed(e))) => {
            eprintln!("model-slim: {e}");
            ExitCode::from(EXIT_VERIFY_FAILED)
        }
        Err(_) => ExitCode::from(EXIT_INTERNAL),
    }
}
