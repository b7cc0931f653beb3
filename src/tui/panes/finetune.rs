//! The finetune pane: the inner loop of the selected self-edit (a LoRA fitted on it) with its
//! progress and loss curve, and the round's policy update (ReSTEM) when that runs.

use super::{frame_pane, placeholder};
use crate::record::state::{Activity, EditStatus, PolicyState, PolicyStatus};
use crate::record::TrainProgress;
use crate::text::sanitize::sanitize_line;
use crate::tui::app::{App, Pane};
use crate::tui::labels;
use crate::tui::theme::Theme;
use crate::tui::wrap::reflow;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, Gauge, GraphType, Paragraph};
use ratatui::Frame;

/// What the pane shows: one run of the trainer.
struct Training<'a> {
    heading: String,
    facts: String,
    total_steps: usize,
    steps: &'a [TrainProgress],
    outcome: Option<Line<'static>>,
}

pub fn draw(app: &App, frame: &mut Frame, area: Rect, focused: bool) {
    let theme = &app.theme;
    let round = app.round();
    let policy_running = matches!(app.state.activity, Activity::PolicyUpdate { .. });
    // While the policy trains and the user has not looked elsewhere, that is the news.
    let show_policy = policy_running && app.follow;
    let training = if show_policy {
        round.map(|r| policy_training(theme, r.index, &r.policy))
    } else {
        app.edit().zip(app.edit_id()).map(|(edit, id)| Training {
            heading: format!("LoRA on {}", labels::edit(id)),
            facts: format!(
                "{} examples · {} tokens",
                labels::count(edit.train.examples),
                labels::count(edit.train.tokens)
            ),
            total_steps: edit.train.total_steps,
            steps: &edit.train.steps,
            outcome: if let Some(err) = &edit.train.error {
                Some(Line::styled(
                    format!("failed: {}", sanitize_line(err)),
                    theme.bad(),
                ))
            } else {
                edit.train.final_loss.map(|loss| {
                    Line::styled(
                        format!(
                            "done: final loss {} in {}",
                            labels::loss(loss),
                            labels::secs(edit.train.secs.unwrap_or(f64::NAN))
                        ),
                        theme.ok(),
                    )
                })
            },
        })
    };
    let subtitle = match (&training, app.edit_id()) {
        (Some(_), _) if show_policy => "policy update".to_string(),
        (_, Some(id)) => labels::edit(id),
        _ => String::new(),
    };
    let inner = frame_pane(app, frame, Pane::Finetune, area, focused, &subtitle);
    // The round's policy update, in one line, under an edit's finetune.
    let policy_line = round
        .filter(|r| !show_policy && r.policy.status != PolicyStatus::Pending)
        .map(|r| policy_summary(theme, r.index, &r.policy));
    let [main, foot] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(u16::from(policy_line.is_some())),
    ])
    .areas(inner);
    if let Some(line) = policy_line {
        frame.render_widget(Paragraph::new(line), foot);
    }
    let Some(t) = training.filter(|t| t.total_steps > 0 || !t.steps.is_empty()) else {
        let why = match app.edit().map(|e| e.status) {
            Some(EditStatus::Sampling) => "the self-edit is still being sampled",
            Some(EditStatus::Queued) => "queued: finetuning starts when its turn comes",
            _ => "no finetune yet",
        };
        placeholder(app, frame, main, why);
        return;
    };
    draw_training(app, frame, main, &t);
}

fn policy_training<'a>(theme: &Theme, round: usize, p: &'a PolicyState) -> Training<'a> {
    Training {
        heading: format!("Policy update (ReSTEM) · round {}", round + 1),
        facts: format!("{} (prompt, kept self-edit) pairs", p.pairs),
        total_steps: p.total_steps,
        steps: &p.steps,
        outcome: (p.status == PolicyStatus::Updated).then(|| {
            Line::styled(
                format!("merged in {}", labels::secs(p.secs.unwrap_or(f64::NAN))),
                theme.ok(),
            )
        }),
    }
}

