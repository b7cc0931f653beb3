//! The finetune pane: the inner loop of the selected self-edit (a LoRA fitted on it) with its
//! progress and loss curve, and the round's policy update (ReSTEM) when that runs.

use super::{frame_pane, placeholder};
use crate::record::state::{Activity, EditStatus, PolicyState, PolicyStatus};
use crate::record::{TaskCounts, TaskState, TaskStatus, TrainProgress};
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
    // While inner loops are out on a cluster and the user follows the run, the array is the
    // news: every task's state and live loss.
    let cluster_round = match &app.state.activity {
        Activity::Cluster { job } => app
            .state
            .arrays
            .iter()
            .rev()
            .find(|a| &a.job == job)
            .map(|a| a.round),
        _ => None,
    };
    let show_cluster = cluster_round.is_some() && app.follow && !show_policy;
    let subtitle = if show_cluster {
        "cluster".to_string()
    } else {
        subtitle
    };
    let inner = frame_pane(app, frame, Pane::Finetune, area, focused, &subtitle);
    if let (true, Some(round)) = (show_cluster, cluster_round) {
        draw_cluster(app, frame, inner, round);
        return;
    }
    // The round's policy update and its cluster tasks, a line each, under an edit's finetune.
    let mut foot_lines: Vec<Line> = Vec::new();
    if let Some(r) = round.filter(|r| !show_policy && r.policy.status != PolicyStatus::Pending) {
        foot_lines.push(policy_summary(theme, r.index, &r.policy));
    }
    if let Some(r) = round {
        let tasks: Vec<&TaskState> = round_tasks(app, r.index).collect();
        if !tasks.is_empty() {
            foot_lines.push(cluster_summary(theme, r.index, &tasks));
        }
    }
    let [main, foot] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(u16::try_from(foot_lines.len()).unwrap_or(0)),
    ])
    .areas(inner);
    if !foot_lines.is_empty() {
        frame.render_widget(Paragraph::new(foot_lines), foot);
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

/// Every task sent out for a round: its first array and any retries, oldest first.
fn round_tasks(app: &App, round: usize) -> impl Iterator<Item = &TaskState> {
    app.state
        .arrays
        .iter()
        .filter(move |a| a.round == round)
        .flat_map(|a| &a.tasks)
}

fn cluster_summary(theme: &Theme, round: usize, tasks: &[&TaskState]) -> Line<'static> {
    let c = TaskCounts::of(tasks.iter().copied());
    let mut spans = vec![
        Span::styled(format!("slurm r{}: ", round + 1), theme.strong()),
        Span::styled(format!("{} done", c.done), theme.ok()),
        Span::styled(format!(" · {} running", c.running), theme.accent()),
        Span::styled(format!(" · {} pending", c.pending), theme.muted()),
    ];
    if c.failed > 0 {
        spans.push(Span::styled(format!(" · {} failed", c.failed), theme.bad()));
    }
    if c.cancelled > 0 {
        spans.push(Span::styled(
            format!(" · {} cancelled", c.cancelled),
            theme.warn(),
        ));
    }
    Line::from(spans)
}

/// The round's tasks on the cluster: running ones first (with their live loss), then pending,
/// failed, cancelled and done.
fn draw_cluster(app: &App, frame: &mut Frame, area: Rect, round: usize) {
    let theme = &app.theme;
    let arrays: Vec<_> = app
        .state
        .arrays
        .iter()
        .filter(|a| a.round == round)
        .collect();
    // Named as SLURM names the task that runs the unit.
    let mut rows: Vec<(&str, usize, &TaskState)> = arrays
        .iter()
        .flat_map(|a| {
            a.tasks
                .iter()
                .map(move |t| (a.job.as_str(), a.slot(t.index), t))
        })
        .collect();
    let rank = |s: TaskStatus| match s {
        TaskStatus::Running => 0,
        TaskStatus::Pending => 1,
        TaskStatus::Failed => 2,
        TaskStatus::Cancelled => 3,
        TaskStatus::Done => 4,
    };
    rows.sort_by_key(|(_, _, t)| (rank(t.status), t.unit));
    let tasks: Vec<&TaskState> = rows.iter().map(|(_, _, t)| *t).collect();
    let jobs: Vec<String> = arrays
        .iter()
        .map(|a| sanitize_line(&a.job).into_owned())
        .collect();
    let mut lines = vec![
        Line::from(vec![
            Span::styled(format!("SLURM job {}", jobs.join(", ")), theme.strong()),
            Span::styled(
                format!(" · round {} · {} task(s)", round + 1, tasks.len()),
                theme.muted(),
            ),
        ]),
        cluster_summary(theme, round, &tasks),
        Line::styled(
            format!(
                "{:<10} {:<20} {:<9} {:>3} {:>9} {:>7}  {}",
                "task", "unit", "state", "try", "step", "loss", "where / why"
            ),
            theme.muted(),
        ),
    ];
    for (job, slot, t) in rows {
        let style = match t.status {
            TaskStatus::Running => theme.accent(),
            TaskStatus::Pending => theme.muted(),
            TaskStatus::Failed => theme.bad(),
            TaskStatus::Cancelled => theme.warn(),
            TaskStatus::Done => theme.ok(),
        };
        let step = if t.started {
            format!("{}/{}", t.step, t.total_steps)
        } else {
            "–".to_string()
        };
        let loss = t.loss.map_or_else(|| "–".to_string(), labels::loss);
        let text = format!(
            "{:<10} {:<20} {:<9} {:>3} {:>9} {:>7}  {}",
            format!("{}_{slot}", sanitize_line(job)),
            t.unit.to_string(),
            t.status.name(),
            t.attempt,
            step,
            loss,
            sanitize_line(&t.detail)
        );
        lines.push(Line::styled(text, style));
    }
    let height = usize::from(area.height);
    lines.truncate(height.max(1));
    frame.render_widget(Paragraph::new(lines), area);
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
