//! The run pane: accuracy before and after adaptation and the mean reward per round (the SEAL
//! paper's accuracy-over-iterations figure), a table per round, and the run's log (decisions,
//! selections, warnings).

use super::frame_pane;
use crate::record::metrics::{heldout_summary, shown_metrics};
use crate::record::state::PolicyStatus;
use crate::record::RoundMetrics;
use crate::tui::app::{App, LogKind, Pane};
use crate::tui::labels;
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};
use ratatui::Frame;

pub fn draw(app: &App, frame: &mut Frame, area: Rect, focused: bool) {
    let theme = &app.theme;
    let planned = app.state.info.as_ref().map_or(0, |i| i.rounds);
    let subtitle = match app.state.rounds.len() {
        0 => String::new(),
        n => format!("round {n}/{}", planned.max(n)),
    };
    let inner = frame_pane(app, frame, Pane::Run, area, focused, &subtitle);
    let rule = app
        .state
        .info
        .as_ref()
        .map(|i| i.gain_rule)
        .unwrap_or_default();
    // Held-out accuracy by pass: pass 0 is the policy before round 1 (drawn at x = 0), pass r
    // the policy after round r's update (drawn with round r).
    let heldout: Vec<(usize, f64)> = app
        .state
        .heldout
        .iter()
        .filter(|h| !h.contexts.is_empty())
        .map(|h| {
            let s = h.summary.clone().unwrap_or_else(|| heldout_summary(h));
            (h.pass, s.accuracy)
        })
        .collect();
    let rows: Vec<(usize, RoundMetrics, bool, PolicyStatus)> = app
        .state
        .rounds
        .iter()
        .map(|r| {
            let (m, done) = shown_metrics(r, rule);
            (r.index, m, done, r.policy.status.clone())
        })
        .collect();
    let count = u16::try_from(rows.len()).unwrap_or(u16::MAX);
    let table_height = count.saturating_add(1).min(inner.height / 3).max(2);
    let chart_height = (inner.height.saturating_sub(table_height) * 3 / 5).max(6);
    let [chart_area, table_area, log_area] = Layout::vertical([
        Constraint::Length(chart_height),
        Constraint::Length(table_height),
        Constraint::Min(0),
    ])
    .areas(inner);
    chart(theme, frame, chart_area, &rows, &heldout, planned);
    frame.render_widget(
        Paragraph::new(table(theme, &rows, &heldout, table_area.height)),
        table_area,
    );
    log(app, frame, log_area);
}

fn chart(
    theme: &Theme,
    frame: &mut Frame,
    area: Rect,
    rows: &[(usize, RoundMetrics, bool, PolicyStatus)],
    heldout: &[(usize, f64)],
    planned: usize,
) {
    let series = |f: fn(&RoundMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|(i, m, _, _)| f(m).map(|y| ((i + 1) as f64, y * 100.0)))
            .collect()
    };
    let before = series(|m| m.accuracy_before);
    let after = series(|m| m.accuracy_after);
    let reward = series(|m| m.mean_reward);
    let held: Vec<(f64, f64)> = heldout
        .iter()
        .map(|&(p, a)| (p as f64, a * 100.0))
        .collect();
    let last = rows.len().max(planned).max(2);
    let first = if held.is_empty() { 1 } else { 0 };
    let mut series = vec![
        ("before", &before, theme.chart_before, Marker::Dot),
        ("after", &after, theme.chart_after, Marker::Braille),
        ("reward", &reward, theme.chart_reward, Marker::Bar),
    ];
    if !held.is_empty() {
        series.push(("held-out", &held, theme.chart_heldout, Marker::HalfBlock));
    }
    // Without colour the three lines differ by their marker.
    let marker = |m: Marker| if theme.colored { Marker::Braille } else { m };
    let symbol = |m: Marker| match marker(m) {
        Marker::Dot => "•",
        Marker::Bar => "▄",
        _ => "⣿",
    };
    let mut legend = Vec::new();
    for (name, _, colour, m) in &series {
        legend.push(Span::styled(
            format!("{} ", symbol(*m)),
            theme.chart(*colour),
        ));
        legend.push(Span::styled(format!("{name}  "), theme.muted()));
    }
    legend.push(Span::styled(
        "(accuracy and reward per round)",
        theme.muted(),
    ));
    let [legend_area, area] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    frame.render_widget(Paragraph::new(Line::from(legend)), legend_area);
    let datasets = series
        .iter()
        .map(|(name, data, colour, m)| line(theme, name, data, *colour, marker(*m)))
        .collect();
    let x_labels: Vec<String> = (first..=last)
        .map(|r| {
            if r == 0 {
                "start".into()
            } else {
                format!("r{r}")
            }
        })
        .collect();
    let x_labels = if x_labels.len() > 6 {
        vec![x_labels[0].clone(), x_labels[x_labels.len() - 1].clone()]
    } else {
        x_labels
    };
    let chart = Chart::new(datasets)
        .x_axis(
            Axis::default()
                .bounds([first as f64, last as f64])
                .labels(x_labels)
                .style(theme.muted()),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, 100.0])
                .labels(["0%", "50%", "100%"])
                .style(theme.muted()),
        )
        .legend_position(None);
    frame.render_widget(chart, area);
}

