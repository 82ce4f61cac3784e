//! The chart's alerts and dashboard: the PrometheusRule as rendered passes
//! `promtool check rules` and the unit tests of
//! `tests/fixtures/alerts-test.yaml` (one or more cases per alert, firing
//! and not), its thresholds come from values, the dashboard ConfigMap
//! carries `files/dashboard.json` for the Grafana sidecar, and every metric
//! the dashboard and the alerts query is one the real controller and
//! dispatcher export (scraped after a delivery, failures and a turn-off).

use outbound_webhooks_test_kit as support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::Ordering,
    time::Duration,
};

use outbound_webhooks::contract::conditions::ready;
use serde_json::{Value, json};
use support::{
    cluster::tools_bin_dir,
    controller::{ControllerProcess, unique_lease},
    delivery_test::DeliveryTest,
    helm::{documents, template},
    hooks::{hook_yaml, wait_active, wait_not_ready},
    kubectl::apply_ok,
    read_repo_file,
    receiver::Receiver,
    unique_suffix, wait_for,
};

/// The promtool unit tests; they expect the release `owh` in `owh-system`.
const ALERT_TESTS: &str = "tests/fixtures/alerts-test.yaml";
const DASHBOARD: &str = "charts/outbound-webhooks/files/dashboard.json";

/// Series Prometheus makes itself, not the binaries.
const PROMETHEUS_GENERATED: &[&str] = &["up"];

/// Exported metric families the dashboard does not show (none today).
const NOT_ON_THE_DASHBOARD: &[&str] = &[];

/// The rendered PrometheusRule (release `owh` in `owh-system`, `extra` values).
fn prometheus_rule(extra: &[&str]) -> Value {
    let mut args = vec!["--set", "prometheusRule.enabled=true"];
    args.extend_from_slice(extra);
    let manifests = template("owh", "owh-system", &args);
    let mut rules: Vec<Value> = documents(&manifests)
        .into_iter()
        .filter(|d| d["kind"] == "PrometheusRule")
        .collect();
    assert_eq!(rules.len(), 1, "one PrometheusRule rendered:\n{manifests}");
    rules.remove(0)
}

/// The alerting rules of a PrometheusRule.
fn alert_rules(rule: &Value) -> Vec<Value> {
    rule["spec"]["groups"]
        .as_array()
        .expect("spec.groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter(|r| r.get("alert").is_some())
        .collect()
}

/// The rendered rule by alert name.
fn alert<'a>(rules: &'a [Value], name: &str) -> Option<&'a Value> {
    rules.iter().find(|r| r["alert"] == name)
}

/// The built promtool; a missing one fails with how to build it.
fn promtool() -> PathBuf {
    let path = tools_bin_dir().join("promtool");
    assert!(
        path.exists(),
        "promtool is not installed in {}: run scripts/install-tools.sh (it builds it once)",
        tools_bin_dir().display()
    );
    path
}

/// Runs promtool with `args` in `dir`; fails the test unless it succeeds.
fn run_promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running promtool");
    let text = support::printed(&out);
    assert!(out.status.success(), "promtool {} failed:\n{text}", args.join(" "));
    text
}

