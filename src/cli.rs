//! The command line of `coltrast` (and of `coltrast-torch`, the same CLI with libtorch): parses arguments,
//! calls [`crate::app`], maps errors to exit codes (0 success, 1 a user error, 2 an internal error). Errors
//! print as one line. A `run` that must execute a libtorch stage in a process without libtorch is handed to
//! `coltrast-torch` ([`crate::backend::exec_torch_binary`]) before anything is written.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::app::{self, Common};
use crate::engine::RunOptions;
use crate::{backend, Error};

/// Fine-tune a sentence encoder with ColTrast and serve fast retrieval, as a content-hashed pipeline.
///
/// Stages (in order): ingest, chunk, generate, mine, train, export, index, eval. Each writes Parquet and a
/// manifest under artifacts/<stage>/<fingerprint>/ and reruns only when its code, settings or inputs change.
///
/// Settings come from pipeline.toml, overridden by COLTRAST_<SECTION>__<KEY> environment variables,
/// overridden by --set section.key=value.
#[derive(Parser, Debug)]
#[command(name = "coltrast", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct GlobalArgs {
    /// The pipeline file [default: ./pipeline.toml if present, else built-in defaults].
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override one setting, e.g. --set chunk.similarity_threshold=0.8 (repeatable).
    #[arg(long = "set", global = true, value_name = "SECTION.KEY=VALUE")]
    sets: Vec<String>,
    /// More logging (-v info, -vv debug). COLTRAST_LOG=<filter> also works.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the named stages and what they need (all stages if none are named).
    ///
    /// Prints one line per stage: `cached` or `ran`, its wall time and its artifact dir.
    /// Example: coltrast run ingest --set ingest.path=../shared/data/boolq
    Run {
        /// Stages to run; their upstream stages run (or are reused) first.
        stages: Vec<String>,
        /// Rerun this stage even if an artifact for its fingerprint exists (repeatable).
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        /// Re-hash inputs and cached artifacts instead of trusting file metadata and sizes.
        #[arg(long)]
        verify: bool,
        /// Fail at once instead of waiting if another run holds the artifacts lock.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show each stage: up to date, or why it would run (which setting or input changed).
    Status,
    /// Show a stage's artifact paths and manifest for the current settings (or its last run).
    Show {
        /// The stage, e.g. ingest.
        stage: String,
    },
    /// Top chunks for a query, with project, score and text.
    ///
    /// Example: coltrast search "which model is used for X-rays" -k 5 --rerank
    Search {
        query: String,
        #[command(flatten)]
        q: QueryArgs,
        /// Only this project's chunks.
        #[arg(long)]
        project: Option<String>,
    },
    /// The most likely project for a question, a confidence, and its best chunks as answer context.
    Ask {
        question: String,
        #[command(flatten)]
        q: QueryArgs,
    },
    /// For one project, the best chunk per category (name, objective, model, data source, data size,
    /// lessons, performance, framework).
    Explore {
        keywords: String,
        #[command(flatten)]
        q: QueryArgs,
        /// The project to explore [default: the best match for the keywords].
        #[arg(long)]
        project: Option<String>,
    },
    /// Results grouped by project: each project's best chunk and its relevance.
    Compare {
        query: String,
        #[command(flatten)]
        q: QueryArgs,
    },
    /// Serve the current artifacts over HTTP: search, ask, explore, compare, OpenAI-compatible embeddings,
    /// metrics, an OpenAPI document and a search page at /.
    ///
    /// Binds 127.0.0.1 unless --host says otherwise. With an API key (read from the environment variable
    /// --api-key-env names, COLTRAST_API_KEY by default) every route but /healthz and /readyz needs
    /// `Authorization: Bearer <key>`. A new index for these settings is served as soon as
    /// artifacts/index/latest changes, on SIGHUP, or on POST /v1/admin/reload. SIGTERM or Ctrl-C finishes
    /// in-flight requests, then exits 0.
    ///
    /// Example: coltrast serve --port 8080 & curl -s localhost:8080/v1/search -d '{"query": "which model?"}'
    Serve(ServeArgs),
    /// Analytics over the current artifacts (polars): chunks per project, chunk lengths, positive sources,
    /// negatives per query, training's best epoch, eval by system and level.
    Report,
    /// Remove artifact dirs not reachable from the current settings, and leftovers of interrupted runs.
    ///
    /// Artifacts that a recorded experiment references are kept (see `coltrast exp`) unless
    /// `--experiments ignore`.
    /// Example: coltrast gc --dry-run --experiments ignore
    Gc {
        /// Also keep this many of the newest unreachable artifacts per stage.
        #[arg(long, default_value_t = 0)]
        keep: usize,
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// `keep`: keep every artifact a recorded experiment references; `ignore`: collect them like any other.
        #[arg(long, value_enum, default_value_t = ExperimentsGc::Keep, value_name = "keep|ignore")]
        experiments: ExperimentsGc,
    },
    /// Experiments: sweep settings, compare their evals side by side, plot them, apply the best.
    ///
    /// Each experiment runs through the normal pipeline, so experiments share every stage they have in
    /// common, and is recorded in artifacts/experiments/experiments.parquet.
    /// Example: coltrast exp run --set mine.num_negatives=1,3 --set train.epochs=3,10 && coltrast exp show
    Exp {
        #[command(subcommand)]
        command: ExpCommand,
    },
    /// What the executors run: `worker embed` embeds one shard (see `executor.kind` in pipeline.toml).
    Worker {
        #[command(subcommand)]
        command: WorkerCommand,
    },
}

