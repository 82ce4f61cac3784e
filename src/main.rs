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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    }
}
