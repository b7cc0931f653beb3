//! Augmentation tools: invertible transforms of a whole ARC task, applied to every input and
//! output grid alike, so the rule a task demonstrates survives in transformed form.
//!
//! They serve twice. At training time they multiply the few demonstrations into more data; at
//! answer time the model is asked the transformed question and its answer is mapped back through
//! the inverse, so the answers under several views can be voted on (see `vote.rs`).

use super::grid::{Grid, MAX_COLOUR, MAX_SIDE};
use super::task::{ArcTask, Example};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The eight symmetries of a rectangle, less the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Geometric {
    /// A quarter turn clockwise.
    Rotate90,
    Rotate180,
    /// A quarter turn anticlockwise.
    Rotate270,
    /// Mirror image across the vertical centre line.
    FlipLeftRight,
    /// Mirror image across the horizontal centre line.
    FlipUpDown,
    /// Reflection across the main diagonal (rows become columns).
    Transpose,
    /// Reflection across the other diagonal.
    AntiTranspose,
}

impl Geometric {
    pub const ALL: [Geometric; 7] = [
        Geometric::Rotate90,
        Geometric::Rotate180,
        Geometric::Rotate270,
        Geometric::FlipLeftRight,
        Geometric::FlipUpDown,
        Geometric::Transpose,
        Geometric::AntiTranspose,
    ];

    pub fn inverse(self) -> Geometric {
        match self {
            Geometric::Rotate90 => Geometric::Rotate270,
            Geometric::Rotate270 => Geometric::Rotate90,
            other => other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Geometric::Rotate90 => "rotate90",
            Geometric::Rotate180 => "rotate180",
            Geometric::Rotate270 => "rotate270",
            Geometric::FlipLeftRight => "flip_left_right",
            Geometric::FlipUpDown => "flip_up_down",
            Geometric::Transpose => "transpose",
            Geometric::AntiTranspose => "anti_transpose",
        }
    }

    fn apply(self, g: &Grid) -> Result<Grid, AugmentError> {
        let (h, w) = (g.height(), g.width());
        let what = Augmentation::Geometric(self);
        match self {
            Geometric::Rotate90 => build(&what, w, h, |r, c| g.get(h - 1 - c, r)),
            Geometric::Rotate180 => build(&what, h, w, |r, c| g.get(h - 1 - r, w - 1 - c)),
            Geometric::Rotate270 => build(&what, w, h, |r, c| g.get(c, w - 1 - r)),
            Geometric::FlipLeftRight => build(&what, h, w, |r, c| g.get(r, w - 1 - c)),
            Geometric::FlipUpDown => build(&what, h, w, |r, c| g.get(h - 1 - r, c)),
            Geometric::Transpose => build(&what, w, h, |r, c| g.get(c, r)),
            Geometric::AntiTranspose => build(&what, w, h, |r, c| g.get(h - 1 - c, w - 1 - r)),
        }
    }
}

/// Upscalings by a factor of two; undone by downscaling, which refuses grids that are not exact
/// upscales (a prediction that is not one cannot be mapped back faithfully).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resize {
    /// Every cell becomes a 2x2 block.
    DoubleResolution,
    /// Every row is written twice.
    DoubleHeight,
    /// Every column is written twice.
    DoubleWidth,
}

impl Resize {
    pub const ALL: [Resize; 3] = [
        Resize::DoubleResolution,
        Resize::DoubleHeight,
        Resize::DoubleWidth,
    ];

    /// (row factor, column factor)
    fn factors(self) -> (usize, usize) {
        match self {
            Resize::DoubleResolution => (2, 2),
            Resize::DoubleHeight => (2, 1),
            Resize::DoubleWidth => (1, 2),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Resize::DoubleResolution => "double_resolution",
            Resize::DoubleHeight => "double_height",
            Resize::DoubleWidth => "double_width",
        }
    }

