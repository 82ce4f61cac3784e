//! The book in `docs/` is where runtime messages, doc comments, the chart's
//! texts (NOTES.txt, the alerts' `runbook` annotations, values.yaml) and
//! README send a reader: `docs/src/redis.md#stream-shards`. These tests read
//! the files (no cluster, no build of the book) and fail when a cited page
//! or anchor does not exist, when a link between the book's pages names a
//! missing anchor (mdbook-linkcheck checks pages, not anchors), or when a
//! message or comment still cites a README section or SPEC instead.
//!
//! An anchor is computed as mdBook computes a heading's id: the heading's
//! text without inline markup, lower case, whitespace as `-`, characters
//! other than letters, digits, `_` and `-` dropped, and `-1`, `-2`, ...
//! appended to a repeated id.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

const CITE: &str = "docs/src/";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir` (relative to the repository), recursively.
fn files_under(dir: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo().join(dir)];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A file's text, or None for a file that is not UTF-8 (images and the like).
fn text(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo()).unwrap_or(path).display().to_string()
}

/// mdBook's `normalize_id`.
fn normalize_id(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_ascii_lowercase())
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// A heading's text as rendered: links keep their text, code spans and
/// emphasis lose their markers.
fn heading_text(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' | '*' => {}
            ']' if chars.peek() == Some(&'(') => {
                // Skip the link target.
                for c in chars.by_ref() {
                    if c == ')' {
                        break;
                    }
                }
            }
            '[' => {}
            _ => out.push(c),
        }
    }
    out.trim().to_string()
}

/// The ids mdBook gives the headings of one page.
fn anchors_of(page: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    let mut in_fence = false;
    for line in page.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence || !line.starts_with('#') {
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        let rest = &line[hashes..];
        if hashes > 6 || !(rest.is_empty() || rest.starts_with(' ')) {
            continue;
        }
        let id = normalize_id(&heading_text(rest.trim_end_matches('#')));
        let n = seen.entry(id.clone()).or_insert(0);
        ids.insert(if *n == 0 { id.clone() } else { format!("{id}-{n}") });
        *n += 1;
    }
    ids
}

/// The book: page path under docs/src -> its anchors.
fn book() -> BTreeMap<String, BTreeSet<String>> {
    let src = repo().join("docs/src");
    let pages: BTreeMap<String, BTreeSet<String>> = files_under("docs/src")
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| {
            let name = p.strip_prefix(&src).expect("under docs/src").display().to_string();
            let page = text(&p).unwrap_or_else(|| panic!("{name} is not UTF-8"));
            (name, anchors_of(&page))
        })
        .collect();
    assert!(
        pages.contains_key("SUMMARY.md"),
        "docs/src/SUMMARY.md is missing: the book is gone"
    );
    pages
}

/// One citation of the book: where it is, the page, the anchor if any.
#[derive(Debug)]
struct Cite {
    at: String,
    page: String,
    anchor: Option<String>,
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Every `docs/src/PAGE.md[#anchor]` in `body`.
fn citations_in(at: &str, body: &str) -> Vec<Cite> {
    let mut out = Vec::new();
    for (line_no, line) in body.lines().enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find(CITE) {
            let after = &rest[i + CITE.len()..];
            let page_len = after
                .find(|c: char| !(is_id_char(c) || c == '/' || c == '.'))
                .unwrap_or(after.len());
            let mut page = &after[..page_len];
            // A sentence's full stop after the page is not part of it.
            while page.ends_with('.') && !page.ends_with(".md") {
                page = &page[..page.len() - 1];
            }
            let tail = &after[page.len()..];
            let anchor = tail
                .strip_prefix('#')
                .map(|a| a.chars().take_while(|&c| is_id_char(c)).collect::<String>());
            if page.ends_with(".md") {
                out.push(Cite {
                    at: format!("{at}:{}", line_no + 1),
                    page: page.to_string(),
                    anchor,
                });
            }
            rest = &after[page.len()..];
        }
    }
    out
}

