//! ARC grids as terminal cells: two columns per cell in the ARC palette (or digits without
//! colour), labelled tiles laid out side by side as the width allows, and predicted grids with
//! the cells that differ from the expected grid marked.

use crate::record::Grid;
use crate::tui::theme::Theme;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};

/// A block of lines of known width, e.g. a labelled grid.
#[derive(Clone, Debug, Default)]
pub struct Tile {
    pub lines: Vec<Line<'static>>,
    pub width: usize,
}

impl Tile {
    pub fn new(lines: Vec<Line<'static>>) -> Tile {
        let width = lines.iter().map(Line::width).max().unwrap_or(0);
        Tile { lines, width }
    }

    pub fn text(text: String, style: Style) -> Tile {
        Tile::new(vec![Line::styled(text, style)])
    }

    /// This tile with `label` above it.
    pub fn labelled(mut self, label: String, style: Style) -> Tile {
        self.lines.insert(0, Line::styled(label, style));
        Tile::new(self.lines)
    }
}

/// Text colour that reads on an ARC cell colour.
fn ink_on(index: u8) -> Color {
    match index {
        4 | 5 | 8 => Color::Black,
        _ => Color::White,
    }
}

/// A grid as lines; cells where `expected` (same shape) differs are marked.
pub fn grid(grid: &Grid, expected: Option<&Grid>, theme: &Theme) -> Tile {
    let same_shape = expected.filter(|e| e.height() == grid.height() && e.width() == grid.width());
    let lines = grid
        .rows()
        .iter()
        .enumerate()
        .map(|(r, row)| {
            let spans: Vec<Span<'static>> = row
                .iter()
                .enumerate()
                .map(|(c, &v)| {
                    let wrong = same_shape.is_some_and(|e| e.get(r, c) != Some(v));
                    cell(v, wrong, theme)
                })
                .collect();
            Line::from(spans)
        })
        .collect();
    Tile::new(lines)
}

fn cell(v: u8, wrong: bool, theme: &Theme) -> Span<'static> {
    if !theme.colored {
        let text = format!("{v}{}", if wrong { '*' } else { ' ' });
        let style = if wrong {
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)
        } else {
            Style::new()
        };
        return Span::styled(text, style);
    }
    let bg = theme.arc[usize::from(v.min(9))];
    if wrong {
        Span::styled(
            "××",
            Style::new()
                .bg(bg)
                .fg(ink_on(v))
                .add_modifier(Modifier::BOLD),
        )
    } else if v == 0 {
        // Black cells on a dark terminal would vanish; a faint dot keeps the grid's shape.
        Span::styled("· ", Style::new().bg(bg).fg(Color::DarkGray))
    } else {
        Span::styled("  ", Style::new().bg(bg))
    }
}

/// How many cells differ, or why they cannot be compared.
pub fn difference(predicted: &Grid, expected: &Grid) -> String {
    if predicted.height() != expected.height() || predicted.width() != expected.width() {
        return format!(
            "shape {}x{}, expected {}x{}",
            predicted.height(),
            predicted.width(),
            expected.height(),
            expected.width()
        );
    }
    let cells = |g: &Grid| g.rows().iter().flatten().copied().collect::<Vec<u8>>();
    let wrong = cells(predicted)
        .iter()
        .zip(cells(expected).iter())
        .filter(|(a, b)| a != b)
        .count();
    match wrong {
        0 => "exact match".into(),
        1 => "1 cell differs".into(),
        n => format!("{n} cells differ"),
    }
}

/// Places tiles side by side with `gap` columns between them.
pub fn beside(tiles: &[Tile], gap: usize) -> Tile {
    let height = tiles.iter().map(|t| t.lines.len()).max().unwrap_or(0);
    let lines = (0..height)
        .map(|row| {
            let mut spans: Vec<Span<'static>> = Vec::new();
            for (i, tile) in tiles.iter().enumerate() {
                let line = tile.lines.get(row);
                let used = line.map_or(0, Line::width);
                if let Some(line) = line {
                    spans.extend(line.spans.iter().cloned().map(|s| {
                        // A line's own style (a label's) must survive being merged.
                        s.patch_style(line.style)
                    }));
                }
                let last = i + 1 == tiles.len();
                let pad = tile.width.saturating_sub(used) + if last { 0 } else { gap };
                if pad > 0 && !last {
                    spans.push(Span::raw(" ".repeat(pad)));
                }
            }
            Line::from(spans)
        })
        .collect();
    Tile::new(lines)
}

/// Lays tiles out in rows no wider than `width`, a blank line between rows.
pub fn flow(tiles: Vec<Tile>, width: usize, gap: usize) -> Vec<Line<'static>> {
    let mut out: Vec<Line<'static>> = Vec::new();
    let mut row: Vec<Tile> = Vec::new();
    let mut used = 0usize;
    let flush = |row: &mut Vec<Tile>, out: &mut Vec<Line<'static>>| {
        if row.is_empty() {
            return;
        }
        if !out.is_empty() {
            out.push(Line::default());
        }
        out.extend(beside(row, gap).lines);
        row.clear();
    };
    for tile in tiles {
        let needed = if row.is_empty() {
            tile.width
        } else {
            used + gap + tile.width
        };
        if !row.is_empty() && needed > width {
            flush(&mut row, &mut out);
            used = 0;
        }
        used = if row.is_empty() {
            tile.width
        } else {
            used + gap + tile.width
        };
        row.push(tile);
    }
    flush(&mut row, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(text: &str) -> Grid {
        Grid(
            text.lines()
                .map(|l| l.bytes().map(|b| b - b'0').collect())
                .collect(),
        )
    }

    fn text(lines: &[Line]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn colourless_grids_are_digits_with_differences_starred() {
        let plain = Theme::plain();
        let t = grid(&g("12\n30"), Some(&g("12\n00")), &plain);
        assert_eq!(text(&t.lines), ["1 2 ", "3*0 "]);
        assert_eq!(t.width, 4);
    }

    #[test]
    fn coloured_cells_use_the_arc_palette() {
        let dark = Theme::dark();
        let t = grid(&g("01"), None, &dark);
        assert_eq!(t.lines[0].spans[1].style.bg, Some(dark.arc[1]));
        assert_eq!(t.lines[0].spans[0].content, "· ");
        let t = grid(&g("2"), Some(&g("3")), &dark);
        assert_eq!(t.lines[0].spans[0].content, "××");
    }

    #[test]
    fn differences_are_counted_or_explained() {
        assert_eq!(difference(&g("12\n34"), &g("12\n34")), "exact match");
        assert_eq!(difference(&g("12\n34"), &g("12\n35")), "1 cell differs");
        assert_eq!(difference(&g("1"), &g("12")), "shape 1x1, expected 1x2");
    }

    #[test]
    fn tiles_flow_into_rows() {
        let plain = Theme::plain();
        let a = grid(&g("1"), None, &plain).labelled("a".into(), Style::new());
        let b = grid(&g("22"), None, &plain).labelled("b".into(), Style::new());
        assert_eq!(
            text(&flow(vec![a.clone(), b.clone()], 20, 2)),
            ["a   b", "1   2 2 "]
        );
        assert_eq!(text(&flow(vec![a, b], 5, 2)), ["a", "1 ", "", "b", "2 2 "]);
    }
}
