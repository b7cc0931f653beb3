//! Word wrapping with a hanging indent (`gold     Central and South America | the humid forests`
//! continues under `Central`, not at the pane's edge), and cutting a line to a width with an
//! ellipsis. ratatui's own wrapping restarts every continuation at column 0.

use ratatui::style::Style;
use ratatui::text::{Line, Span};

fn width(s: &str) -> usize {
    Span::raw(s).width()
}

/// Lays `body` out after `prefix`, wrapping at `max` columns; continuation lines start under
/// the body's first column. Words wider than the room left are split.
pub fn hanging(
    prefix: Vec<Span<'static>>,
    body: Vec<Span<'static>>,
    max: usize,
) -> Vec<Line<'static>> {
    let indent = prefix.iter().map(Span::width).sum::<usize>();
    // Too narrow for an indent: fall back to wrapping from the edge.
    let indent = if indent + 8 > max { 0 } else { indent };
    let room = max.saturating_sub(indent).max(1);
    let mut lines: Vec<Line<'static>> = Vec::new();
    let mut current: Vec<Span<'static>> = prefix;
    let mut used = 0usize;
    let mut pending_space: Option<Style> = None;
    let mut new_line = |current: &mut Vec<Span<'static>>, used: &mut usize| {
        lines.push(Line::from(std::mem::take(current)));
        if indent > 0 {
            current.push(Span::raw(" ".repeat(indent)));
        }
        *used = 0;
    };
    for span in body {
        let style = span.style;
        for (i, word) in span.content.split(' ').enumerate() {
            if i > 0 {
                pending_space = Some(style);
            }
            if word.is_empty() {
                continue;
            }
            let mut word = word.to_string();
            loop {
                let space = usize::from(pending_space.is_some() && used > 0);
                let w = width(&word);
                if used + space + w <= room {
                    if space == 1 {
                        current.push(Span::styled(" ", pending_space.unwrap_or(style)));
                    }
                    current.push(Span::styled(word, style));
                    used += space + w;
                    pending_space = None;
                    break;
                }
                if used > 0 {
                    new_line(&mut current, &mut used);
                    pending_space = None;
                    continue;
                }
                // A word longer than a whole line: cut it.
                let mut head = String::new();
                let mut rest = word.chars();
                for c in rest.by_ref() {
                    if width(&head) + width(&c.to_string()) > room {
                        let tail: String = std::iter::once(c).chain(rest).collect();
                        current.push(Span::styled(head, style));
                        new_line(&mut current, &mut used);
                        word = tail;
                        head = String::new();
                        break;
                    }
                    head.push(c);
                }
                if !head.is_empty() {
                    used = width(&head);
                    current.push(Span::styled(head, style));
                    break;
                }
            }
        }
    }
    lines.push(Line::from(current));
    lines
}

/// Builds one output line from pieces, merging neighbours of the same style.
#[derive(Default)]
struct Builder {
    spans: Vec<Span<'static>>,
    text: String,
    style: Style,
    used: usize,
}

impl Builder {
    fn push(&mut self, piece: &str, style: Style, width: usize) {
        if style != self.style && !self.text.is_empty() {
            self.spans
                .push(Span::styled(std::mem::take(&mut self.text), self.style));
        }
        self.style = style;
        self.text.push_str(piece);
        self.used += width;
    }

    /// Ends the line at a break: spaces before the break are dropped.
    fn break_line(&mut self, line_style: Style) -> Line<'static> {
        let kept = self.text.trim_end_matches(' ').len();
        self.text.truncate(kept);
        self.finish(line_style)
    }

    fn finish(&mut self, line_style: Style) -> Line<'static> {
        if !self.text.is_empty() {
            self.spans
                .push(Span::styled(std::mem::take(&mut self.text), self.style));
        }
        self.used = 0;
        Line::from(std::mem::take(&mut self.spans)).style(line_style)
    }
}

/// Runs of spaces and runs of everything else, in order.
fn tokens(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let first = rest.chars().next()?;
        let spaces = first == ' ';
        let end = rest
            .find(|c: char| (c == ' ') != spaces)
            .unwrap_or(rest.len());
        let (token, tail) = rest.split_at(end);
        rest = tail;
        Some(token)
    })
}