    fn apply(self, g: &Grid) -> Result<Grid, AugmentError> {
        let (fh, fw) = self.factors();
        build(
            &Augmentation::Resize(self),
            g.height() * fh,
            g.width() * fw,
            |r, c| g.get(r / fh, c / fw),
        )
    }

    fn invert(self, g: &Grid) -> Result<Grid, AugmentError> {
        let (fh, fw) = self.factors();
        let what = Augmentation::Resize(self);
        let refuse = |reason: String| AugmentError::NotInvertible {
            augmentation: what.to_string(),
            reason,
        };
        let (h, w) = (g.height(), g.width());
        if h % fh != 0 || w % fw != 0 {
            return Err(refuse(format!(
                "a {h}x{w} grid is not a {fh}x{fw} upscale (sides must divide evenly)"
            )));
        }
        for r in 0..h {
            for c in 0..w {
                if g.get(r, c) != g.get(r - r % fh, c - c % fw) {
                    return Err(refuse(format!(
                        "cell ({}, {}) differs from the rest of its {fh}x{fw} block",
                        r + 1,
                        c + 1
                    )));
                }
            }
        }
        build(&what, h / fh, w / fw, |r, c| g.get(r * fh, c * fw))
    }
}

/// Where `Augmentation::Mirror` puts the mirrored copy, relative to the original.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Right,
    Left,
    Below,
    Above,
}

impl Side {
    pub const ALL: [Side; 4] = [Side::Right, Side::Left, Side::Below, Side::Above];

    fn name(self) -> &'static str {
        match self {
            Side::Right => "right",
            Side::Left => "left",
            Side::Below => "below",
            Side::Above => "above",
        }
    }
}

/// One augmentation tool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Augmentation {
    Geometric(Geometric),
    Resize(Resize),
    /// A symmetry followed by an upscaling.
    Chain(Geometric, Resize),
    /// The grid joined to its own mirror image on the given side (doubling that dimension).
    /// Undone by keeping the original half.
    Mirror(Side),
    /// The grid tiled `across` times side by side and `down` times top to bottom. Undone by
    /// keeping the first tile.
    Repeat {
        across: u8,
        down: u8,
    },
    /// Colours 1..=9 permuted (0, the background, stays black); the permutation is a pure
    /// function of the seed, stable across platforms and versions.
    PermuteColours {
        seed: u64,
    },
    /// The demonstrations reordered (grids untouched); a pure function of the seed.
    ShuffleExamples {
        seed: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AugmentError {
    #[error(
        "{augmentation} would make a {height}x{width} grid, over the {MAX_SIDE}x{MAX_SIDE} limit"
    )]
    TooLarge {
        augmentation: String,
        height: usize,
        width: usize,
    },
    #[error("{augmentation} is not usable: {reason}")]
    Invalid {
        augmentation: String,
        reason: String,
    },
    #[error("cannot undo {augmentation}: {reason}")]
    NotInvertible {
        augmentation: String,
        reason: String,
    },
}

/// Builds a transform's result, turning "too big" into a reason rather than an invalid grid.
fn build(
    what: &Augmentation,
    height: usize,
    width: usize,
    cell: impl FnMut(usize, usize) -> u8,
) -> Result<Grid, AugmentError> {
    if height > MAX_SIDE || width > MAX_SIDE {
        return Err(AugmentError::TooLarge {
            augmentation: what.to_string(),
            height,
            width,
        });
    }
    Grid::from_fn(height, width, cell).map_err(|e| AugmentError::Invalid {
        augmentation: what.to_string(),
        reason: e.to_string(),
    })
}