fn policy_summary(theme: &Theme, round: usize, p: &PolicyState) -> Line<'static> {
    let head = Span::styled(format!("policy r{}: ", round + 1), theme.strong());
    let rest = match p.status {
        PolicyStatus::Pending => Span::styled("pending", theme.muted()),
        PolicyStatus::Training => {
            let step = p.steps.last().map_or(0, |s| s.step);
            Span::styled(
                format!("training {step}/{} on {} pairs", p.total_steps, p.pairs),
                theme.accent(),
            )
        }
        PolicyStatus::Updated => Span::styled(
            format!(
                "updated on {} pairs in {} → {}",
                p.pairs,
                labels::secs(p.secs.unwrap_or(f64::NAN)),
                sanitize_line(p.adapter.as_deref().unwrap_or("?"))
            ),
            theme.ok(),
        ),
        PolicyStatus::Skipped => Span::styled(
            format!(
                "skipped: {}",
                sanitize_line(p.note.as_deref().unwrap_or("no reason given"))
            ),
            theme.warn(),
        ),
    };
    Line::from(vec![head, rest])
}

fn draw_training(app: &App, frame: &mut Frame, area: Rect, t: &Training) {
    let theme = &app.theme;
    let last = t.steps.last();
    let total = t.total_steps.max(last.map_or(0, |s| s.total_steps)).max(1);
    let step = last.map_or(0, |s| s.step);
    let mut info = vec![Line::from(vec![
        Span::styled(t.heading.clone(), theme.strong()),
        Span::styled(format!(" · {}", t.facts), theme.muted()),
    ])];
    if let Some(s) = last {
        info.push(Line::from(vec![
            Span::styled("loss ", theme.muted()),
            Span::styled(labels::loss(s.loss), theme.chart(theme.chart_loss)),
            Span::styled("  lr ", theme.muted()),
            Span::raw(labels::lr(s.learning_rate)),
            Span::styled("  epoch ", theme.muted()),
            Span::raw(format!("{:.2}", s.epoch)),
            Span::styled("  grad ", theme.muted()),
            Span::raw(format!("{:.2}", s.grad_norm)),
            Span::styled("  tok/s ", theme.muted()),
            Span::raw(labels::count(s.tokens_per_sec.max(0.0).round() as usize)),
            Span::styled("  elapsed ", theme.muted()),
            Span::raw(labels::secs(s.elapsed_secs)),
            Span::styled("  ETA ", theme.muted()),
            Span::raw(labels::secs(s.eta_secs)),
        ]));
    }
    if let Some(outcome) = &t.outcome {
        info.push(outcome.clone());
    }
    let info = reflow(info, usize::from(area.width));
    let info_height = u16::try_from(info.len()).unwrap_or(u16::MAX);
    let [info_area, gauge_area, chart_area] = Layout::vertical([
        Constraint::Length(info_height),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(info), info_area);
    let ratio = (step as f64 / total as f64).clamp(0.0, 1.0);
    frame.render_widget(
        Gauge::default()
            .ratio(ratio)
            .label(format!("step {step}/{total}"))
            .gauge_style(theme.chart(theme.gauge))
            .use_unicode(true),
        gauge_area,
    );
    if chart_area.height >= 4 && t.steps.len() >= 2 {
        loss_chart(theme, frame, chart_area, t.steps, total);
    }
}

fn loss_chart(theme: &Theme, frame: &mut Frame, area: Rect, steps: &[TrainProgress], total: usize) {
    let points: Vec<(f64, f64)> = steps
        .iter()
        .filter(|s| s.loss.is_finite())
        .map(|s| (s.step as f64, s.loss))
        .collect();
    if points.is_empty() {
        return;
    }
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    let pad = ((hi - lo) * 0.1).max(1e-3);
    let (y0, y1) = ((lo - pad).max(0.0), hi + pad);
    let dataset = Dataset::default()
        .name("loss")
        .marker(Marker::Braille)
        .graph_type(GraphType::Line)
        .style(theme.chart(theme.chart_loss))
        .data(&points);
    let chart = Chart::new(vec![dataset])
        .x_axis(
            Axis::default()
                .title(Span::styled("step", theme.muted()))
                .bounds([1.0, total.max(2) as f64])
                .labels(["1".to_string(), total.to_string()])
                .style(theme.muted()),
        )
        .y_axis(
            Axis::default()
                .bounds([y0, y1])
                .labels([labels::loss(y0), labels::loss(y1)])
                .style(theme.muted()),
        )
        .legend_position(None);
    frame.render_widget(chart, area);
}
