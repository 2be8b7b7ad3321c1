//! Subcommands. Each one turns arguments into calls of the library crates and prints results.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use strata_core::bench::{BenchOptions, Workload};
use strata_core::capture::SiteKind;
use strata_core::gguf::{GgufFile, GgufSummary};
use strata_core::registry::{self, LoadedModel};
use strata_core::{
    Backend, CapturePlan, GenerateOptions, ModelSource, Positions, Sampling, Site, TokenBatch,
};
// Links every built-in plugin; without a reference the registry is empty.
use strata_plugins as _;

use crate::progress::Bars;

/// Layer-wise measurements of language models.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an experiment file: every analysis, with reports under <out>/<name>/.
    Run {
        /// The experiment file (TOML).
        experiment: PathBuf,
        /// Override the experiment's backend.
        #[arg(long)]
        backend: Option<Backend>,
        /// Re-run analyses whose outputs are complete and whose inputs are unchanged.
        #[arg(long)]
        force: bool,
        /// No progress bars.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Check an experiment file without running it.
    Validate {
        /// The experiment file (TOML).
        experiment: PathBuf,
    },
    /// List the registered architectures and analyses with their parameters.
    List,
    /// Show a model's architecture, sizes, tokenizer and file hashes.
    Inspect {
        #[command(flatten)]
        model: ModelArgs,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Dump activations of prompts to a .safetensors file.
    Capture(CaptureArgs),
    /// Continue a prompt; prints the continuation alone on stdout.
    Generate(GenerateArgs),
    /// Measure throughput: a forward pass with captures over random ids, or greedy generation.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct ModelArgs {
    /// A Hugging Face model folder (config.json, model.safetensors, tokenizer.json), a .gguf
    /// file, or a hub id (`org/name`) found in the local Hugging Face cache.
    model: PathBuf,
    /// Backend to run on.
    #[arg(long, default_value_t = Backend::default())]
    backend: Backend,
    /// A tokenizer.json to use instead of (or where there is none) the model's own.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CaptureArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A prompt (repeat for a batch).
    #[arg(long, required_unless_present_any = ["file", "ids"])]
    prompt: Vec<String>,
    /// A file with one prompt per line.
    #[arg(long, conflicts_with_all = ["prompt", "ids"])]
    file: Option<PathBuf>,
    /// Token ids instead of text, comma-separated (repeat for a batch); needs no tokenizer.
    #[arg(long, conflicts_with = "prompt")]
    ids: Vec<String>,
    /// Sites to capture: kinds (`resid_post,attn_pattern`) or single sites (`resid_post.3`).
    #[arg(long, value_delimiter = ',', default_value = "resid_post")]
    capture: Vec<String>,
    /// Blocks for per-block kinds: `all`, a list `0,2,5` or a range `0-5`.
    #[arg(long, default_value = "all")]
    layers: String,
    /// Positions kept: `all` or `last`.
    #[arg(long, default_value = "all")]
    positions: String,
    /// Add the tokenizer's special tokens (BOS, …).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    special_tokens: bool,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Rows per forward pass; with --generate, continuations of the one prompt.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Tokens per row; with --generate, the prompt length.
    #[arg(long, default_value_t = 512)]
    seq: usize,
    /// Sites the forward pass keeps (as for `capture`), or `none`. The default is what
    /// transformers computes with `output_hidden_states=True`: the hidden states and the logits.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "embed,resid_post,final_norm,logits"
    )]
    captures: Vec<String>,
    /// Measure greedy generation of this many new tokens instead of a forward pass.
    #[arg(long)]
    generate: Option<usize>,
    /// Unmeasured runs before the measured ones.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Measured runs (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seed of the random token ids.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Upper bound on new tokens.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Greedy decoding (the default).
    #[arg(long, conflicts_with = "temperature")]
    greedy: bool,
    /// Sample at this temperature instead of greedy decoding.
    #[arg(long)]
    temperature: Option<f64>,
    /// Keep only the k most likely tokens when sampling.
    #[arg(long, requires = "temperature")]
    top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p when sampling.
    #[arg(long, requires = "temperature")]
    top_p: Option<f64>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when the continuation contains this text (repeatable); it is not printed.
    #[arg(long)]
    stop: Vec<String>,
    /// Keep generating past the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
}