impl Augmentation {
    /// Transforms one grid. Example shuffling leaves grids alone.
    pub fn apply_grid(&self, g: &Grid) -> Result<Grid, AugmentError> {
        let (h, w) = (g.height(), g.width());
        match *self {
            Augmentation::Geometric(t) => t.apply(g),
            Augmentation::Resize(s) => s.apply(g),
            Augmentation::Chain(t, s) => s.apply(&t.apply(g)?),
            Augmentation::Mirror(side) => match side {
                Side::Right => build(self, h, 2 * w, |r, c| g.get(r, original_first(c, w))),
                Side::Left => build(self, h, 2 * w, |r, c| g.get(r, mirror_first(c, w))),
                Side::Below => build(self, 2 * h, w, |r, c| g.get(original_first(r, h), c)),
                Side::Above => build(self, 2 * h, w, |r, c| g.get(mirror_first(r, h), c)),
            },
            Augmentation::Repeat { across, down } => {
                self.check_repeat(across, down)?;
                let (across, down) = (usize::from(across), usize::from(down));
                build(self, h * down, w * across, |r, c| g.get(r % h, c % w))
            }
            Augmentation::PermuteColours { seed } => {
                let map = colour_mapping(seed);
                build(self, h, w, |r, c| map[usize::from(g.get(r, c))])
            }
            Augmentation::ShuffleExamples { .. } => Ok(g.clone()),
        }
    }

    /// Maps a grid in the transformed view back to the original view.
    pub fn invert_grid(&self, g: &Grid) -> Result<Grid, AugmentError> {
        let (h, w) = (g.height(), g.width());
        match *self {
            Augmentation::Geometric(t) => t.inverse().apply(g),
            Augmentation::Resize(s) => s.invert(g),
            Augmentation::Chain(t, s) => t.inverse().apply(&s.invert(g)?),
            Augmentation::Mirror(side) => {
                let doubled = match side {
                    Side::Right | Side::Left => w,
                    Side::Below | Side::Above => h,
                };
                if doubled % 2 != 0 {
                    return Err(AugmentError::NotInvertible {
                        augmentation: self.to_string(),
                        reason: format!("a {h}x{w} grid cannot be split into two mirror halves"),
                    });
                }
                match side {
                    Side::Right => build(self, h, w / 2, |r, c| g.get(r, c)),
                    Side::Left => build(self, h, w / 2, |r, c| g.get(r, c + w / 2)),
                    Side::Below => build(self, h / 2, w, |r, c| g.get(r, c)),
                    Side::Above => build(self, h / 2, w, |r, c| g.get(r + h / 2, c)),
                }
            }
            Augmentation::Repeat { across, down } => {
                self.check_repeat(across, down)?;
                let (across, down) = (usize::from(across), usize::from(down));
                if h % down != 0 || w % across != 0 {
                    return Err(AugmentError::NotInvertible {
                        augmentation: self.to_string(),
                        reason: format!("a {h}x{w} grid is not {across} by {down} whole tiles"),
                    });
                }
                build(self, h / down, w / across, |r, c| g.get(r, c))
            }
            Augmentation::PermuteColours { seed } => {
                let map = colour_mapping(seed);
                let mut inverse = [0u8; 10];
                for (from, &to) in map.iter().enumerate() {
                    inverse[usize::from(to)] = from as u8;
                }
                build(self, h, w, |r, c| inverse[usize::from(g.get(r, c))])
            }
            Augmentation::ShuffleExamples { .. } => Ok(g.clone()),
        }
    }

    /// Transforms every grid of a task (demonstrations and test cases) consistently; fails, with
    /// the reason, if any grid cannot be transformed (typically: it would exceed 30x30).
    pub fn apply_task(&self, task: &ArcTask) -> Result<ArcTask, AugmentError> {
        let mut out = map_grids(task, |g| self.apply_grid(g))?;
        if let Augmentation::ShuffleExamples { seed } = *self {
            let order = seeded_permutation(out.train.len(), seed);
            out.train = order.iter().map(|&i| out.train[i].clone()).collect();
        }
        Ok(out)
    }

