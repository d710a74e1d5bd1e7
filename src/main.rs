//! The `model-slim` command line.

use clap::{Args, Parser, Subcommand};
use model_slim::auto::{auto_slim, AutoOptions};
use model_slim::discover::Kind;
use model_slim::import::{import_onnx, parse_set, ImportOptions, InputSpec};
use model_slim::prune::{Plan, Targets};
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
    /// Choose FFN channels and heads to remove from a dense model, zero them, and slim.
    #[command(
        after_help = "Examples:\n  model-slim prune bert.onnx --ffn-sparsity 0.5 --mha-sparsity 0.3 -o bert_slim.nnef.tgz \\\n    --calibration calib.npz --plan-out plan.json --report report.json\n  model-slim prune bert.onnx --plan plan.json -o bert_slim.nnef.tgz --emit-pruned bert_pruned.onnx\n\nThe calibration file is an .npz with one array per model input, named after it; its first\naxis counts samples."
    )]
    Prune {
        /// The ONNX model to prune.
        model: PathBuf,
        /// Where to write the slimmed model (.nnef.tgz or .nnef.tar).
        #[arg(short, long)]
        output: PathBuf,
        /// Fraction of FFN channels to remove (per layer, or overall with --global).
        #[arg(long, default_value_t = 0.0)]
        ffn_sparsity: f64,
        /// Fraction of attention heads to remove (per layer, or overall with --global).
        #[arg(long, default_value_t = 0.0)]
        mha_sparsity: f64,
        /// Rank channels and heads across layers instead of within each layer.
        #[arg(long)]
        global: bool,
        /// With --global: the fraction of each layer's channels and heads kept at least.
        #[arg(long, default_value_t = 0.1)]
        floor: f64,
        /// Round each kept FFN width to a multiple of N.
        #[arg(long, default_value_t = 1, value_name = "N")]
        multiple_of: usize,
        /// Calibration inputs (.npz): activation-aware scores and bias compensation.
        #[arg(long)]
        calibration: Option<PathBuf>,
        /// Do not add the removed units' mean contribution to the biases.
        #[arg(long)]
        no_compensation: bool,
        /// Apply this saved plan (JSON) instead of choosing.
        #[arg(long)]
        plan: Option<PathBuf>,
        /// Write the chosen plan as JSON.
        #[arg(long)]
        plan_out: Option<PathBuf>,
        /// Also write the pruned, full-size model as ONNX (zeros in its initializers).
        #[arg(long)]
        emit_pruned: Option<PathBuf>,
        #[command(flatten)]
        import: ImportArgs,
        /// Seed of the random inputs fidelity is measured on without calibration data.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Write the report as JSON.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// List the groups of channels and heads that can be removed together, changing nothing.
    #[command(
        after_help = "Example:\n  model-slim plan bert.onnx -i input_ids:1,128,i64 -i attention_mask:1,128,i64 -i token_type_ids:1,128,i64"
    )]
    Plan {
        /// The ONNX model.
        model: PathBuf,
        #[command(flatten)]
        import: ImportArgs,
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
struct ImportArgs {
    /// Input fact NAME:DIM,...,TYPE (e.g. input_ids:1,128,i64); repeat per input.
    #[arg(short, long = "input", value_name = "NAME:DIMS,TYPE")]
    inputs: Vec<String>,
    /// Value of a symbolic dimension, SYM=VALUE (e.g. sequence=128); repeatable.
    #[arg(long = "set", value_name = "SYM=VALUE")]
    sets: Vec<String>,
}

impl ImportArgs {
    fn options(&self) -> Result<ImportOptions, SlimError> {
        let inputs = self
            .inputs
            .iter()
            .map(|s| s.parse::<InputSpec>())
            .collect::<Result<Vec<_>, _>>()?;
        let sets = self
            .sets
            .iter()
            .map(|s| parse_set(s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ImportOptions { inputs, sets })
    }

    /// Imports `path` with these input facts and symbol values.
    fn import(&self, path: &Path) -> Result<(TypedModel, Vec<(String, i64)>), SlimError> {
        let options = self.options()?;
        let model = import_onnx(path, &options)?;
        Ok((model, options.sets))
    }
}

#[derive(Args)]
struct PassOptions {
    #[command(flatten)]
    import: ImportArgs,
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
        write_json(&slimmed.report, path)?;
    }
    if let Some(error) = slimmed.report.verification_error() {
        return Err(Failure::VerifyFailed(error));
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
        } => run_slim(&model, &output, &options),
        Command::Prune { .. } => run_prune(cli.command),
        Command::Plan { model, import } => run_plan(&model, &import),
        Command::Demo { output, report } => run_demo(output.as_deref(), report.as_deref()),
    }
}

