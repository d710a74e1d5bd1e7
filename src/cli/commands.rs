//! What each subcommand does.

use super::args::{
    Command, GlobalCostArg, ImportArgs, KvLayoutArg, PassOptions, PruneArgs, RepairArg, ScoreArg,
};
use super::progress::Progress;
use model_slim::compare_latency;
use model_slim::symbol_values;
use model_slim::to_dot;
use model_slim::Expected;
use model_slim::Group;
use model_slim::Limits;
use model_slim::Report;
use model_slim::Verification;
use model_slim::{auto_slim, AutoOptions, AutoSlimmed};
use model_slim::{
    channel_groups, groups, layer_input_channels, restriction_stop, zero_inputs, Kind,
};
use model_slim::{
    feeds_back, input_names, named_state_pairs, output_names, state_positions, StatePair,
};
use model_slim::{write_atomically, write_model, ArtifactCheck, Format};
use model_slim::{write_pruned_onnx, write_slimmed_onnx};
use model_slim::{zero_units, Criterion, GlobalCost, KvLayout, Plan, Repair, Targets};
use model_slim::{IoError, Mismatch, SlimError, Slimmed, Slimmer};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;
use tract_core::internal::*;

/// How a run ended, when not well.
pub enum Failure {
    User(SlimError),
    VerifyFailed(SlimError),
}

impl From<SlimError> for Failure {
    fn from(e: SlimError) -> Self {
        match e {
            SlimError::Verification(_) | SlimError::Unsound { .. } => Failure::VerifyFailed(e),
            e => Failure::User(e),
        }
    }
}

impl From<IoError> for Failure {
    fn from(e: IoError) -> Self {
        SlimError::from(e).into()
    }
}

impl From<Mismatch> for Failure {
    fn from(e: Mismatch) -> Self {
        SlimError::from(e).into()
    }
}

/// Where results go: standard output, unless `-q`.
#[derive(Clone)]
pub struct Context {
    pub quiet: bool,
    pub progress: Progress,
}

impl Context {
    fn say(&self, text: &str) {
        if !self.quiet {
            print!("{text}");
        }
    }
}

fn write_json(value: &impl Serialize, path: &Path) -> Result<(), IoError> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| IoError::write(path, e))?;
    write_atomically(path, &json).map_err(|e| IoError::write(path, e))
}

fn import(
    ctx: &Context,
    import: &ImportArgs,
    path: &Path,
) -> Result<(TypedModel, Vec<(String, i64)>), SlimError> {
    ctx.progress
        .during(&format!("loading {}", path.display()), |_| {
            import.import(path)
        })
}

/// Slims under a spinner naming the stages.
fn slim(ctx: &Context, slimmer: &Slimmer, model: &TypedModel) -> Result<Slimmed, SlimError> {
    ctx.progress.during("slimming", |bar| {
        slimmer
            .clone()
            .with_observer(Progress::stages(bar))
            .slim(model)
    })
}

pub fn run(ctx: &Context, command: Command) -> Result<(), Failure> {
    match command {
        Command::Slim {
            model,
            output,
            options,
        } => run_slim(ctx, &model, &output, &options),
        Command::Prune(args) => run_prune(ctx, &args),
        Command::Plan { model, import } => run_plan(ctx, &model, &import),
        Command::Show { model, import, dot } => run_show(ctx, &model, &import, dot.as_deref()),
        Command::Bench {
            model,
            import,
            runs,
            warmup,
            threads,
            report,
        } => run_bench(
            ctx,
            &model,
            &import,
            (warmup, runs),
            threads,
            report.as_deref(),
        ),
        Command::Demo { output, report } => run_demo(ctx, output.as_deref(), report.as_deref()),
        Command::CheckRules { dir, models, seed } => {
            run_check_rules(ctx, dir.as_deref(), models, seed)
        }
        Command::Guards => {
            print!("{}", model_slim::guards_markdown());
            Ok(())
        }
    }
}

