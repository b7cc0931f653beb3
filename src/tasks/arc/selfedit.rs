//! The few-shot self-edit: a JSON configuration, written by the policy model, choosing which
//! augmentation families generate training data and how the test-time LoRA is trained.
//!
//! Model output is untrusted: the config is dug out of surrounding prose or a code fence, every
//! field is checked with a message saying what was wrong, and configs whose training would cost
//! more than the step budget are refused (an unbounded budget would let the policy buy reward
//! with compute).

use super::augment::{AugmentationPlan, Family};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelfEditConfig {
    pub data_generation: DataGeneration,
    pub training: TrainingSettings,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataGeneration {
    pub use_basic_augmentations: bool,
    pub use_size_augmentations: bool,
    pub use_chain_augmentations: bool,
    pub use_repeat_augmentations: bool,
    /// Optional (absent means false), so configs in SEAL's original four-switch shape parse.
    #[serde(default)]
    pub permute_colours: bool,
    #[serde(default)]
    pub shuffle_examples: bool,
}

/// Which tokens the test-time training loss is computed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Demonstrations and query as well as the answer.
    TrainUsingAllTokens,
    /// Only the answer grid (the completion).
    TrainUsingOutputTokens,
}

impl Strategy {
    pub const ALL: [Strategy; 2] = [
        Strategy::TrainUsingAllTokens,
        Strategy::TrainUsingOutputTokens,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Strategy::TrainUsingAllTokens => "train_using_all_tokens",
            Strategy::TrainUsingOutputTokens => "train_using_output_tokens",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingSettings {
    pub strategy: Strategy,
    pub learning_rate: f64,
    pub num_train_epochs: u32,
}

/// The JSON key switching each augmentation family on, in the order the prompt lists them.
pub const FAMILY_KEYS: [(&str, Family); 4] = [
    ("use_basic_augmentations", Family::Basic),
    ("use_size_augmentations", Family::Size),
    ("use_chain_augmentations", Family::Chain),
    ("use_repeat_augmentations", Family::Repeat),
];

/// The optional data-generation switches beyond SEAL's four families.
pub const OPTION_KEYS: [(&str, &str); 2] = [
    (
        "permute_colours",
        "also train on copies with colours 1-9 permuted (0 stays black)",
    ),
    (
        "shuffle_examples",
        "reorder the demonstrations in each copy",
    ),
];

/// Accepted ranges for the training settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Learning rates must lie in (0, max_learning_rate].
    pub max_learning_rate: f64,
    /// Epochs must lie in 1..=max_epochs.
    pub max_epochs: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_learning_rate: 1e-2,
            max_epochs: 10,
        }
    }
}

impl DataGeneration {
    fn get(&self, family: Family) -> bool {
        match family {
            Family::Basic => self.use_basic_augmentations,
            Family::Size => self.use_size_augmentations,
            Family::Chain => self.use_chain_augmentations,
            Family::Repeat => self.use_repeat_augmentations,
        }
    }

    fn set(&mut self, key: &str, on: bool) {
        match key {
            "use_basic_augmentations" => self.use_basic_augmentations = on,
            "use_size_augmentations" => self.use_size_augmentations = on,
            "use_chain_augmentations" => self.use_chain_augmentations = on,
            "use_repeat_augmentations" => self.use_repeat_augmentations = on,
            "permute_colours" => self.permute_colours = on,
            "shuffle_examples" => self.shuffle_examples = on,
            _ => {}
        }
    }

    pub fn families(&self) -> Vec<Family> {
        Family::ALL.into_iter().filter(|&f| self.get(f)).collect()
    }
}

impl SelfEditConfig {
    /// The augmentations this config asks for; `seed` fixes colour and order permutations.
    pub fn augmentation_plan(&self, seed: u64) -> AugmentationPlan {
        AugmentationPlan {
            families: self.data_generation.families(),
            permute_colours: self.data_generation.permute_colours,
            shuffle_examples: self.data_generation.shuffle_examples,
            seed,
        }
    }