#[derive(Subcommand, Debug)]
enum WorkerCommand {
    /// Embed one shard with an exported ONNX model: a Parquet of (text_hash, text) in, a Parquet of
    /// (text_hash, embedding, n_tokens, tokens) out, written atomically. Prints one JSON line of timings.
    ///
    /// Example: coltrast worker embed --model export/base --shard s.texts.parquet --output s.embeddings.parquet
    Embed {
        /// The exported model's dir (model.onnx, tokenizer.json, onnx_model.json).
        #[arg(long, value_name = "DIR")]
        model: PathBuf,
        /// The shard file.
        #[arg(long, value_name = "FILE")]
        shard: PathBuf,
        /// The output file to write.
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
        /// ONNX Runtime threads (0 = one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// libonnxruntime.so [default: the one of `make setup`].
        #[arg(long, value_name = "FILE")]
        ort_library: Option<PathBuf>,
        /// The engine, as `model.engine`: auto (resolved on this worker's CPU), onnxruntime or openvino.
        #[arg(long, default_value = "onnxruntime", value_parser = parse_setting::<crate::settings::ModelEngine>)]
        engine: crate::settings::ModelEngine,
        /// What OpenVINO computes in, as `model.precision`: auto, f32 or bf16.
        #[arg(long, default_value = "auto", value_parser = parse_setting::<crate::settings::Precision>)]
        precision: crate::settings::Precision,
        /// libopenvino_c.so [default: the one of `make setup`].
        #[arg(long, value_name = "FILE")]
        openvino_library: Option<PathBuf>,
    },
}

/// A settings enum from its TOML spelling (e.g. `onnxruntime`).
fn parse_setting<T: serde::de::DeserializeOwned>(s: &str) -> std::result::Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| e.to_string())
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum ExperimentsGc {
    Keep,
    Ignore,
}

