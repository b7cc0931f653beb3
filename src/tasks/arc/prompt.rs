//! The text the models see: the solver prompt (demonstrations, then a query input whose output
//! the model writes) used both for test-time training data and for answering, and the chat
//! prompt asking the policy model for its self-edit.
//!
//! Training pairs and answer prompts must be formatted identically, or the adapter learns a
//! format it is never asked in; hence one home for both.

use super::augment::Family;
use super::grid::{Grid, GridError};
use super::selfedit::{Limits, SelfEditConfig, Strategy, FAMILY_KEYS, OPTION_KEYS};
use super::task::{ArcTask, Example};
use crate::engine::Prompt;
use std::fmt::Write;

const SOLVER_PREAMBLE: &str = "Each example shows an input grid and the output grid one hidden \
rule turns it into. Grids are rows of digits 0-9 (colours, 0 is black), one row per line.";

fn push_grid(out: &mut String, label: &str, grid: &Grid) {
    out.push_str(label);
    out.push_str(":\n");
    out.push_str(&grid.to_text());
    out.push('\n');
}

/// The demonstrations, numbered from 1, each an input and an output block.
pub fn format_demonstrations(examples: &[Example]) -> String {
    let mut out = String::new();
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "Example {}", i + 1);
        push_grid(&mut out, "Input", &example.input);
        push_grid(&mut out, "Output", &example.output);
    }
    out
}

/// The solver prompt: demonstrations, then the query input, ending where the answer grid
/// begins. The completion to train on (or expect) is the output grid's `to_text()`.
pub fn solver_prompt(demonstrations: &[Example], query: &Grid) -> String {
    let mut out = String::new();
    out.push_str(SOLVER_PREAMBLE);
    out.push_str("\n\n");
    out.push_str(&format_demonstrations(demonstrations));
    out.push_str("\nApply the same rule to this input.\n");
    push_grid(&mut out, "Input", query);
    out.push_str("Output:\n");
    out
}

/// Reads the answer grid from the solver's output: the first block of non-blank lines. Text
/// after a blank line (a model rambling on) is ignored; a malformed block is an error.
pub fn parse_answer(text: &str) -> Result<Grid, GridError> {
    let block: Vec<&str> = text
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .collect();
    Grid::parse_text(&block.join("\n"))
}

/// The prompt asking the policy model for a self-edit for `task`: its demonstrations (never the
/// test cases), the tools it may switch on, and the exact JSON shape to answer with.
pub fn self_edit_prompt(task: &ArcTask, limits: &Limits) -> Prompt {
    let system = "You set up test-time training for a model that must learn a grid puzzle from a \
few examples. You answer with one JSON object and nothing else."
        .to_string();

    let mut user = String::new();
    user.push_str(SOLVER_PREAMBLE);
    user.push_str("\n\n");
    user.push_str(&format_demonstrations(&task.train));
    user.push_str(
        "\nA small model will be fine-tuned on these examples before it answers a new input. \
Each example in turn is held out and predicted from the others, and the data can be multiplied \
by transforming every grid of a task the same way. Choose how.\n\n\
Data generation (true or false for each):\n",
    );
    for (key, family) in FAMILY_KEYS {
        let _ = writeln!(user, "- {key}: {}", Family::description(family));
    }
    for (key, description) in OPTION_KEYS {
        let _ = writeln!(user, "- {key} (optional, default false): {description}");
    }
    let _ = write!(
        user,
        "\nTraining:\n\
- strategy: \"{}\" (learn from the whole prompt and answer) or \"{}\" (learn from the answer \
grid only)\n\
- learning_rate: a number greater than 0 and at most {:e}\n\
- num_train_epochs: a whole number from 1 to {}\n\n\
Fewer, well-chosen transformations and short training are cheaper; training that is too long \
is refused.\n\n\
Answer with a JSON object of exactly this shape (the values are only an example):\n{}\n",
        Strategy::TrainUsingAllTokens.key(),
        Strategy::TrainUsingOutputTokens.key(),
        limits.max_learning_rate,
        limits.max_epochs,
        SelfEditConfig::example(),
    );
    Prompt {
        system: Some(system),
        user,
    }
}

#[cfg(test)]
mod tests {
    use super::super::selfedit::parse_self_edit;
    use super::*;

    fn g(text: &str) -> Grid {
        Grid::parse_text(text).unwrap()
    }

    fn task() -> ArcTask {
        ArcTask {
            id: "t".into(),
            train: vec![
                Example {
                    input: g("10\n00"),
                    output: g("01\n00"),
                },
                Example {
                    input: g("00\n20"),
                    output: g("00\n02"),
                },
            ],
            test: vec![Example {
                input: g("30\n03"),
                output: g("03\n30"),
            }],
        }
    }

    #[test]
    fn solver_prompt_lists_demonstrations_then_query() {
        let t = task();
        let prompt = solver_prompt(&t.train, &t.test[0].input);
        let expected_tail = "\
Example 1
Input:
10
00
Output:
01
00

Example 2
Input:
00
20
Output:
00
02

Apply the same rule to this input.
Input:
30
03
Output:
";
        assert!(prompt.starts_with(SOLVER_PREAMBLE), "{prompt}");
        assert!(prompt.ends_with(expected_tail), "{prompt}");
    }

    #[test]
    fn answers_are_read_from_the_first_grid_block() {
        assert_eq!(parse_answer("03\n30").unwrap(), g("03\n30"));
        assert_eq!(
            parse_answer("\n 03\n 30 \n\nThe rule mirrors the grid.").unwrap(),
            g("03\n30")
        );
        assert!(matches!(
            parse_answer("03\n3"),
            Err(GridError::Ragged { .. })
        ));
        assert!(parse_answer("I think it is 03").is_err());
        assert_eq!(parse_answer(""), Err(GridError::Empty));
    }

    #[test]
    fn self_edit_prompt_shows_tools_schema_and_no_test_answers() {
        let prompt = self_edit_prompt(&task(), &Limits::default());
        let family_keys = FAMILY_KEYS.iter().map(|(key, _)| *key);
        for key in family_keys.chain(OPTION_KEYS.iter().map(|(key, _)| *key)) {
            assert!(prompt.user.contains(key), "missing {key}");
        }
        assert!(prompt.user.contains("train_using_output_tokens"));
        assert!(prompt.user.contains("from 1 to 10"));
        assert!(!prompt.user.contains("30\n03"), "test input leaked");
        // The example shape embedded in the prompt is itself a valid answer.
        let json_start = prompt.user.rfind("\n{").unwrap();
        assert_eq!(
            parse_self_edit(&prompt.user[json_start..], &Limits::default()).unwrap(),
            SelfEditConfig::example()
        );
    }
}
