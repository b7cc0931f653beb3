//! The forgetting matrix of a continual-learning evaluation (`eval --continual`, the paper's
//! Figure 6) on the screen: accuracy on every earlier passage after each update as a heat map
//! in the theme's colours, a cursor over its cells, and what the cell under it says (the
//! passage's unadapted accuracy, its accuracy right after its own update, and how much of that
//! later updates took away). `seal-tui report FILE.json --screen` opens it. It draws recorded
//! figures only; like the rest of the workbench, it runs no model code.

use super::keys::{Action, Key, KeyMap};
use super::{terminal, Theme, TuiOptions};
use crate::text::sanitize_line;
use anyhow::{bail, Result};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;
use std::time::Duration;

/// A continual evaluation's recorded figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Forgetting {
    pub titles: Vec<String>,
    /// The unadapted model's accuracy on each passage.
    pub base: Vec<f64>,
    /// `matrix[i][j]`, `j <= i`: accuracy on passage `j` after the update for passage `i`.
    pub matrix: Vec<Vec<f64>>,
    /// The self-edit template the updates were trained with.
    pub template: String,
}

/// The screen's state: the figures and the cell under the cursor.
pub struct ForgettingView {
    data: Forgetting,
    theme: Theme,
    keymap: KeyMap,
    /// The cursor: accuracy on passage `col` after the update for passage `row` (`col <= row`).
    row: usize,
    col: usize,
    quit: bool,
}

/// Columns of the row labels ("after 12 ") and of one cell (" 100%").
const LABEL: u16 = 9;
const CELL: u16 = 6;

impl ForgettingView {
    /// A view of `data` with the cursor on the last update's first passage; a matrix that is
    /// not lower-triangular over the titles (a damaged file) is an error.
    pub fn new(data: Forgetting, theme: Theme, keymap: KeyMap) -> Result<ForgettingView> {
        let n = data.titles.len();
        if n == 0 {
            bail!("the continual evaluation has no passages");
        }
        if data.base.len() != n || data.matrix.len() != n {
            bail!(
                "the forgetting matrix has {} rows and {} unadapted figures for {n} passages",
                data.matrix.len(),
                data.base.len()
            );
        }
        if let Some((i, row)) = data
            .matrix
            .iter()
            .enumerate()
            .find(|(i, row)| row.len() != i + 1)
        {
            bail!(
                "row {} of the forgetting matrix has {} figures, not {}",
                i + 1,
                row.len(),
                i + 1
            );
        }
        let all = data.base.iter().chain(data.matrix.iter().flatten());
        if all.clone().any(|a| !(0.0..=1.0).contains(a)) {
            bail!("the forgetting matrix holds an accuracy outside 0-1");
        }
        Ok(ForgettingView {
            row: n - 1,
            col: 0,
            data,
            theme,
            keymap,
            quit: false,
        })
    }

    /// The cell under the cursor: (update, passage), both from 0.
    pub fn cursor(&self) -> (usize, usize) {
        (self.row, self.col)
    }

    pub fn quit(&self) -> bool {
        self.quit
    }

    /// A key as the keymap binds it: the edit keys (j/k, up/down) move between updates, the
    /// context keys (h/l, left/right) between passages, quit, back or ctrl-c close the view.
    pub fn key(&mut self, key: &Key) {
        if let Some(action) = self.keymap.action(key) {
            self.act(action);
        }
    }

    pub fn act(&mut self, action: Action) {
        let last = self.data.titles.len() - 1;
        match action {
            Action::NextEdit | Action::ScrollDown => self.row = (self.row + 1).min(last),
            Action::PrevEdit | Action::ScrollUp => self.row = self.row.saturating_sub(1),
            Action::NextContext => self.col = (self.col + 1).min(last),
            Action::PrevContext => self.col = self.col.saturating_sub(1),
            Action::ScrollTop => self.row = 0,
            Action::ScrollBottom => self.row = last,
            Action::Quit | Action::Back | Action::ForceQuit => self.quit = true,
            _ => {}
        }
        // A passage is graded only from its own update on: the cursor stays on or below the
        // diagonal, moving along the row's passages or down to the passage's update.
        if self.col > self.row {
            match action {
                Action::NextContext => self.row = self.col,
                _ => self.col = self.row,
            }
        }
    }

    /// The mean change, over passages updated before the last, from right after a passage's
    /// own update to after the last update: negative is forgetting.
    fn mean_change(&self) -> Option<f64> {
        let m = &self.data.matrix;
        let last = m.last()?;
        let n = m.len() - 1;
        (n > 0).then(|| (0..n).map(|j| last[j] - m[j][j]).sum::<f64>() / n as f64)
    }

    /// Where the heat map's window starts so that `at` shows, `fit` cells wide.
    fn window(at: usize, fit: usize) -> usize {
        (at + 1).saturating_sub(fit.max(1))
    }

