//! The `lagbudget` command: parse arguments, load and validate the config before binding
//! anything, then run until SIGTERM/SIGINT. All behaviour lives in the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use lagbudget::generate::rules::{self, RulesFormat, RulesOptions};
use lagbudget::model::Config;
use lagbudget::{config, oneshot};

/// Exit code for a config that does not validate (clap uses 2 for usage errors too).
const EXIT_INVALID_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "lagbudget",
    version,
    about = "Consistency budgets: true lag behind eventually consistent views, against a budget."
)]
struct Cli {
    /// Log format.
    #[arg(long = "log.format", global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (tracing-subscriber `EnvFilter` syntax), e.g. `info` or `lagbudget=debug`.
    #[arg(
        long = "log.level",
        global = true,
        default_value = "info",
        env = "LAGBUDGET_LOG"
    )]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: probe every budget, serve /metrics, the API and the status page.
    Run {
        #[arg(short, long)]
        config: PathBuf,
        /// Listen address; overrides `listen:` in the config.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Serve `POST /-/reload` (as Prometheus' flag of the same name).
        #[arg(long = "web.enable-lifecycle")]
        enable_lifecycle: bool,
    },
    /// Validate a config and print every error; exit 2 if any.
    Check {
        #[arg(short, long)]
        config: PathBuf,
        /// Also connect to every source and prepare every probe's queries.
        #[arg(long)]
        connect: bool,
        /// Time allowed per source or probe with --connect.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Run each probe once and print a table.
    Probe {
        #[arg(short, long)]
        config: PathBuf,
        /// Only the probes of this budget.
        #[arg(long)]
        budget: Option<String>,
    },
    /// Print the JSON Schema of the config file (for editor completion).
    Schema,
    /// Print or write the Prometheus alert and recording rules (docs/src/alerts-and-dashboards.md,
    /// with a runbook per alert in docs/src/runbooks/).
    ///
    /// The rules name no budget, so a budget added by a config reload is covered at once and
    /// no config is needed to generate them.
    // Boxed: its many options would make every other command as large.
    Rules(Box<RulesArgs>),
    /// Write the Grafana dashboards (overview, per-budget drill-down) and a provisioning file.
    Dashboards {
        /// Directory to write the files into (created if missing); without it, list them.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Run on an embedded mock Kafka cluster with demo consumer groups: no setup, not real data.
    Demo {
        /// Listen address of the status page, /metrics and the API.
        #[arg(long, default_value = lagbudget::demo::DEFAULT_LISTEN)]
        listen: SocketAddr,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    config::parse_duration(text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Schema => {
            print!("{}", config::json_schema_string());
            ExitCode::SUCCESS
        }
        Command::Rules(args) => rules_command(*args),
        Command::Dashboards { output: None } => {
            for file in lagbudget::generate::dashboards::render() {
                println!("{:<28} {:>7} bytes", file.name, file.contents.len());
            }
            println!("write them with: lagbudget dashboards -o DIR");
            ExitCode::SUCCESS
        }
        Command::Dashboards { output: Some(dir) } => {
            match lagbudget::generate::dashboards::write_files(&dir) {
                Ok(paths) => {
                    for path in paths {
                        println!("wrote {}", path.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(anyhow::anyhow!(
                    "writing dashboards to {}: {e}",
                    dir.display()
                )),
            }
        }
        Command::Check {
            config: path,
            connect,
            timeout,
        } => {
            let Some(config) = load_or_report(&path) else {
                return ExitCode::from(EXIT_INVALID_CONFIG);
            };
            if !source_clients_build(&config, &path) {
                return ExitCode::from(EXIT_INVALID_CONFIG);
            }
            let probes: usize = config.budgets.iter().map(|b| b.probes.len()).sum();
            println!(
                "{}: valid ({} sources, {} budgets, {} probes)",
                path.display(),
                config.sources.len(),
                config.budgets.len(),
                probes
            );
            if !connect {
                return ExitCode::SUCCESS;
            }
            match block_on(check_connect(&config, timeout)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => fail(e),
            }
        }
        Command::Probe {
            config: path,
            budget,
        } => {
            let Some(config) = load_or_report(&path) else {
                return ExitCode::from(EXIT_INVALID_CONFIG);
            };
            if let Some(name) = &budget {
                if !config.budgets.iter().any(|b| &b.name == name) {
                    eprintln!("no budget named {name:?} in {}", path.display());
                    return ExitCode::from(EXIT_INVALID_CONFIG);
                }
            }
            match block_on(async { oneshot::run_probes_once(&config, budget.as_deref()).await }) {
                Ok(Ok(results)) => {
                    print!("{}", oneshot::format_table(&results));
                    if results.iter().all(|r| r.result.is_ok()) {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Ok(Err(e)) => fail(anyhow::anyhow!("{e}")),
                Err(e) => fail(e),
            }
        }
        Command::Demo { listen } => {
            let demo = async {
                let shutdown = CancellationToken::new();
                tokio::spawn(stop_on_signal(shutdown.clone()));
                lagbudget::demo::run_demo(listen, shutdown).await
            };
            match block_on(demo) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) | Err(e) => fail(e),
            }
        }
        Command::Run {
            config: path,
            listen,
            enable_lifecycle,
        } => {
            let Some(config) = load_or_report(&path) else {
                return ExitCode::from(EXIT_INVALID_CONFIG);
            };
            if !source_clients_build(&config, &path) {
                return ExitCode::from(EXIT_INVALID_CONFIG);
            }
            match block_on(run(config, path, listen, enable_lifecycle)) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) | Err(e) => fail(e),
            }
        }
    }
}

/// Options of `lagbudget rules`; the defaults are `RulesOptions::default()`, which the
/// committed `alerts/lagbudget.rules.yaml` is generated with (a test compares the two).
#[derive(clap::Args)]
struct RulesArgs {
    /// A config to load first, only to prove that it loads (exit 2 if not). The rules name no
    /// budget, so nothing is taken from it.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Write DIR/lagbudget.rules.yaml (or lagbudget.prometheusrule.yaml) instead of printing.
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// A Prometheus rule file, or a Kubernetes PrometheusRule for the Prometheus Operator.
    #[arg(long, value_enum, default_value_t = RulesFormat::Prometheus)]
    format: RulesFormat,
    /// PromQL label matchers selecting the daemon's scrape job, without braces.
    #[arg(long, default_value = r#"job="lagbudget""#)]
    job_selector: String,
    /// Grafana's base URL, for the dashboard_url annotation.
    #[arg(long, default_value = "http://grafana:3000", value_name = "URL")]
    dashboard_url_base: String,
    /// Where the runbooks are, for the runbook_url annotation of an alert whose budget has no
    /// runbook_url of its own: BASE/AlertName. The default is the daemon itself, under the
    /// deploy manifests' service name, which serves every runbook at /runbooks/AlertName.
    #[arg(long, default_value = rules::DEFAULT_RUNBOOK_URL_BASE, value_name = "URL")]
    runbook_url_base: String,
    /// `for` of ConsistencyBudgetExceeded (each budget's own patience is its breach_after).
    #[arg(long, default_value = "1m", value_parser = parse_duration, value_name = "DURATION")]
    exceeded_for: Duration,
    /// `keep_firing_for` of ConsistencyBudgetExceeded, so a flapping probe does not page twice.
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    keep_firing_for: Duration,
    /// `for` of ConsistencyBudgetAtRisk.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    at_risk_for: Duration,
    /// `for` of ConsistencyLagUnknown (a probe is stale after 3 intervals already).
    #[arg(long, default_value = "2m", value_parser = parse_duration, value_name = "DURATION")]
    unknown_for: Duration,
    /// `for` of ConsistencyFeedStalled.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    stalled_for: Duration,
    /// `for` of ConsistencyMonotonicReadsViolated (its share is already over the last hour).
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    monotonic_for: Duration,
    /// `for` of ConsistencyReconcileMismatches (its mismatches are already older than max_lag).
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    mismatches_for: Duration,
    /// `for` of LagbudgetDown.
    #[arg(long, default_value = "2m", value_parser = parse_duration, value_name = "DURATION")]
    down_for: Duration,
    /// `for` of LagbudgetConfigReloadFailed.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    reload_failed_for: Duration,
}

fn rules_command(args: RulesArgs) -> ExitCode {
    if let Some(path) = &args.config {
        if load_or_report(path).is_none() {
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    }
    let options = RulesOptions {
        job_selector: args.job_selector,
        dashboard_url_base: args.dashboard_url_base,
        runbook_url_base: args.runbook_url_base,
        exceeded_for: args.exceeded_for,
        keep_firing_for: args.keep_firing_for,
        at_risk_for: args.at_risk_for,
        unknown_for: args.unknown_for,
        stalled_for: args.stalled_for,
        monotonic_for: args.monotonic_for,
        mismatches_for: args.mismatches_for,
        down_for: args.down_for,
        reload_failed_for: args.reload_failed_for,
    };
    if let Err(e) = options.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_INVALID_CONFIG);
    }
    let text = rules::render(&options, args.format);
    let Some(dir) = args.output else {
        print!("{text}");
        return ExitCode::SUCCESS;
    };
    let path = dir.join(args.format.file_name());
    let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text));
    match written {
        Ok(()) => {
            println!("wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(anyhow::anyhow!("writing {}: {e}", path.display())),
    }
}

fn fail(error: anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    ExitCode::FAILURE
}

/// Loads the config, printing every error (already free of secrets) if it does not validate.
fn load_or_report(path: &Path) -> Option<Config> {
    match config::load(path) {
        Ok(config) => Some(config),
        Err(errors) => {
            eprint!("{errors}");
            if !errors.to_string().ends_with('\n') {
                eprintln!();
            }
            let n = errors.0.len();
            eprintln!(
                "{}: {n} error{} in config",
                path.display(),
                if n == 1 { "" } else { "s" }
            );
            None
        }
    }
}

/// Builds every source's client, which connects to nothing but lets client libraries check what
/// the loader cannot (librdkafka property names and values). Prints each failure, already
/// free of secrets; true when all built.
fn source_clients_build(config: &Config, path: &Path) -> bool {
    let mut ok = true;
    for source in config.sources.values() {
        if let Err(e) = lagbudget::probe::SourceHandle::new(source) {
            ok = false;
            eprintln!("{}: {}", path.display(), config.secrets.scrub(&e.message));
        }
    }
    ok
}

fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(runtime.block_on(future))
}

/// Prints one line per source and probe; true when all of them succeeded.
async fn check_connect(config: &Config, timeout: Duration) -> bool {
    let reports = oneshot::check_connections(config, timeout).await;
    let mut all_ok = true;
    for report in &reports {
        match &report.result {
            Ok(detail) => println!("ok    {}: {detail}", report.what),
            Err(e) => {
                all_ok = false;
                println!("FAIL  {}: {e}", report.what);
            }
        }
    }
    all_ok
}

async fn run(
    config: Config,
    path: PathBuf,
    listen: Option<SocketAddr>,
    enable_lifecycle: bool,
) -> anyhow::Result<()> {
    let address = listen.unwrap_or(config.listen);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    tracing::info!(address = %listener.local_addr()?, "listening");
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let loader_path = path.clone();
    let settings = lagbudget::RunSettings {
        config,
        loader: Some(Arc::new(move || config::load(&loader_path))),
        enable_lifecycle,
        reload_on_sighup: true,
    };
    lagbudget::run(settings, listener, shutdown).await
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            tracing::error!("cannot listen for SIGTERM");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.cancel();
}

fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    // A bare level applies to lagbudget itself; libraries stay at `warn` unless named, because
    // their debug output (query texts, connection chatter) is not ours to vouch for.
    let directives = if level.contains('=') || level.contains(',') {
        level.to_owned()
    } else {
        format!("warn,lagbudget={level}")
    };
    // aws-sigv4 traces the access key ID and the session token of every request it signs: they
    // are secrets, so its logs are off whatever the level says.
    let filter = match EnvFilter::try_new(&directives)
        .and_then(|filter| Ok(filter.add_directive("aws_sigv4=off".parse()?)))
    {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("error: invalid --log.level {level:?}: {e}");
            std::process::exit(i32::from(EXIT_INVALID_CONFIG));
        }
    };
    // Colours only for a person at a terminal, not for journald or `docker logs`.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
