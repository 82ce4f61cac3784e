//! The `outbound-webhooks` binary: one command, a subcommand per process.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Kustomer-style outbound webhooks for Kubernetes.
#[derive(Parser)]
#[command(name = "outbound-webhooks", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the OutboundWebhook CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller: signing secrets, the per-namespace limit and
    /// status conditions, with leader election.
    Controller(outbound_webhooks::controller::ControllerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Two TLS crypto providers are compiled in (kube's ring, reqwest's
    // aws-lc-rs); rustls refuses to guess, so choose one for the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Crd => match outbound_webhooks::crd_yaml::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Controller(args) => {
            outbound_webhooks::telemetry::init(args.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("error: starting the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(outbound_webhooks::controller::run(args));
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "controller stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