    /// Undoes `apply_task`.
    pub fn invert_task(&self, task: &ArcTask) -> Result<ArcTask, AugmentError> {
        let mut out = map_grids(task, |g| self.invert_grid(g))?;
        if let Augmentation::ShuffleExamples { seed } = *self {
            let order = seeded_permutation(out.train.len(), seed);
            let mut restored = out.train.clone();
            for (shuffled, &original) in order.iter().enumerate() {
                restored[original] = out.train[shuffled].clone();
            }
            out.train = restored;
        }
        Ok(out)
    }

    fn check_repeat(&self, across: u8, down: u8) -> Result<(), AugmentError> {
        if across == 0 || down == 0 {
            return Err(AugmentError::Invalid {
                augmentation: self.to_string(),
                reason: "tile counts must be at least 1".into(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for Augmentation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Augmentation::Geometric(t) => f.write_str(t.name()),
            Augmentation::Resize(s) => f.write_str(s.name()),
            Augmentation::Chain(t, s) => write!(f, "{}+{}", t.name(), s.name()),
            Augmentation::Mirror(side) => write!(f, "mirror_{}", side.name()),
            Augmentation::Repeat { across, down } => write!(f, "repeat_{across}x{down}"),
            Augmentation::PermuteColours { seed } => write!(f, "permute_colours({seed})"),
            Augmentation::ShuffleExamples { seed } => write!(f, "shuffle_examples({seed})"),
        }
    }
}

/// Source index along a length-`n` axis for position `i` of "the axis, then its mirror image".
fn original_first(i: usize, n: usize) -> usize {
    if i < n {
        i
    } else {
        2 * n - 1 - i
    }
}

/// Source index along a length-`n` axis for position `i` of "the mirror image, then the axis".
fn mirror_first(i: usize, n: usize) -> usize {
    if i < n {
        n - 1 - i
    } else {
        i - n
    }
}

fn map_grids(
    task: &ArcTask,
    mut f: impl FnMut(&Grid) -> Result<Grid, AugmentError>,
) -> Result<ArcTask, AugmentError> {
    let mut map_examples = |examples: &[Example]| {
        examples
            .iter()
            .map(|e| {
                Ok(Example {
                    input: f(&e.input)?,
                    output: f(&e.output)?,
                })
            })
            .collect::<Result<Vec<_>, AugmentError>>()
    };
    Ok(ArcTask {
        id: task.id.clone(),
        train: map_examples(&task.train)?,
        test: map_examples(&task.test)?,
    })
}

/// Colour `c` becomes `mapping[c]`; 0 maps to 0.
pub fn colour_mapping(seed: u64) -> [u8; 10] {
    let order = seeded_permutation(usize::from(MAX_COLOUR), seed);
    let mut mapping = [0u8; 10];
    for (i, &o) in order.iter().enumerate() {
        mapping[i + 1] = o as u8 + 1;
    }
    mapping
}

/// SplitMix64: a tiny generator whose output is fixed by its definition, so a seed written in a
/// session log reproduces the same augmentation forever (library RNGs promise no such thing).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed for the `index`-th thing drawn from `seed`, so sibling draws are independent.
pub(crate) fn derive_seed(seed: u64, index: u64) -> u64 {
    let mut state = seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    splitmix64(&mut state)
}

/// A permutation of 0..len (Fisher-Yates): `result[i]` is the old index now at position i.
pub(crate) fn seeded_permutation(len: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut state = seed;
    for i in (1..len).rev() {
        let j = (splitmix64(&mut state) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// A sequence of augmentations applied in order and undone in reverse order; the empty pipeline
/// is the identity (the task as given).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pipeline(pub Vec<Augmentation>);

impl Pipeline {
    pub fn identity() -> Pipeline {
        Pipeline(Vec::new())
    }

    pub fn then(mut self, step: Augmentation) -> Pipeline {
        self.0.push(step);
        self
    }

    pub fn steps(&self) -> &[Augmentation] {
        &self.0
    }

    pub fn is_identity(&self) -> bool {
        self.0.is_empty()
    }

    pub fn apply_grid(&self, g: &Grid) -> Result<Grid, AugmentError> {
        self.0
            .iter()
            .try_fold(g.clone(), |acc, step| step.apply_grid(&acc))
    }

    pub fn invert_grid(&self, g: &Grid) -> Result<Grid, AugmentError> {
        self.0
            .iter()
            .rev()
            .try_fold(g.clone(), |acc, step| step.invert_grid(&acc))
    }

    pub fn apply_task(&self, task: &ArcTask) -> Result<ArcTask, AugmentError> {
        self.0
            .iter()
            .try_fold(task.clone(), |acc, step| step.apply_task(&acc))
    }

    pub fn invert_task(&self, task: &ArcTask) -> Result<ArcTask, AugmentError> {
        self.0
            .iter()
            .rev()
            .try_fold(task.clone(), |acc, step| step.invert_task(&acc))
    }
}

impl From<Augmentation> for Pipeline {
    fn from(step: Augmentation) -> Pipeline {
        Pipeline(vec![step])
    }
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("identity");
        }
        for (i, step) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" then ")?;
            }
            write!(f, "{step}")?;
        }
        Ok(())
    }
}

/// The groups of tools a self-edit switches on or off, as in SEAL's few-shot setup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Basic,
    Size,
    Chain,
    Repeat,
}

