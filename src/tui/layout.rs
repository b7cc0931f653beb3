//! Where things go on screen. Small terminals (an 80x24 SSH session) show one pane at a time
//! under a tab bar; middling ones (100-139 columns) show the focused pane beside its companion
//! under the tab bar; wide ones show all five in a grid; a zoomed pane takes the whole body.
//! Drawing and mouse hit-testing share this one computation.

use super::app::{App, Pane};
use ratatui::layout::{Constraint, Layout, Rect};

/// Below this size the panes become tabs.
pub const GRID_MIN_WIDTH: u16 = 140;
pub const GRID_MIN_HEIGHT: u16 = 40;

/// From this width (below the grid's), the focused pane gets its companion beside it.
pub const SPLIT_MIN_WIDTH: u16 = 100;

/// Lines of the status bar at the bottom.
pub const STATUS_HEIGHT: u16 = 2;

#[derive(Clone, Debug, PartialEq)]
pub struct Screen {
    /// The tab bar, when panes are tabs.
    pub tabs: Option<Rect>,
    pub panes: Vec<(Pane, Rect)>,
    pub status: Rect,
}

impl Screen {
    pub fn pane_at(&self, column: u16, row: u16) -> Option<Pane> {
        self.panes
            .iter()
            .find(|(_, r)| r.contains((column, row).into()))
            .map(|(p, _)| *p)
    }

    pub fn area_of(&self, pane: Pane) -> Option<Rect> {
        self.panes.iter().find(|(p, _)| *p == pane).map(|(_, r)| *r)
    }

    /// The tab under a click on the tab bar: tabs are laid out by [`tab_spans`] widths.
    pub fn tab_at(&self, column: u16, row: u16) -> Option<Pane> {
        let bar = self.tabs?;
        if row != bar.y {
            return None;
        }
        let mut x = bar.x;
        for pane in Pane::ALL {
            let w = tab_label(pane).chars().count() as u16;
            if (x..x + w).contains(&column) {
                return Some(pane);
            }
            x += w + 1;
        }
        None
    }
}

pub fn tab_label(pane: Pane) -> String {
    format!(" {} {} ", pane.index() + 1, pane.title())
}

pub fn is_grid(area: Rect) -> bool {
    area.width >= GRID_MIN_WIDTH && area.height >= GRID_MIN_HEIGHT
}

/// The pane shown beside the focused one in the split layout: what a person reads it with
/// (a passage with its graded answers, a self-edit with its finetune, the run with the edits).
pub fn companion(pane: Pane) -> Pane {
    match pane {
        Pane::Context => Pane::Rewards,
        Pane::Edits => Pane::Finetune,
        Pane::Finetune => Pane::Edits,
        Pane::Rewards => Pane::Context,
        Pane::Run => Pane::Edits,
    }
}

pub fn compute(app: &App, area: Rect) -> Screen {
    let [body, status] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(STATUS_HEIGHT)]).areas(area);
    if app.zoomed {
        return Screen {
            tabs: None,
            panes: vec![(app.focus, body)],
            status,
        };
    }
    if !is_grid(area) {
        let [tabs, pane] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(body);
        if area.width < SPLIT_MIN_WIDTH {
            return Screen {
                tabs: Some(tabs),
                panes: vec![(app.focus, pane)],
                status,
            };
        }
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                .areas(pane);
        return Screen {
            tabs: Some(tabs),
            panes: vec![(app.focus, left), (companion(app.focus), right)],
            status,
        };
    }
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(body);
    let [context, edits] =
        Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(top);
    let [finetune, rewards, run] = Layout::horizontal([
        Constraint::Ratio(1, 3),
        Constraint::Ratio(1, 3),
        Constraint::Ratio(1, 3),
    ])
    .areas(bottom);
    Screen {
        tabs: None,
        panes: vec![
            (Pane::Context, context),
            (Pane::Edits, edits),
            (Pane::Finetune, finetune),
            (Pane::Rewards, rewards),
            (Pane::Run, run),
        ],
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::keys::KeyMap;
    use crate::tui::theme::Theme;

    fn app() -> App {
        App::live("s", Theme::dark(), KeyMap::default())
    }

    #[test]
    fn small_screens_get_tabs_and_one_pane() {
        let s = compute(&app(), Rect::new(0, 0, 80, 24));
        assert_eq!(s.tabs, Some(Rect::new(0, 0, 80, 1)));
        assert_eq!(s.panes, vec![(Pane::Edits, Rect::new(0, 1, 80, 21))]);
        assert_eq!(s.status, Rect::new(0, 22, 80, 2));
        assert_eq!(s.tab_at(1, 0), Some(Pane::Context));
        assert_eq!(s.tab_at(14, 0), Some(Pane::Edits));
    }

    #[test]
    fn middling_screens_put_the_companion_beside_the_focused_pane() {
        let mut a = app();
        let s = compute(&a, Rect::new(0, 0, 120, 36));
        assert!(s.tabs.is_some());
        assert_eq!(
            s.panes,
            vec![
                (Pane::Edits, Rect::new(0, 1, 66, 33)),
                (Pane::Finetune, Rect::new(66, 1, 54, 33)),
            ]
        );
        assert_eq!(s.pane_at(100, 10), Some(Pane::Finetune));
        a.focus = Pane::Context;
        let s = compute(&a, Rect::new(0, 0, 139, 60));
        assert_eq!(s.panes[1].0, Pane::Rewards);
        // Below 100 columns: tabs only.
        assert_eq!(compute(&a, Rect::new(0, 0, 99, 40)).panes.len(), 1);
    }

    #[test]
    fn wide_screens_get_the_grid_and_zoom_takes_the_body() {
        let mut a = app();
        let s = compute(&a, Rect::new(0, 0, 200, 60));
        assert!(s.tabs.is_none());
        assert_eq!(s.panes.len(), 5);
        assert_eq!(s.pane_at(0, 0), Some(Pane::Context));
        assert_eq!(s.pane_at(199, 57), Some(Pane::Run));
        assert_eq!(s.pane_at(199, 58), None, "status bar");
        a.zoomed = true;
        let s = compute(&a, Rect::new(0, 0, 200, 60));
        assert_eq!(s.panes, vec![(Pane::Edits, Rect::new(0, 0, 200, 58))]);
    }
}
