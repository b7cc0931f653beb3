//! Reports on a session: per-round and per-question tables in Markdown, and the same as CSV.
//! Rounds, contexts and self-edits are numbered from 1; recorded text is sanitised, so a
//! report printed to a terminal or opened in a spreadsheet cannot run anything.

use super::sanitize::sanitize_line;
use crate::record::metrics::{heldout_summary, shown_metrics};
use crate::record::state::{ContextState, EditState, RunState};
use crate::record::Decision;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The edit a context's per-question table shows: the kept one, else the best scored.
fn shown_edit(ctx: &ContextState) -> Option<&EditState> {
    ctx.kept.and_then(|k| ctx.edits.get(k)).or_else(|| {
        ctx.edits
            .iter()
            .filter(|e| e.reward.is_some())
            .max_by(|a, b| {
                a.reward
                    .partial_cmp(&b.reward)
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
    })
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "no"
    }
}

fn opt_pct(x: Option<f64>) -> String {
    x.map_or_else(String::new, pct)
}

fn opt_num(x: Option<f64>, signed: bool) -> String {
    match (x, signed) {
        (None, _) => String::new(),
        (Some(x), true) => format!("{x:+.3}"),
        (Some(x), false) => format!("{x:.3}"),
    }
}

/// Text safe inside a Markdown table cell.
fn cell(s: &str) -> String {
    sanitize_line(s).replace('|', "\\|").replace('⏎', " ")
}

pub fn round_rows(state: &RunState) -> Vec<Vec<String>> {
    let rule = state.info.as_ref().map(|i| i.gain_rule).unwrap_or_default();
    state
        .rounds
        .iter()
        .map(|r| {
            let (m, _) = shown_metrics(r, rule);
            vec![
                (r.index + 1).to_string(),
                r.contexts.len().to_string(),
                m.edits_evaluated.to_string(),
                m.edits_kept.to_string(),
                opt_pct(m.accuracy_before),
                opt_pct(m.accuracy_after),
                opt_num(m.mean_reward, false),
                opt_num(m.mean_gain, true),
                format!("{:?}", r.policy.status).to_lowercase(),
            ]
        })
        .collect()
}

pub const ROUND_COLUMNS: [&str; 9] = [
    "round",
    "contexts",
    "edits evaluated",
    "edits kept",
    "accuracy before",
    "accuracy after",
    "mean reward",
    "mean gain",
    "policy update",
];

pub const HELDOUT_COLUMNS: [&str; 7] = [
    "pass",
    "policy",
    "contexts",
    "accuracy",
    "95% interval",
    "correct of graded",
    "unadapted",
];

/// A row per held-out pass: the policy before round 1, then after each update.
pub fn heldout_rows(state: &RunState) -> Vec<Vec<String>> {
    state
        .heldout
        .iter()
        .map(|h| {
            let s = h.summary.clone().unwrap_or_else(|| heldout_summary(h));
            vec![
                (h.pass + 1).to_string(),
                match h.after_round {
                    None => "before round 1".to_string(),
                    Some(r) => format!("after round {}", r + 1),
                },
                format!("{}/{}", s.contexts, h.planned),
                pct(s.accuracy),
                format!("{}-{}", pct(s.ci95_low), pct(s.ci95_high)),
                format!("{}/{}", s.correct, s.graded),
                pct(s.baseline),
            ]
        })
        .collect()
}

pub const QUESTION_COLUMNS: [&str; 11] = [
    "round",
    "context",
    "title",
    "edit",
    "question",
    "gold",
    "base answer",
    "base correct",
    "adapted answer",
    "adapted correct",
    "decision",
];

pub fn question_rows(state: &RunState) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for r in &state.rounds {
        for c in &r.contexts {
            let edit = shown_edit(c);
            let adapted = edit.and_then(|e| e.evaluations.last());
            for (qi, q) in c.view.questions.iter().enumerate() {
                let base = c
                    .baseline
                    .as_ref()
                    .and_then(|b| b.results.iter().find(|x| x.question == qi));
                let ad = adapted.and_then(|a| a.results.iter().find(|x| x.question == qi));
                rows.push(vec![
                    (r.index + 1).to_string(),
                    (c.id.ctx + 1).to_string(),
                    c.view.title.clone(),
                    edit.map(|e| (e.index + 1).to_string()).unwrap_or_default(),
                    q.question.clone(),
                    q.answers.join(" / "),
                    base.map(|b| b.answer.clone()).unwrap_or_default(),
                    base.map(|b| mark(b.verdict.correct).to_string())
                        .unwrap_or_default(),
                    ad.map(|a| a.answer.clone()).unwrap_or_default(),
                    ad.map(|a| mark(a.verdict.correct).to_string())
                        .unwrap_or_default(),
                    edit.and_then(|e| e.decision.as_ref())
                        .map(|d| match d {
                            Decision::Approved => "approved".to_string(),
                            Decision::Rejected => "rejected".to_string(),
                            Decision::Edited { .. } => "edited".to_string(),
                        })
                        .unwrap_or_default(),
                ]);
            }
        }
    }
    rows
}

