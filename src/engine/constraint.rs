//! Sampling under a grammar: at every step only the tokens that keep the text a prefix of some
//! valid output may be drawn, and the generation ends the moment the output is complete. The
//! grammar itself belongs to whoever asks (the engine knows no formats): it walks text one
//! piece at a time from a [`PrefixState`].

use super::tokenizer::Tokenizer;
use anyhow::{bail, Context, Result};

/// Where a walk through a grammar stands: which of its elements is being read and what of that
/// element has been read so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixState {
    pub element: usize,
    pub partial: String,
}

pub trait Constraint: Send + Sync {
    /// The state before any text.
    fn start(&self) -> PrefixState {
        PrefixState::default()
    }
    /// The state after `text` follows `state`, or `None` when no valid output continues so.
    fn feed(&self, state: &PrefixState, text: &str) -> Option<PrefixState>;
    /// Whether the text read so far is a whole valid output.
    fn is_complete(&self, state: &PrefixState) -> bool;
    /// The shortest text that completes the output from `state`. The sampler keeps its tokens
    /// within the tokens left, so an output does not run out of tokens half-written.
    fn shortest_completion(&self, _state: &PrefixState) -> String {
        String::new()
    }
}

/// Each token's text on its own, or `None` for a token that is not text by itself (a special
/// token, or bytes of a character split across tokens): those are never drawn under a grammar.
pub fn token_texts(tokenizer: &Tokenizer) -> Vec<Option<String>> {
    (0..tokenizer.vocab_size() as u32)
        .map(|id| {
            let text = tokenizer.decode(&[id]).ok()?;
            (!text.is_empty() && !text.contains('\u{FFFD}')).then_some(text)
        })
        .collect()
}

/// Sets the logit of every token that cannot follow `state`, or after which `fits` says the
/// output could no longer be finished, to minus infinity; returns how many tokens remain.
pub fn mask_logits(
    logits: &mut [f32],
    texts: &[Option<String>],
    constraint: &dyn Constraint,
    state: &PrefixState,
    fits: &dyn Fn(&PrefixState) -> bool,
) -> usize {
    let mut allowed = 0;
    for (id, logit) in logits.iter_mut().enumerate() {
        let ok = texts
            .get(id)
            .and_then(|t| t.as_deref())
            .is_some_and(|t| constraint.feed(state, t).is_some_and(|next| fits(&next)));
        if ok {
            allowed += 1;
        } else {
            *logit = f32::NEG_INFINITY;
        }
    }
    allowed
}

/// A constraint in use for one generation: every token's text, and where the text stands.
pub struct Guide<'c> {
    constraint: &'c dyn Constraint,
    texts: Vec<Option<String>>,
    state: PrefixState,
}

/// Tokens of slack before the end of a generation inside which no single token can take the
/// shortest completion out of reach (one token moves it by a few at most).
const ROOM: usize = 8;

impl<'c> Guide<'c> {
    pub fn new(constraint: &'c dyn Constraint, tokenizer: &Tokenizer) -> Guide<'c> {
        Guide {
            constraint,
            texts: token_texts(tokenizer),
            state: constraint.start(),
        }
    }

    /// Tokens the shortest completion of the text so far takes.
    pub fn shortest(&self, tokenizer: &Tokenizer) -> usize {
        self.needed(tokenizer, &self.state)
    }

    pub fn is_complete(&self) -> bool {
        self.constraint.is_complete(&self.state)
    }

    /// Tokens the shortest completion from `state` takes.
    fn needed(&self, tokenizer: &Tokenizer, state: &PrefixState) -> usize {
        tokenizer
            .encode(&self.constraint.shortest_completion(state))
            .map_or(usize::MAX, |ids| ids.len())
    }

    /// Masks `logits` to the tokens that may come next with `tokens_after` more to follow; fails
    /// when none may.
    pub fn mask(
        &self,
        logits: &mut [f32],
        tokenizer: &Tokenizer,
        tokens_after: usize,
    ) -> Result<()> {
        // Far from the end any token will do; near it, only those after which the shortest
        // completion still fits.
        let roomy = self.shortest(tokenizer) + ROOM <= tokens_after;
        let fits = |s: &PrefixState| roomy || self.needed(tokenizer, s) <= tokens_after;
        if mask_logits(logits, &self.texts, self.constraint, &self.state, &fits) == 0 {
            bail!(
                "no token of the vocabulary can continue the constrained text after {:?}",
                self.state.partial
            );
        }
        Ok(())
    }

    /// Moves past the drawn token (its own text: a decoder may hold bytes back).
    pub fn advance(&mut self, id: u32) -> Result<()> {
        let own = self
            .texts
            .get(id as usize)
            .and_then(|t| t.as_deref())
            .unwrap_or_default();
        self.state = self
            .constraint
            .feed(&self.state, own)
            .with_context(|| format!("token {id} broke the grammar it was drawn under"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "yes" or "no", then "!".
    struct YesNo;

    impl Constraint for YesNo {
        fn feed(&self, state: &PrefixState, text: &str) -> Option<PrefixState> {
            let mut s = state.clone();
            for ch in text.chars() {
                s.partial.push(ch);
                let ok = ["yes!", "no!"].iter().any(|w| w.starts_with(&s.partial));
                if !ok {
                    return None;
                }
            }
            Some(s)
        }
        fn is_complete(&self, state: &PrefixState) -> bool {
            state.partial == "yes!" || state.partial == "no!"
        }
        fn shortest_completion(&self, state: &PrefixState) -> String {
            ["no!", "yes!"]
                .iter()
                .find(|w| w.starts_with(&state.partial))
                .map(|w| w[state.partial.len()..].to_string())
                .unwrap_or_default()
        }
    }

    #[test]
    fn only_continuations_of_a_valid_prefix_survive_the_mask() {
        let texts: Vec<Option<String>> = ["y", "es", "no", "!", "maybe"]
            .iter()
            .map(|s| Some(s.to_string()))
            .chain([None])
            .collect();
        let mut logits = vec![0.0; texts.len()];
        let start = YesNo.start();
        let any = |_: &PrefixState| true;
        assert_eq!(mask_logits(&mut logits, &texts, &YesNo, &start, &any), 2);
        assert!(logits[0].is_finite() && logits[2].is_finite());
        assert!(logits[1].is_infinite() && logits[4].is_infinite() && logits[5].is_infinite());
        let y = YesNo.feed(&start, "y").unwrap();
        let mut logits = vec![0.0; texts.len()];
        assert_eq!(mask_logits(&mut logits, &texts, &YesNo, &y, &any), 1);
        assert!(logits[1].is_finite());
        // With one character left after this token, "y" cannot be finished, "no" can.
        let mut logits = vec![0.0; texts.len()];
        let one_left = |s: &PrefixState| YesNo.shortest_completion(s).len() <= 1;
        assert_eq!(
            mask_logits(&mut logits, &texts, &YesNo, &start, &one_left),
            1
        );
        assert!(logits[2].is_finite() && logits[0].is_infinite());
        let done = YesNo.feed(&y, "es!").unwrap();
        assert!(YesNo.is_complete(&done));
    }
}
