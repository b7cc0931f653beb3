//! Reports on a session: per-round and per-question tables in Markdown, and the same as CSV.
//! Rounds, contexts and self-edits are numbered from 1; recorded text is sanitised, so a
//! report printed to a terminal or opened in a spreadsheet cannot run anything.

use super::sanitize::sanitize_line;
use crate::record::cluster::slot_of;
use crate::record::metrics::{heldout_summary, shown_metrics};
use crate::record::state::{ContextState, EditState, RunState};
use crate::record::{BaselineKind, Decision, Event, Record, TaskStatus, UnitId};
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
    let baselines: Vec<BaselineKind> = state
        .rounds
        .iter()
        .flat_map(|r| &r.contexts)
        .filter_map(|c| c.baseline.as_ref().map(|b| b.kind))
        .collect();
    let context_only = baselines
        .iter()
        .filter(|k| **k == BaselineKind::ContextOnly)
        .count();
    if context_only > 0 {
        out.push_str(&format!(
            "\nGains are over the model trained on the context alone for {context_only} of {} \
             contexts (the others: the unadapted model); the questions' base columns hold the \
             answers their gain is reckoned from.\n",
            baselines.len()
        ));
    }
    if !state.heldout.is_empty() {
        out.push_str("\n## Held-out contexts (never trained on)\n\n");
        out.push_str(&markdown(&HELDOUT_COLUMNS, &heldout_rows(state)));
    }
    out.push_str("\n## Questions\n\n");
    out.push_str(&markdown(&QUESTION_COLUMNS, &question_rows(state)));
    out
}

/// How a round's inner loops fared on a cluster, reckoned from the log's times.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterFigures {
    pub round: usize,
    /// Arrays submitted (the first and its retries).
    pub arrays: usize,
    /// Units that came back with a result.
    pub units: usize,
    /// From the first submission to the last result collected, in seconds.
    pub wall_secs: f64,
    /// The inner loops' own time (finetune and answering), summed over units.
    pub work_secs: f64,
    /// The most tasks seen running at once.
    pub slots: usize,
}

impl ClusterFigures {
    /// Slot time not spent on the inner loops themselves (submission, queueing, start, model
    /// load, result pickup), per unit: `(slots x wall - work) / units`.
    pub fn overhead_per_unit(&self) -> f64 {
        (self.slots as f64 * self.wall_secs - self.work_secs) / self.units.max(1) as f64
    }

    pub fn mean_unit_secs(&self) -> f64 {
        self.work_secs / self.units.max(1) as f64
    }
}

