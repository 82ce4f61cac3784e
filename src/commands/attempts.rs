//! `outbound-webhooks attempts --hook NS/NAME`: the hook's attempts log,
//! newest first, as a table for people or JSON for scripts.

use std::io::Write;

use crate::{
    commands::{CommandError, hook_uid},
    dispatcher::attempt::attempts_log::AttemptRecord,
    store::connection::args::RedisArgs,
    store::{Shards, WhenUnstored},
};

/// How `attempts` prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns.
    Table,
    /// A JSON array of objects.
    Json,
}

/// Flags of `outbound-webhooks attempts`.
#[derive(clap::Args, Clone, Debug)]
pub struct AttemptsArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// The hook (NAMESPACE/NAME).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_HOOK")]
    hook: String,
    /// Most attempts shown (the newest).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_LIMIT", default_value_t = 20)]
    limit: usize,
    /// Output format.
    #[arg(short = 'o', long, env = "OUTBOUND_WEBHOOKS_OUTPUT", value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

/// RFC 3339 in UTC, whole seconds.
fn time(ms: i64, precision: &str) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime(precision).to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// The table: a header and one line per record, columns aligned, ERROR last.
pub fn table(records: &[AttemptRecord]) -> String {
    let header = ["TIME", "EVENT", "NAME", "ATTEMPT", "OUTCOME", "CODE", "MS", "ERROR"].map(str::to_string);
    let rows: Vec<[String; 8]> = records
        .iter()
        .map(|r| {
            [
                time(r.at_ms, "%Y-%m-%dT%H:%M:%SZ"),
                r.event_id.clone(),
                r.event.clone(),
                r.attempt.to_string(),
                r.outcome.as_str().to_string(),
                r.code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                r.duration_ms.to_string(),
                r.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The JSON: an array of objects, newest first.
pub fn json(records: &[AttemptRecord]) -> String {
    let items: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            serde_json::json!({
                "time": time(r.at_ms, "%Y-%m-%dT%H:%M:%S%.3fZ"),
                "eventId": r.event_id,
                "eventName": r.event,
                "attempt": r.attempt,
                "outcome": r.outcome.as_str(),
                "code": r.code,
                "durationMs": r.duration_ms,
                "error": r.error,
                "traceId": r.trace_id,
            })
        })
        .collect();
    serde_json::to_string_pretty(&items).expect("JSON values serialize")
}

/// Resolves the hook's UID through Kubernetes, reads its log from its
/// org's shard and prints it to `out`.
pub async fn run(args: AttemptsArgs, out: &mut impl Write) -> Result<(), CommandError> {
    let Some((namespace, name)) = args.hook.split_once('/') else {
        return Err(CommandError(format!("--hook {:?}: expected NAMESPACE/NAME", args.hook)));
    };
    let client = kube::Client::try_default().await.map_err(|e| {
        CommandError::context(
            "attempts resolves the hook through Kubernetes (in-cluster or KUBECONFIG)",
            e,
        )
    })?;
    let Some(uid) = hook_uid(&client, namespace, name).await? else {
        return Err(CommandError(format!(
            "no OutboundWebhook {namespace}/{name} exists (kubectl get owh -n {namespace})"
        )));
    };
    let target = args.redis.target().map_err(|e| CommandError(e.to_string()))?;
    let shards = Shards::connect_as_stored(&target, &args.redis.redis_prefix, WhenUnstored::OneShard)
        .await
        .map_err(|e| CommandError(e.to_string()))?;
    let records = shards
        .for_org(namespace)
        .attempts(&uid, args.limit)
        .await
        .map_err(|e| CommandError(e.to_string()))?;
    let text = match args.output {
        OutputFormat::Json => format!("{}\n", json(&records)),
        OutputFormat::Table if records.is_empty() => {
            format!("no attempts recorded for OutboundWebhook {namespace}/{name} (uid {uid})\n")
        }
        OutputFormat::Table => table(&records),
    };
    out.write_all(text.as_bytes())
        .map_err(|e| CommandError::context("writing the output", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatcher::attempt::attempts_log::AttemptKind;

    fn record(n: u32, outcome: AttemptKind, code: Option<u16>, error: Option<&str>) -> AttemptRecord {
        AttemptRecord {
            at_ms: 1_795_773_600_000 + i64::from(n) * 1000 + 456,
            event_id: format!("evt{n}"),
            event: "kustomer.conversation.create".into(),
            attempt: n,
            outcome,
            code,
            duration_ms: u64::from(n) * 10,
            error: error.map(str::to_string),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        }
    }

    #[test]
    fn the_table_aligns_columns_and_puts_the_error_last() {
        let records = [
            record(
                2,
                AttemptKind::Failed,
                Some(500),
                Some("HTTP 500 Internal Server Error"),
            ),
            record(1, AttemptKind::Delivered, Some(200), None),
            record(12, AttemptKind::Timeout, None, Some("no response within 10s")),
        ];
        assert_eq!(
            table(&records),
            "\
TIME                   EVENT   NAME                           ATTEMPT   OUTCOME     CODE   MS    ERROR
2026-11-27T10:00:02Z   evt2    kustomer.conversation.create   2         failed      500    20    HTTP 500 Internal Server Error
2026-11-27T10:00:01Z   evt1    kustomer.conversation.create   1         delivered   200    10
2026-11-27T10:00:12Z   evt12   kustomer.conversation.create   12        timeout     -      120   no response within 10s
"
        );
    }

    #[test]
    fn the_json_is_an_array_of_objects_for_scripts() {
        let records = [record(
            1,
            AttemptKind::RefusedAddress,
            None,
            Some("refused destination: loopback"),
        )];
        let parsed: serde_json::Value = serde_json::from_str(&json(&records)).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!([{
                "time": "2026-11-27T10:00:01.456Z",
                "eventId": "evt1",
                "eventName": "kustomer.conversation.create",
                "attempt": 1,
                "outcome": "refused_address",
                "code": null,
                "durationMs": 10,
                "error": "refused destination: loopback",
                "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
            }])
        );
        assert_eq!(json(&[]), "[]");
    }
}
