//! Model output and recorded text are untrusted: a self-edit, a passage title or a judge's reply
//! can contain terminal escape sequences that would clear the screen, retitle the window or
//! reorder text. Everything a terminal may show (the screen, progress lines, reports, CSV)
//! passes through [`sanitize`], which shows such characters inert and visibly.

use std::borrow::Cow;

/// Columns between tab stops when expanding tabs.
pub const TAB_WIDTH: usize = 4;

/// How one character is drawn: as itself, or as a visible stand-in.
fn stand_in(c: char) -> Option<Cow<'static, str>> {
    let code = c as u32;
    match c {
        '\n' => None,
        // C0 controls and DEL have Unicode "control pictures" (U+2400 + code, U+2421).
        '\0'..='\x1f' => char::from_u32(0x2400 + code).map(|p| Cow::Owned(p.to_string())),
        '\x7f' => Some(Cow::Borrowed("␡")),
        // C1 controls (CSI is U+009B, OSC U+009D) have no pictures: show their code.
        '\u{80}'..='\u{9f}' => Some(Cow::Owned(format!("\\x{code:02x}"))),
        // Bidirectional overrides and isolates can reorder what a reader sees; line and
        // paragraph separators and invisible marks can hide text.
        '\u{061c}'
        | '\u{200b}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2028}'
        | '\u{2029}'
        | '\u{2066}'..='\u{2069}'
        | '\u{feff}'
        | '\u{fff9}'..='\u{fffb}' => Some(Cow::Owned(format!("<U+{code:04X}>"))),
        _ => None,
    }
}

fn needs_work(c: char) -> bool {
    c == '\t' || c == '\r' || (c != '\n' && stand_in(c).is_some())
}

/// Text made safe to draw: newlines are kept, CRLF becomes a newline, tabs are expanded to the
/// next stop, and every other control or formatting character is replaced by a visible stand-in
/// (ESC becomes `␛`, so `ESC[2J` reads `␛[2J`). Borrowed when nothing needed changing.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    // Most text is printable ASCII: a byte scan settles it without decoding.
    let printable = |b: &u8| (b' '..=b'~').contains(b) || *b == b'\n';
    if text.bytes().all(|b| printable(&b)) || !text.chars().any(needs_work) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut column = 0usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                out.push('\n');
                column = 0;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\t' => {
                let pad = TAB_WIDTH - column % TAB_WIDTH;
                out.extend(std::iter::repeat_n(' ', pad));
                column += pad;
            }
            _ => match stand_in(c) {
                Some(s) => {
                    column += s.chars().count();
                    out.push_str(&s);
                }
                None => {
                    out.push(c);
                    column += 1;
                }
            },
        }
    }
    Cow::Owned(out)
}

/// [`sanitize`] for text that must stay on one line (titles, table cells, status messages):
/// newlines are shown as `⏎`.
pub fn sanitize_line(text: &str) -> Cow<'_, str> {
    match sanitize(text) {
        Cow::Borrowed(s) if !s.contains('\n') => Cow::Borrowed(s),
        s => Cow::Owned(s.replace('\n', "⏎")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(sanitize("hello\nworld"), Cow::Borrowed(_)));
    }

    #[test]
    fn escape_sequences_become_visible_and_inert() {
        assert_eq!(sanitize("a\x1b[2Jb"), "a␛[2Jb");
        assert_eq!(sanitize("\x1b]0;title\x07"), "␛]0;title␇");
        assert_eq!(sanitize("over\rwrite"), "over␍write");
        assert_eq!(sanitize("ab\x08c"), "ab␈c");
        assert_eq!(sanitize("\u{9b}31m"), "\\x9b31m");
        assert_eq!(sanitize("x\u{202e}y"), "x<U+202E>y");
        assert_eq!(sanitize("del\x7f"), "del␡");
        assert!(!sanitize("\x1b\x07\x08\r\u{9b}\u{202e}\0")
            .chars()
            .any(|c| c.is_control()));
    }

    #[test]
    fn crlf_is_a_newline_and_tabs_expand_to_stops() {
        assert_eq!(sanitize("a\r\nb"), "a\nb");
        assert_eq!(sanitize("\tx"), "    x");
        assert_eq!(sanitize("ab\tx\n\ty"), "ab  x\n    y");
    }

    #[test]
    fn single_line_form_shows_newlines() {
        assert_eq!(sanitize_line("a\nb\x1b"), "a⏎b␛");
        assert!(matches!(sanitize_line("plain"), Cow::Borrowed(_)));
    }
}
