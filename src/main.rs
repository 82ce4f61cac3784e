//! The `outbound-webhooks` binary: parses the command line and hands each
//! subcommand to the library.

use std::{process::ExitCode, time::Duration};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use outbound_webhooks::{
    commands::{self, attempts::AttemptsArgs, dead_letter::DeadLetterCommand, publish::PublishArgs},
    controller::ControllerArgs,
    dispatcher::DispatcherArgs,
    plumbing::telemetry::{self, LogFormat},
};

// Every request allocates and frees buffers, headers and futures on both
// worker threads; mimalloc's thread-local free lists make that cheaper than
// glibc's arenas and avoid their consolidation pauses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kustomer-style outbound webhooks for Kubernetes.
#[derive(Parser)]
#[command(name = "outbound-webhooks", version, about)]
struct Cli {
    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "OUTBOUND_WEBHOOKS_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,

    /// Stop when standard input closes (lets a supervising process, such as
    /// a test, take this one down with it).
    #[arg(long, global = true, hide = true, env = "OUTBOUND_WEBHOOKS_EXIT_ON_STDIN_CLOSE")]
    exit_on_stdin_close: bool,

    /// Threads running the process's work; default one per available core
    /// (the container's CPU limit counts). A dispatcher sharing a small node
    /// with busy neighbours does more per CPU second with fewer (see
    /// docs/src/performance.md#sizing).
    #[arg(long, global = true, env = "OUTBOUND_WEBHOOKS_WORKER_THREADS")]
    worker_threads: Option<std::num::NonZeroUsize>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the OutboundWebhook CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller: signing secrets, the per-namespace limit and
    /// status conditions, with leader election.
    Controller(ControllerArgs),
    /// Deliver events from the Redis stream to the matching hooks.
    Dispatcher(Box<DispatcherArgs>),
    /// Append one event to the Redis stream.
    Publish(PublishArgs),
    /// Show or replay dead letters.
    #[command(subcommand)]
    DeadLetter(DeadLetterCommand),
    /// Show a hook's attempts log, newest first.
    Attempts(AttemptsArgs),
}

/// Hides the environment value of every flag of `command` and its
/// subcommands from `--help`: any flag may carry a credential (a proxy or
/// Redis URL with a password), and a list kept flag by flag would miss the
/// next one.
fn hide_env_values(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| arg.hide_env_values(true))
        .mut_subcommands(hide_env_values)
}

fn main() -> ExitCode {
    let matches = hide_env_values(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // rustls needs the process-wide provider chosen explicitly when more
    // than one could be compiled in (ring is the crate's one: kube and the
    // dispatcher's client use it).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The controller shuts down gracefully (releasing its Lease) on its own;
    // every other command simply exits.
    if cli.exit_on_stdin_close && !matches!(cli.command, Command::Controller(_)) {
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            std::process::exit(0);
        });
    }
    let runtime = || runtime_with(cli.worker_threads);
    match cli.command {
        Command::Crd => match outbound_webhooks::contract::crd_yaml::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Controller(mut args) => {
            telemetry::init(cli.log_format);
            args.exit_on_stdin_close = cli.exit_on_stdin_close;
            let runtime = runtime();
            let result = runtime.block_on(outbound_webhooks::controller::run(args));
            runtime.shutdown_timeout(Duration::from_secs(1));
            logged("controller stopped", result)
        }
        Command::Dispatcher(args) => {
            telemetry::init(cli.log_format);
            let config = match args.into_config() {
                Ok(config) => config,
                Err(e) => return fail(e),
            };
            logged(
                "dispatcher failed",
                runtime().block_on(outbound_webhooks::dispatcher::run(config)),
            )
        }
        Command::Publish(args) => match runtime().block_on(commands::publish::run(args)) {
            Ok(p) => {
                if p.possibly_duplicated {
                    eprintln!(
                        "warning: appended after {} attempts; one whose connection broke may have landed too, so event {} may be in the stream twice (receivers deduplicate by webhook-id)",
                        p.attempts, p.event_id
                    );
                }
                println!("{} {}", p.event_id, p.entry_id);
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::DeadLetter(command) => {
            match runtime().block_on(commands::dead_letter::run(command, &mut std::io::stdout())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Attempts(args) => match runtime().block_on(commands::attempts::run(args, &mut std::io::stdout())) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
    }
}

fn runtime_with(worker_threads: Option<std::num::NonZeroUsize>) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        builder.worker_threads(n.get());
    }
    builder.enable_all().build().expect("building the tokio runtime")
}

/// A long-running process's end: its error goes to the log.
fn logged(what: &str, result: Result<(), impl std::fmt::Display>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{what}");
            ExitCode::FAILURE
        }
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}