#[derive(Subcommand, Debug)]
enum ExpCommand {
    /// Run the Cartesian product of --set KEY=V1,V2,... values and record each experiment.
    ///
    /// Every value is typed and checked as `coltrast run --set` checks it, all of them before anything runs.
    /// Commas separate values; a value in double quotes keeps its commas (--set 'index.factory="IVF4,Flat",Flat').
    /// Experiments share the stages they have in common (a sweep of mine.num_negatives chunks once). Each is
    /// identified by its settings and stage fingerprints: a rerun of the same sweep (e.g. after Ctrl-C) skips
    /// the recorded ones and runs the rest. Names are derived from the values (num_negatives=3) unless --name.
    ///
    /// Example: coltrast exp run --set chunk.strategy=semantic --set chunk.similarity_threshold=0.5,0.7,0.9
    Run {
        /// The name of a single experiment, or the prefix of each name in a sweep (PREFIX-num_negatives=3).
        #[arg(long, value_name = "PREFIX")]
        name: Option<String>,
        /// Re-hash inputs and cached artifacts instead of trusting file metadata and sizes.
        #[arg(long)]
        verify: bool,
        /// Fail at once instead of waiting if another run holds the artifacts lock.
        #[arg(long)]
        no_wait: bool,
    },
    /// A table of the recorded experiments, as `dvc exp show`: the settings that differ, the chosen metrics.
    ///
    /// One row per experiment; the best value of each metric column is marked `*`. METRIC is
    /// [SYSTEM/][LEVEL/]METRIC: `ndcg@10` is every eval system's document-level nDCG@10, `coltrast/ndcg@10`
    /// one system's, `chunk/R@1` chunk-level recall@1 (metrics: recall@1, recall@5, recall@10, mrr@10,
    /// ndcg@10); any column of experiments.parquet also works (stat.train.best_epoch, run_time_s, or
    /// best_epoch). Default: document-level nDCG@10 and R@1 of each system, base-whole included.
    ///
    /// Example: coltrast exp show --metric ndcg@10 --metric best_epoch --sort coltrast+hybrid/ndcg@10
    Show {
        /// A metric column to show (repeatable).
        #[arg(long = "metric", value_name = "METRIC")]
        metrics: Vec<String>,
        /// Order by a metric (best first) or a setting (ascending).
        #[arg(long, value_name = "METRIC|KEY")]
        sort: Option<String>,
        /// Print JSON.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Print CSV (full column names, full precision).
        #[arg(long)]
        csv: bool,
    },
    /// Draw METRIC against one swept setting as a PNG: one line per eval system, other settings as panels.
    ///
    /// Plots the experiments whose `exp run` set KEY. METRIC is named as in `exp show` (ndcg@10: every
    /// system, document level). Default file: artifacts/experiments/<METRIC>-by-<KEY>.png.
    ///
    /// Example: coltrast exp plot ndcg@10 --by chunk.similarity_threshold -o threshold.png
    Plot {
        /// The metric, e.g. ndcg@10, coltrast/R@1, chunk/ndcg@10.
        metric: String,
        /// The setting on the x axis, e.g. chunk.similarity_threshold.
        #[arg(long, value_name = "KEY")]
        by: String,
        /// The PNG to write.
        #[arg(short, long, value_name = "FILE.png")]
        output: Option<PathBuf>,
    },
    /// Two experiments side by side: settings that differ, metrics with B - A, shared stages, stats.
    ///
    /// Example: coltrast exp diff num_negatives=1 num_negatives=3
    Diff {
        a: String,
        b: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write an experiment's settings into pipeline.toml (comments and layout kept), making it the default run.
    ///
    /// Only keys whose value differs are written; `coltrast run` afterwards finds every stage cached.
    /// Example: coltrast exp apply num_negatives=3
    Apply { name: String },
    /// Forget recorded experiments; `coltrast gc` then frees the artifacts only they referenced.
    ///
    /// Example: coltrast exp remove num_negatives=1 num_negatives=5
    Remove {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// The address to bind; anything but loopback is reachable from other machines.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port (0: any free port; the bound address is printed on stdout).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The environment variable that holds the API key [default: COLTRAST_API_KEY, if set].
    #[arg(long, value_name = "VAR")]
    api_key_env: Option<String>,
    /// Close a dynamic batch before its padded size (texts × longest) would pass this many tokens.
    #[arg(long, default_value_t = 16384, value_name = "N")]
    max_batch_tokens: usize,
    /// The longest a query waits to be batched with others (only while other requests are in flight).
    #[arg(long, default_value_t = 2, value_name = "MS")]
    max_batch_wait_ms: u64,
    /// The largest request body, bytes (413 past it).
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    body_limit: usize,
    /// A request that takes longer gets 503.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    request_timeout: u64,
    /// A client that has not sent its headers by then is disconnected.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    header_timeout: u64,
    /// How often to check artifacts/index/latest for a new index (0: never).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    watch_interval_ms: u64,
    /// Let ONNX Runtime's threads spin while idle (lower latency alone on a machine, worse on shared cores).
    #[arg(long)]
    ort_spin: bool,
    /// Log lines as text or as JSON (one object per line, access logs with their request id).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
struct QueryArgs {
    /// How many results [default: 5; ask: 3 chunks].
    #[arg(short, long)]
    k: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Re-score the top index.rerank_depth hits by late-interaction MaxSim.
    #[arg(long)]
    rerank: bool,
}

fn qopts(q: QueryArgs, project: Option<String>, default_k: usize) -> app::QueryOpts {
    app::QueryOpts { k: q.k.unwrap_or(default_k), json: q.json, rerank: q.rerank, project }
}

/// Logging to stderr. The server logs at info (its access log) with timestamps, as text or JSON lines.
fn init_logging(verbose: u8, serve: Option<LogFormat>) {
    let default = match (verbose, serve.is_some()) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    let filter =
        tracing_subscriber::EnvFilter::new(std::env::var("COLTRAST_LOG").unwrap_or_else(|_| default.to_string()));
    let _ = match serve {
        Some(LogFormat::Json) => {
            tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).try_init()
        }
        Some(LogFormat::Text) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .try_init(),
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .without_time()
            .try_init(),
    };
}

fn serve(common: &Common, a: ServeArgs) -> Result<(), Error> {
    let var = a.api_key_env.clone().unwrap_or_else(|| "COLTRAST_API_KEY".to_string());
    let api_key = match std::env::var(&var) {
        Ok(k) if !k.trim().is_empty() => Some(k.trim().to_string()),
        _ if a.api_key_env.is_some() => {
            return Err(Error::Usage(format!("--api-key-env {var}: the environment variable is not set or empty")))
        }
        _ => None,
    };
    let opts = crate::serve::ServeOptions {
        host: a.host,
        port: a.port,
        api_key,
        batch: crate::serve::BatchConfig {
            max_batch_tokens: a.max_batch_tokens.max(1),
            max_wait: std::time::Duration::from_millis(a.max_batch_wait_ms),
        },
        body_limit: a.body_limit,
        request_timeout: std::time::Duration::from_secs(a.request_timeout.max(1)),
        header_timeout: std::time::Duration::from_secs(a.header_timeout.max(1)),
        spin: a.ort_spin,
        watch_interval: (a.watch_interval_ms > 0).then(|| std::time::Duration::from_millis(a.watch_interval_ms)),
        ..Default::default()
    };
    app::serve(common, opts)
}

/// Parse the process's arguments and run the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.global.verbose, if let Command::Serve(a) = &cli.command { Some(a.log_format) } else { None });
    let common = Common { config: cli.global.config, sets: cli.global.sets };
    let mut stdout = std::io::stdout().lock();
    let result: Result<(), Error> = match cli.command {
        Command::Run { stages, force, verify, no_wait } => {
            app::run(&common, &RunOptions { targets: stages, force, verify, no_wait }).map(|_| ())
        }
        Command::Status => app::status(&common, &mut stdout).map(|_| ()),
        Command::Show { stage } => app::show(&common, &stage, &mut stdout),
        Command::Search { query, q, project } => app::search(&common, &query, &qopts(q, project, 5), &mut stdout),
        Command::Ask { question, q } => app::ask(&common, &question, &qopts(q, None, 3), &mut stdout),
        Command::Explore { keywords, q, project } => {
            app::explore(&common, &keywords, &qopts(q, project, 8), &mut stdout)
        }
        Command::Compare { query, q } => app::compare(&common, &query, &qopts(q, None, 5), &mut stdout),
        Command::Serve(a) => {
            drop(stdout);
            serve(&common, a)
        }
        Command::Report => app::report(&common, &mut stdout),
        Command::Gc { keep, dry_run, experiments } => {
            app::gc(&common, keep, dry_run, experiments == ExperimentsGc::Keep, &mut stdout).map(|_| ())
        }
        Command::Exp { command } => exp(&common, command, &mut stdout),
        Command::Worker {
            command:
                WorkerCommand::Embed { model, shard, output, threads, ort_library, engine, precision, openvino_library },
        } => {
            let defaults = crate::settings::Settings::default();
            let ort_library = ort_library.unwrap_or_else(|| defaults.ort_library_path());
            let library = openvino_library.unwrap_or_else(|| defaults.openvino_library_path());
            let engine = crate::embed::Engine::resolve(
                engine,
                precision,
                crate::settings::ModelDevice::Cpu,
                library,
                crate::embed::cpu_has_native_bf16(),
            );
            let args = crate::executor::worker::EmbedArgs { model, shard, output, threads, ort_library, engine };
            crate::executor::worker::run(&args).and_then(|line| {
                use std::io::Write;
                writeln!(stdout, "{line}").map_err(|e| Error::io("<stdout>", e))
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A run that must execute a libtorch stage, or a fingerprint only libtorch can compute (see
        // crate::backend): raised before anything is written or printed, so coltrast-torch redoes the command.
        Err(Error::NeedsTorch(why)) if !backend::available() => {
            tracing::info!("{why}: handing the command to {}", backend::TORCH_BINARY);
            fail(backend::exec_torch_binary())
        }
        Err(e) => fail(e),
    }
}

fn exp(common: &Common, command: ExpCommand, out: &mut dyn std::io::Write) -> Result<(), Error> {
    match command {
        ExpCommand::Run { name, verify, no_wait } => {
            app::exp_run(common, &crate::exp::RunOptions { name, verify, no_wait }, out)
        }
        ExpCommand::Show { metrics, sort, json, csv } => {
            let format = match (json, csv) {
                (true, _) => crate::exp::Format::Json,
                (_, true) => crate::exp::Format::Csv,
                _ => crate::exp::Format::Table,
            };
            app::exp_show(common, &crate::exp::ShowOptions { metrics, sort, format }, out)
        }
        ExpCommand::Plot { metric, by, output } => app::exp_plot(common, &metric, &by, output, out),
        ExpCommand::Diff { a, b, json } => app::exp_diff(common, &a, &b, json, out),
        ExpCommand::Apply { name } => app::exp_apply(common, &name, out),
        ExpCommand::Remove { names } => app::exp_remove(common, &names, out),
    }
}

/// Print an error as one line and map it to the exit code (a broken stdout pipe is not an error).
fn fail(e: Error) -> ExitCode {
    match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        e => {
            let mut line = format!("coltrast: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                let t = s.to_string();
                if !line.contains(&t) {
                    line.push_str(&format!(": {t}"));
                }
                src = s.source();
            }
            eprintln!("{line}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