    fn heat(&self, accuracy: f64) -> Style {
        let t = &self.theme;
        if !t.colored {
            return Style::new();
        }
        let colour = match (t.bad, t.warn, t.ok) {
            (Color::Rgb(r0, g0, b0), Color::Rgb(r1, g1, b1), Color::Rgb(r2, g2, b2)) => {
                let mix = |a: u8, b: u8, f: f64| (a as f64 + (b as f64 - a as f64) * f) as u8;
                if accuracy < 0.5 {
                    let f = accuracy * 2.0;
                    Color::Rgb(mix(r0, r1, f), mix(g0, g1, f), mix(b0, b1, f))
                } else {
                    let f = (accuracy - 0.5) * 2.0;
                    Color::Rgb(mix(r1, r2, f), mix(g1, g2, f), mix(b1, b2, f))
                }
            }
            _ if accuracy < 1.0 / 3.0 => t.bad,
            _ if accuracy < 2.0 / 3.0 => t.warn,
            _ => t.ok,
        };
        Style::new().fg(t.badge_fg).bg(colour)
    }
}

fn percent(a: f64) -> String {
    format!("{:>4.0}%", a * 100.0)
}

/// The whole screen: title, heat map, the cursor's cell, the summary, the passages' titles and
/// the keys.
pub fn draw(view: &ForgettingView, frame: &mut Frame) {
    let t = &view.theme;
    let area = frame.area();
    frame.render_widget(Block::new().style(t.base()), area);
    let n = view.data.titles.len();
    // The map's rows: a header, the unadapted model, one per update; two more for the border.
    let map_height = (n as u16 + 4).min(area.height.saturating_sub(8).max(5));
    let [title, map, detail, legend, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(map_height),
        Constraint::Length(3),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);

    let heading = format!(
        " Forgetting matrix · {} passages · template {}",
        n,
        sanitize_line(&view.data.template)
    );
    frame.render_widget(Paragraph::new(Line::styled(heading, t.strong())), title);
    draw_map(view, frame, map);
    draw_detail(view, frame, detail);

    let lines: Vec<Line> = view
        .data
        .titles
        .iter()
        .enumerate()
        .map(|(j, title)| {
            let style = if j == view.col { t.accent() } else { t.text() };
            Line::styled(format!(" p{:<3} {}", j + 1, sanitize_line(title)), style)
        })
        .collect();
    // Keep the cursor's passage in sight when the titles do not all fit.
    let skip = ForgettingView::window(view.col, legend.height as usize);
    frame.render_widget(Paragraph::new(lines).scroll((skip as u16, 0)), legend);

    let hint = |action: Action, fallback: &str| {
        view.keymap
            .hint(action)
            .unwrap_or_else(|| fallback.to_string())
    };
    let help = format!(
        " {}/{} update · {}/{} passage · {} quit",
        hint(Action::PrevEdit, "k"),
        hint(Action::NextEdit, "j"),
        hint(Action::PrevContext, "h"),
        hint(Action::NextContext, "l"),
        hint(Action::Quit, "q"),
    );
    frame.render_widget(Paragraph::new(Line::styled(help, t.status())), keys);
}