/// Prints the report's table and writes it; a failed comparison of the written model is the
/// run's failure (its file was not kept).
fn finish(
    ctx: &Context,
    report: &Report,
    json: Option<&Path>,
    output: Option<&Path>,
) -> Result<(), Failure> {
    ctx.say(&report.table());
    if let Some(path) = json {
        write_json(report, path)?;
    }
    if let Some(error) = report.verification_error() {
        return Err(Failure::VerifyFailed(error));
    }
    if let Some(path) = output {
        ctx.say(&format!("wrote {}\n", path.display()));
    }
    Ok(())
}

/// Writes a slimmed model to `output` (NNEF, checked by loading it back in stock tract and,
/// with `check`, running it against the reference) under a spinner.
fn write_nnef(
    ctx: &Context,
    model: TypedModel,
    output: &Path,
    check: Option<ArtifactCheck>,
) -> Result<Option<Verification>, IoError> {
    ctx.progress
        .during("writing the model and loading it back", |_| {
            write_model(model, output, check)
        })
}

fn run_slim(
    ctx: &Context,
    model: &Path,
    output: &Path,
    options: &PassOptions,
) -> Result<(), Failure> {
    // Refuse a bad output name before the (possibly long) pass runs.
    let format = Format::required(output)?;
    // The written file is what gets compared with the original, not the model in memory.
    let mut slimmer = Slimmer::new()?.with_limits(Limits {
        iterations: options.max_iterations,
        nodes: options.max_nodes,
        time: Duration::from_secs_f64(options.max_seconds.max(0.0)),
    });
    if let Some(dir) = &options.rules {
        slimmer = slimmer.with_rules_dir(dir)?;
    }
    // The written file is compared with the original's outputs, computed first from a load of
    // its own that the run gives up as tract packs the weights for its plan: the original is
    // never in memory beside its plan, nor either of them while the file is loaded back.
    // A model that carries state (a decoder step's KV cache) is checked over a loop of calls,
    // each fed the previous call's state.
    let expected = if format == Format::Onnx || options.verify {
        let (reference, sets) = import(ctx, &options.import, model)?;
        let values = symbol_values(&reference, &sets);
        let states = model_state_positions(&reference, &options.import)?;
        let run = |_: &_| Expected::of_state(reference, options.seed, &values, &states);
        let expected = ctx.progress.during("running the original", run);
        Some(expected.map_err(|e| SlimError::stage("verify", e))?)
    } else {
        None
    };
    let (original, sets) = import(ctx, &options.import, model)?;
    let values = symbol_values(&original, &sets);
    let slimmer = slimmer
        .with_symbol_values(values.clone())
        .with_state(model_state(&original, &options.import)?);
    let mut slimmed = slim(ctx, &slimmer, &original)?;
    if !options.allow_unchanged {
        refuse_nothing_cut(&slimmed.report, &original)?;
    }
    ctx.say(&zero_inputs_table(&slimmed.model));
    let check = expected.as_ref().map(|expected| ArtifactCheck {
        expected,
        values: &values,
        cuts: &slimmed.report.state_cuts,
    });
    slimmed.report.verification = match (format, check) {
        // The edited source file is always checked: the edit must compute the original.
        (Format::Onnx, Some(check)) => {
            let import_options = options.import.options()?;
            let slimmed_model = std::mem::take(&mut slimmed.model);
            let v = ctx
                .progress
                .during("writing the ONNX file and checking it", |_| {
                    write_slimmed_onnx(
                        model,
                        output,
                        &import_options,
                        original,
                        slimmed_model,
                        check,
                    )
                })?;
            Some(v)
        }
        (_, check) => {
            drop(original);
            write_nnef(ctx, std::mem::take(&mut slimmed.model), output, check)?
        }
    };
    finish(
        ctx,
        &slimmed.report,
        options.report.as_deref(),
        Some(output),
    )
}