    /// A sensible config, shown to the model as the answer's shape (the values matter less).
    pub fn example() -> SelfEditConfig {
        SelfEditConfig {
            data_generation: DataGeneration {
                use_basic_augmentations: true,
                ..DataGeneration::default()
            },
            training: TrainingSettings {
                strategy: Strategy::TrainUsingOutputTokens,
                learning_rate: 1e-4,
                num_train_epochs: 2,
            },
        }
    }
}

/// Why a model output is not a usable config: every problem found, each a full sentence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid self-edit: {}", reasons.join("; "))]
pub struct SelfEditError {
    pub reasons: Vec<String>,
}

/// The first `{...}` in `text` that is a complete JSON object, tolerating prose before and after
/// and code fences around it. Braces inside JSON strings are not counted.
pub fn extract_json_object(text: &str) -> Option<&str> {
    text.match_indices('{').find_map(|(start, _)| {
        let end = balanced_end(&text[start..])?;
        let candidate = &text[start..start + end];
        matches!(serde_json::from_str(candidate), Ok(Value::Object(_))).then_some(candidate)
    })
}

/// Length of the balanced `{...}` that `s` starts with, if it closes.
fn balanced_end(s: &str) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, ch) in s.char_indices() {
        if in_string {
            match ch {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match ch {
            '"' => in_string = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Parses and validates a self-edit from raw model output.
pub fn parse_self_edit(text: &str, limits: &Limits) -> Result<SelfEditConfig, SelfEditError> {
    let Some(json) = extract_json_object(text) else {
        let reason = match text.find('{') {
            None => "no JSON object found in the output".to_string(),
            Some(start) => match balanced_end(&text[start..]) {
                None => "the JSON object is never closed (a '}' is missing)".to_string(),
                Some(end) => match serde_json::from_str::<Value>(&text[start..start + end]) {
                    Err(e) => format!("not valid JSON: {e}"),
                    Ok(_) => "no JSON object found in the output".to_string(),
                },
            },
        };
        return Err(SelfEditError {
            reasons: vec![reason],
        });
    };
    let value: Value = serde_json::from_str(json).map_err(|e| SelfEditError {
        reasons: vec![format!("not valid JSON: {e}")],
    })?;
    validate(&value, limits).map_err(|reasons| SelfEditError { reasons })
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn section<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
    reasons: &mut Vec<String>,
) -> Option<&'a Map<String, Value>> {
    match obj.get(name) {
        Some(Value::Object(map)) => Some(map),
        Some(other) => {
            reasons.push(format!(
                "{name}: expected an object, got {}",
                describe(other)
            ));
            None
        }
        None => {
            reasons.push(format!("missing {name}"));
            None
        }
    }
}

fn field<'a>(
    map: &'a Map<String, Value>,
    path: &str,
    key: &str,
    reasons: &mut Vec<String>,
) -> Option<&'a Value> {
    let value = map.get(key);
    if value.is_none() {
        reasons.push(format!("missing {path}.{key}"));
    }
    value
}

fn validate(value: &Value, limits: &Limits) -> Result<SelfEditConfig, Vec<String>> {
    let Value::Object(obj) = value else {
        return Err(vec![format!(
            "the self-edit must be a JSON object, got {}",
            describe(value)
        )]);
    };
    let mut reasons = Vec::new();
    let mut data_generation = DataGeneration::default();
    if let Some(dg) = section(obj, "data_generation", &mut reasons) {
        let required = FAMILY_KEYS.iter().map(|(k, _)| (*k, true));
        let optional = OPTION_KEYS.iter().map(|(k, _)| (*k, false));
        for (key, is_required) in required.chain(optional) {
            let value = if is_required {
                field(dg, "data_generation", key, &mut reasons)
            } else {
                dg.get(key)
            };
            match value {
                Some(Value::Bool(on)) => data_generation.set(key, *on),
                Some(other) => reasons.push(format!(
                    "data_generation.{key}: expected true or false, got {}",
                    describe(other)
                )),
                None => {}
            }
        }
    }
    let mut training = SelfEditConfig::example().training;
    if let Some(tr) = section(obj, "training", &mut reasons) {
        match field(tr, "training", "strategy", &mut reasons) {
            Some(Value::String(s)) => match Strategy::ALL.into_iter().find(|st| st.key() == s) {
                Some(st) => training.strategy = st,
                None => reasons.push(format!(
                    "training.strategy: {s:?} is not one of {:?} or {:?}",
                    Strategy::TrainUsingAllTokens.key(),
                    Strategy::TrainUsingOutputTokens.key()
                )),
            },
            Some(other) => reasons.push(format!(
                "training.strategy: expected a string, got {}",
                describe(other)
            )),
            None => {}
        }
        match field(tr, "training", "learning_rate", &mut reasons) {
            Some(Value::Number(n)) => match n.as_f64() {
                Some(lr) if lr > 0.0 && lr <= limits.max_learning_rate => {
                    training.learning_rate = lr
                }
                _ => reasons.push(format!(
                    "training.learning_rate: {n} is outside (0, {:e}]",
                    limits.max_learning_rate
                )),
            },
            Some(other) => reasons.push(format!(
                "training.learning_rate: expected a number, got {}",
                describe(other)
            )),
            None => {}
        }
        match field(tr, "training", "num_train_epochs", &mut reasons) {
            Some(Value::Number(n)) => match n.as_u64() {
                Some(e) if (1..=u64::from(limits.max_epochs)).contains(&e) => {
                    training.num_train_epochs = e as u32
                }
                _ if n.is_u64() || n.is_i64() => reasons.push(format!(
                    "training.num_train_epochs: {n} is outside 1..={}",
                    limits.max_epochs
                )),
                _ => reasons.push(format!(
                    "training.num_train_epochs: expected a whole number, got {n}"
                )),
            },
            Some(other) => reasons.push(format!(
                "training.num_train_epochs: expected a whole number, got {}",
                describe(other)
            )),
            None => {}
        }
    }
    if reasons.is_empty() {
        Ok(SelfEditConfig {
            data_generation,
            training,
        })
    } else {
        Err(reasons)
    }
}

/// A cap on test-time training cost, in optimiser steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub max_steps: usize,
    /// Examples per optimiser step (the engine's batch size times gradient accumulation).
    pub batch_size: usize,
}