impl Family {
    pub const ALL: [Family; 4] = [Family::Basic, Family::Size, Family::Chain, Family::Repeat];

    pub fn augmentations(self) -> Vec<Augmentation> {
        match self {
            Family::Basic => Geometric::ALL
                .into_iter()
                .map(Augmentation::Geometric)
                .chain(Side::ALL.into_iter().map(Augmentation::Mirror))
                .collect(),
            Family::Size => Resize::ALL.into_iter().map(Augmentation::Resize).collect(),
            Family::Chain => Geometric::ALL
                .into_iter()
                .map(|t| Augmentation::Chain(t, Resize::DoubleResolution))
                .collect(),
            Family::Repeat => vec![
                Augmentation::Repeat { across: 2, down: 1 },
                Augmentation::Repeat { across: 1, down: 2 },
                Augmentation::Repeat { across: 2, down: 2 },
            ],
        }
    }

    /// What the family does, in the words the policy model reads when choosing.
    pub fn description(self) -> &'static str {
        match self {
            Family::Basic => {
                "rotations by 90/180/270 degrees, left-right and up-down flips, transpose and \
                 anti-transpose, and each grid joined to its own mirror image"
            }
            Family::Size => {
                "upscaling: each cell becomes a 2x2 block, or rows are doubled, or columns are \
                 doubled"
            }
            Family::Chain => "a rotation, flip or transpose followed by the 2x2 upscaling",
            Family::Repeat => "each grid tiled twice side by side, twice stacked, or 2x2",
        }
    }
}

/// Which augmentations to generate training data with; `pipelines` expands it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AugmentationPlan {
    pub families: Vec<Family>,
    /// Adds, next to every pipeline, a copy with the colours permuted.
    pub permute_colours: bool,
    /// Ends every pipeline by reordering the demonstrations.
    pub shuffle_examples: bool,
    pub seed: u64,
}