/// The layers (convolutions, linear layers) of `original` with whole zero input channels: their
/// input channels, how many are zero, and how many `slimmed` keeps.
fn zero_layers_table(original: &TypedModel, slimmed: &TypedModel) -> String {
    let zero = zero_inputs(original);
    if zero.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "{:<52} {:>6} {:>6}   after slimming\n",
        "layer with zero input channels", "inputs", "zero"
    );
    for z in &zero {
        let kept = layer_input_channels(slimmed, &z.node)
            .map(|k| k.to_string())
            .unwrap_or_else(|| "gone".into());
        out += &format!("{:<52} {:>6} {:>6}   {kept}\n", z.node, z.channels, z.zero);
    }
    out
}

/// The layers of `slimmed` that still have whole zero input channels (the rules did not reach
/// them, or the cost model found no saving), a line each, with where their restriction stops.
fn zero_inputs_table(slimmed: &TypedModel) -> String {
    zero_inputs(slimmed)
        .iter()
        .map(|z| {
            format!(
                "kept zero  {}: {} of {} input channels all zero{}\n",
                z.node,
                z.zero,
                z.channels,
                stop_clause(slimmed, &z.node)
            )
        })
        .collect()
}

/// "; the restriction stops at `N`: why" for a layer whose zero inputs slimming kept.
fn stop_clause(model: &TypedModel, layer: &str) -> String {
    restriction_stop(model, layer)
        .map(|stop| format!("; the restriction stops at {stop}"))
        .unwrap_or_default()
}

/// A slimming that cut nothing from a model with whole zero input channels: an error naming the
/// first such layer, not a file written unchanged as if it were slimmed.
fn refuse_nothing_cut(report: &Report, original: &TypedModel) -> Result<(), SlimError> {
    let cut =
        report.params_after < report.params_before || report.flops_after < report.flops_before;
    if cut {
        return Ok(());
    }
    let zero = zero_inputs(original);
    match zero.first() {
        Some(first) => Err(SlimError::NothingCut {
            stop: stop_clause(original, &first.node),
            node: first.node.clone(),
            zero: first.zero,
            channels: first.channels,
            layers: zero.len(),
        }),
        None => Ok(()),
    }
}

/// The model's state pairs: by the HF/optimum names, and those given with `--state`, which
/// must name an input and an output of the model (a given input replaces its named pair).
fn model_state(model: &TypedModel, import: &ImportArgs) -> Result<Vec<StatePair>, SlimError> {
    let names = |e| SlimError::stage("import", e);
    let inputs = input_names(model).map_err(names)?;
    let outputs = output_names(model).map_err(names)?;
    let given = import.state_pairs()?;
    for pair in &given {
        for (name, kind, list) in [
            (&pair.input, "input", &inputs),
            (&pair.output, "output", &outputs),
        ] {
            if !list.contains(name) {
                return Err(SlimError::Usage(format!(
                    "--state {}={}: the model has no {kind} `{name}` (its {kind}s: {})",
                    pair.input,
                    pair.output,
                    list.join(", ")
                )));
            }
        }
    }
    let facts = |pair: &StatePair| -> Option<(&TypedFact, &TypedFact)> {
        let input = inputs.iter().position(|n| *n == pair.input)?;
        let output = outputs.iter().position(|n| *n == pair.output)?;
        Some((
            model.input_fact(input).ok()?,
            model.output_fact(output).ok()?,
        ))
    };
    for pair in &given {
        if let Some((input, output)) = facts(pair).filter(|(i, o)| !feeds_back(i, o)) {
            return Err(SlimError::Usage(format!(
                "--state {}={}: the output ({output:?}) cannot be fed back as the input ({input:?}): they must differ along one axis at most",
                pair.input, pair.output
            )));
        }
    }
    // Named pairs whose output cannot be fed back are no state.
    let mut pairs: Vec<StatePair> = named_state_pairs(&inputs, &outputs)
        .into_iter()
        .filter(|named| given.iter().all(|g| g.input != named.input))
        .filter(|named| facts(named).is_some_and(|(i, o)| feeds_back(i, o)))
        .collect();
    pairs.extend(given);
    Ok(pairs)
}

