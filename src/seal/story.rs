//! A run told as lines of text, for headless runs and replays.

use super::events::{Decision, Event, Record};

fn edit(id: &super::EditId) -> String {
    format!("r{} c{} e{}", id.round, id.ctx, id.edit)
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
            if info.approval_required { ", approval required" } else { "" }
        ),
        Event::RoundStarted { round, contexts } => format!("round {round}: {contexts} contexts"),
        Event::ContextStarted { id, context } => {
            format!("r{} c{}: {} ({})", id.round, id.ctx, context.title, context.id)
        }
        Event::BaselineScored { id, accuracy, secs, .. } => format!(
            "r{} c{}: unadapted accuracy {:.1}% ({secs:.1} s)",
            id.round,
            id.ctx,
            accuracy * 100.0
        ),
        Event::EditSampled { id, text, tokens, secs } => format!(
            "{}: self-edit sampled, {tokens} tokens in {secs:.1} s: {}",
            edit(id),
            first_line(text)
        ),
        Event::EditDecision { id, decision } => match decision {
            Decision::Approved => format!("{}: approved by the human", edit(id)),
            Decision::Rejected => format!("{}: rejected by the human", edit(id)),
            Decision::Edited { text } => {
                format!("{}: edited by the human: {}", edit(id), first_line(text))
            }
        },
        Event::TrainFinished { id, steps, final_loss, secs } => format!(
            "{}: finetuned, {steps} steps in {secs:.1} s, final loss {final_loss:.3}",
            edit(id)
        ),
        Event::TrainFailed { id, message } => format!("{}: finetune failed: {message}", edit(id)),
        Event::EditEvaluated { id, repeat, accuracy, secs, .. } => format!(
            "{}: adapted accuracy {:.1}% (repeat {repeat}, {secs:.1} s)",
            edit(id),
            accuracy * 100.0
        ),
        Event::EditScored { id, reward, gain } => {
            format!("{}: reward {reward:.3}, gain {gain:+.3}", edit(id))
        }
        Event::ContextFinished { id, reason, .. } => format!("r{} c{}: {reason}", id.round, id.ctx),
        Event::PolicyUpdateStarted { round, pairs, total_steps } => format!(
            "round {round}: policy update on {pairs} kept self-edits ({total_steps} steps)"
        ),
        Event::PolicyUpdated { round, adapter, secs } => {
            format!("round {round}: policy updated in {secs:.1} s ({adapter})")
        }
        Event::PolicySkipped { round, reason } => format!("round {round}: no policy update: {reason}"),
        Event::RoundFinished { round, metrics } => format!(
            "round {round} done: accuracy {:.1}% -> {:.1}%, mean reward {:.3}, gain {:+.3}, {} of {} contexts kept an edit",
            metrics.accuracy_before * 100.0,
            metrics.accuracy_after * 100.0,
            metrics.mean_reward,
            metrics.mean_gain,
            metrics.edits_kept,
            metrics.contexts
        ),
        Event::RunFinished { secs } => format!("run finished in {secs:.1} s"),
        Event::ModeChanged { mode } => format!("mode: {mode:?}").to_lowercase(),
        Event::Warning { message } => format!("warning: {message}"),
        Event::Status { message } => message.clone(),
        Event::Failed { message } => format!("FAILED: {message}"),
        Event::EditSampling { .. }
        | Event::EditToken { .. }
        | Event::TrainStarted { .. }
        | Event::TrainStep { .. }
        | Event::PolicyStep { .. } => return None,
    };
    Some(format!("[{:>8.1}s] {line}", record.t))
}

fn first_line(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let short: String = line.chars().take(100).collect();
    // Model text goes to a terminal: no control characters.
    short
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