fn run_slim(model: &Path, output: &Path, options: &PassOptions) -> Result<(), Failure> {
    // Refuse a bad output name before the (possibly long) pass runs.
    model_slim::write::Format::required(output)?;
    let mut slimmer = Slimmer::new()?.with_limits(Limits {
        iterations: options.max_iterations,
        nodes: options.max_nodes,
        time: Duration::from_secs_f64(options.max_seconds.max(0.0)),
    });
    if let Some(dir) = &options.rules {
        slimmer = slimmer.with_rules_dir(dir)?;
    }
    let (original, sets) = options.import.import(model)?;
    let slimmer = slimmer.with_symbol_values(symbol_values(&original, &sets));
    slim_and_write(
        &original,
        &slimmer,
        Some(output),
        options.report.as_deref(),
        options.verify.then_some(options.seed),
    )
}

fn read_plan(path: &Path) -> Result<Plan, SlimError> {
    let text = std::fs::read_to_string(path).map_err(|e| SlimError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| SlimError::Plan {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn write_json(value: &impl serde::Serialize, path: &Path) -> Result<(), SlimError> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| SlimError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    write_atomically(path, &json).map_err(|e| SlimError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn check_fraction(flag: &str, value: f64) -> Result<(), SlimError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(SlimError::Usage(format!(
            "{flag} must be between 0 and 1, not {value}"
        )))
    }
}

fn run_prune(command: Command) -> Result<(), Failure> {
    let Command::Prune {
        model,
        output,
        ffn_sparsity,
        mha_sparsity,
        global,
        floor,
        multiple_of,
        calibration,
        no_compensation,
        plan,
        plan_out,
        emit_pruned,
        import,
        seed,
        report,
    } = command
    else {
        unreachable!()
    };
    check_fraction("--ffn-sparsity", ffn_sparsity)?;
    check_fraction("--mha-sparsity", mha_sparsity)?;
    check_fraction("--floor", floor)?;
    model_slim::write::Format::required(&output)?;
    let (original, sets) = import.import(&model)?;
    let calibration = calibration
        .as_deref()
        .map(|path| model_slim::calibration::load_npz(path, &original))
        .transpose()?;
    let plan_origin = plan
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let plan = plan.as_deref().map(read_plan).transpose()?;
    let slimmer = Slimmer::new()?.with_symbol_values(symbol_values(&original, &sets));
    let targets = Targets {
        global,
        floor,
        multiple_of: multiple_of.max(1),
        ..Targets::per_layer(ffn_sparsity, mha_sparsity)
    };
    let options = AutoOptions {
        plan,
        plan_origin,
        calibration,
        compensation: !no_compensation,
        seed,
        ..AutoOptions::new(targets)
    };
    let result = auto_slim(&original, &slimmer, &options)?;
    print!("{}", result.report.table());
    if let Some(path) = &report {
        write_json(&result.report, path)?;
    }
    if let Some(error) = result.report.slim.verification_error() {
        return Err(Failure::VerifyFailed(error));
    }
    if let Some(path) = &plan_out {
        write_json(&result.plan, path)?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &emit_pruned {
        let edits = result
            .onnx_edits()
            .map_err(|e| SlimError::stage("emit-pruned", e))?;
        model_slim::onnx::write_edited(&model, path, &edits, &import.options()?, &result.pruned)?;
        println!("wrote {}", path.display());
    }
    write_model(&result.slimmed, &output)?;
    println!("wrote {}", output.display());
    Ok(())
}

fn run_plan(model: &Path, import: &ImportArgs) -> Result<(), Failure> {
    let (original, _) = import.import(model)?;
    let groups =
        model_slim::discover::groups(&original).map_err(|e| SlimError::stage("discover", e))?;
    println!(
        "{:<6} {:<6} {:<56} {:>6}",
        "kind", "layer", "consumer node", "units"
    );
    for g in &groups {
        let kind = match g.kind {
            Kind::Ffn => "ffn",
            Kind::Heads => "heads",
        };
        println!("{:<6} {:<6} {:<56} {:>6}", kind, g.layer, g.name, g.units);
    }
    if groups.is_empty() {
        println!("no FFN or attention group found");
    }
    Ok(())
}

fn run_demo(output: Option<&Path>, report: Option<&Path>) -> Result<(), Failure> {
    let spec = model_slim::demo::EncoderSpec::demo();
    let original = spec.build().map_err(|e| SlimError::stage("demo", e))?;
    println!(
        "demo: a {}-layer encoder (hidden {}, {} heads, FFN {}); per layer {} head(s) pruned and {} constant, {} FFN channels pruned and {} constant",
        spec.layers, spec.hidden, spec.heads, spec.ffn, spec.pruned_heads, spec.constant_heads, spec.pruned_ffn, spec.constant_ffn
    );
    slim_and_write(&original, &Slimmer::new()?, output, report, Some(0))
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