/// The positions (input, output) of the model's state pairs.
fn model_state_positions(
    model: &TypedModel,
    import: &ImportArgs,
) -> Result<Vec<(usize, usize)>, SlimError> {
    let names = |e| SlimError::stage("import", e);
    let inputs = input_names(model).map_err(names)?;
    let outputs = output_names(model).map_err(names)?;
    let pairs = model_state(model, import)?;
    Ok(state_positions(&pairs, &inputs, &outputs)
        .into_iter()
        .map(|(_, input, output)| (input, output))
        .collect())
}

fn read_plan(path: &Path) -> Result<Plan, SlimError> {
    let text = std::fs::read_to_string(path).map_err(|e| IoError::read(path, e))?;
    serde_json::from_str(&text).map_err(|e| SlimError::Plan {
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

fn run_prune(ctx: &Context, args: &PruneArgs) -> Result<(), Failure> {
    check_fraction("--ffn-sparsity", args.ffn_sparsity)?;
    check_fraction("--mha-sparsity", args.mha_sparsity)?;
    if let Some(floor) = args.floor {
        check_fraction("--floor", floor)?;
    }
    check_prune_flags(args)?;
    model_slim::Format::required(&args.output)?;
    let (original, sets) = import(ctx, &args.import, &args.model)?;
    let slimmer = Slimmer::new()?
        .with_symbol_values(symbol_values(&original, &sets))
        .with_state(model_state(&original, &args.import)?);
    let options = auto_options(args, &original)?;
    let result = ctx.progress.during("pruning and slimming", |bar| {
        let options = AutoOptions {
            observer: Some(Progress::auto_stages(bar)),
            ..options
        };
        auto_slim(&original, &slimmer, &options)
    })?;
    for warning in &result.report.warnings {
        tracing::warn!("{warning}");
    }
    let writes_onnx = Format::of(&args.output) == Some(Format::Onnx) || args.emit_pruned.is_some();
    let edits = if writes_onnx {
        result
            .onnx_edits(&original)
            .map_err(|e| SlimError::stage("pruned ONNX", e))?
    } else {
        vec![]
    };
    // What is written is checked against the pruned model's outputs computed in auto-slim;
    // models not written are dropped before the file is loaded back (GBs each for an LLM).
    drop(original);
    let AutoSlimmed {
        pruned,
        slimmed,
        plan,
        mut report,
        expected,
        ..
    } = result;
    let values = slimmer.nominal().values.clone();
    // Slimming must not change the pruned model: the written file is compared with it.
    let check = ArtifactCheck {
        expected: &expected,
        values: &values,
        cuts: &report.slim.state_cuts,
    };
    let import_options = args.import.options()?;
    // Only the ONNX writers read the pruned model.
    let pruned = writes_onnx.then_some(pruned);
    let written = if let (Some(Format::Onnx), Some(pruned)) = (Format::of(&args.output), &pruned) {
        let v = ctx
            .progress
            .during("writing the ONNX file and checking it", |_| {
                write_pruned_onnx(
                    &args.model,
                    &args.output,
                    &import_options,
                    &edits,
                    pruned,
                    Some(&slimmed),
                    check,
                )
            })?;
        Some(v)
    } else {
        write_nnef(ctx, slimmed, &args.output, Some(check))?
    };
    if written.is_some() {
        report.slim.verification = written;
    }
    ctx.say(&report.table());
    if let Some(path) = &args.report {
        write_json(&report, path)?;
    }
    if let Some(error) = report.slim.verification_error() {
        return Err(Failure::VerifyFailed(error));
    }
    ctx.say(&format!("wrote {}\n", args.output.display()));
    if let Some(path) = &args.plan_out {
        write_json(&plan, path)?;
        ctx.say(&format!("wrote {}\n", path.display()));
    }
    if let (Some(path), Some(pruned)) = (&args.emit_pruned, &pruned) {
        let v = write_pruned_onnx(
            &args.model,
            path,
            &import_options,
            &edits,
            pruned,
            None,
            // The pruned model keeps its whole state.
            ArtifactCheck { cuts: &[], ..check },
        )?;
        if let Some(error) = v.failure() {
            return Err(error.into());
        }
        ctx.say(&format!("wrote {}\n", path.display()));
    }
    Ok(())
}

/// The flags given that choose units (sparsities, scores, allocation, rounding, layout).
fn choice_flags(args: &PruneArgs) -> Vec<&'static str> {
    [
        (args.ffn_sparsity > 0.0, "--ffn-sparsity"),
        (args.mha_sparsity > 0.0, "--mha-sparsity"),
        (args.score.is_some(), "--score"),
        (args.global, "--global"),
        (args.floor.is_some(), "--floor"),
        (args.global_cost.is_some(), "--global-cost"),
        (args.multiple_of > 1, "--multiple-of"),
        (args.heads_multiple_of > 1, "--heads-multiple-of"),
        (args.kv_layout.is_some(), "--kv-layout"),
    ]
    .into_iter()
    .filter_map(|(given, flag)| given.then_some(flag))
    .collect()
}

/// Refuses, before any work, flags that would silently not happen: what chooses units with a
/// saved plan, repairs and scores without calibration data.
fn check_prune_flags(args: &PruneArgs) -> Result<(), SlimError> {
    let choosing = choice_flags(args);
    if args.plan.is_some() && !choosing.is_empty() {
        let verb = if choosing.len() == 1 {
            "chooses"
        } else {
            "choose"
        };
        return Err(SlimError::Usage(format!(
            "{} {verb} the units and --plan gives them: use one or the other",
            choosing.join(", ")
        )));
    }
    let asks_repair = matches!(
        args.repair,
        Some(RepairArg::LeastSquares | RepairArg::Compensation)
    );
    if args.calibration.is_none() && (asks_repair || args.score.is_some()) {
        return Err(SlimError::Usage(
            "--repair and --score need --calibration FILE.npz (without it units are chosen by weight magnitude and nothing is repaired)".into(),
        )
        );
    }
    if args.floor.is_some() && !args.global {
        return Err(SlimError::Usage(
            "--floor bounds what --global takes from a layer; without --global every layer loses the same fraction".into(),
        ));
    }
    if args.global_cost.is_some() && !args.global {
        return Err(SlimError::Usage(
            "--global-cost weighs what --global takes from each layer; without --global every layer loses the same fraction".into(),
        ));
    }
    let measures = matches!(
        args.global_cost,
        Some(GlobalCostArg::Outputs | GlobalCostArg::Embeddings)
    );
    if measures && args.calibration.is_none() {
        return Err(SlimError::Usage(
            "--global-cost outputs and embeddings measure the model on --calibration FILE.npz, which is not given".into(),
        ));
    }
    if let Some(gb) = args.statistics_memory {
        if args.calibration.is_none() {
            return Err(SlimError::Usage(
                "--statistics-memory needs --calibration FILE.npz (there are no statistics without it)".into(),
            ));
        }
        if !(gb > 0.0 && gb.is_finite()) {
            return Err(SlimError::Usage(format!(
                "--statistics-memory must be a positive number of GB, not {gb}"
            )));
        }
    }
    Ok(())
}

/// Auto-slim's options from the command line: targets, a saved plan, calibration samples.
fn auto_options(args: &PruneArgs, original: &TypedModel) -> Result<AutoOptions, Failure> {
    let calibration = args
        .calibration
        .as_deref()
        .map(|path| model_slim::load_npz(path, original))
        .transpose()?;
    let heldout = args
        .heldout
        .as_deref()
        .map(|path| model_slim::load_npz(path, original))
        .transpose()?;
    let plan = args.plan.as_deref().map(read_plan).transpose()?;
    let targets = Targets {
        global: args.global,
        floor: args.floor.unwrap_or(Targets::DEFAULT_FLOOR),
        global_cost: match args.global_cost {
            Some(GlobalCostArg::Outputs) => GlobalCost::Outputs,
            Some(GlobalCostArg::Embeddings) => GlobalCost::Embeddings,
            Some(GlobalCostArg::Reconstruction) | None => GlobalCost::Reconstruction,
        },
        multiple_of: args.multiple_of.max(1),
        heads_multiple_of: args.heads_multiple_of.max(1),
        kv_layout: match args.kv_layout.unwrap_or(KvLayoutArg::Equal) {
            KvLayoutArg::Equal => KvLayout::Equal,
            KvLayoutArg::Whole => KvLayout::Whole,
            KvLayoutArg::Any => KvLayout::Any,
        },
        ..Targets::per_layer(args.ffn_sparsity, args.mha_sparsity)
    };
    Ok(AutoOptions {
        plan,
        plan_origin: args
            .plan
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        calibration,
        heldout,
        criterion: match args.score.unwrap_or(ScoreArg::RemovalCost) {
            ScoreArg::Activation => Criterion::Activation,
            ScoreArg::Fluctuation => Criterion::Fluctuation,
            ScoreArg::RemovalCost => Criterion::RemovalCost,
        },
        repair: repair_of(args),
        seed: args.seed,
        statistics_memory: args.statistics_memory.map(|gb| (gb * 1e9) as usize),
        ..AutoOptions::new(targets)
    })
}

/// The repair asked for: least squares by default (with calibration data).
fn repair_of(args: &PruneArgs) -> Repair {
    match (args.repair, args.no_compensation) {
        (_, true) | (Some(RepairArg::None), _) => Repair::None,
        (Some(RepairArg::Compensation), _) => Repair::Compensation,
        (Some(RepairArg::LeastSquares) | None, false) => Repair::LeastSquares,
    }
}

/// The groups table: kind, layer, consumer, units, and zero units (already removable); with a
/// slimming, the units each group keeps. FFN and attention groups first, then the channel
/// groups of convolutional networks (`conv`).
fn groups_table(model: &TypedModel, after: Option<&Slimmed>) -> Result<String, SlimError> {
    let found = groups(model).map_err(|e| SlimError::stage("discover", e))?;
    let channels = channel_groups(model);
    if found.is_empty() && channels.is_empty() {
        return Ok("no FFN, attention or conv channel group found\n".into());
    }
    let mut out = format!(
        "{:<6} {:<6} {:<52} {:>6} {:>6}",
        "kind", "layer", "consumer node", "units", "zero"
    );
    out += if after.is_some() {
        "   after slimming\n"
    } else {
        "\n"
    };
    for g in &found {
        let zero = zero_units(model, g)
            .map_err(|e| SlimError::stage("discover", e))?
            .len();
        let units = if g.kind == Kind::Heads && g.kv_heads != g.units {
            format!("{} (KV {})", g.units, g.kv_heads)
        } else {
            g.units.to_string()
        };
        let kept = after.and_then(|slimmed| kept_units(g, &slimmed.report));
        out += &group_row(&g.kind.to_string(), g.layer, &g.name, &units, zero, kept);
    }
    for (layer, g) in channels.iter().enumerate() {
        let kept = after.map(|slimmed| {
            layer_input_channels(&slimmed.model, &g.consumer)
                .map_or_else(|| "gone".into(), |k| k.to_string())
        });
        let units = g.channels.to_string();
        out += &group_row("conv", layer, &g.consumer, &units, g.zero, kept);
    }
    Ok(out)
}

/// One row of the groups table.
fn group_row(
    kind: &str,
    layer: usize,
    name: &str,
    units: &str,
    zero: usize,
    kept: Option<String>,
) -> String {
    let kept = kept.map(|k| format!("   {k}")).unwrap_or_default();
    format!("{kind:<6} {layer:<6} {name:<52} {units:>6} {zero:>6}{kept}\n")
}

/// The units an FFN or attention group keeps, as a slimming report says.
fn kept_units(g: &Group, report: &Report) -> Option<String> {
    match g.kind {
        Kind::Ffn => report
            .ffn_layers
            .get(g.layer)
            .map(|l| l.channels_after.to_string()),
        Kind::Heads => report.attention_layers.get(g.layer).map(|l| {
            if l.kv_heads_before == l.heads_before {
                l.heads_after.to_string()
            } else {
                format!("{} (KV {})", l.heads_after, l.kv_heads_after)
            }
        }),
    }
}

fn run_plan(ctx: &Context, model: &Path, import_args: &ImportArgs) -> Result<(), Failure> {
    let (original, _) = import(ctx, import_args, model)?;
    ctx.say(&groups_table(&original, None)?);
    Ok(())
}

fn run_show(
    ctx: &Context,
    model: &Path,
    import_args: &ImportArgs,
    dot: Option<&Path>,
) -> Result<(), Failure> {
    let (original, sets) = import(ctx, import_args, model)?;
    let slimmer = Slimmer::new()?
        .with_symbol_values(symbol_values(&original, &sets))
        .with_state(model_state(&original, import_args)?);
    let slimmed = slim(ctx, &slimmer, &original)?;
    ctx.say(&groups_table(&original, Some(&slimmed))?);
    let r = &slimmed.report;
    ctx.say(&format!(
        "slimming would take parameters {} → {} and FLOPs {:.3e} → {:.3e}\n",
        r.params_before, r.params_after, r.flops_before, r.flops_after
    ));
    ctx.say(&r.state_table());
    ctx.say(&zero_layers_table(&original, &slimmed.model));
    ctx.say(&zero_inputs_table(&slimmed.model));
    if let Some(path) = dot {
        let text = to_dot(&[("before", &original), ("after", &slimmed.model)])
            .map_err(|e| SlimError::stage("dot", e))?;
        write_atomically(path, text.as_bytes()).map_err(|e| IoError::write(path, e))?;
        ctx.say(&format!("wrote {}\n", path.display()));
    }
    Ok(())
}

/// What `bench` measured.
#[derive(Serialize)]
struct BenchReport {
    model: String,
    threads: Option<usize>,
    original_ms: f64,
    slimmed_ms: f64,
    latency_ratio: f64,
    flop_ratio: f64,
    runs: usize,
}

fn run_bench(
    ctx: &Context,
    model: &Path,
    import_args: &ImportArgs,
    (warmup, runs): (usize, usize),
    threads: Option<usize>,
    report: Option<&Path>,
) -> Result<(), Failure> {
    if runs == 0 {
        return Err(SlimError::Usage("--runs must be at least 1".into()).into());
    }
    if let Some(n) = threads {
        if n == 0 {
            return Err(SlimError::Usage("--threads must be at least 1".into()).into());
        }
        let executor = tract_linalg::multithread::Executor::multithread(n);
        tract_linalg::multithread::set_default_executor(executor);
    }
    let (original, sets) = import(ctx, import_args, model)?;
    let values = symbol_values(&original, &sets);
    let slimmer = Slimmer::new()?
        .with_symbol_values(values.clone())
        .with_state(model_state(&original, import_args)?);
    let slimmed = slim(ctx, &slimmer, &original)?;
    let models = (&original, &slimmed.model);
    let cuts = &slimmed.report.state_cuts;
    let latency = ctx
        .progress
        .during(
            &format!("timing {runs} alternating runs of each model"),
            |_| compare_latency(models, cuts, &values, warmup, runs),
        )
        .map_err(|e| SlimError::stage("bench", e))?;
    let r = &slimmed.report;
    let bench = BenchReport {
        model: model.display().to_string(),
        threads,
        original_ms: latency.original_ms,
        slimmed_ms: latency.slimmed_ms,
        latency_ratio: latency.ratio(),
        flop_ratio: r.flops_after / r.flops_before,
        runs,
    };
    ctx.say(&format!(
        "{:<10} {:>14} {:>12}\n{:<10} {:>14.2} {:>12.3e}\n{:<10} {:>14.2} {:>12.3e}\nlatency ratio {:.3} (FLOP ratio {:.3}, the ideal); medians of {runs} alternating runs after {warmup} warm-up runs\n",
        "model", "median (ms)", "FLOPs",
        "original", bench.original_ms, r.flops_before,
        "slimmed", bench.slimmed_ms, r.flops_after,
        bench.latency_ratio, bench.flop_ratio
    ));
    if r.state_pairs > 0 {
        ctx.say(&format!(
            "state: {} of {} pairs cut, {} → {} bytes per token (the slimmed model run on the kept slices)\n",
            cuts.len(),
            r.state_pairs,
            r.state_bytes_per_token_before,
            r.state_bytes_per_token_after
        ));
    }
    if let Some(path) = report {
        write_json(&bench, path)?;
    }
    Ok(())
}

fn run_demo(ctx: &Context, output: Option<&Path>, report: Option<&Path>) -> Result<(), Failure> {
    let spec = model_slim::EncoderSpec::demo();
    let original = spec.build().map_err(|e| SlimError::stage("demo", e))?;
    ctx.say(&format!(
        "demo: a {}-layer encoder (hidden {}, {} heads, FFN {}); per layer {} head(s) pruned and {} constant, {} FFN channels pruned and {} constant\n",
        spec.layers, spec.hidden, spec.heads, spec.ffn, spec.pruned_heads, spec.constant_heads, spec.pruned_ffn, spec.constant_ffn
    ));
    let slimmer = Slimmer::new()?;
    let mut slimmed = slim(ctx, &slimmer, &original)?;
    let values = SymbolValues::default();
    let expected =
        Expected::of(original.clone(), 0, &values).map_err(|e| SlimError::stage("verify", e))?;
    let check = ArtifactCheck {
        expected: &expected,
        values: &values,
        cuts: &[],
    };
    slimmed.report.verification = match output {
        Some(path) => write_nnef(ctx, slimmed.model.clone(), path, Some(check))?,
        None => Some(
            model_slim::verify(&original, &slimmed.model, 0, &values)
                .map_err(|e| SlimError::stage("verify", e))?,
        ),
    };
    finish(ctx, &slimmed.report, report, output)
}

fn run_check_rules(
    ctx: &Context,
    dir: Option<&Path>,
    models: usize,
    seed: u64,
) -> Result<(), Failure> {
    let defaults = model_slim::default_rules().map_err(SlimError::from)?;
    // Each user rule is checked with the defaults (which make the terms it matches), alone, so
    // a failure names it; without a directory the defaults are checked together.
    let suspects: Vec<(String, Vec<model_slim::Rule>)> = match dir {
        Some(dir) => model_slim::load_dir(dir)
            .map_err(SlimError::from)?
            .into_iter()
            .map(|rule| {
                let mut rules = defaults.clone();
                rules.push(rule.clone());
                (rule.name, rules)
            })
            .collect(),
        None => vec![("the default rules".to_string(), defaults.clone())],
    };
    for (name, rules) in &suspects {
        let report = ctx
            .progress
            .during(
                &format!("checking {name} on {models} random models"),
                |_| model_slim::check_rules(rules, models, seed),
            )
            .map_err(|e| SlimError::stage("check-rules", e))?;
        let mut out = format!(
            "{name}: {} models, {} alternatives compared, {} unextractable (cyclic, not compared)\n",
            report.models, report.alternatives, report.unextractable
        );
        for rule in rules.iter().filter(|r| dir.is_none() || &r.name == name) {
            let fired = report.fired.get(&rule.name).copied().unwrap_or(0);
            out += &format!(
                "  {:<40} fired {fired}{}\n",
                rule.name,
                if fired == 0 {
                    " (not exercised: no random model matched)"
                } else {
                    ""
                }
            );
        }
        ctx.say(&out);
        if let Some(failure) = report.failures.first() {
            return Err(SlimError::Unsound {
                rule: name.clone(),
                failure: failure.clone(),
            }
            .into());
        }
        if report.refused > 0 {
            return Err(SlimError::Unsound {
                rule: name.clone(),
                failure: format!("{} right-hand sides were ill-typed", report.refused),
            }
            .into());
        }
    }
    Ok(())
}