impl Budget {
    /// Steps to train `num_examples` examples for `epochs` epochs: whole batches per epoch, a
    /// final partial batch counting as one.
    pub fn steps(&self, num_examples: usize, epochs: u32) -> usize {
        num_examples
            .div_ceil(self.batch_size.max(1))
            .saturating_mul(epochs as usize)
    }

    /// The step count if `config` trained on `num_examples` fits the budget, else the refusal.
    pub fn check(&self, config: &SelfEditConfig, num_examples: usize) -> Result<usize, String> {
        let epochs = config.training.num_train_epochs;
        let steps = self.steps(num_examples, epochs);
        if steps > self.max_steps {
            Err(format!(
                "training would take {steps} steps ({num_examples} examples x {epochs} epochs / \
                 batch {}), over the budget of {} steps",
                self.batch_size.max(1),
                self.max_steps
            ))
        } else {
            Ok(steps)
        }
    }
}

/// Outcome of looking through several sampled self-edits for a usable one.
#[derive(Clone, Debug, PartialEq)]
pub enum Resampled {
    /// The first usable config and the 0-based index of the sample it came from.
    Valid {
        config: SelfEditConfig,
        attempt: usize,
    },
    /// None was usable; one line per sample saying why. The caller scores this reward 0.
    Invalid { reasons: Vec<String> },
}

/// Takes samples in order (at most `max_attempts`) and returns the first that parses, validates
/// and passes `accept` (typically a closure building the training data and asking
/// [`Budget::check`]). `outputs` may be lazy, so sampling stops as soon as one is usable.
pub fn first_valid<S: AsRef<str>>(
    outputs: impl IntoIterator<Item = S>,
    max_attempts: usize,
    limits: &Limits,
    mut accept: impl FnMut(&SelfEditConfig) -> Result<(), String>,
) -> Resampled {
    let mut reasons = Vec::new();
    for (attempt, output) in outputs.into_iter().take(max_attempts).enumerate() {
        let why = match parse_self_edit(output.as_ref(), limits) {
            Ok(config) => match accept(&config) {
                Ok(()) => return Resampled::Valid { config, attempt },
                Err(refusal) => refusal,
            },
            Err(e) => e.reasons.join("; "),
        };
        reasons.push(format!("sample {}: {why}", attempt + 1));
    }
    if reasons.is_empty() {
        reasons.push("no samples to choose from".into());
    }
    Resampled::Invalid { reasons }
}

