//! Server-sent events, as streamed completions arrive: `data:` lines gathered until a blank
//! line ends the event; comments and other fields are skipped.

#[derive(Debug, Default)]
pub struct Events {
    data: Vec<String>,
}

impl Events {
    /// Feeds one line; returns an event's data when the line ends it.
    pub fn push_line(&mut self, line: &str) -> Option<String> {
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            return self.finish();
        }
        if let Some(rest) = line.strip_prefix("data:") {
            self.data
                .push(rest.strip_prefix(' ').unwrap_or(rest).to_string());
        }
        None
    }

    /// The event in progress, if the stream ended without the blank line that closes it.
    pub fn finish(&mut self) -> Option<String> {
        if self.data.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.data).join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_data_lines_up_to_a_blank_line() {
        let mut e = Events::default();
        let stream =
            ": comment\nevent: x\ndata: {\"a\":1}\n\ndata:one\ndata: two\r\n\r\ndata: [DONE]";
        let mut got = Vec::new();
        for line in stream.split_inclusive('\n') {
            got.extend(e.push_line(line));
        }
        got.extend(e.finish());
        assert_eq!(got, ["{\"a\":1}", "one\ntwo", "[DONE]"]);
        assert_eq!(e.finish(), None);
    }
}