/// Per round, the figures of its cluster work; empty for a run that had none.
pub fn cluster_figures(records: &[Record]) -> Vec<ClusterFigures> {
    use std::collections::{BTreeMap, HashMap};
    // (round, first submitted, last done, arrays)
    let mut rounds: BTreeMap<usize, (f64, f64, usize)> = BTreeMap::new();
    let mut round_of_job: HashMap<String, usize> = HashMap::new();
    let mut unit_of_task: HashMap<(String, usize), UnitId> = HashMap::new();
    let mut train: HashMap<UnitId, f64> = HashMap::new();
    let mut answer: HashMap<UnitId, f64> = HashMap::new();
    let mut done: HashMap<usize, Vec<UnitId>> = HashMap::new();
    // Each SLURM task holds a slot from its first unit seen running (or over) to its last
    // unit over; a task that runs several units holds one slot throughout.
    let mut per_task: HashMap<String, usize> = HashMap::new();
    let mut held: HashMap<(String, usize), (f64, f64)> = HashMap::new();
    for r in records {
        match &r.event {
            Event::ClusterSubmitted {
                job,
                round,
                tasks,
                per_task: n,
            } => {
                let e = rounds.entry(*round).or_insert((r.t, r.t, 0));
                e.2 += 1;
                round_of_job.insert(job.clone(), *round);
                per_task.insert(job.clone(), *n);
                for t in tasks {
                    unit_of_task.insert((job.clone(), t.index), t.unit);
                }
            }
            Event::TrainFinished {
                id,
                rev,
                repeat,
                secs,
                ..
            } => {
                let u = UnitId {
                    id: *id,
                    rev: *rev,
                    repeat: *repeat,
                };
                train.insert(u, *secs);
            }
            Event::EditEvaluated {
                id,
                rev,
                repeat,
                secs,
                ..
            } => {
                let u = UnitId {
                    id: *id,
                    rev: *rev,
                    repeat: *repeat,
                };
                answer.insert(u, *secs);
            }
            Event::ClusterTask {
                job, index, status, ..
            } => {
                let Some(&round) = round_of_job.get(job) else {
                    continue;
                };
                let key = (job.clone(), *index);
                let slot = (
                    job.clone(),
                    slot_of(*index, per_task.get(job).copied().unwrap_or(1)),
                );
                if *status == TaskStatus::Running || status.is_final() {
                    // A task that finished between two polls was running all along.
                    let span = held.entry(slot).or_insert((r.t, r.t));
                    if status.is_final() {
                        span.1 = r.t;
                    }
                }
                if *status == TaskStatus::Done {
                    if let Some(e) = rounds.get_mut(&round) {
                        e.1 = e.1.max(r.t);
                    }
                    if let Some(u) = unit_of_task.get(&key) {
                        done.entry(round).or_default().push(*u);
                    }
                }
            }
            _ => {}
        }
    }
    let mut edges: HashMap<usize, Vec<(f64, i32)>> = HashMap::new();
    for ((job, _), (from, to)) in held {
        let Some(&round) = round_of_job.get(&job) else {
            continue;
        };
        let list = edges.entry(round).or_default();
        list.push((from, 1));
        list.push((to, -1));
    }
    rounds
        .into_iter()
        .map(|(round, (first, last, arrays))| {
            let units = done.remove(&round).unwrap_or_default();
            let work_secs = units
                .iter()
                .map(|u| train.get(u).unwrap_or(&0.0) + answer.get(u).unwrap_or(&0.0))
                .sum();
            let mut list = edges.remove(&round).unwrap_or_default();
            // Ends before starts at the same moment: a slot handed on is not two slots.
            list.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let (mut now, mut peak) = (0i32, 0i32);
            for (_, d) in list {
                now += d;
                peak = peak.max(now);
            }
            ClusterFigures {
                round,
                arrays,
                units: units.len(),
                wall_secs: (last - first).max(0.0),
                work_secs,
                slots: usize::try_from(peak).unwrap_or(0).max(1),
            }
        })
        .collect()
}

/// The cluster section of a report, when the run used one.
pub fn cluster_markdown(records: &[Record]) -> Option<String> {
    let figures = cluster_figures(records);
    if figures.is_empty() {
        return None;
    }
    let columns = [
        "round",
        "arrays",
        "units",
        "wall s",
        "slots",
        "inner loop s (mean)",
        "overhead s per unit",
        "overhead %",
    ];
    let rows: Vec<Vec<String>> = figures
        .iter()
        .map(|f| {
            vec![
                format!("r{}", f.round + 1),
                f.arrays.to_string(),
                f.units.to_string(),
                format!("{:.1}", f.wall_secs),
                f.slots.to_string(),
                format!("{:.2}", f.mean_unit_secs()),
                format!("{:.2}", f.overhead_per_unit()),
                format!(
                    "{:.1}%",
                    100.0 * f.overhead_per_unit() / f.mean_unit_secs().max(1e-9)
                ),
            ]
        })
        .collect();
    let mut out = String::from(
        "## Cluster

Overhead is slot time not spent training or answering (submission, \
         queueing, start, model load, result pickup), per unit: (slots x wall - inner loops) / \
         units.\n\n",
    );
    out.push_str(&markdown(&columns, &rows));
    Some(out)
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
