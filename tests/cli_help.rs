//! `--help` never shows a credential: every subcommand's help, in each of
//! its three forms (`--help`, `-h`, `help SUBCOMMAND`), with a
//! credential-looking value in the environment twin of every flag.

use std::{collections::BTreeSet, process::Command};

const BINARY: &str = env!("CARGO_BIN_EXE_outbound-webhooks");

/// The marker every planted value carries.
const SECRET: &str = "s3cr3t-pw";

fn help(path: &[String], form: &str, env: &[(String, String)]) -> String {
    let mut args: Vec<String> = Vec::new();
    if form == "help" {
        args.push("help".into());
        args.extend(path.iter().cloned());
    } else {
        args.extend(path.iter().cloned());
        args.push(form.into());
    }
    let out = Command::new(BINARY)
        .args(&args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("running outbound-webhooks");
    let text = outbound_webhooks_test_kit::printed(&out);
    assert!(
        out.status.success(),
        "outbound-webhooks {} failed:\n{text}",
        args.join(" ")
    );
    text
}

/// The subcommands listed under "Commands:" of a help text (but `help`).
fn subcommands(help_text: &str) -> Vec<String> {
    help_text
        .split("Commands:")
        .nth(1)
        .map(|rest| rest.split("\n\n").next().unwrap_or(""))
        .unwrap_or("")
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// Every `OUTBOUND_WEBHOOKS_*` (and `OTEL_*`) name a help text mentions.
fn env_names(help_text: &str) -> BTreeSet<String> {
    help_text
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split([']', '=']).next())
        .map(str::to_string)
        .collect()
}

/// Every command path (`[]`, `["dispatcher"]`, `["dead-letter", "list"]`, ...).
fn command_paths() -> Vec<Vec<String>> {
    let mut paths = vec![Vec::new()];
    let mut i = 0;
    while i < paths.len() {
        let path = paths[i].clone();
        for sub in subcommands(&help(&path, "--help", &[])) {
            let mut child = path.clone();
            child.push(sub);
            paths.push(child);
        }
        i += 1;
    }
    paths
}

#[test]
fn no_help_form_of_any_subcommand_shows_a_credential_from_the_environment() {
    let paths = command_paths();
    assert!(
        paths.iter().any(|p| p == &["dispatcher"]) && paths.iter().any(|p| p == &["dead-letter", "replay"]),
        "the walk found {paths:?}"
    );
    let mut names = BTreeSet::new();
    for path in &paths {
        names.extend(env_names(&help(path, "--help", &[])));
    }
    for flag in ["OUTBOUND_WEBHOOKS_REDIS_URL", "OUTBOUND_WEBHOOKS_PROXY"] {
        assert!(names.contains(flag), "{flag} not among {names:?}");
    }
    // A proxy- or Redis-URL-shaped value with a password, different per
    // variable so a hit names its flag.
    let env: Vec<(String, String)> = names
        .iter()
        .map(|name| (name.clone(), format!("http://user:{SECRET}-{name}@proxy.example:3128")))
        .collect();
    let mut checked = 0;
    for path in &paths {
        for form in ["--help", "-h", "help"] {
            if path.is_empty() && form == "help" {
                continue;
            }
            let text = help(path, form, &env);
            assert!(
                !text.contains(SECRET),
                "`outbound-webhooks {} {form}` shows a value from the environment:\n{text}",
                path.join(" ")
            );
            assert!(
                text.contains("[env: OUTBOUND_WEBHOOKS_") || subcommands(&text).len() > 1 || path.is_empty(),
                "`{} {form}` shows no flags:\n{text}",
                path.join(" ")
            );
            checked += 1;
        }
    }
    eprintln!(
        "{checked} help texts of {} commands, {} variables set",
        paths.len(),
        names.len()
    );
}