fn line<'a>(
    theme: &Theme,
    name: &'static str,
    data: &'a [(f64, f64)],
    colour: ratatui::style::Color,
    marker: Marker,
) -> Dataset<'a> {
    // One round is a point, not yet a line.
    let (marker, kind) = if data.len() < 2 {
        (Marker::Dot, GraphType::Scatter)
    } else {
        (marker, GraphType::Line)
    };
    Dataset::default()
        .name(name)
        .marker(marker)
        .graph_type(kind)
        .style(theme.chart(colour))
        .data(data)
}

fn table(
    theme: &Theme,
    rows: &[(usize, RoundMetrics, bool, PolicyStatus)],
    heldout: &[(usize, f64)],
    height: u16,
) -> Vec<Line<'static>> {
    let with_heldout = !heldout.is_empty();
    let mut header = format!(
        "{:<6}{:>5}{:>8}{:>7}{:>8}{:>7}{:>6}  {}",
        "round", "ctx", "before", "after", "reward", "gain", "kept", "policy"
    );
    if with_heldout {
        header.push_str("   ");
        // The held-out accuracy of the policy after the round (before round 1 in the title).
        let start = heldout.iter().find(|(p, _)| *p == 0).map(|&(_, a)| a);
        header.push_str(&format!("held-out (start {})", labels::pct(start)));
    }
    let mut lines = vec![Line::styled(header, theme.muted())];
    let fit = usize::from(height.saturating_sub(1));
    for (i, m, done, policy) in rows.iter().skip(rows.len().saturating_sub(fit)) {
        let policy = match policy {
            PolicyStatus::Pending => "–",
            PolicyStatus::Training => "training",
            PolicyStatus::Updated => "updated",
            PolicyStatus::Skipped => "skipped",
        };
        let mut text = format!(
            "{:<6}{:>5}{:>8}{:>7}{:>8}{:>7}{:>6}  {}",
            format!("r{}{}", i + 1, if *done { "" } else { "…" }),
            m.contexts,
            labels::pct(m.accuracy_before),
            labels::pct(m.accuracy_after),
            labels::reward(m.mean_reward),
            labels::gain(m.mean_gain),
            m.edits_kept,
            policy
        );
        if with_heldout {
            // Under the header's "held-out", past the widest policy word ("training").
            text.push_str(&" ".repeat(11usize.saturating_sub(policy.chars().count())));
            let after = heldout.iter().find(|(p, _)| *p == i + 1).map(|&(_, a)| a);
            text.push_str(&labels::pct(after));
        }
        lines.push(Line::styled(
            text,
            if *done { theme.text() } else { theme.muted() },
        ));
    }
    lines
}

fn log(app: &App, frame: &mut Frame, area: Rect) {
    if area.height < 2 {
        return;
    }
    let theme = &app.theme;
    let fit = usize::from(area.height - 1);
    let mut lines = vec![Line::styled("Log", theme.strong())];
    let start = app.log.len().saturating_sub(fit);
    for entry in &app.log[start..] {
        let style = match entry.kind {
            LogKind::Decision => theme.accent(),
            LogKind::Info => theme.text(),
            LogKind::Warning => theme.warn(),
            LogKind::Error => theme.bad(),
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{} ", labels::clock(entry.t)), theme.muted()),
            Span::styled(entry.text.clone(), style),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), area);
}