/// Writes the PrometheusRule's groups as a Prometheus rules file in `dir`
/// and checks it with `promtool check rules`.
fn write_and_check_rules(dir: &Path, rule: &Value) {
    let groups = json!({"groups": rule["spec"]["groups"]});
    let yaml = serde_yaml_ng::to_string(&groups).expect("rendering YAML");
    std::fs::write(dir.join("rules.yaml"), yaml).expect("writing rules.yaml");
    let out = run_promtool(dir, &["check", "rules", "rules.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn the_rendered_alerts_pass_promtool_check_and_one_unit_test_per_alert() {
    let rule = prometheus_rule(&[]);
    let rules = alert_rules(&rule);
    let dir = tempfile::tempdir().expect("a temp dir");
    write_and_check_rules(dir.path(), &rule);

    // Every alert tells on-call how bad it is and what to do.
    for r in &rules {
        let name = r["alert"].as_str().unwrap_or_default();
        assert!(r["labels"]["severity"].is_string(), "{name}: no severity");
        for annotation in ["summary", "description"] {
            assert!(
                r["annotations"][annotation].as_str().is_some_and(|a| a.len() > 20),
                "{name}: no {annotation}"
            );
        }
    }

    // Each alert has a case that fires and one that does not.
    let tests: Value = serde_yaml_ng::from_str(&read_repo_file(ALERT_TESTS)).expect("the alert tests are YAML");
    let cases: Vec<&Value> = tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .collect();
    let mut untested = Vec::new();
    for r in &rules {
        let name = r["alert"].as_str().unwrap_or_default();
        let of_it: Vec<&&Value> = cases.iter().filter(|c| c["alertname"] == name).collect();
        let fires = of_it
            .iter()
            .any(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()));
        let quiet = of_it
            .iter()
            .any(|c| c["exp_alerts"].as_array().is_some_and(|a| a.is_empty()));
        if !(fires && quiet) {
            untested.push(format!("{name} (fires: {fires}, stays quiet: {quiet})"));
        }
    }
    assert!(
        untested.is_empty(),
        "{ALERT_TESTS} lacks cases for: {}",
        untested.join(", ")
    );

    std::fs::copy(
        support::repo_root().join(ALERT_TESTS),
        dir.path().join("alerts-test.yaml"),
    )
    .expect("copying the alert tests");
    let out = run_promtool(dir.path(), &["test", "rules", "alerts-test.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alert_thresholds_durations_and_labels_come_from_values() {
    let rule = prometheus_rule(&[
        "--set",
        "prometheusRule.alerts.hookFailing.for=30m",
        "--set",
        "prometheusRule.alerts.streamLagGrowing.threshold=5000",
        "--set",
        "prometheusRule.alerts.streamLagGrowing.window=30m",
        "--set",
        "prometheusRule.alerts.dispatcherAbsent.severity=page",
        "--set",
        "prometheusRule.alerts.hookTurnedOff.enabled=false",
        "--set",
        "prometheusRule.alerts.eventsDropped.ignoreReasons=null",
        "--set",
        "prometheusRule.alertLabels.team=platform",
        "--set",
        "prometheusRule.labels.release=prometheus",
        "--set",
        "prometheusRule.dispatcherSelector=job=\"webhooks\"",
    ]);
    let rules = alert_rules(&rule);
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let failing = alert(&rules, "OutboundWebhookFailing").expect("OutboundWebhookFailing");
    assert_eq!(failing["for"], "30m");
    assert!(
        failing["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.ends_with("for more than 30m")),
        "{failing}"
    );
    let lag = alert(&rules, "OutboundWebhooksStreamLagGrowing").expect("OutboundWebhooksStreamLagGrowing");
    let expr = lag["expr"].as_str().unwrap_or_default();
    assert!(
        expr.contains("outbound_webhooks_stream_lag{job=\"webhooks\"}) > 5000") && expr.contains("[30m]"),
        "{expr}"
    );
    assert_eq!(
        alert(&rules, "OutboundWebhooksDispatcherAbsent").expect("absent")["labels"]["severity"],
        "page"
    );
    assert!(alert(&rules, "OutboundWebhookTurnedOff").is_none(), "turned off");
    let dropped = alert(&rules, "OutboundWebhooksEventsDropped").expect("OutboundWebhooksEventsDropped");
    assert!(
        !dropped["expr"].as_str().unwrap_or_default().contains("reason!~"),
        "{dropped}"
    );
    for r in &rules {
        assert_eq!(r["labels"]["team"], "platform", "{r}");
    }
    // Still valid rules.
    let dir = tempfile::tempdir().expect("a temp dir");
    write_and_check_rules(dir.path(), &rule);

    // Off by default.
    let defaults = template("owh", "owh-system", &[]);
    for kind in ["PrometheusRule", "ConfigMap"] {
        assert!(
            !defaults.contains(&format!("kind: {kind}\n")),
            "a {kind} is rendered by default"
        );
    }
}

#[test]
fn the_dashboard_configmap_carries_the_json_for_the_grafana_sidecar() {
    let manifests = template(
        "owh",
        "owh-system",
        &[
            "--set",
            "dashboard.enabled=true",
            "--set",
            "dashboard.namespace=monitoring",
            "--set",
            "dashboard.annotations.grafana_folder=Webhooks",
        ],
    );
    let maps: Vec<Value> = documents(&manifests)
        .into_iter()
        .filter(|d| d["kind"] == "ConfigMap")
        .collect();
    assert_eq!(maps.len(), 1, "{manifests}");
    let map = &maps[0];
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(map["metadata"]["namespace"], "monitoring");
    assert_eq!(map["metadata"]["annotations"]["grafana_folder"], "Webhooks");
    let file = read_repo_file(DASHBOARD);
    assert_eq!(
        map["data"]["outbound-webhooks.json"].as_str(),
        Some(file.trim_end()),
        "the ConfigMap holds {DASHBOARD}"
    );

    // A dashboard Grafana can load: unique panel ids, every panel queries.
    let dashboard: Value = serde_json::from_str(&file).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "outbound-webhooks");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_i64().expect("a panel id")),
            "duplicate id {panel}"
        );
        if panel["type"] != "row" {
            let title = &panel["title"];
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{title}: no query");
            for target in targets {
                assert!(
                    target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                    "{title}: {target}"
                );
                assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            }
        }
    }
}

