//! Where a piece of work sits in a run. Stored 0-based (they index vectors); shown 1-based
//! (`r1 c2 e1`), which is also how a person may write them in a command.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// A context within a run: its round and its position among the round's contexts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct CtxId {
    pub round: usize,
    pub ctx: usize,
}

/// One self-edit: its context and its index among the k samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct EditId {
    pub round: usize,
    pub ctx: usize,
    pub edit: usize,
}

impl EditId {
    pub fn new(ctx: CtxId, edit: usize) -> EditId {
        EditId {
            round: ctx.round,
            ctx: ctx.ctx,
            edit,
        }
    }

    pub fn ctx_id(self) -> CtxId {
        CtxId {
            round: self.round,
            ctx: self.ctx,
        }
    }

    /// Parses the 1-based label a person reads: `r1 c2 e1`, `r1c2e1` or `r1-c2-e1`.
    pub fn parse_label(text: &str) -> Result<EditId, String> {
        let numbers = label_numbers(text, &['r', 'c', 'e'])?;
        Ok(EditId {
            round: numbers[0],
            ctx: numbers[1],
            edit: numbers[2],
        })
    }
}

impl CtxId {
    pub fn parse_label(text: &str) -> Result<CtxId, String> {
        let numbers = label_numbers(text, &['r', 'c'])?;
        Ok(CtxId {
            round: numbers[0],
            ctx: numbers[1],
        })
    }
}

/// The 0-based numbers of a 1-based label whose parts are introduced by `letters`.
fn label_numbers(text: &str, letters: &[char]) -> Result<Vec<usize>, String> {
    let example = letters
        .iter()
        .map(|l| format!("{l}1"))
        .collect::<Vec<_>>()
        .join(" ");
    let bad = || format!("{text:?} is not an id like \"{example}\" (numbered from 1)");
    let compact: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    let mut rest = compact.as_str();
    let mut out = Vec::new();
    for letter in letters {
        rest = rest.strip_prefix(*letter).ok_or_else(bad)?;
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let n: usize = rest[..digits].parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        out.push(n - 1);
        rest = &rest[digits..];
    }
    if !rest.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

impl fmt::Display for CtxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{} c{}", self.round + 1, self.ctx + 1)
    }
}

impl fmt::Display for EditId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "r{} c{} e{}",
            self.round + 1,
            self.ctx + 1,
            self.edit + 1
        )
    }
}

/// The stored form (`{"round":0,"ctx":1,"edit":0}`, 0-based) or a person's label (`"r1 c2 e1"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum IdForm<T> {
    Stored(T),
    Label(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredCtx {
    round: usize,
    ctx: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredEdit {
    round: usize,
    ctx: usize,
    edit: usize,
}

impl<'de> Deserialize<'de> for CtxId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match IdForm::<StoredCtx>::deserialize(d)? {
            IdForm::Stored(s) => Ok(CtxId {
                round: s.round,
                ctx: s.ctx,
            }),
            IdForm::Label(text) => CtxId::parse_label(&text).map_err(serde::de::Error::custom),
        }
    }
}

impl<'de> Deserialize<'de> for EditId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match IdForm::<StoredEdit>::deserialize(d)? {
            IdForm::Stored(s) => Ok(EditId {
                round: s.round,
                ctx: s.ctx,
                edit: s.edit,
            }),
            IdForm::Label(text) => EditId::parse_label(&text).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_one_based_and_round_trip() {
        let id = EditId {
            round: 0,
            ctx: 1,
            edit: 2,
        };
        assert_eq!(id.to_string(), "r1 c2 e3");
        for text in ["r1 c2 e3", "r1c2e3", "R1-C2-E3", " r1 c2 e3 "] {
            assert_eq!(EditId::parse_label(text), Ok(id), "{text}");
        }
        for bad in ["r0 c1 e1", "r1 c2", "c1 r1 e1", "r1 c2 e3 x", "", "r c e"] {
            assert!(EditId::parse_label(bad).is_err(), "{bad}");
        }
        assert_eq!(CtxId::parse_label("r2 c1"), Ok(CtxId { round: 1, ctx: 0 }));
    }

    #[test]
    fn both_forms_deserialize_and_the_stored_form_is_written() {
        let id = EditId {
            round: 0,
            ctx: 0,
            edit: 1,
        };
        let stored = serde_json::to_string(&id).unwrap();
        assert_eq!(stored, r#"{"round":0,"ctx":0,"edit":1}"#);
        assert_eq!(serde_json::from_str::<EditId>(&stored).unwrap(), id);
        assert_eq!(serde_json::from_str::<EditId>(r#""r1 c1 e2""#).unwrap(), id);
        let err = serde_json::from_str::<EditId>(r#""r0 c1 e1""#).unwrap_err();
        assert!(err.to_string().contains("numbered from 1"), "{err}");
    }
}