/// Every link from one book page to a page of the book (`page.md#a`,
/// `#a`), as citations relative to docs/src.
fn links_in_page(page: &str, body: &str) -> Vec<Cite> {
    let dir = Path::new(page).parent().unwrap_or(Path::new(""));
    let mut out = Vec::new();
    let mut in_fence = false;
    for (line_no, line) in body.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = &after[..end];
            rest = &after[end..];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a.to_string())),
                None => (target, None),
            };
            let file = if file.is_empty() {
                page.to_string()
            } else {
                dir.join(file).display().to_string()
            };
            out.push(Cite {
                at: format!("docs/src/{page}:{}", line_no + 1),
                page: file,
                anchor,
            });
        }
    }
    out
}

fn check(cites: &[Cite], pages: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut broken = Vec::new();
    for c in cites {
        match pages.get(&c.page) {
            None => broken.push(format!("{}: no page docs/src/{}", c.at, c.page)),
            Some(anchors) => {
                if let Some(a) = &c.anchor
                    && !anchors.contains(a)
                {
                    broken.push(format!(
                        "{}: docs/src/{} has no anchor #{a} (it has: {anchors:?})",
                        c.at, c.page
                    ));
                }
            }
        }
    }
    broken
}

/// The files whose texts may cite the book.
fn citing_files() -> Vec<PathBuf> {
    let mut files = files_under("src");
    files.extend(files_under("charts"));
    files.extend(files_under("scripts"));
    // This file's own examples are not citations.
    files.extend(
        files_under("tests").into_iter().filter(|p| {
            !p.components().any(|c| c.as_os_str() == "node_modules") && !p.ends_with("tests/docs_anchors.rs")
        }),
    );
    files.push(repo().join("README.md"));
    files.push(repo().join("benches/README.md"));
    files
}

/// Fails naming every one of `cites` whose page or anchor is missing.
fn assert_none_broken(what: &str, cites: &[Cite], pages: &BTreeMap<String, BTreeSet<String>>) {
    let broken = check(cites, pages);
    assert!(
        broken.is_empty(),
        "{} broken {what}:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn every_doc_anchor_cited_in_code_charts_and_readme_exists() {
    let pages = book();
    let mut cites = Vec::new();
    let mut from_src = 0;
    let mut from_charts = 0;
    for file in citing_files() {
        let Some(body) = text(&file) else { continue };
        let at = relative(&file);
        let found = citations_in(&at, &body);
        if at.starts_with("src/") {
            from_src += found.len();
        }
        if at.starts_with("charts/") {
            from_charts += found.len();
        }
        cites.extend(found);
    }
    // Not vacuous: the messages, doc comments, runbooks and NOTES.txt cite the book.
    assert!(
        from_src >= 15,
        "only {from_src} citations of the book in src/: the scan is broken"
    );
    assert!(
        from_charts >= 10,
        "only {from_charts} citations of the book in charts/: the scan is broken"
    );
    assert_none_broken("citation(s) of the book", &cites, &pages);
}

#[test]
fn every_anchor_linked_between_book_pages_exists() {
    let pages = book();
    let mut cites = Vec::new();
    for page in pages.keys() {
        let body = text(&repo().join("docs/src").join(page)).expect("a page");
        cites.extend(links_in_page(page, &body));
    }
    assert!(
        cites.iter().filter(|c| c.anchor.is_some()).count() >= 30,
        "too few anchored links found: the scan is broken"
    );
    assert_none_broken("link(s) in the book", &cites, &pages);
}

#[test]
fn every_alert_has_a_runbook_section_in_the_book() {
    let pages = book();
    let rules = text(&repo().join("charts/outbound-webhooks/templates/prometheusrule.yaml")).expect("the rules");
    // Named alerts, and those a `range` over a dict of names defines.
    let named = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .filter(|a| !a.starts_with("{{"));
    let ranged = rules
        .lines()
        .filter(|l| l.contains("range $key, $alert := dict"))
        .flat_map(|l| l.split('"').filter(|s| s.starts_with("OutboundWebhook")));
    let alerts: Vec<&str> = named.chain(ranged).collect();
    assert!(alerts.len() >= 10, "expected the chart's alerts, found {alerts:?}");
    let metrics = &pages["metrics.md"];
    let runbooks = rules.matches("runbook: docs/src/metrics.md#").count();
    for alert in &alerts {
        assert!(
            metrics.contains(&alert.to_lowercase()),
            "alert {alert} has no section in docs/src/metrics.md"
        );
    }
    assert_eq!(
        runbooks,
        alerts.len(),
        "each alert carries one runbook annotation ({alerts:?})"
    );
}

/// A word `word` standing alone (not part of an identifier such as
/// `INVALID_SPEC`); `README.md` names a file (the Argo CD check's own
/// README beside it), `SPEC.md` does not count as one.
fn cites_word(line: &str, word: &str) -> bool {
    line.match_indices(word).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + word.len()..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        boundary(before) && boundary(after) && !(word == "README" && line[i + word.len()..].starts_with(".md"))
    })
}

