//! Answering under several views and grading.
//!
//! The adapted model answers each test input once per augmentation pipeline; every answer is
//! mapped back to the original view, identical grids are counted, and the two most frequent
//! become the attempts (ARC allows two per test input). The reward is all-or-nothing.

use super::augment::Pipeline;
use super::grid::Grid;

/// ARC's rule: two attempts per test input.
pub const ATTEMPTS: usize = 2;

/// One answer, as predicted in the view `pipeline` produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prediction {
    pub pipeline: Pipeline,
    pub output: Grid,
}

/// A distinct answer (in the original view) and how many predictions agreed on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub grid: Grid,
    pub votes: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vote {
    /// Most votes first; ties keep the order in which answers were first seen, so the result
    /// does not depend on hashing or sort stability.
    pub candidates: Vec<Candidate>,
    /// Predictions that could not be mapped back (e.g. not an exact upscale), with the reason.
    pub unmappable: Vec<String>,
}

impl Vote {
    /// The best `ATTEMPTS` answers (fewer if fewer distinct answers exist).
    pub fn attempts(&self) -> Vec<Grid> {
        self.candidates
            .iter()
            .take(ATTEMPTS)
            .map(|c| c.grid.clone())
            .collect()
    }
}

/// Maps each prediction back through its pipeline's inverse and counts identical grids.
pub fn vote(predictions: &[Prediction]) -> Vote {
    let mut result = Vote::default();
    for p in predictions {
        match p.pipeline.invert_grid(&p.output) {
            Ok(grid) => match result.candidates.iter_mut().find(|c| c.grid == grid) {
                Some(candidate) => candidate.votes += 1,
                None => result.candidates.push(Candidate { grid, votes: 1 }),
            },
            Err(e) => result.unmappable.push(format!("{}: {e}", p.pipeline)),
        }
    }
    // A stable sort keeps first-seen order among equal counts.
    result
        .candidates
        .sort_by_key(|c| std::cmp::Reverse(c.votes));
    result
}

/// 1.0 if, for every test input, one of its attempts equals its expected output exactly; 0.0
/// otherwise (including when the number of attempt lists does not match the test inputs).
/// `attempts[i]` are the attempts for test input i.
pub fn reward(attempts: &[Vec<Grid>], expected_outputs: &[Grid]) -> f64 {
    let solved = !expected_outputs.is_empty()
        && attempts.len() == expected_outputs.len()
        && attempts
            .iter()
            .zip(expected_outputs)
            .all(|(tries, expected)| tries.iter().take(ATTEMPTS).any(|t| t == expected));
    if solved {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::super::augment::{Augmentation, Geometric, Resize};
    use super::*;

    fn g(text: &str) -> Grid {
        Grid::parse_text(text).unwrap()
    }

    fn predicted(pipeline: Pipeline, original_view: &Grid) -> Prediction {
        Prediction {
            output: pipeline.apply_grid(original_view).unwrap(),
            pipeline,
        }
    }

    #[test]
    fn answers_are_mapped_back_before_counting() {
        let right = g("12\n34");
        let wrong = g("11\n11");
        let rot = Pipeline::from(Augmentation::Geometric(Geometric::Rotate90));
        let up = Pipeline::from(Augmentation::Resize(Resize::DoubleResolution));
        let predictions = vec![
            predicted(Pipeline::identity(), &wrong),
            predicted(rot.clone(), &right),
            predicted(up.clone(), &right),
            Prediction {
                pipeline: up,
                output: g("123\n456"),
            },
        ];
        let result = vote(&predictions);
        assert_eq!(
            result.candidates,
            vec![
                Candidate {
                    grid: right.clone(),
                    votes: 2
                },
                Candidate {
                    grid: wrong.clone(),
                    votes: 1
                },
            ]
        );
        assert_eq!(result.unmappable.len(), 1);
        assert!(
            result.unmappable[0].starts_with("double_resolution"),
            "{:?}",
            result.unmappable
        );
        assert_eq!(result.attempts(), vec![right, wrong]);
    }

    #[test]
    fn ties_go_to_the_first_seen_and_only_two_attempts_are_kept() {
        let grids = [g("1"), g("2"), g("3"), g("2"), g("3"), g("1"), g("4")];
        let predictions: Vec<Prediction> = grids
            .iter()
            .map(|grid| predicted(Pipeline::identity(), grid))
            .collect();
        let result = vote(&predictions);
        assert_eq!(result.candidates.len(), 4);
        assert_eq!(result.attempts(), vec![g("1"), g("2")]);
        assert!(vote(&[]).attempts().is_empty());
    }

    /// `reward` over grids written as text: attempts per test input, then expected outputs.
    fn graded(attempts: &[&[&str]], expected: &[&str]) -> f64 {
        let attempts: Vec<Vec<Grid>> = attempts
            .iter()
            .map(|tries| tries.iter().map(|t| g(t)).collect())
            .collect();
        let expected: Vec<Grid> = expected.iter().map(|e| g(e)).collect();
        reward(&attempts, &expected)
    }

    #[test]
    fn reward_needs_every_test_output_solved() {
        assert_eq!(graded(&[&["3", "1"]], &["1"]), 1.0);
        assert_eq!(graded(&[&["3", "2"]], &["1"]), 0.0);
        // Two test inputs: both must be solved, each by its own attempts.
        assert_eq!(graded(&[&["1"], &["3", "2"]], &["1", "2"]), 1.0);
        assert_eq!(graded(&[&["1"], &["3"]], &["1", "2"]), 0.0);
        assert_eq!(graded(&[&["2", "1"]], &["2", "1"]), 0.0);
        // Only the first two attempts count; no attempts, or no expectations, score nothing.
        assert_eq!(graded(&[&["2", "3", "1"]], &["1"]), 0.0);
        assert_eq!(graded(&[&[]], &["1"]), 0.0);
        assert_eq!(graded(&[], &[]), 0.0);
        // A near miss (one cell off, or a different shape) is a miss.
        assert_eq!(graded(&[&["12\n34"]], &["12\n35"]), 0.0);
        assert_eq!(graded(&[&["12"]], &["1\n2"]), 0.0);
    }
}