fn markdown(columns: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", columns.join(" | "));
    out.push_str(&format!("|{}\n", "---|".repeat(columns.len())));
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

/// One CSV cell: sanitised, quoted where it holds a delimiter, and with a leading `'` where a
/// spreadsheet would read it as a formula (`=`, `+`, `-`, `@`, tab, carriage return).
pub fn csv_field(s: &str) -> String {
    let clean = super::sanitize::sanitize(s);
    let clean =
        if clean.starts_with(['=', '+', '-', '@', '\t', '\r']) && clean.parse::<f64>().is_err() {
            format!("'{clean}")
        } else {
            clean.into_owned()
        };
    if clean.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", clean.replace('"', "\"\""))
    } else {
        clean
    }
}

fn csv(columns: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = columns
        .iter()
        .map(|c| csv_field(c))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for row in rows {
        out.push_str(
            &row.iter()
                .map(|c| csv_field(c))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    out
}

/// The Markdown report.
pub fn markdown_report(state: &RunState) -> String {
    let mut out = String::new();
    if let Some(info) = &state.info {
        let line = format!(
            "model {}, domain {}, template {}, grader {}, k={}, rounds {}",
            info.model, info.domain, info.template, info.grader, info.k, info.rounds
        );
        out.push_str(&format!(
            "# Session {}\n\n{}\n\n",
            sanitize_line(&info.session),
            sanitize_line(&line)
        ));
    }
    out.push_str("## Rounds\n\n");
    out.push_str(&markdown(&ROUND_COLUMNS, &round_rows(state)));
    if !state.heldout.is_empty() {
        out.push_str("\n## Held-out contexts (never trained on)\n\n");
        out.push_str(&markdown(&HELDOUT_COLUMNS, &heldout_rows(state)));
    }
    out.push_str("\n## Questions\n\n");
    out.push_str(&markdown(&QUESTION_COLUMNS, &question_rows(state)));
    out
}

/// Writes `rounds.csv` and `questions.csv` into `dir`; returns their paths.
pub fn write_csv(state: &RunState, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let rounds = dir.join("rounds.csv");
    let questions = dir.join("questions.csv");
    std::fs::write(&rounds, csv(&ROUND_COLUMNS, &round_rows(state)))
        .with_context(|| format!("cannot write {}", rounds.display()))?;
    std::fs::write(&questions, csv(&QUESTION_COLUMNS, &question_rows(state)))
        .with_context(|| format!("cannot write {}", questions.display()))?;
    let mut written = vec![rounds, questions];
    if !state.heldout.is_empty() {
        let heldout = dir.join("heldout.csv");
        std::fs::write(&heldout, csv(&HELDOUT_COLUMNS, &heldout_rows(state)))
            .with_context(|| format!("cannot write {}", heldout.display()))?;
        written.push(heldout);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_markdown_escape_their_delimiters() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(cell("a|b\nc"), "a\\|b c");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-0.25"), "-0.25");
        assert_eq!(csv_field("\x1b[2J"), "␛[2J");
    }
}