#[test]
fn no_message_or_comment_cites_a_readme_section_or_the_spec() {
    let mut stale = Vec::new();
    for dir in ["src", "charts"] {
        for file in files_under(dir) {
            let Some(body) = text(&file) else { continue };
            let at = relative(&file);
            for (n, line) in body.lines().enumerate() {
                if cites_word(line, "README") || cites_word(line, "SPEC") {
                    stale.push(format!("{at}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "cite the book (docs/src/PAGE.md#anchor) instead of README sections or SPEC:\n{}",
        stale.join("\n")
    );
}

#[test]
fn the_anchor_rule_is_mdbooks() {
    let page = "# Redis modes\n## Stream shards\n```sh\n# not a heading\n```\n## Tasks outlive a hook's UID\n\
                ## TLS, Sentinel and Cluster\n## `--shards` and [links](x.md)\n## Stream shards\n#NotAHeading\n";
    let ids = anchors_of(page);
    let want: BTreeSet<String> = [
        "redis-modes",
        "stream-shards",
        "tasks-outlive-a-hooks-uid",
        "tls-sentinel-and-cluster",
        "--shards-and-links",
        "stream-shards-1",
    ]
    .map(String::from)
    .into();
    assert_eq!(ids, want);
    let cites = citations_in(
        "x",
        "see docs/src/redis.md#stream-shards. And docs/src/on-call.md, docs/src/a/b.md#c-d)",
    );
    let got: Vec<(String, Option<String>)> = cites.into_iter().map(|c| (c.page, c.anchor)).collect();
    assert_eq!(
        got,
        [
            ("redis.md".to_string(), Some("stream-shards".to_string())),
            ("on-call.md".to_string(), None),
            ("a/b.md".to_string(), Some("c-d".to_string()))
        ]
    );
}

#[test]
fn every_source_path_the_docs_name_exists() {
    // The docs name files in backticks: from the repository's root
    // (`src/store/mod.rs`, `tests/store.rs`) or, on the layout page, within
    // their folder of src/ (`intake/consumer.rs`). A move must update them.
    let sources: Vec<String> = files_under("src").iter().map(|p| relative(p)).collect();
    let mut named = 0;
    let mut missing = Vec::new();
    let mut docs = files_under("docs/src");
    docs.extend([repo().join("README.md"), repo().join("benches/README.md")]);
    for page in docs.iter().filter(|p| p.extension().is_some_and(|e| e == "md")) {
        let Some(body) = text(page) else { continue };
        for (n, line) in body.lines().enumerate() {
            for quoted in line.split('`').skip(1).step_by(2) {
                let path = quoted.trim_end_matches('/');
                let plain = !path.is_empty() && path.chars().all(|c| c.is_ascii_alphanumeric() || "/_.-".contains(c));
                let rooted = [
                    "src/",
                    "tests/",
                    "test-kit/",
                    "benches/",
                    "scripts/",
                    "charts/",
                    "tools/",
                    "examples/",
                ];
                let exists = if plain && rooted.iter().any(|r| path.starts_with(r)) {
                    repo().join(path).exists()
                } else if plain && path.ends_with(".rs") {
                    sources.iter().any(|s| s.ends_with(&format!("/{path}")))
                } else {
                    continue;
                };
                named += 1;
                if !exists {
                    missing.push(format!("{}:{}: {path}", relative(page), n + 1));
                }
            }
        }
    }
    assert!(
        named >= 50,
        "only {named} source paths found in the docs: is the scan broken?"
    );
    assert!(
        missing.is_empty(),
        "source paths named in the docs that do not exist:\n{}",
        missing.join("\n")
    );
}