impl fmt::Display for SelfEditConfig {
    /// The canonical JSON form, as recorded and as shown to the human for editing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string_pretty(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"{
        "data_generation": {
            "use_basic_augmentations": true,
            "use_size_augmentations": false,
            "use_chain_augmentations": true,
            "use_repeat_augmentations": false
        },
        "training": {
            "strategy": "train_using_all_tokens",
            "learning_rate": 1e-4,
            "num_train_epochs": 3
        }
    }"#;

    fn parse(text: &str) -> Result<SelfEditConfig, SelfEditError> {
        parse_self_edit(text, &Limits::default())
    }

    fn reasons(text: &str) -> String {
        parse(text).unwrap_err().reasons.join("\n")
    }

    #[test]
    fn parses_a_valid_config() {
        let config = parse(VALID).unwrap();
        assert_eq!(
            config.data_generation.families(),
            vec![Family::Basic, Family::Chain]
        );
        assert!(!config.data_generation.permute_colours);
        assert_eq!(config.training.strategy, Strategy::TrainUsingAllTokens);
        assert_eq!(config.training.learning_rate, 1e-4);
        assert_eq!(config.training.num_train_epochs, 3);
        let plan = config.augmentation_plan(9);
        assert_eq!(plan.families, vec![Family::Basic, Family::Chain]);
        // The canonical form parses back to the same config.
        assert_eq!(parse(&config.to_string()).unwrap(), config);
        assert_eq!(
            parse(&SelfEditConfig::example().to_string()).unwrap(),
            SelfEditConfig::example()
        );
    }

    #[test]
    fn optional_switches_parse_and_are_type_checked() {
        let text = VALID.replace(
            "\"use_repeat_augmentations\": false",
            "\"use_repeat_augmentations\": false, \"permute_colours\": true",
        );
        assert!(parse(&text).unwrap().data_generation.permute_colours);
        let text = VALID.replace(
            "\"use_repeat_augmentations\": false",
            "\"use_repeat_augmentations\": false, \"shuffle_examples\": 1",
        );
        assert!(reasons(&text).contains("data_generation.shuffle_examples: expected true or false"));
    }

    #[test]
    fn finds_the_json_amid_prose_and_fences() {
        let expected = parse(VALID).unwrap();
        let wrapped = format!("Sure! Here is my config:\n{VALID}\nThis should {{work}} well.");
        assert_eq!(parse(&wrapped).unwrap(), expected);
        let fenced = format!("```json\n{VALID}\n```\n");
        assert_eq!(parse(&fenced).unwrap(), expected);
        // A brace in prose before the JSON is skipped, and braces inside strings do not count.
        let noisy = format!(
            "Use a {{set}} of tools: {}",
            VALID.replace("1e-4", "1e-4, \"note\": \"}}{{\"")
        );
        assert_eq!(parse(&noisy).unwrap(), expected);
    }

    #[test]
    fn reports_missing_fields_each_by_name() {
        let msg = reasons(r#"{"training": {"strategy": "train_using_all_tokens"}}"#);
        assert!(msg.contains("missing data_generation"), "{msg}");
        assert!(msg.contains("missing training.learning_rate"), "{msg}");
        assert!(msg.contains("missing training.num_train_epochs"), "{msg}");
        let msg = reasons(&VALID.replace("\"use_size_augmentations\": false,", ""));
        assert_eq!(msg, "missing data_generation.use_size_augmentations");
    }

    #[test]
    fn reports_wrong_types_and_ranges() {
        let msg = reasons(&VALID.replace(
            "\"use_basic_augmentations\": true",
            "\"use_basic_augmentations\": \"yes\"",
        ));
        assert_eq!(
            msg,
            "data_generation.use_basic_augmentations: expected true or false, got the string \"yes\""
        );
        let msg = reasons(&VALID.replace("1e-4", "\"1e-4\""));
        assert!(msg.contains("learning_rate: expected a number"), "{msg}");
        for bad_lr in ["0", "-1e-4", "0.05"] {
            let msg = reasons(&VALID.replace("1e-4", bad_lr));
            assert!(
                msg.contains("learning_rate") && msg.contains("outside"),
                "{msg}"
            );
        }
        assert!(parse(&VALID.replace("1e-4", "1e-2")).is_ok());
        let msg = reasons(&VALID.replace("\"num_train_epochs\": 3", "\"num_train_epochs\": 2.5"));
        assert!(msg.contains("expected a whole number"), "{msg}");
        for bad in ["0", "11", "-1"] {
            let text = VALID.replace(
                "\"num_train_epochs\": 3",
                &format!("\"num_train_epochs\": {bad}"),
            );
            let msg = reasons(&text);
            assert_eq!(
                msg,
                format!("training.num_train_epochs: {bad} is outside 1..=10")
            );
        }
        let msg = reasons(&VALID.replace("train_using_all_tokens", "train_on_everything"));
        assert!(
            msg.contains("\"train_on_everything\" is not one of"),
            "{msg}"
        );
        let msg = reasons(r#"{"data_generation": [], "training": 3}"#);
        assert!(
            msg.contains("data_generation: expected an object, got a list"),
            "{msg}"
        );
        assert!(
            msg.contains("training: expected an object, got the number 3"),
            "{msg}"
        );
    }

    #[test]
    fn reports_absent_or_broken_json() {
        assert_eq!(
            reasons("I would rotate the grids."),
            "no JSON object found in the output"
        );
        let msg = reasons("{\"data_generation\": {\"use_basic_augmentations\": true");
        assert!(msg.contains("never closed"), "{msg}");
        let msg = reasons("{'data_generation': True}");
        assert!(
            msg.starts_with("not valid JSON: key must be a string"),
            "{msg}"
        );
    }

    #[test]
    fn budget_counts_steps_and_refuses_expensive_configs() {
        let budget = Budget {
            max_steps: 375,
            batch_size: 2,
        };
        assert_eq!(budget.steps(101, 3), 51 * 3);
        let config = parse(VALID).unwrap();
        assert_eq!(budget.check(&config, 250), Ok(375));
        let refusal = budget.check(&config, 251).unwrap_err();
        assert!(
            refusal.contains("378 steps") && refusal.contains("budget of 375"),
            "{refusal}"
        );
        let zero_batch = Budget {
            max_steps: 10,
            batch_size: 0,
        };
        assert_eq!(zero_batch.steps(4, 2), 8);
    }

    #[test]
    fn resampling_takes_the_first_usable_config() {
        let limits = Limits::default();
        let outputs = ["no idea", VALID, "{}"];
        match first_valid(outputs, 5, &limits, |_| Ok(())) {
            Resampled::Valid { attempt, config } => {
                assert_eq!(attempt, 1);
                assert_eq!(config, parse(VALID).unwrap());
            }
            other => panic!("{other:?}"),
        }
        // The budget check (or any caller check) can refuse an otherwise valid config.
        let refused = first_valid(outputs, 5, &limits, |_| Err("over budget".into()));
        let Resampled::Invalid { reasons } = refused else {
            panic!("expected Invalid");
        };
        assert_eq!(reasons.len(), 3);
        assert!(
            reasons[0].starts_with("sample 1: no JSON object"),
            "{reasons:?}"
        );
        assert_eq!(reasons[1], "sample 2: over budget");
        // Only max_attempts samples are looked at.
        let Resampled::Invalid { reasons } = first_valid(outputs, 1, &limits, |_| Ok(())) else {
            panic!("expected Invalid");
        };
        assert_eq!(reasons.len(), 1);
        let Resampled::Invalid { reasons } =
            first_valid(Vec::<String>::new(), 3, &limits, |_| Ok(()))
        else {
            panic!("expected Invalid");
        };
        assert_eq!(reasons, vec!["no samples to choose from"]);
    }
}