fn draw_map(view: &ForgettingView, frame: &mut Frame, area: Rect) {
    let t = &view.theme;
    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(t.border(true))
        .title(Span::styled(
            " accuracy on each passage after each update ",
            t.pane_title(true),
        ));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let n = view.data.titles.len();
    let cols_fit = (inner.width.saturating_sub(LABEL) / CELL) as usize;
    let rows_fit = inner.height.saturating_sub(2) as usize;
    let first_col = ForgettingView::window(view.col, cols_fit);
    let first_row = ForgettingView::window(view.row, rows_fit);
    let cols = first_col..(first_col + cols_fit).min(n);

    let mut lines = Vec::new();
    let mut header = vec![Span::raw(" ".repeat(LABEL as usize))];
    for j in cols.clone() {
        let style = if j == view.col { t.accent() } else { t.muted() };
        header.push(Span::styled(
            format!("{:>w$}", format!("p{}", j + 1), w = CELL as usize),
            style,
        ));
    }
    lines.push(Line::from(header));
    let mut base = vec![Span::styled(
        format!("{:<w$}", "unadapted", w = LABEL as usize),
        t.muted(),
    )];
    for j in cols.clone() {
        base.push(Span::styled(
            format!(" {}", percent(view.data.base[j])),
            t.muted(),
        ));
    }
    lines.push(Line::from(base));
    for i in (first_row..n).take(rows_fit) {
        let label_style = if i == view.row { t.accent() } else { t.text() };
        let mut spans = vec![Span::styled(
            format!("{:<w$}", format!("after {}", i + 1), w = LABEL as usize),
            label_style,
        )];
        for j in cols.clone() {
            spans.push(Span::raw(" "));
            if j > i {
                spans.push(Span::styled("    ·", t.muted()));
                continue;
            }
            let a = view.data.matrix[i][j];
            let mut style = view.heat(a);
            if (i, j) == (view.row, view.col) {
                style = style.add_modifier(Modifier::REVERSED | Modifier::BOLD);
            }
            spans.push(Span::styled(percent(a), style));
        }
        lines.push(Line::from(spans));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_detail(view: &ForgettingView, frame: &mut Frame, area: Rect) {
    let t = &view.theme;
    let (i, j) = view.cursor();
    let d = &view.data;
    let at = d.matrix[i][j];
    let own = d.matrix[j][j];
    let cell = format!(
        " After update {} of {} (p{}), on p{} {}: {}",
        i + 1,
        d.titles.len(),
        i + 1,
        j + 1,
        sanitize_line(&d.titles[j]),
        percent(at).trim_start()
    );
    let change = (at - own) * 100.0;
    let context = format!(
        " unadapted {} · right after its own update {} · {:+.0} pts since then",
        percent(d.base[j]).trim_start(),
        percent(own).trim_start(),
        change
    );
    let context_style = if change < -0.5 {
        t.bad()
    } else if change > 0.5 {
        t.ok()
    } else {
        t.text()
    };
    let summary = match view.mean_change() {
        Some(c) => format!(
            " Mean change from own update to the last: {:+.1} pts ({} passages)",
            c * 100.0,
            d.titles.len() - 1
        ),
        None => " One passage: nothing learnt after it to forget it by.".to_string(),
    };
    let lines = vec![
        Line::styled(cell, t.strong()),
        Line::styled(context, context_style),
        Line::styled(summary, t.muted()),
    ];
    frame.render_widget(Paragraph::new(lines), area);
}

/// Opens the view on the terminal until the user closes it (or a signal or hang-up arrives);
/// the terminal is restored on every way out.
pub fn show(data: Forgetting, options: TuiOptions) -> Result<()> {
    let (theme, keymap) = super::load_options(&options)?;
    let mut view = ForgettingView::new(data, theme, keymap)?;
    let mut tui = terminal::Tui::enter()?;
    let outcome = view_loop(&mut tui, &mut view);
    let restored = tui.restore();
    outcome.and(restored)
}

fn view_loop(tui: &mut terminal::Tui, view: &mut ForgettingView) -> Result<()> {
    let input = super::spawn_input_reader();
    tui.draw(|frame| draw(view, frame))?;
    while !view.quit() && !tui.signalled() {
        match input.recv_timeout(Duration::from_millis(100)) {
            Ok(crossterm::event::Event::Key(event)) => {
                if let Some(key) = Key::from_event(&event) {
                    view.key(&key);
                }
            }
            Ok(_) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        }
        tui.draw(|frame| draw(view, frame))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Forgetting {
        Forgetting {
            titles: (1..=n).map(|i| format!("passage {i}")).collect(),
            base: vec![0.1; n],
            matrix: (0..n)
                .map(|i| {
                    (0..=i)
                        .map(|j| 0.5 + 0.1 * (j as f64) - 0.05 * (i - j) as f64)
                        .collect()
                })
                .collect(),
            template: "implications".into(),
        }
    }

    fn view(n: usize) -> ForgettingView {
        ForgettingView::new(data(n), Theme::plain(), KeyMap::default()).unwrap()
    }

    #[test]
    fn a_damaged_matrix_is_refused() {
        let mut d = data(3);
        d.matrix[1].push(0.2);
        let e = ForgettingView::new(d, Theme::plain(), KeyMap::default()).err();
        assert!(e.unwrap().to_string().contains("row 2"));
        let mut d = data(3);
        d.base.pop();
        assert!(ForgettingView::new(d, Theme::plain(), KeyMap::default()).is_err());
        let mut d = data(3);
        d.matrix[2][0] = f64::NAN;
        assert!(ForgettingView::new(d, Theme::plain(), KeyMap::default()).is_err());
        assert!(ForgettingView::new(data(0), Theme::plain(), KeyMap::default()).is_err());
    }

    #[test]
    fn the_cursor_stays_on_graded_cells() {
        let mut v = view(4);
        assert_eq!(v.cursor(), (3, 0));
        v.act(Action::PrevEdit);
        v.act(Action::PrevEdit);
        assert_eq!(v.cursor(), (1, 0));
        // Right past the diagonal moves down to that passage's own update.
        v.act(Action::NextContext);
        v.act(Action::NextContext);
        assert_eq!(v.cursor(), (2, 2));
        // Up from the diagonal keeps the cursor on it.
        v.act(Action::PrevEdit);
        assert_eq!(v.cursor(), (1, 1));
        v.act(Action::ScrollTop);
        assert_eq!(v.cursor(), (0, 0));
        for _ in 0..10 {
            v.act(Action::NextEdit);
            v.act(Action::NextContext);
        }
        assert_eq!(v.cursor(), (3, 3));
        assert!(!v.quit());
        v.key(&Key::char('q'));
        assert!(v.quit());
    }

    #[test]
    fn forgetting_is_the_change_since_each_passages_own_update() {
        // Passage j after update 3 lost 0.05 per later update: (3 - j) * 0.05.
        let v = view(4);
        let expected = -(0.15 + 0.10 + 0.05) / 3.0;
        assert!((v.mean_change().unwrap() - expected).abs() < 1e-12);
        assert_eq!(view(1).mean_change(), None);
    }
}