impl AugmentationPlan {
    /// The identity first, then one pipeline per tool of each chosen family (families in the
    /// order given, duplicates ignored), with the colour and order options applied. Seeds are
    /// drawn from `seed`, so the same plan always yields the same pipelines.
    pub fn pipelines(&self) -> Vec<Pipeline> {
        let mut bases = vec![Pipeline::identity()];
        let mut seen = Vec::new();
        for family in &self.families {
            if !seen.contains(family) {
                seen.push(*family);
                bases.extend(family.augmentations().into_iter().map(Pipeline::from));
            }
        }
        let mut draws = 0u64;
        let mut next_seed = || {
            draws += 1;
            derive_seed(self.seed, draws)
        };
        let mut out = Vec::with_capacity(bases.len() * 2);
        for base in bases {
            let mut variants = vec![base.clone()];
            if self.permute_colours {
                variants.push(base.then(Augmentation::PermuteColours { seed: next_seed() }));
            }
            for variant in variants {
                out.push(if self.shuffle_examples {
                    variant.then(Augmentation::ShuffleExamples { seed: next_seed() })
                } else {
                    variant
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::grid::tests::arb_grid;
    use super::*;
    use proptest::prelude::*;

    fn g(text: &str) -> Grid {
        Grid::parse_text(text).unwrap()
    }

    fn all_grid_tools() -> Vec<Augmentation> {
        let mut tools: Vec<Augmentation> = Family::ALL
            .into_iter()
            .flat_map(Family::augmentations)
            .collect();
        tools.extend(
            Geometric::ALL
                .into_iter()
                .flat_map(|t| Resize::ALL.map(|s| Augmentation::Chain(t, s))),
        );
        tools.push(Augmentation::Repeat { across: 3, down: 1 });
        tools.push(Augmentation::PermuteColours { seed: 7 });
        tools.push(Augmentation::ShuffleExamples { seed: 7 });
        tools
    }

    fn arb_augmentation() -> impl Strategy<Value = Augmentation> {
        prop_oneof![
            proptest::sample::select(all_grid_tools()),
            any::<u64>().prop_map(|seed| Augmentation::PermuteColours { seed }),
            any::<u64>().prop_map(|seed| Augmentation::ShuffleExamples { seed }),
            (1u8..=3, 1u8..=3).prop_map(|(across, down)| Augmentation::Repeat { across, down }),
        ]
    }

    fn arb_example() -> impl Strategy<Value = Example> {
        (arb_grid(12), arb_grid(12)).prop_map(|(input, output)| Example { input, output })
    }

    fn arb_task() -> impl Strategy<Value = ArcTask> {
        (
            proptest::collection::vec(arb_example(), 1..6),
            proptest::collection::vec(arb_example(), 1..3),
        )
            .prop_map(|(train, test)| ArcTask {
                id: "t".into(),
                train,
                test,
            })
    }

    #[test]
    fn geometric_transforms_match_hand_worked_examples() {
        let grid = g("123\n456");
        let cases = [
            (Geometric::Rotate90, "41\n52\n63"),
            (Geometric::Rotate180, "654\n321"),
            (Geometric::Rotate270, "36\n25\n14"),
            (Geometric::FlipLeftRight, "321\n654"),
            (Geometric::FlipUpDown, "456\n123"),
            (Geometric::Transpose, "14\n25\n36"),
            (Geometric::AntiTranspose, "63\n52\n41"),
        ];
        for (t, expected) in cases {
            let got = Augmentation::Geometric(t).apply_grid(&grid).unwrap();
            assert_eq!(got.to_text(), expected, "{t:?}");
        }
    }

    #[test]
    fn size_mirror_and_repeat_match_hand_worked_examples() {
        let grid = g("12\n34");
        let apply = |a: Augmentation| a.apply_grid(&grid).unwrap().to_text();
        assert_eq!(
            apply(Augmentation::Resize(Resize::DoubleResolution)),
            "1122\n1122\n3344\n3344"
        );
        assert_eq!(
            apply(Augmentation::Resize(Resize::DoubleHeight)),
            "12\n12\n34\n34"
        );
        assert_eq!(
            apply(Augmentation::Resize(Resize::DoubleWidth)),
            "1122\n3344"
        );
        assert_eq!(
            apply(Augmentation::Chain(
                Geometric::Rotate90,
                Resize::DoubleWidth
            )),
            "3311\n4422"
        );
        assert_eq!(apply(Augmentation::Mirror(Side::Right)), "1221\n3443");
        assert_eq!(apply(Augmentation::Mirror(Side::Left)), "2112\n4334");
        assert_eq!(apply(Augmentation::Mirror(Side::Below)), "12\n34\n34\n12");
        assert_eq!(apply(Augmentation::Mirror(Side::Above)), "34\n12\n12\n34");
        assert_eq!(
            apply(Augmentation::Repeat { across: 2, down: 1 }),
            "1212\n3434"
        );
        assert_eq!(
            apply(Augmentation::Repeat { across: 1, down: 2 }),
            "12\n34\n12\n34"
        );
    }

    #[test]
    fn downscale_refuses_grids_that_are_not_exact_upscales() {
        let double = Augmentation::Resize(Resize::DoubleResolution);
        let err = double.invert_grid(&g("112\n112")).unwrap_err();
        assert!(err.to_string().contains("divide evenly"), "{err}");
        let err = double.invert_grid(&g("1122\n1123")).unwrap_err();
        assert!(err.to_string().contains("cell (2, 4)"), "{err}");
        assert_eq!(double.invert_grid(&g("1122\n1122")).unwrap(), g("12"));
        let err = Augmentation::Repeat { across: 2, down: 1 }
            .invert_grid(&g("123"))
            .unwrap_err();
        assert!(matches!(err, AugmentError::NotInvertible { .. }), "{err}");
        // Repeat's inverse keeps the first tile even when the others disagree: the first tile
        // is the model's best guess and voting sorts out the rest.
        let first = Augmentation::Repeat { across: 2, down: 1 }
            .invert_grid(&g("1213"))
            .unwrap();
        assert_eq!(first, g("12"));
    }

    #[test]
    fn oversized_results_are_refused_with_a_reason() {
        let wide = Grid::new(vec![vec![1; 16]; 3]).unwrap();
        let err = Augmentation::Resize(Resize::DoubleWidth)
            .apply_grid(&wide)
            .unwrap_err();
        assert_eq!(
            err,
            AugmentError::TooLarge {
                augmentation: "double_width".into(),
                height: 3,
                width: 32
            }
        );
        assert!(err.to_string().contains("30x30"), "{err}");
        // Height doubling leaves the 16 columns alone, so it fits.
        assert!(Augmentation::Resize(Resize::DoubleHeight)
            .apply_grid(&wide)
            .is_ok());
        let zero = Augmentation::Repeat { across: 0, down: 1 };
        assert!(matches!(
            zero.apply_grid(&wide),
            Err(AugmentError::Invalid { .. })
        ));
        assert!(matches!(
            zero.invert_grid(&wide),
            Err(AugmentError::Invalid { .. })
        ));
    }

    #[test]
    fn task_transform_covers_every_grid_and_fails_whole() {
        let small = Example {
            input: g("12"),
            output: g("3"),
        };
        let big = Example {
            input: Grid::new(vec![vec![1; 20]; 2]).unwrap(),
            output: g("4"),
        };
        let task = ArcTask {
            id: "x".into(),
            train: vec![small.clone()],
            test: vec![small],
        };
        let flipped = Augmentation::Geometric(Geometric::FlipLeftRight)
            .apply_task(&task)
            .unwrap();
        assert_eq!(flipped.train[0].input, g("21"));
        assert_eq!(flipped.test[0].input, g("21"));
        let mut with_big = task.clone();
        with_big.test.push(big);
        let err = Augmentation::Resize(Resize::DoubleResolution)
            .apply_task(&with_big)
            .unwrap_err();
        assert!(
            matches!(err, AugmentError::TooLarge { width: 40, .. }),
            "{err}"
        );
    }

    #[test]
    fn families_hold_the_expected_tools() {
        assert_eq!(Family::Basic.augmentations().len(), 11);
        assert_eq!(Family::Size.augmentations().len(), 3);
        assert_eq!(Family::Chain.augmentations().len(), 7);
        assert_eq!(Family::Repeat.augmentations().len(), 3);
    }

    #[test]
    fn plans_expand_deterministically() {
        let plan = AugmentationPlan {
            families: vec![Family::Size, Family::Size, Family::Repeat],
            permute_colours: true,
            shuffle_examples: true,
            seed: 3,
        };
        let pipelines = plan.pipelines();
        assert_eq!(pipelines.len(), (1 + 3 + 3) * 2);
        assert!(pipelines[0]
            .steps()
            .iter()
            .all(|s| matches!(s, Augmentation::ShuffleExamples { .. })));
        assert_eq!(pipelines, plan.pipelines());
        assert_eq!(
            AugmentationPlan::default().pipelines(),
            vec![Pipeline::identity()]
        );
        let text = serde_json::to_string(&pipelines[3]).unwrap();
        let back: Pipeline = serde_json::from_str(&text).unwrap();
        assert_eq!(back, pipelines[3]);
    }

    #[test]
    fn seeded_draws_are_pinned() {
        // Sessions record seeds, not permutations: these values must never change.
        assert_eq!(seeded_permutation(5, 42), seeded_permutation(5, 42));
        assert_eq!(colour_mapping(0), colour_mapping(0));
        assert_eq!(colour_mapping(1)[0], 0);
        let pinned = colour_mapping(12345);
        assert_eq!(pinned, colour_mapping(12345));
        assert_eq!(pinned, [0, 2, 7, 5, 3, 4, 1, 8, 6, 9].map(|v| v as u8));
    }

    proptest! {
        #[test]
        fn every_tool_undone_by_its_inverse(aug in arb_augmentation(), grid in arb_grid(MAX_SIDE)) {
            match aug.apply_grid(&grid) {
                Ok(out) => {
                    prop_assert!(out.height() <= MAX_SIDE && out.width() <= MAX_SIDE);
                    prop_assert_eq!(aug.invert_grid(&out).unwrap(), grid);
                }
                Err(AugmentError::TooLarge { height, width, .. }) => {
                    prop_assert!(height > MAX_SIDE || width > MAX_SIDE);
                }
                Err(other) => prop_assert!(false, "unexpected {}", other),
            }
        }

        #[test]
        fn pipelines_undone_on_whole_tasks(
            steps in proptest::collection::vec(arb_augmentation(), 0..4),
            task in arb_task(),
        ) {
            let pipeline = Pipeline(steps);
            if let Ok(out) = pipeline.apply_task(&task) {
                prop_assert_eq!(pipeline.invert_task(&out).unwrap(), task);
            }
        }

        #[test]
        fn colour_permutation_keeps_shape_and_black(seed in any::<u64>(), grid in arb_grid(MAX_SIDE)) {
            let map = colour_mapping(seed);
            prop_assert_eq!(map[0], 0);
            let mut sorted = map;
            sorted.sort_unstable();
            prop_assert_eq!(sorted, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
            let out = Augmentation::PermuteColours { seed }.apply_grid(&grid).unwrap();
            prop_assert_eq!((out.height(), out.width()), (grid.height(), grid.width()));
            for (a, b) in grid.cells().zip(out.cells()) {
                prop_assert_eq!(a == 0, b == 0);
                prop_assert_eq!(map[usize::from(a)], b);
            }
        }

        #[test]
        fn shuffle_permutes_demonstrations_only(seed in any::<u64>(), task in arb_task()) {
            let out = Augmentation::ShuffleExamples { seed }.apply_task(&task).unwrap();
            prop_assert_eq!(&out.test, &task.test);
            let mut a = out.train.clone();
            let mut b = task.train.clone();
            let key = |e: &Example| (e.input.to_text(), e.output.to_text());
            a.sort_by_key(key);
            b.sort_by_key(key);
            prop_assert_eq!(a, b);
        }
    }
}