/// Every PromQL query of the dashboard: panel targets and variable queries
/// (`label_values(METRIC, label)` reads METRIC).
fn dashboard_queries() -> Vec<String> {
    let dashboard: Value = serde_json::from_str(&read_repo_file(DASHBOARD)).expect("the dashboard is JSON");
    let mut queries: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    for variable in dashboard["templating"]["list"].as_array().expect("templating") {
        if let Some(query) = variable["query"]["query"].as_str() {
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map(|(metric, _)| metric.to_string())
                .unwrap_or_else(|| panic!("unexpected variable query {query}"));
            queries.push(inner);
        }
    }
    queries
}

/// PromQL keywords that are not followed by `(`.
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN"];
/// PromQL keywords followed by a list of label names.
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

/// The metric names a PromQL expression reads: identifiers outside label
/// matchers, ranges and strings that are neither functions, keywords nor
/// label lists. Grafana variables (`$x`, `${x}`) and numbers are skipped.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_to = |from: usize, close: char| -> usize {
        let mut j = from;
        let mut quote: Option<char> = None;
        while j < chars.len() {
            match (quote, chars[j]) {
                (Some(_), '\\') => j += 1,
                (Some(q), c) if c == q => quote = None,
                (None, '"' | '\'' | '`') => quote = Some(chars[j]),
                (None, c) if c == close => return j + 1,
                _ => {}
            }
            j += 1;
        }
        j
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            i = skip_to(i + 1, '}');
        } else if c == '[' {
            i = skip_to(i + 1, ']');
        } else if c == '"' || c == '\'' || c == '`' {
            i = skip_to(i + 1, c);
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            // A variable or a number (with a unit or exponent): one token.
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_.{}".contains(chars[i])) {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let rest: String = chars[next..].iter().collect();
            // `sum without (x) (...)`: an aggregation, too.
            let call = rest.starts_with('(')
                || ["by", "without"]
                    .iter()
                    .any(|k| rest.strip_prefix(k).is_some_and(|r| r.trim_start().starts_with('(')));
            if LABEL_LISTS.contains(&word.as_str()) {
                if call {
                    i = skip_to(next + 1, ')');
                }
            } else if !call && !KEYWORDS.contains(&word.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_reads_a_promql_query_as_prometheus_would() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{job=~"$job", x="sum(y)"}[$__rate_interval])))
           / on (instance) group_left(pod) b:recorded offset 5m > 1e3 and absent(up == 1) or vector(0)
           unless sum without (reason) (c_total) > bool 2"#,
    );
    let want: BTreeSet<String> = ["a_seconds_bucket", "b:recorded", "up", "c_total"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, want);
}

