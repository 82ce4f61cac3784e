//! The `outbound-webhooks` binary: one command, a subcommand per process.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use outbound_webhooks::{
    EventName,
    address_filter::AddressFilter,
    dispatcher,
    publish::{DEFAULT_PREFIX, NewEvent, publish},
    retry_schedule::{DEFAULT_RETRY_SCHEDULE, RetrySchedule, parse_duration},
    telemetry::{self, LogFormat},
};

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
    /// with busy neighbours does more per CPU second with fewer (see README
    /// "Performance").
    #[arg(long, global = true, env = "OUTBOUND_WEBHOOKS_WORKER_THREADS")]
    worker_threads: Option<std::num::NonZeroUsize>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct RedisArgs {
    /// Redis to use, e.g. redis://redis:6379.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_REDIS_URL")]
    redis_url: String,
    /// Prefix of every Redis key (keep a {hash tag} for Redis Cluster).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_REDIS_PREFIX", default_value = DEFAULT_PREFIX)]
    redis_prefix: String,
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

#[derive(Args)]
struct DispatcherArgs {
    /// Where /metrics, /healthz and /readyz listen.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    #[command(flatten)]
    redis: RedisArgs,
    /// Delays after attempts 1..N-1 (comma-separated, e.g. 30s,1m,1m30s or 50ms).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_RETRY_SCHEDULE", default_value = DEFAULT_RETRY_SCHEDULE)]
    retry_schedule: RetrySchedule,
    /// Comma-separated CIDRs that may be reached although not public (e.g. 127.0.0.0/8).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_ALLOW_DESTINATION_CIDR", default_value = "")]
    allow_destination_cidr: String,
    /// This replica's name in the consumer group; defaults to the host name.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_CONSUMER_NAME")]
    consumer_name: Option<String>,
    /// Attempts in flight at once on this replica.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_MAX_IN_FLIGHT", default_value_t = 256)]
    max_in_flight: usize,
    /// Attempts in flight at once per hook on this replica.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_MAX_IN_FLIGHT_PER_HOOK", default_value_t = 16)]
    max_in_flight_per_hook: usize,
    /// Lease of a claimed task; extended to the hook's timeout plus 5s when shorter.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_TASK_LEASE", default_value = "45s", value_parser = duration_arg)]
    task_lease: Duration,
    /// Stream entries pending this long on another (dead) consumer are reclaimed.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_RECLAIM_IDLE", default_value = "1m", value_parser = duration_arg)]
    reclaim_idle: Duration,
    /// Consumers holding nothing and idle this long are removed from the group.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_IDLE_CONSUMER_TIMEOUT", default_value = "1h", value_parser = duration_arg)]
    idle_consumer_timeout: Duration,
    /// Dead letters older than this are deleted.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_DEAD_LETTER_MAX_AGE", default_value = "168h", value_parser = duration_arg)]
    dead_letter_max_age: Duration,
    /// At most this many dead letters are kept (oldest go first).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_DEAD_LETTER_MAX_COUNT", default_value_t = 100_000)]
    dead_letter_max_count: usize,
    /// How often the stream and dead letters are trimmed.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_MAINTENANCE_INTERVAL", default_value = "10s", value_parser = duration_arg)]
    maintenance_interval: Duration,
    /// How often due tasks are polled when nothing wakes the claimer.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_POLL_INTERVAL", default_value = "100ms", value_parser = duration_arg)]
    poll_interval: Duration,
    /// Send deliveries through this proxy; proxy environment variables are ignored.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_PROXY")]
    proxy: Option<String>,
}

#[derive(Args)]
struct PublishArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// The org (namespace) whose hooks receive the event.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_ORG")]
    org: String,
    /// The trigger event name, e.g. kustomer.conversation.create.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_EVENT")]
    event: EventName,
    /// The data object (JSON).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_DATA")]
    data: String,
    /// The changes object (JSON).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_CHANGES")]
    changes: Option<String>,
    /// The event id; a new 24-hex id by default.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_ID")]
    id: Option<String>,
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// Lists dead letters, oldest first, one per line.
    List(DeadLetterArgs),
    /// Puts dead-lettered deliveries back for delivery (after re-enabling a hook).
    Replay(DeadLetterArgs),
}

