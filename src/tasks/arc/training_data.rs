//! Test-time training data from a task's demonstrations alone.
//!
//! Leave-k-out: for every way of holding out k demonstrations, the held-out ones become queries
//! (each one prompt/completion pair) and the rest are the in-context examples. Each such
//! pseudo-task is then transformed by the augmentation pipelines the self-edit chose, which is
//! what multiplies a handful of demonstrations into a training set. The task's test cases are
//! never read: they are what the adapted model is graded on.

use super::augment::{derive_seed, seeded_permutation, AugmentError, AugmentationPlan};
use super::prompt::solver_prompt;
use super::task::ArcTask;
use serde::{Deserialize, Serialize};

/// One supervised example: the loss covers `completion` (and, under the all-tokens strategy,
/// `prompt` too; that choice is the trainer's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingPair {
    pub prompt: String,
    pub completion: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainingDataOptions {
    pub plan: AugmentationPlan,
    /// Also hold out every pair of demonstrations (leave-one-out is always used).
    pub leave_two_out: bool,
    /// At most this many pairs.
    pub max_tasks: usize,
    /// Pairs whose prompt plus completion measure more than this are dropped.
    pub max_tokens: usize,
}

/// A tool that could not be applied to some pseudo-tasks (usually: a grid would exceed 30x30).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    /// The family tool, i.e. the pipeline's first step; its colour-permuted and shuffled
    /// variants fail for the same reason and are counted here too.
    pub tool: String,
    /// The first reason met; the others are almost always the same.
    pub reason: String,
    pub count: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrainingData {
    pub pairs: Vec<TrainingPair>,
    pub skipped: Vec<Skip>,
    /// Pairs dropped for exceeding `max_tokens`.
    pub too_long: usize,
    /// Whether `max_tasks` stopped generation before every candidate was used.
    pub capped: bool,
}

/// Length in characters, for when no tokenizer is at hand.
pub fn char_len(text: &str) -> usize {
    text.chars().count()
}

/// Every k-subset of 0..n in lexicographic order.
fn combinations(n: usize, k: usize) -> Vec<Vec<usize>> {
    fn extend(
        start: usize,
        n: usize,
        k: usize,
        current: &mut Vec<usize>,
        out: &mut Vec<Vec<usize>>,
    ) {
        if current.len() == k {
            out.push(current.clone());
            return;
        }
        for i in start..n {
            current.push(i);
            extend(i + 1, n, k, current, out);
            current.pop();
        }
    }
    let mut out = Vec::new();
    if k <= n {
        extend(0, n, k, &mut Vec::with_capacity(k), &mut out);
    }
    out
}

/// One pseudo-task per way of holding out `k` demonstrations: `train` holds the remaining
/// demonstrations, `test` the held-out ones in their original order. Empty when fewer than
/// k + 1 demonstrations exist (a query needs at least one example to learn from).
pub fn leave_out(task: &ArcTask, k: usize) -> Vec<ArcTask> {
    let n = task.train.len();
    if k == 0 || n <= k {
        return Vec::new();
    }
    combinations(n, k)
        .into_iter()
        .map(|held| {
            let names: Vec<String> = held.iter().map(|i| (i + 1).to_string()).collect();
            ArcTask {
                id: format!("{}/leave-out-{}", task.id, names.join("-")),
                train: (0..n)
                    .filter(|i| !held.contains(i))
                    .map(|i| task.train[i].clone())
                    .collect(),
                test: held.iter().map(|&i| task.train[i].clone()).collect(),
            }
        })
        .collect()
}