/// Runs the parsed command.
pub fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            experiment,
            backend,
            force,
            quiet,
        } => run(&experiment, backend, force, quiet),
        Command::Validate { experiment } => validate(&experiment),
        Command::List => {
            list();
            Ok(())
        }
        Command::Inspect { model, json } => inspect(&model, json),
        Command::Capture(args) => capture(&args),
        Command::Generate(args) => generate(&args),
        Command::Bench(args) => bench(&args),
    }
}

fn load(args: &ModelArgs) -> Result<LoadedModel> {
    let name = args
        .model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| args.model.display().to_string());
    let device = args.backend.device();
    let source = ModelSource::parse(&args.model.to_string_lossy());
    let mut loaded = registry::load_model(&name, &source, &device)?;
    if let Some(path) = &args.tokenizer {
        loaded.set_tokenizer(path)?;
    }
    Ok(loaded)
}

fn run(path: &Path, backend: Option<Backend>, force: bool, quiet: bool) -> Result<()> {
    let mut experiment = strata_core::experiment::Experiment::load(path)?;
    if let Some(b) = backend {
        experiment = experiment.with_backend(b);
    }
    let bars = Bars::new(quiet);
    let options = strata_core::run::RunOptions {
        force,
        progress: &bars,
    };
    let summary = strata_core::run::run_experiment(&experiment, &options)?;
    println!("{summary}");
    for record in &summary.manifest.analyses {
        print_outcome(&summary.dir.join(&record.dir));
    }
    Ok(())
}

/// The summary paragraph of a finished analysis and where its tables and figures are.
fn print_outcome(dir: &Path) {
    let Ok(text) = std::fs::read_to_string(dir.join("report.json")) else {
        return;
    };
    let Ok(report) = serde_json::from_str::<strata_core::Report>(&text) else {
        return;
    };
    println!("\n{}: {}", report.analysis, report.summary);
    for table in &report.tables {
        println!(
            "  table:  {}",
            dir.join(format!("{}.csv", table.name)).display()
        );
    }
    for figure in &report.figures {
        println!(
            "  figure: {}",
            dir.join(format!("{}.svg", figure.name)).display()
        );
    }
}

fn validate(path: &Path) -> Result<()> {
    let experiment = strata_core::experiment::Experiment::load(path)?;
    println!("{}: ok ({})", path.display(), experiment.describe());
    Ok(())
}

fn list() {
    println!("Architectures:");
    for a in registry::architectures() {
        println!(
            "  {:<16} {} (model types: {})",
            a.id,
            a.description,
            a.model_types.join(", ")
        );
    }
    println!("\nAnalyses:");
    for a in registry::analyses() {
        println!("  {:<16} {}", a.id, a.description);
        for p in a.parameters {
            println!(
                "      {} = {}  ({}; default {})",
                p.name, p.ty, p.doc, p.default
            );
        }
    }
    println!("\nBackends: {}", Backend::ALL.map(Backend::name).join(", "));
}