#[derive(Args)]
struct DeadLetterArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// Only the dead letters of this hook (NAMESPACE/NAME).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_HOOK")]
    hook: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the OutboundWebhook CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller: signing secrets, the per-namespace limit and
    /// status conditions, with leader election.
    Controller(outbound_webhooks::controller::ControllerArgs),
    /// Deliver events from the Redis stream to the matching hooks.
    Dispatcher(Box<DispatcherArgs>),
    /// Append one event to the Redis stream.
    Publish(PublishArgs),
    /// Show or replay dead letters.
    #[command(subcommand)]
    DeadLetter(DeadLetterCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let worker_threads = cli.worker_threads;
    // kube and reqwest both link rustls; with more than one crypto provider
    // compiled in, rustls needs the process-wide choice made explicitly.
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
    match cli.command {
        Command::Crd => match outbound_webhooks::crd_yaml::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Controller(mut args) => {
            telemetry::init(cli.log_format);
            args.exit_on_stdin_close = cli.exit_on_stdin_close;
            let runtime = runtime_with(worker_threads);
            let result = runtime.block_on(outbound_webhooks::controller::run(args));
            runtime.shutdown_timeout(Duration::from_secs(1));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "controller stopped");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Dispatcher(args) => {
            telemetry::init(cli.log_format);
            runtime_with(worker_threads).block_on(run_dispatcher(*args))
        }
        Command::Publish(args) => runtime_with(worker_threads).block_on(run_publish(args)),
        Command::DeadLetter(cmd) => runtime_with(worker_threads).block_on(run_dead_letter(cmd)),
    }
}

fn runtime_with(worker_threads: Option<std::num::NonZeroUsize>) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        builder.worker_threads(n.get());
    }
    builder.enable_all().build().expect("building the tokio runtime")
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "dispatcher".to_string())
}

async fn run_dispatcher(args: DispatcherArgs) -> ExitCode {
    let cidrs = match AddressFilter::parse_list(&args.allow_destination_cidr) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let config = dispatcher::Config {
        http_addr: args.http_addr,
        redis_url: args.redis.redis_url,
        redis_prefix: args.redis.redis_prefix,
        retry_schedule: args.retry_schedule,
        allow_destination_cidrs: cidrs,
        consumer_name: args.consumer_name.unwrap_or_else(host_name),
        max_in_flight: args.max_in_flight.max(1),
        max_in_flight_per_hook: args.max_in_flight_per_hook.max(1),
        task_lease: args.task_lease,
        reclaim_idle: args.reclaim_idle,
        idle_consumer_timeout: args.idle_consumer_timeout,
        dead_letter_max_age: args.dead_letter_max_age,
        dead_letter_max_count: args.dead_letter_max_count,
        maintenance_interval: args.maintenance_interval,
        poll_interval: args.poll_interval,
        proxy: args.proxy,
    };
    match dispatcher::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "dispatcher failed");
            ExitCode::FAILURE
        }
    }
}

async fn run_publish(args: PublishArgs) -> ExitCode {
    let mut event = match NewEvent::from_json_text(&args.org, args.event, &args.data) {
        Ok(e) => e,
        Err(e) => return fail(format!("--data: {e}")),
    };
    if let Some(changes) = args.changes {
        event = match event.with_changes_text(&changes) {
            Ok(e) => e,
            Err(e) => return fail(format!("--changes: {e}")),
        };
    }
    event.id = args.id;
    let client = match redis::Client::open(args.redis.redis_url.as_str()) {
        Ok(c) => c,
        Err(e) => return fail(format!("parsing --redis-url: {e}")),
    };
    let mut conn = match client.get_multiplexed_async_connection().await {
        Ok(c) => c,
        Err(e) => return fail(format!("connecting to Redis: {e}")),
    };
    match publish(&mut conn, &args.redis.redis_prefix, &event).await {
        Ok(p) => {
            println!("{} {}", p.event_id, p.entry_id);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

async fn run_dead_letter(cmd: DeadLetterCommand) -> ExitCode {
    let (args, replay) = match cmd {
        DeadLetterCommand::List(a) => (a, false),
        DeadLetterCommand::Replay(a) => (a, true),
    };
    let store = match dispatcher::store::Store::connect(&args.redis.redis_url, &args.redis.redis_prefix).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let letters = match store.dead_letters().await {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let now = jiff::Timestamp::now().as_millisecond();
    let mut replayed = 0;
    for letter in letters {
        let hook = letter.text("hook");
        if args.hook.as_ref().is_some_and(|h| *h != hook) {
            continue;
        }
        if !replay {
            let hook = if hook.is_empty() { "-".to_string() } else { hook };
            let event_id = letter.text("event_id");
            let event_id = if event_id.is_empty() { "-".to_string() } else { event_id };
            let event = letter.text("event");
            let event = if event.is_empty() {
                letter.text("entry.name")
            } else {
                event
            };
            println!(
                "{}\t{}\t{}\t{}\t{}",
                letter.id,
                hook,
                event_id,
                if event.is_empty() { "-" } else { &event },
                letter.text("reason")
            );
            continue;
        }
        if hook.is_empty() || letter.text("uid").is_empty() {
            // A malformed entry: nothing to deliver it to.
            continue;
        }
        if let Err(e) = store.replay(&letter, now).await {
            return fail(e);
        }
        replayed += 1;
    }
    if replay {
        println!("replayed {replayed} dead letter(s)");
    }
    ExitCode::SUCCESS
}
