//! A run told as lines of text, for headless runs and replays. Rounds, contexts and self-edits
//! are numbered from 1, as on the screen; every recorded string is sanitised.

use super::sanitize::sanitize_line;
use crate::record::{Decision, Event, Record};

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn opt_pct(x: Option<f64>) -> String {
    x.map_or_else(|| "–".to_string(), pct)
}

/// One line for an event, or `None` for streaming detail (tokens, training steps).
pub fn describe(record: &Record) -> Option<String> {
    let line = match &record.event {
        Event::RunStarted { info } => format!(
            "session {}: {} on {} ({}), template {}, grader {}, {} rounds x {} contexts x k={}{}",
            info.session,
            info.domain,
            info.model,
            info.device,
            info.template,
            info.grader,
            info.rounds,
            info.contexts_per_round,
            info.k,
            if info.approval_required {
                ", approval required"
            } else {
                ""
            }
        ),
        Event::RoundStarted { round, contexts } => {
            format!("round {}: {contexts} contexts", round + 1)
        }
        Event::ContextStarted { id, context } => {
            format!("{id}: {} ({})", context.title, context.id)
        }
        Event::BaselineScored {
            id,
            accuracy,
            secs,
            kind,
            ..
        } => format!("{id}: {} {} ({secs:.1} s)", kind.describe(), pct(*accuracy)),
        Event::EditSampled {
            id,
            text,
            tokens,
            secs,
        } => format!(
            "{id}: self-edit sampled, {tokens} tokens in {secs:.1} s: {}",
            first_line(text)
        ),
        Event::EditDecision { id, decision } => match decision {
            Decision::Approved => format!("{id}: approved by the human"),
            Decision::Rejected => format!("{id}: rejected by the human"),
            Decision::Edited { text } => {
                format!("{id}: edited by the human: {}", first_line(text))
            }
        },
        Event::TrainFinished {
            id,
            steps,
            final_loss,
            secs,
            ..
        } => format!("{id}: finetuned, {steps} steps in {secs:.1} s, final loss {final_loss:.3}"),
        Event::TrainFailed { id, message, .. } => format!("{id}: finetune failed: {message}"),
        Event::EditEvaluated {
            id,
            repeat,
            accuracy,
            secs,
            ..
        } => format!(
            "{id}: adapted accuracy {} (repeat {}, {secs:.1} s)",
            pct(*accuracy),
            repeat + 1
        ),
        Event::QuestionsWritten { id, questions } => match &questions.problem {
            Some(problem) => format!(
                "{id}: no usable self-written questions ({problem}); this context's questions are empty"
            ),
            None => format!(
                "{id}: the model wrote {} questions about the passage ({} dropped, {:.1} s)",
                questions.questions.len(),
                questions.dropped,
                questions.secs
            ),
        },
        Event::SelfChecked {
            id,
            edit,
            repeat,
            check,
            ..
        } => match edit {
            None => format!(
                "{id}: unadapted accuracy on the self-written questions {}",
                pct(check.accuracy)
            ),
            Some(edit) => format!(
                "{edit}: adapted accuracy on the self-written questions {} (repeat {})",
                pct(check.accuracy),
                repeat + 1
            ),
        },
        Event::EditScored {
            id, reward, gain, ..
        } => format!("{id}: reward {reward:.3}, gain {gain:+.3}"),
        Event::ContextFinished { id, reason, .. } => format!("{id}: {reason}"),
        Event::PolicyUpdateStarted {
            round,
            pairs,
            total_steps,
        } => format!(
            "round {}: policy update on {pairs} kept self-edits ({total_steps} steps)",
            round + 1
        ),
        Event::PolicyUpdated {
            round,
            adapter,
            secs,
        } => format!("round {}: policy updated in {secs:.1} s ({adapter})", round + 1),
        Event::PolicySkipped { round, reason } => {
            format!("round {}: no policy update: {reason}", round + 1)
        }
        Event::RoundFinished { round, metrics } => format!(
            "round {} done: accuracy {} -> {}, mean reward {}, gain {}, {} of {} contexts kept an edit",
            round + 1,
            opt_pct(metrics.accuracy_before),
            opt_pct(metrics.accuracy_after),
            metrics
                .mean_reward
                .map_or_else(|| "–".into(), |r| format!("{r:.3}")),
            metrics
                .mean_gain
                .map_or_else(|| "–".into(), |g| format!("{g:+.3}")),
            metrics.edits_kept,
            metrics.contexts
        ),
        Event::HeldoutStarted {
            pass,
            after_round,
            contexts,
        } => match after_round {
            None => format!(
                "held-out pass {}: the policy before round 1 on {contexts} held-out contexts",
                pass + 1
            ),
            Some(r) => format!(
                "held-out pass {}: the policy after round {} on {contexts} held-out contexts",
                pass + 1,
                r + 1
            ),
        },
        Event::HeldoutScored {
            pass,
            index,
            title,
            baseline,
            edits,
            secs,
            ..
        } => format!(
            "held-out pass {} context {} ({title}): unadapted {}, adapted {} ({secs:.1} s)",
            pass + 1,
            index + 1,
            pct(*baseline),
            edits
                .iter()
                .map(|e| pct(e.accuracy))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Event::HeldoutFinished { pass, summary } => format!(
            "held-out pass {} done: {} of {} questions ({}, 95% {}-{}), unadapted {}",
            pass + 1,
            summary.correct,
            summary.graded,
            pct(summary.accuracy),
            pct(summary.ci95_low),
            pct(summary.ci95_high),
            pct(summary.baseline)
        ),
        Event::RunFinished { secs } => format!("run finished in {secs:.1} s"),
        Event::ModeChanged { mode } => format!("mode: {}", mode.name()),
        Event::ClusterSubmitted {
            job,
            round,
            tasks,
            per_task,
        } => format!(
            "round {}: slurm job {job}: {} submitted ({})",
            round + 1,
            units_in_tasks(tasks.len(), *per_task),
            tasks
                .iter()
                .map(|t| t.unit.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Event::ClusterTask {
            job,
            index,
            status,
            detail,
            task,
        } => {
            let who = format!("slurm task {}", task_label(job, *index, *task));
            if detail.is_empty() {
                format!("{who}: {}", status.name())
            } else {
                format!("{who}: {}: {detail}", status.name())
            }
        }
        Event::ClusterCancelled { job, reason } => {
            format!("slurm job {job} cancelled: {reason}")
        }
        Event::Warning { message } => format!("warning: {message}"),
        Event::Status { message } => message.clone(),
        Event::Failed { message } => format!("FAILED: {message}"),
        Event::EditSampling { .. }
        | Event::EditToken { .. }
        | Event::TrainStarted { .. }
        | Event::TrainStep { .. }
        | Event::PolicyStep { .. } => return None,
    };
    Some(format!("[{:>8.1}s] {}", record.t, sanitize_line(&line)))
}

/// The first non-blank line, shortened.
/// A unit's SLURM task as SLURM names it (`12_3`), with the unit when the task runs several
/// (`12_1, unit 3`).
pub fn task_label(job: &str, index: usize, task: Option<usize>) -> String {
    match task {
        Some(task) => format!("{job}_{task}, unit {}", index + 1),
        None => format!("{job}_{index}"),
    }
}

/// "4 task(s)", or "8 unit(s) in 2 task(s)" when each task runs several units.
pub fn units_in_tasks(units: usize, per_task: usize) -> String {
    let per_task = per_task.max(1);
    if per_task == 1 {
        format!("{units} task(s)")
    } else {
        format!("{units} unit(s) in {} task(s)", units.div_ceil(per_task))
    }
}

fn first_line(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    line.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{CtxId, EditId};

    #[test]
    fn numbers_from_one_and_escapes_are_inert() {
        let r = Record {
            t: 1.0,
            event: Event::EditSampled {
                id: EditId::new(CtxId { round: 0, ctx: 1 }, 0),
                text: "\x1b]0;pwned\x07hello".into(),
                tokens: 3,
                secs: 0.5,
            },
        };
        let line = describe(&r).unwrap();
        assert!(line.contains("r1 c2 e1"), "{line}");
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        let r = Record {
            t: 1.0,
            event: Event::RoundStarted {
                round: 0,
                contexts: 2,
            },
        };
        assert!(describe(&r).unwrap().contains("round 1:"));
    }
}
