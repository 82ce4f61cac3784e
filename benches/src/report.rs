//! The results: rows printed as they come (a run that fails half-way still
//! shows what it measured), written to `results-so-far.txt` after each
//! scenario, and the table at the end; plus the small figures rows share.

use std::path::Path;

/// Report rows: (scenario, measure, value, target/note).
#[derive(Default)]
pub struct Report {
    rows: Vec<(String, String, String, String)>,
}

impl Report {
    /// Adds a row and prints it at once.
    pub fn row(&mut self, scenario: &str, measure: &str, value: String, note: &str) {
        println!("bench: {scenario} | {measure} | {value} | {note}");
        self.rows.push((scenario.into(), measure.into(), value, note.into()));
    }

    /// Prints every row as a Markdown table, values right-aligned.
    pub fn print(&self) {
        let widths = self.rows.iter().fold([8, 7, 5, 4], |w, r| {
            [
                w[0].max(r.0.len()),
                w[1].max(r.1.len()),
                w[2].max(r.2.len()),
                w[3].max(r.3.len()),
            ]
        });
        let line = |a: &str, b: &str, c: &str, d: &str| {
            println!(
                "| {a:<w0$} | {b:<w1$} | {c:>w2$} | {d:<w3$} |",
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            )
        };
        println!();
        line("scenario", "measure", "value", "note");
        println!(
            "|{}|{}|{}|{}|",
            "-".repeat(widths[0] + 2),
            "-".repeat(widths[1] + 2),
            "-".repeat(widths[2] + 1) + ":",
            "-".repeat(widths[3] + 2)
        );
        for r in &self.rows {
            line(&r.0, &r.1, &r.2, &r.3);
        }
    }

    /// Writes the rows so far to `state/results-so-far.txt`. Failing to
    /// write is not worth ending a run for, so callers ignore the error.
    pub fn write_partial(&self, state: &Path) -> std::io::Result<()> {
        let text: String = self
            .rows
            .iter()
            .map(|r| format!("{} | {} | {} | {}\n", r.0, r.1, r.2, r.3))
            .collect();
        std::fs::write(state.join("results-so-far.txt"), text)
    }
}

/// The word a target note uses.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// Bytes in MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The nearest-rank percentile `p` (0-100) of sorted values; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