/// Builds the training pairs for `task` under `options`, measuring length with `token_len` (the
/// engine's tokenizer, or [`char_len`]).
///
/// The un-augmented pseudo-tasks come first, since they are the real data; the augmented ones
/// follow in an order shuffled by the plan's seed, so a cap keeps a fair sample of all chosen
/// augmentations rather than the first few in full.
pub fn build_training_data(
    task: &ArcTask,
    options: &TrainingDataOptions,
    token_len: impl Fn(&str) -> usize,
) -> TrainingData {
    let mut pseudo_tasks = leave_out(task, 1);
    if options.leave_two_out {
        pseudo_tasks.extend(leave_out(task, 2));
    }
    let pipelines = options.plan.pipelines();

    let mut order: Vec<(usize, usize)> = (0..pseudo_tasks.len()).map(|t| (0, t)).collect();
    let augmented: Vec<(usize, usize)> = (1..pipelines.len())
        .flat_map(|p| (0..pseudo_tasks.len()).map(move |t| (p, t)))
        .collect();
    let shuffle = seeded_permutation(augmented.len(), derive_seed(options.plan.seed, u64::MAX));
    order.extend(shuffle.into_iter().map(|i| augmented[i]));

    let mut data = TrainingData::default();
    for (visited, &(p, t)) in order.iter().enumerate() {
        if data.pairs.len() >= options.max_tasks {
            data.capped = visited < order.len();
            break;
        }
        let pipeline = &pipelines[p];
        let view = match pipeline.apply_task(&pseudo_tasks[t]) {
            Ok(view) => view,
            Err(e) => {
                let tool = pipeline.steps().first().map(ToString::to_string);
                note_skip(&mut data.skipped, tool.as_deref().unwrap_or("identity"), &e);
                continue;
            }
        };
        for query in &view.test {
            if data.pairs.len() >= options.max_tasks {
                data.capped = true;
                break;
            }
            let prompt = solver_prompt(&view.train, &query.input);
            let completion = query.output.to_text();
            if token_len(&format!("{prompt}{completion}")) > options.max_tokens {
                data.too_long += 1;
                continue;
            }
            data.pairs.push(TrainingPair { prompt, completion });
        }
    }
    data
}

