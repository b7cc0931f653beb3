//! Few-shot learning on ARC tasks (SEAL's second domain).
//!
//! A context is an [`ArcTask`]. The policy model reads [`self_edit_prompt`] and answers with a
//! [`SelfEditConfig`] (parsed by [`parse_self_edit`] / [`first_valid`]); the config's
//! [`AugmentationPlan`] and [`build_training_data`] turn the demonstrations into
//! (prompt, completion) pairs for a test-time LoRA; the adapted model answers [`solver_prompt`]
//! under several augmentation [`Pipeline`]s, its answers are [`vote`]d, and [`reward`] grades the
//! attempts against the held-out test outputs.
//!
//! The task, grid, augmentation, prompt, self-edit, training-data and vote modules are pure (no
//! model, no I/O beyond loading task files). On the engine: [`ttt`] (test-time training and its
//! evaluation), [`domain`] (the SEAL domain), [`conditions`] (the paper's table of baselines);
//! [`fetch`] obtains arc1.json.

pub mod augment;
pub mod conditions;
pub mod domain;
pub mod fetch;
pub mod grammar;
pub mod grid;
pub mod prompt;
pub mod selfedit;
pub mod task;
pub mod training_data;
pub mod ttt;
pub mod vote;

pub use augment::{
    AugmentError, Augmentation, AugmentationPlan, Family, Geometric, Pipeline, Resize, Side,
};
pub use grid::{Grid, GridError, MAX_COLOUR, MAX_SIDE};
pub use prompt::{parse_answer, self_edit_prompt, solver_prompt};
pub use selfedit::{
    first_valid, parse_self_edit, Budget, DataGeneration, Limits, Resampled, SelfEditConfig,
    SelfEditError, Strategy, TrainingSettings,
};
pub use task::{
    arc1_path, data_dir, load_tasks, parse_selection, ArcCollection, ArcTask, Example, Preset,
    Split, TaskError, SEAL_EVAL_IDS, SEAL_TRAIN_IDS,
};
pub use training_data::{
    build_training_data, char_len, leave_out, Skip, TrainingData, TrainingDataOptions, TrainingPair,
};
pub use vote::{reward, vote, Candidate, Prediction, Vote, ATTEMPTS};

#[cfg(test)]
mod tests {
    use super::task::tests::real_collection;
    use super::*;

    /// One SEAL step on the real evaluation tasks, with the models stood in for: a policy whose
    /// first sample is prose and second a config, and a solver that is an oracle (or always
    /// wrong). Checks that the pieces fit: prompt, config choice under a budget, training data,
    /// answering under several views, voting back, reward.
    #[test]
    fn seal_step_on_real_tasks_with_stand_in_models() {
        let collection = real_collection();
        let limits = Limits::default();
        let budget = Budget {
            max_steps: 375,
            batch_size: 2,
        };
        let samples = [
            "Let me think about rotations first.".to_string(),
            format!("```json\n{}\n```", SelfEditConfig::example()),
        ];
        for task in collection.select("seal-eval").unwrap() {
            let prompt = self_edit_prompt(task, &limits);
            assert!(prompt.user.contains(&task.train[0].input.to_text()));

            let options_for = |config: &SelfEditConfig| TrainingDataOptions {
                plan: config.augmentation_plan(7),
                leave_two_out: true,
                max_tasks: 250,
                max_tokens: 8192,
            };
            let chosen = first_valid(&samples, 5, &limits, |config| {
                let data = build_training_data(task, &options_for(config), char_len);
                budget.check(config, data.pairs.len()).map(|_| ())
            });
            let Resampled::Valid { config, attempt } = chosen else {
                panic!("{}: no usable config: {chosen:?}", task.id);
            };
            assert_eq!(attempt, 1);
            let data = build_training_data(task, &options_for(&config), char_len);
            assert!(!data.pairs.is_empty(), "{}", task.id);
            for pair in &data.pairs {
                assert!(Grid::parse_text(&pair.completion).is_ok());
            }

            let views: Vec<Pipeline> = AugmentationPlan {
                families: vec![Family::Basic],
                ..AugmentationPlan::default()
            }
            .pipelines();
            let answer = |oracle: bool| -> Vec<Vec<Grid>> {
                task.test
                    .iter()
                    .map(|case| {
                        let predictions: Vec<Prediction> = views
                            .iter()
                            .filter_map(|view| {
                                let query = view.apply_grid(&case.input).ok()?;
                                let _prompt = solver_prompt(&task.train, &query);
                                let truth = view.apply_grid(&case.output).ok()?;
                                let text = if oracle {
                                    truth.to_text()
                                } else {
                                    "0".to_string()
                                };
                                let output = parse_answer(&text).ok()?;
                                Some(Prediction {
                                    pipeline: view.clone(),
                                    output,
                                })
                            })
                            .collect();
                        vote(&predictions).attempts()
                    })
                    .collect()
            };
            let expected: Vec<Grid> = task.test.iter().map(|c| c.output.clone()).collect();
            assert_eq!(reward(&answer(true), &expected), 1.0, "{}", task.id);
            assert_eq!(reward(&answer(false), &expected), 0.0, "{}", task.id);
        }
    }
}