/// The sample names of a Prometheus text exposition.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// A sample name's family: without the suffixes counters and histograms add.
fn family(name: &str) -> &str {
    ["_total", "_bucket", "_sum", "_count", "_created"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

#[test]
fn the_dashboard_and_the_alerts_query_only_metrics_the_binaries_export() {
    let test = DeliveryTest::new("monitoring");
    let ns = &test.ns;
    let (receiver, healthy) = Receiver::switchable(true);
    let mut controller = ControllerProcess::scoped(
        &format!("monitoring-{}", unique_suffix()),
        ns,
        &unique_lease("monitoring"),
        &["--allow-http"],
    );
    // The shared manifest subscribes to CREATE.
    apply_ok(ns, &hook_yaml("crm", &receiver.url("/hook"), json!({})));
    wait_active(ns, "crm", Duration::from_secs(30));
    controller.wait_ready(Duration::from_secs(30));
    let dispatcher = test.dispatcher(&["--retry-schedule", "200ms,200ms"]);

    // A delivery, then failures until the hook is turned off (a dead
    // letter), then an event dropped for the turned-off hook: every
    // labelled series the queries read exists.
    let delivered = test.publish(&json!({"n": 1}));
    receiver.wait_for_event(&delivered, 1, Duration::from_secs(30));
    healthy.store(false, Ordering::SeqCst);
    let failed = test.publish(&json!({"n": 2}));
    receiver.wait_for_event(&failed, 3, Duration::from_secs(30));
    wait_not_ready(ns, "crm", ready::AUTO_DISABLED, Duration::from_secs(30));
    test.publish(&json!({"n": 3}));
    let dropped = r#"outbound_webhooks_events_total{outcome="dropped",reason="turned_off"}"#;
    wait_for(
        "the dropped event counted",
        Duration::from_secs(30),
        || match dispatcher.metric(dropped) {
            Some(n) if n >= 1.0 => Ok(()),
            other => Err(format!("{dropped} = {other:?}")),
        },
    );

    let mut exported = BTreeSet::new();
    for (who, scrape) in [
        ("dispatcher", dispatcher.ops_get("/metrics")),
        ("controller", controller.http_get("/metrics")),
    ] {
        let (code, body) = scrape.unwrap_or_else(|| panic!("the {who} serves /metrics"));
        assert_eq!(code, 200, "{who} /metrics");
        exported.extend(exported_names(&body));
    }
    for series in [
        r#"outbound_webhooks_delivery_attempts_total{outcome="delivered",status_class="2xx"}"#,
        r#"outbound_webhooks_delivery_attempts_total{outcome="failed",status_class="5xx"}"#,
        "outbound_webhooks_delivery_attempt_duration_seconds_count",
    ] {
        assert!(
            dispatcher.metric(series).is_some_and(|n| n >= 1.0),
            "{series} counted the attempts"
        );
    }

    let rule = prometheus_rule(&[]);
    let mut used: Vec<(String, String)> = Vec::new();
    for query in dashboard_queries() {
        used.extend(
            metric_names(&query)
                .into_iter()
                .map(|m| (m, format!("dashboard: {query}"))),
        );
    }
    for r in alert_rules(&rule) {
        let expr = r["expr"].as_str().unwrap_or_default();
        let name = r["alert"].as_str().unwrap_or_default();
        used.extend(metric_names(expr).into_iter().map(|m| (m, format!("alert {name}"))));
    }
    let unknown: Vec<String> = used
        .iter()
        .filter(|(m, _)| !exported.contains(m) && !PROMETHEUS_GENERATED.contains(&m.as_str()))
        .map(|(m, place)| format!("{m} ({place})"))
        .collect();
    assert!(
        unknown.is_empty(),
        "queried but not exported by the binaries:\n{}\nexported:\n{}",
        unknown.join("\n"),
        exported.iter().cloned().collect::<Vec<_>>().join("\n")
    );
    // The other way round: every family the binaries export is on the dashboard.
    let on_dashboard: BTreeSet<&str> = used
        .iter()
        .filter(|(_, place)| place.starts_with("dashboard"))
        .map(|(m, _)| family(m))
        .collect();
    let missing: BTreeSet<&str> = exported
        .iter()
        .map(|m| family(m))
        .filter(|f| f.starts_with("outbound_webhooks_"))
        .filter(|f| !on_dashboard.contains(f) && !NOT_ON_THE_DASHBOARD.contains(f))
        .collect();
    assert!(
        missing.is_empty(),
        "exported but not on the dashboard ({DASHBOARD}; or list them in NOT_ON_THE_DASHBOARD): {missing:?}"
    );
}