fn note_skip(skipped: &mut Vec<Skip>, tool: &str, error: &AugmentError) {
    match skipped.iter_mut().find(|s| s.tool == tool) {
        Some(skip) => skip.count += 1,
        None => skipped.push(Skip {
            tool: tool.to_string(),
            reason: error.to_string(),
            count: 1,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::augment::Family;
    use super::super::grid::Grid;
    use super::super::task::Example;
    use super::*;

    /// A task with `n` distinct 2x2 demonstrations and one test case, whose output (all 9s)
    /// appears nowhere in the demonstrations.
    fn task(n: usize) -> ArcTask {
        let example = |i: usize| {
            let v = (i % 8) as u8 + 1;
            Example {
                input: Grid::new(vec![vec![v, 0], vec![0, 0]]).unwrap(),
                output: Grid::new(vec![vec![0, v], vec![0, 0]]).unwrap(),
            }
        };
        ArcTask {
            id: "toy".into(),
            train: (0..n).map(example).collect(),
            test: vec![Example {
                input: Grid::new(vec![vec![9, 0], vec![0, 0]]).unwrap(),
                output: Grid::new(vec![vec![9; 2]; 2]).unwrap(),
            }],
        }
    }

    fn options(families: Vec<Family>, leave_two_out: bool) -> TrainingDataOptions {
        TrainingDataOptions {
            plan: AugmentationPlan {
                families,
                ..AugmentationPlan::default()
            },
            leave_two_out,
            max_tasks: usize::MAX,
            max_tokens: usize::MAX,
        }
    }

    #[test]
    fn leave_one_and_two_out_counts() {
        for n in 1..=6 {
            let t = task(n);
            let loo = leave_out(&t, 1);
            let l2o = leave_out(&t, 2);
            assert_eq!(loo.len(), if n > 1 { n } else { 0 }, "n={n}");
            assert_eq!(l2o.len(), if n > 2 { n * (n - 1) / 2 } else { 0 }, "n={n}");
            for p in loo.iter().chain(&l2o) {
                assert_eq!(p.train.len() + p.test.len(), n);
                assert!(p.test.iter().all(|q| !p.train.contains(q)));
            }
        }
        let t = task(4);
        let l2o = leave_out(&t, 2);
        assert_eq!(l2o[0].id, "toy/leave-out-1-2");
        assert_eq!(l2o[0].test, vec![t.train[0].clone(), t.train[1].clone()]);
        assert_eq!(l2o[0].train, vec![t.train[2].clone(), t.train[3].clone()]);
        assert!(leave_out(&t, 0).is_empty());
    }

    #[test]
    fn pairs_are_one_per_held_out_demonstration_per_pipeline() {
        let t = task(4);
        // Leave-one-out gives 4 pairs, leave-two-out 6 tasks x 2 queries = 12.
        let plain = build_training_data(&t, &options(vec![], false), char_len);
        assert_eq!(plain.pairs.len(), 4);
        let both = build_training_data(&t, &options(vec![], true), char_len);
        assert_eq!(both.pairs.len(), 16);
        // Basic has 11 tools, so 12 views in all.
        let basic = build_training_data(&t, &options(vec![Family::Basic], true), char_len);
        assert_eq!(basic.pairs.len(), 16 * 12);
        assert!(!basic.capped && basic.skipped.is_empty() && basic.too_long == 0);
        // The un-augmented data comes first and pairs a query with its true output.
        assert_eq!(basic.pairs[..16], both.pairs[..]);
        let first = &plain.pairs[0];
        assert!(
            first.prompt.ends_with("Input:\n10\n00\nOutput:\n"),
            "{}",
            first.prompt
        );
        assert_eq!(first.completion, "01\n00");
    }

    #[test]
    fn never_trains_on_the_test_case() {
        let t = task(3);
        let data = build_training_data(&t, &options(Family::ALL.to_vec(), true), char_len);
        assert!(!data.pairs.is_empty());
        let has_test_colour = |text: &str| {
            text.lines()
                .any(|l| l.contains('9') && l.chars().all(|c| c.is_ascii_digit()))
        };
        for pair in &data.pairs {
            assert!(!has_test_colour(&pair.prompt) && !has_test_colour(&pair.completion));
        }
    }

    #[test]
    fn caps_count_and_length() {
        let t = task(5);
        let mut capped = options(vec![Family::Basic, Family::Repeat], true);
        capped.max_tasks = 30;
        let data = build_training_data(&t, &capped, char_len);
        assert_eq!(data.pairs.len(), 30);
        assert!(data.capped);
        // Deterministic for a given seed, different for another.
        assert_eq!(build_training_data(&t, &capped, char_len), data);
        capped.plan.seed = 1;
        assert_ne!(build_training_data(&t, &capped, char_len).pairs, data.pairs);

        let mut short = options(vec![Family::Size], false);
        let lengths: Vec<usize> = build_training_data(&t, &short, char_len)
            .pairs
            .iter()
            .map(|p| char_len(&p.prompt) + char_len(&p.completion))
            .collect();
        let limit = *lengths.iter().min().unwrap();
        short.max_tokens = limit;
        let data = build_training_data(&t, &short, char_len);
        assert!(!data.pairs.is_empty());
        assert_eq!(data.pairs.len() + data.too_long, lengths.len());
        assert!(data
            .pairs
            .iter()
            .all(|p| char_len(&p.prompt) + char_len(&p.completion) <= limit));
        // Any measure can be plugged in, e.g. a tokenizer: here, lines.
        short.max_tokens = 0;
        let none = build_training_data(&t, &short, |s: &str| s.lines().count());
        assert!(none.pairs.is_empty() && none.too_long == lengths.len());
    }

    #[test]
    fn oversized_augmentations_are_skipped_with_reasons() {
        let mut t = task(3);
        t.train[0].input = Grid::new(vec![vec![1; 20]; 20]).unwrap();
        let mut opts = options(vec![Family::Size], false);
        opts.plan.permute_colours = true;
        let data = build_training_data(&t, &opts, char_len);
        // The 20x20 grid is in every pseudo-task, so no size tool applies to any of them; the
        // colour-permuted copies of the plain view remain.
        assert_eq!(data.pairs.len(), 3 * 2);
        assert_eq!(data.skipped.len(), 3);
        let doubled = data
            .skipped
            .iter()
            .find(|s| s.tool == "double_resolution")
            .unwrap();
        assert_eq!(doubled.count, 3 * 2);
        assert!(doubled.reason.contains("40x40"), "{}", doubled.reason);
    }
}
