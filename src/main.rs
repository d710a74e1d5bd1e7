//! The `model-slim` command line.

use clap::{Args, Parser, Subcommand};
use model_slim::import::{import_onnx, parse_set, ImportOptions, InputSpec};
use model_slim::report::Report;
use model_slim::saturate::Limits;
use model_slim::verify::verify;
use model_slim::write::{write_atomically, write_model};
use model_slim::{SlimError, Slimmer};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tract_core::internal::*;

/// Exit code of a user error (bad file, bad flag, bad rule).
const EXIT_USER_ERROR: u8 = 1;
/// Exit code when `--verify` finds the slimmed model's outputs differ.
const EXIT_VERIFY_FAILED: u8 = 2;
/// Exit code of an internal error (a bug: please report it).
const EXIT_INTERNAL: u8 = 70;

#[derive(Parser)]
#[command(
    name = "model-slim",
    version,
    about = "Cut the all-zero channels of pruned transformer models out, exactly."
)]
#[command(after_help = "Exit codes: 0 ok, 1 user error, 2 verification failed, 70 internal error.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Slim an ONNX model and write it as NNEF.
    #[command(
        after_help = "Example:\n  model-slim slim bert_pruned.onnx -o bert_slim.nnef.tgz \\\n    -i input_ids:1,128,i64 -i attention_mask:1,128,i64 -i token_type_ids:1,128,i64 \\\n    --verify --report report.json"
    )]
    Slim {
        /// The ONNX model to slim.
        model: PathBuf,
        /// Where to write the slimmed model (.nnef.tgz or .nnef.tar).
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        options: PassOptions,
    },
    /// Slim a small transformer built into the binary and verify it.
    Demo {
        /// Also write the slimmed demo model (.nnef.tgz or .nnef.tar).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Write the report as JSON.
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

#[derive(Args)]
struct PassOptions {
    /// Input fact NAME:DIM,...,TYPE (e.g. input_ids:1,128,i64); repeat per input.
    #[arg(short, long = "input", value_name = "NAME:DIMS,TYPE")]
    inputs: Vec<String>,
    /// Value of a symbolic dimension, SYM=VALUE (e.g. sequence=128); repeatable.
    #[arg(long = "set", value_name = "SYM=VALUE")]
    sets: Vec<String>,
    /// Directory of extra *.rules files, added to the default rules.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Run original and slimmed models on seeded random inputs and compare outputs.
    #[arg(long)]
    verify: bool,
    /// Seed of the verification inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the report as JSON.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Saturation limit: rule iterations.
    #[arg(long, default_value_t = Limits::default().iterations)]
    max_iterations: usize,
    /// Saturation limit: e-nodes.
    #[arg(long, default_value_t = Limits::default().nodes)]
    max_nodes: usize,
    /// Saturation limit: seconds.
    #[arg(long, default_value_t = Limits::default().time.as_secs_f64())]
    max_seconds: f64,
}

/// How a run ended, when not well.
enum Failure {
    User(SlimError),
    VerifyFailed(SlimError),
}

impl From<SlimError> for Failure {
    fn from(e: SlimError) -> Self {
        match e {
            SlimError::Verification { .. } => Failure::VerifyFailed(e),
            e => Failure::User(e),
        }
    }
}

fn symbol_values(model: &TypedModel, sets: &[(String, i64)]) -> SymbolValues {
    sets.iter().fold(SymbolValues::default(), |v, (s, x)| {
        v.with(&model.symbols.sym(s), *x)
    })
}

fn write_report(report: &Report, path: &Path) -> Result<(), SlimError> {
    let json = serde_json::to_vec_pretty(report).map_err(|e| SlimError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    write_atomically(path, &json).map_err(|e| SlimError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Slims, verifies if asked, prints the table, writes the report, and writes the model only if
/// verification (when asked) passed.
fn slim_and_write(
    original: &TypedModel,
    slimmer: &Slimmer,
    output: Option<&Path>,
    report_path: Option<&Path>,
    verification_seed: Option<u64>,
) -> Result<(), Failure> {
    let mut slimmed = slimmer.slim(original)?;
    if let Some(seed) = verification_seed {
        let v = verify(original, &slimmed.model, seed, &slimmer.nominal().values)
            .map_err(|e| SlimError::stage("verify", e))?;
        slimmed.report.verification = Some(v);
    }
    print!("{}", slimmed.report.table());
    if let Some(path) = report_path {
        write_report(&slimmed.report, path)?;
    }
    if let Some(failed) = slimmed
        .report
        .verification
        .as_ref()
        .and_then(|v| v.outputs.iter().find(|o| !o.passed))
    {
        return Err(Failure::VerifyFailed(SlimError::Verification {
            output: failed.name.clone(),
            diff: failed.max_abs_diff,
            tolerance: model_slim::verify::RELATIVE_TOLERANCE * failed.max_magnitude,
        }));
    }
    if let Some(path) = output {
        write_model(&slimmed.model, path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Slim {
            model,
            output,
            options,
        } => {
            let inputs = options
                .inputs
                .iter()
                .map(|s| s.parse::<InputSpec>())
                .collect::<Result<Vec<_>, _>>()?;
            let sets = options
                .sets
                .iter()
                .map(|s| parse_set(s))
                .collect::<Result<Vec<_>, _>>()?;
            // Refuse a bad output name before the (possibly long) pass runs.
            model_slim::write::Format::required(&output)?;
            let mut slimmer = Slimmer::new()?.with_limits(Limits {
                iterations: options.max_iterations,
                nodes: options.max_nodes,
                time: Duration::from_secs_f64(options.max_seconds.max(0.0)),
            });
            if let Some(dir) = &options.rules {
                slimmer = slimmer.with_rules_dir(dir)?;
            }
            let original = import_onnx(
                &model,
                &ImportOptions {
                    inputs,
                    sets: sets.clone(),
                },
            )?;
            let slimmer = slimmer.with_symbol_values(symbol_values(&original, &sets));
            slim_and_write(
                &original,
                &slimmer,
                Some(&output),
                options.report.as_deref(),
                options.verify.then_some(options.seed),
            )
        }
        Command::Demo { output, report } => {
            let spec = model_slim::demo::EncoderSpec::demo();
            let original = spec.build().map_err(|e| SlimError::stage("demo", e))?;
            println!(
                "demo: a {}-layer encoder (hidden {}, {} heads, FFN {}); per layer {} head(s) pruned and {} constant, {} FFN channels pruned and {} constant",
                spec.layers, spec.hidden, spec.heads, spec.ffn, spec.pruned_heads, spec.constant_heads, spec.pruned_ffn, spec.constant_ffn
            );
            slim_and_write(
                &original,
                &Slimmer::new()?,
                output.as_deref(),
                report.as_deref(),
                Some(0),
            )
        }
    }
}

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
    match std::panic::catch_unwind(|| run(cli)) {
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