/// Wraps lines at word boundaries to `max` columns, keeping every character (indentation
/// included) except the spaces a break falls on. Lines that fit are moved through untouched.
/// This is what panes draw with: the line count is exact, so scrolling is, and only the
/// visible slice is handed to the terminal.
pub fn reflow(lines: Vec<Line<'static>>, max: usize) -> Vec<Line<'static>> {
    let max = max.max(1);
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        if line.width() <= max {
            out.push(line);
            continue;
        }
        let line_style = line.style;
        let mut b = Builder::default();
        for span in line.spans {
            let style = span.style;
            for token in tokens(&span.content) {
                let w = width(token);
                if b.used + w <= max {
                    b.push(token, style, w);
                } else if token.starts_with(' ') {
                    // The break falls on these spaces.
                    if b.used > 0 {
                        out.push(b.finish(line_style));
                    }
                } else if w <= max {
                    out.push(b.break_line(line_style));
                    b.push(token, style, w);
                } else {
                    for c in token.chars() {
                        let mut buf = [0u8; 4];
                        let piece = c.encode_utf8(&mut buf);
                        let cw = width(piece);
                        if b.used + cw > max && b.used > 0 {
                            out.push(b.finish(line_style));
                        }
                        b.push(piece, style, cw);
                    }
                }
            }
        }
        if b.used > 0 || !b.spans.is_empty() || !b.text.is_empty() {
            out.push(b.finish(line_style));
        }
    }
    out
}

/// The line cut to `max` columns, ending in `…` when something was cut.
pub fn fit(line: Line<'static>, max: usize) -> Line<'static> {
    if line.width() <= max {
        return line;
    }
    let mut out: Vec<Span<'static>> = Vec::new();
    let mut used = 0usize;
    let budget = max.saturating_sub(1);
    for span in line.spans {
        let w = span.width();
        if used + w <= budget {
            used += w;
            out.push(span);
            continue;
        }
        let mut cut = String::new();
        for c in span.content.chars() {
            let cw = width(&c.to_string());
            if used + cw > budget {
                break;
            }
            used += cw;
            cut.push(c);
        }
        out.push(Span::styled(cut, span.style));
        out.push(Span::styled("…", span.style));
        break;
    }
    Line::from(out).style(line.style)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(lines: &[Line]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn continuation_lines_hang_under_the_body() {
        let lines = hanging(
            vec![Span::raw("gold  ")],
            vec![Span::raw("Central and South America | the humid forests")],
            24,
        );
        assert_eq!(
            text(&lines),
            [
                "gold  Central and South",
                "      America | the",
                "      humid forests"
            ]
        );
    }

    #[test]
    fn long_words_are_split_and_styles_kept() {
        let bold = Style::new().add_modifier(ratatui::style::Modifier::BOLD);
        let lines = hanging(vec![], vec![Span::styled("abcdefghij klm", bold)], 4);
        assert_eq!(text(&lines), ["abcd", "efgh", "ij", "klm"]);
        assert!(lines.iter().flat_map(|l| &l.spans).all(|s| s.style == bold));
    }

    #[test]
    fn reflow_keeps_indentation_and_breaks_on_spaces() {
        let lines = vec![
            Line::raw("short"),
            Line::raw("    \"key\": \"a long value here\""),
            Line::raw("abcdefghijkl"),
            Line::default(),
        ];
        assert_eq!(
            text(&reflow(lines, 12)),
            [
                "short",
                "    \"key\":",
                "\"a long",
                "value here\"",
                "abcdefghijkl",
                ""
            ]
        );
        let bold = Style::new().add_modifier(ratatui::style::Modifier::BOLD);
        let styled = vec![Line::from(vec![
            Span::styled("aa bb", bold),
            Span::raw(" cc"),
        ])];
        let out = reflow(styled, 5);
        assert_eq!(text(&out), ["aa bb", "cc"]);
        assert_eq!(out[0].spans[0].style, bold);
        assert_eq!(
            text(&reflow(vec![Line::raw("abcdefgh")], 3)),
            ["abc", "def", "gh"]
        );
    }

    #[test]
    fn fit_cuts_with_an_ellipsis() {
        let line = Line::from(vec![Span::raw("hello "), Span::raw("world")]);
        assert_eq!(fit(line.clone(), 20).to_string(), "hello world");
        assert_eq!(fit(line.clone(), 8).to_string(), "hello w…");
        assert_eq!(fit(line, 3).to_string(), "he…");
    }
}