fn inspect(args: &ModelArgs, json: bool) -> Result<()> {
    let loaded = load(args)?;
    let info = loaded.model.info();
    let mut hashes = Vec::new();
    for f in &loaded.files {
        hashes.push((f.clone(), strata_core::manifest::sha256_file(f)?));
    }
    let tokenizer = loaded.tokenizer.as_ref().map(|t| {
        serde_json::json!({
            "vocab_size": t.vocab_size(),
            "eos_ids": t.eos_ids(),
        })
    });
    let gguf = gguf_summary(&loaded.files)?;
    if json {
        let value = serde_json::json!({
            "source": loaded.source.to_string(),
            "info": info,
            "tokenizer": tokenizer,
            "gguf": gguf,
            "files": hashes.iter().map(|(p, h)| serde_json::json!({"path": p, "sha256": h})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("source          {}", loaded.source);
    println!(
        "architecture    {} (model_type {})",
        info.architecture, info.model_type
    );
    println!("layers          {}", info.n_layers);
    println!("d_model         {}", info.d_model);
    println!(
        "heads           {} query / {} key-value, head_dim {}",
        info.n_heads, info.n_kv_heads, info.head_dim
    );
    println!("d_ff            {}", info.d_ff);
    println!("vocab           {}", info.vocab_size);
    println!("context         {}", info.context_length);
    println!("norm            {:?}", info.norm);
    println!("parameters      {}", info.n_params);
    match &loaded.tokenizer {
        Some(t) => println!(
            "tokenizer       {} tokens, eos ids {:?}",
            t.vocab_size(),
            t.eos_ids()
        ),
        None => println!("tokenizer       none"),
    }
    if let Some(g) = &gguf {
        print_gguf(g);
    }
    for (p, h) in hashes {
        println!("file            {}  sha256 {h}", p.display());
    }
    Ok(())
}

/// The GGUF facts `inspect` adds when the model is a GGUF file.
fn gguf_summary(files: &[PathBuf]) -> Result<Option<GgufSummary>> {
    match files.iter().find(|f| GgufFile::is_gguf_path(f)) {
        Some(path) => Ok(Some(GgufFile::open(path)?.summary()?)),
        None => Ok(None),
    }
}

fn print_gguf(g: &GgufSummary) {
    let types: Vec<String> = g
        .tensor_types
        .iter()
        .map(|(t, n)| format!("{t} ×{n}"))
        .collect();
    println!(
        "gguf            version {}, {} tensors, {} values",
        g.version, g.n_tensors, g.n_elements
    );
    println!("tensor types    {}", types.join(", "));
    let Some(t) = &g.tokenizer else {
        println!("gguf tokenizer  none");
        return;
    };
    let merges = t
        .n_merges
        .map(|m| format!(", {m} merges"))
        .unwrap_or_default();
    println!(
        "gguf tokenizer  {} (pre-tokenizer {}), {} tokens{merges}",
        t.model, t.pre, t.n_tokens
    );
    let token = |name: &str, tok: &Option<(usize, String)>| match tok {
        Some((id, text)) => format!("{name} {id} {text:?}"),
        None => format!("{name} none"),
    };
    println!(
        "special ids     {}, {}, {}, {}; adds BOS {}, EOS {}",
        token("bos", &t.bos),
        token("eos", &t.eos),
        token("unk", &t.unknown),
        token("pad", &t.padding),
        t.add_bos,
        t.add_eos
    );
    const SHOWN: usize = 12;
    for (kind, list) in [("control", &t.control), ("user-defined", &t.user_defined)] {
        let shown: Vec<String> = list
            .iter()
            .take(SHOWN)
            .map(|(id, text)| format!("{id} {text:?}"))
            .collect();
        let more = match list.len().saturating_sub(SHOWN) {
            0 => String::new(),
            n => format!(", … {n} more"),
        };
        let listed = if list.is_empty() {
            String::new()
        } else {
            format!(": {}{more}", shown.join(", "))
        };
        println!("{kind:<15} {}{listed}", list.len());
    }
}

/// Parses `all`, `0,2,5` or `0-5` into block indices below `n_layers`.
fn parse_layers(spec: &str, n_layers: usize) -> Result<Vec<usize>> {
    if spec == "all" {
        return Ok((0..n_layers).collect());
    }
    let mut out = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        let range = match part.split_once('-') {
            Some((a, b)) => a.trim().parse::<usize>()?..=b.trim().parse::<usize>()?,
            None => {
                let l = part
                    .parse::<usize>()
                    .with_context(|| format!("--layers: `{part}` is not a layer index"))?;
                l..=l
            }
        };
        out.extend(range);
    }
    if let Some(l) = out.iter().find(|&&l| l >= n_layers) {
        return Err(strata_core::Error::InvalidRequest(format!(
            "--layers: layer {l} does not exist (the model has {n_layers} layers, 0..={})",
            n_layers - 1
        ))
        .into());
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The plan of `--capture`-style items: kinds (`resid_post`, expanded over `layers`) or single
/// sites (`resid_post.3`), all kept at `positions`.
fn capture_plan(items: &[String], layers: &[usize], positions: &Positions) -> Result<CapturePlan> {
    let mut plan = CapturePlan::new();
    for item in items {
        let item = item.trim();
        if item.contains(['.', '(']) {
            plan.add(item.parse::<Site>()?, positions.clone());
            continue;
        }
        let kind: SiteKind = item.parse()?;
        if kind.is_layered() {
            for &l in layers {
                plan.add(kind.at(l), positions.clone());
            }
        } else {
            plan.add(kind.at(0), positions.clone());
        }
    }
    Ok(plan)
}

fn capture(args: &CaptureArgs) -> Result<()> {
    let loaded = load(&args.model)?;
    let info = loaded.model.info();
    let (prompts, ids) = capture_inputs(args, &loaded)?;
    let positions = match args.positions.as_str() {
        "all" => Positions::All,
        "last" => Positions::Last,
        other => bail!(strata_core::Error::InvalidRequest(format!(
            "--positions: expected `all` or `last`, got `{other}`"
        ))),
    };
    let layers = parse_layers(&args.layers, info.n_layers)?;
    let plan = capture_plan(&args.capture, &layers, &positions)?;
    let batch = TokenBatch::new(ids)?;
    let captures = loaded.model.forward(&batch, &plan)?;

    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (site, act) in captures.iter() {
        let values = act.to_vec()?;
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((site.to_string(), safetensors::Dtype::F32, act.dims(), bytes));
    }
    let t = batch.max_len();
    let ids_bytes = batch
        .rows()
        .iter()
        .flat_map(|r| (0..t).map(move |j| r.get(j).map_or(-1i64, |&v| v as i64)))
        .flat_map(|v| v.to_le_bytes())
        .collect();
    tensors.push((
        "input_ids".into(),
        safetensors::Dtype::I64,
        vec![batch.batch_size(), t],
        ids_bytes,
    ));
    let len_bytes = batch
        .lengths()
        .into_iter()
        .flat_map(|l| (l as i64).to_le_bytes())
        .collect();
    tensors.push((
        "lengths".into(),
        safetensors::Dtype::I64,
        vec![batch.batch_size()],
        len_bytes,
    ));

    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            Ok((
                name.clone(),
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata: HashMap<String, String> = HashMap::from([
        ("model".into(), loaded.source.to_string()),
        ("architecture".into(), info.architecture.clone()),
        ("prompts".into(), serde_json::to_string(&prompts)?),
        ("positions".into(), args.positions.clone()),
        (
            "layout".into(),
            "site tensors are [batch, positions, width] (attn_pattern: [batch, heads, query, key]); \
             input_ids are right-padded with -1; lengths are the real lengths"
                .into(),
        ),
        ("strata_version".into(), env!("CARGO_PKG_VERSION").into()),
    ]);
    let bytes = safetensors::serialize(views, Some(metadata))?;
    strata_core::output::write_atomic(&args.out, &bytes)?;
    eprintln!(
        "wrote {} tensors for {} prompt(s) to {}",
        captures.len(),
        prompts.len(),
        args.out.display()
    );
    Ok(())
}

/// The prompts (as text, for the file's metadata) and their token ids.
fn capture_inputs(
    args: &CaptureArgs,
    loaded: &LoadedModel,
) -> Result<(Vec<String>, Vec<Vec<u32>>)> {
    if !args.ids.is_empty() {
        let ids = args
            .ids
            .iter()
            .map(|row| {
                row.split(',')
                    .map(|v| {
                        v.trim().parse::<u32>().map_err(|_| {
                            strata_core::Error::InvalidRequest(format!(
                                "--ids: `{v}` is not a token id"
                            ))
                        })
                    })
                    .collect::<strata_core::Result<Vec<u32>>>()
            })
            .collect::<strata_core::Result<Vec<_>>>()?;
        return Ok((args.ids.clone(), ids));
    }
    let prompts: Vec<String> = match &args.file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| strata_core::Error::io(f, e))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect(),
        None => args.prompt.clone(),
    };
    if prompts.is_empty() {
        bail!(strata_core::Error::InvalidRequest(
            "no prompts given".into()
        ));
    }
    let tokenizer = loaded.tokenizer()?;
    let ids = prompts
        .iter()
        .map(|p| tokenizer.encode(p, args.special_tokens))
        .collect::<strata_core::Result<Vec<_>>>()?;
    Ok((prompts, ids))
}

fn generate(args: &GenerateArgs) -> Result<()> {
    let loaded = load(&args.model)?;
    let tokenizer = loaded.tokenizer()?;
    let prompt = tokenizer.encode(&args.prompt, true)?;
    let sampling = match args.temperature {
        Some(temperature) if !args.greedy => Sampling::Sample {
            temperature,
            top_k: args.top_k,
            top_p: args.top_p,
        },
        _ => Sampling::Greedy,
    };
    let options = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        sampling,
        seed: args.seed,
        stop_tokens: if args.ignore_eos {
            Vec::new()
        } else {
            tokenizer.eos_ids().to_vec()
        },
        stop_strings: args.stop.clone(),
        pad_id: 0,
    };
    let out = strata_core::generate(loaded.model.as_ref(), &[prompt], &options, Some(tokenizer))?;
    let text = out[0].text.clone().unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    if stdout.is_terminal() {
        writeln!(stdout)?;
    }
    stdout.flush()?;
    Ok(())
}

fn bench(args: &BenchArgs) -> Result<()> {
    let loaded = load(&args.model)?;
    let info = loaded.model.info();
    let workload = match args.generate {
        Some(new_tokens) => Workload::Generate {
            prompt_len: args.seq,
            new_tokens,
            samples: args.batch,
        },
        None => {
            let items: &[String] = if args.captures == ["none"] {
                &[]
            } else {
                &args.captures
            };
            let layers: Vec<usize> = (0..info.n_layers).collect();
            Workload::Forward {
                batch: args.batch,
                seq: args.seq,
                plan: capture_plan(items, &layers, &Positions::All)?,
            }
        }
    };
    let options = BenchOptions {
        warmup: args.warmup,
        runs: args.runs,
        seed: args.seed,
    };
    let r = strata_core::bench::bench(
        loaded.model.as_ref(),
        args.model.backend,
        &workload,
        &options,
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    let shape = match r.mode {
        "generate" => format!(
            "{} × {} new tokens after a {}-token prompt",
            r.batch, r.new_tokens, r.seq
        ),
        _ => format!(
            "{} × {} tokens, {} capture sites",
            r.batch, r.seq, r.captures
        ),
    };
    println!("model        {} ({})", r.model, r.architecture);
    println!("backend      {} ({} threads)", r.backend, r.threads);
    println!("workload     {} : {shape}", r.mode);
    println!(
        "tokens/s     {:.1}  (median {:.4} s, min {:.4} s, max {:.4} s over {} runs after {} warm-up)",
        r.tokens_per_s, r.median_s, r.min_s, r.max_s, r.runs, r.warmup
    );
    match r.peak_rss_mb {
        Some(mb) => println!("peak memory  {mb:.0} MiB resident"),
        None => println!("peak memory  not reported on this platform"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_layers;

    #[test]
    fn layer_specs() {
        assert_eq!(parse_layers("all", 3).unwrap(), vec![0, 1, 2]);
        assert_eq!(parse_layers("2,0", 3).unwrap(), vec![0, 2]);
        assert_eq!(parse_layers("0-1", 3).unwrap(), vec![0, 1]);
        assert!(parse_layers("3", 3).is_err());
        assert!(parse_layers("x", 3).is_err());
    }
}
