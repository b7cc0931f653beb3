//! `seal-tui bench draw`: how long one full frame takes to draw at 200x60 into an off-screen
//! buffer, from a state with long texts (a long passage, five long self-edits, hundreds of
//! training steps, ten rounds). Two cases: a still screen, and one where a token streams in
//! every frame (so highlighting and wrapping cannot be reused).

use super::app::App;
use super::draw::draw;
use super::keys::KeyMap;
use super::theme::Theme;
use crate::record::{
    ContextBody, ContextView, CtxId, Decision, EditId, Event, GainRule, QuestionResult,
    QuestionView, Record, RoundMetrics, RunInfo, TrainProgress, Verdict,
};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::fmt;
use std::time::{Duration, Instant};

pub const WIDTH: u16 = 200;
pub const HEIGHT: u16 = 60;
/// The frame budget the screen is built to (a 30 fps loop leaves the rest for input and events).
pub const TARGET: Duration = Duration::from_millis(2);

#[derive(Clone, Debug)]
pub struct Timing {
    pub name: &'static str,
    pub frames: usize,
    pub median: Duration,
    pub p99: Duration,
    pub mean: Duration,
    pub max: Duration,
}

/// The report `bench_draw` returns; `Display` prints it.
#[derive(Clone, Debug)]
pub struct DrawBench {
    pub width: u16,
    pub height: u16,
    pub cases: Vec<Timing>,
}

impl fmt::Display for DrawBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "draw: full screen {}x{} into an off-screen buffer (target < {} ms per frame)",
            self.width,
            self.height,
            TARGET.as_millis()
        )?;
        writeln!(
            f,
            "  {:<34} {:>7} {:>10} {:>10} {:>10} {:>10}",
            "case", "frames", "median", "p99", "mean", "max"
        )?;
        let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
        for t in &self.cases {
            writeln!(
                f,
                "  {:<34} {:>7} {:>10} {:>10} {:>10} {:>10}  {}",
                t.name,
                t.frames,
                ms(t.median),
                ms(t.p99),
                ms(t.mean),
                ms(t.max),
                if t.p99 < TARGET { "ok" } else { "OVER TARGET" }
            )?;
        }
        Ok(())
    }
}

fn summarise(name: &'static str, mut samples: Vec<Duration>) -> Timing {
    samples.sort();
    let n = samples.len().max(1);
    let at = |q: f64| {
        samples
            .get(
                ((n as f64 * q).ceil() as usize)
                    .saturating_sub(1)
                    .min(n - 1),
            )
            .copied()
            .unwrap_or_default()
    };
    Timing {
        name,
        frames: samples.len(),
        median: at(0.5),
        p99: at(0.99),
        mean: samples.iter().sum::<Duration>() / n as u32,
        max: samples.last().copied().unwrap_or_default(),
    }
}

fn rec(t: f64, event: Event) -> Record {
    Record { t, event }
}

fn words(seed: usize, n: usize) -> String {
    const WORDS: [&str; 16] = [
        "the", "bridge", "river", "council", "opened", "in", "1932", "after", "years", "of",
        "debate", "about", "steel", "trade", "harbour", "north",
    ];
    let mut out = String::new();
    for i in 0..n {
        if i > 0 {
            out.push(if i.is_multiple_of(23) { '\n' } else { ' ' });
        }
        out.push_str(WORDS[(seed * 7 + i * 5 + i / 3) % WORDS.len()]);
    }
    out
}

/// A run with long texts everywhere: the heaviest screen a real session produces.
pub fn heavy_records() -> Vec<Record> {
    let k = 5;
    let rounds = 10;
    let questions = 12;
    let mut out = vec![rec(
        0.0,
        Event::RunStarted {
            info: RunInfo {
                session: "bench".into(),
                domain: "knowledge".into(),
                model: "SmolLM2-135M-Instruct".into(),
                device: "cuda:0".into(),
                template: "implications".into(),
                grader: "f1".into(),
                rounds,
                contexts_per_round: 1,
                k,
                repeats: 3,
                approval_required: false,
                gain_rule: GainRule::OverBaseline,
            },
        },
    )];
    let verdict = |correct: bool| Verdict {
        grader: "f1>=0.5".into(),
        correct,
        score: if correct { 1.0 } else { 0.2 },
        raw: String::new(),
    };
    let results = |seed: usize| -> Vec<QuestionResult> {
        (0..questions)
            .map(|q| QuestionResult {
                question: q,
                answer: words(seed + q, 12),
                grid: None,
                verdict: verdict((seed + q).is_multiple_of(3)),
            })
            .collect()
    };
    let mut t = 0.0;
    for round in 0..rounds {
        t += 1.0;
        out.push(rec(t, Event::RoundStarted { round, contexts: 1 }));
        let id = CtxId { round, ctx: 0 };
        out.push(rec(
            t,
            Event::ContextStarted {
                id,
                context: ContextView {
                    id: format!("passage-{round}"),
                    title: format!("The harbour bridge, part {}", round + 1),
                    body: ContextBody::Passage {
                        text: words(round, 1200),
                    },
                    questions: (0..questions)
                        .map(|q| QuestionView {
                            question: format!("{}?", words(q, 14)),
                            answers: vec![words(q, 3), words(q + 1, 2)],
                        })
                        .collect(),
                },
            },
        ));
        out.push(rec(
            t,
            Event::BaselineScored {
                id,
                results: results(round),
                accuracy: 0.3,
                secs: 2.0,
                kind: Default::default(),
            },
        ));
        for edit in 0..k {
            let eid = EditId {
                round,
                ctx: 0,
                edit,
            };
            out.push(rec(
                t,
                Event::EditSampling {
                    id: eid,
                    prompt: words(edit, 40),
                },
            ));
            out.push(rec(
                t,
                Event::EditSampled {
                    id: eid,
                    text: words(edit + round, 600),
                    tokens: 800,
                    secs: 6.0,
                },
            ));
            if edit == 1 {
                out.push(rec(
                    t,
                    Event::EditDecision {
                        id: eid,
                        decision: Decision::Rejected,
                    },
                ));
                continue;
            }
            let steps = 400;
            out.push(rec(
                t,
                Event::TrainStarted {
                    rev: 0,
                    repeat: 0,
                    id: eid,
                    total_steps: steps,
                    examples: 40,
                    tokens: 9000,
                },
            ));
            for step in 1..=steps {
                t += 0.05;
                out.push(rec(
                    t,
                    Event::TrainStep {
                        rev: 0,
                        repeat: 0,
                        id: eid,
                        progress: TrainProgress {
                            step,
                            total_steps: steps,
                            epoch: step as f64 / 100.0,
                            loss: 2.5 / (1.0 + step as f64 / 40.0) + 0.05 * ((step % 7) as f64),
                            learning_rate: 1e-4,
                            grad_norm: 0.8,
                            tokens_per_sec: 4200.0,
                            elapsed_secs: step as f64 * 0.05,
                            eta_secs: (steps - step) as f64 * 0.05,
                        },
                    },
                ));
            }
            out.push(rec(
                t,
                Event::TrainFinished {
                    rev: 0,
                    repeat: 0,
                    id: eid,
                    steps,
                    final_loss: 0.3,
                    secs: 20.0,
                },
            ));
            for repeat in 0..3 {
                out.push(rec(
                    t,
                    Event::EditEvaluated {
                        rev: 0,
                        id: eid,
                        repeat,
                        results: results(edit + repeat),
                        accuracy: 0.4,
                        secs: 3.0,
                    },
                ));
            }
            out.push(rec(
                t,
                Event::EditScored {
                    rev: 0,
                    id: eid,
                    reward: 0.4,
                    gain: 0.1,
                },
            ));
        }
        out.push(rec(
            t,
            Event::ContextFinished {
                id,
                kept: Some(0),
                reason: "highest reward".into(),
            },
        ));
        out.push(rec(
            t,
            Event::RoundFinished {
                round,
                metrics: RoundMetrics {
                    accuracy_before: Some(0.3),
                    accuracy_after: Some(0.3 + round as f64 * 0.02),
                    mean_reward: Some(0.3 + round as f64 * 0.02),
                    mean_gain: Some(round as f64 * 0.02),
                    edits_evaluated: k,
                    edits_kept: 1,
                    contexts: 1,
                },
            },
        ));
    }
    out
}

fn time_frames(
    app: &mut App,
    frames: usize,
    mut each: impl FnMut(&mut App, usize),
) -> Vec<Duration> {
    let mut terminal = match Terminal::new(TestBackend::new(WIDTH, HEIGHT)) {
        Ok(t) => t,
        Err(never) => match never {},
    };
    // Warm up: grammars load and caches fill before timing.
    for _ in 0..3 {
        let _ = terminal.draw(|f| draw(app, f));
    }
    (0..frames)
        .map(|i| {
            each(app, i);
            let started = Instant::now();
            let _ = terminal.draw(|f| draw(app, f));
            started.elapsed()
        })
        .collect()
}

/// Times `frames` full-screen draws (at least 10) for each case and returns the report.
pub fn bench_draw(frames: usize) -> DrawBench {
    let frames = frames.max(10);
    let records = heavy_records();
    let mut app = App::live("bench", Theme::dark(), KeyMap::default());
    for r in &records {
        app.apply_record(r);
    }
    let still = time_frames(&mut app, frames, |_, _| {});

    // A sixth self-edit streams in, one token per frame: JSON of a few hundred short lines, so
    // highlighting runs too.
    let last_round = records
        .iter()
        .filter_map(|r| match r.event {
            Event::RoundStarted { round, .. } => Some(round),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let id = EditId {
        round: last_round,
        ctx: 0,
        edit: 5,
    };
    let mut streaming_app = App::live("bench", Theme::dark(), KeyMap::default());
    let closes_last_round = |e: &Event| match e {
        Event::ContextFinished { id, .. } => id.round == last_round,
        Event::RoundFinished { round, .. } => *round == last_round,
        _ => false,
    };
    for r in records.iter().filter(|r| !closes_last_round(&r.event)) {
        streaming_app.apply_record(r);
    }
    streaming_app.apply_record(&rec(
        0.0,
        Event::EditSampling {
            id,
            prompt: String::new(),
        },
    ));
    streaming_app.apply_record(&rec(
        0.0,
        Event::EditToken {
            id,
            piece: format!(
                "{{\n  \"notes\": \"{}\",\n  \"x\": \"",
                words(3, 300).replace('\n', "\",\n  \"more\": \"")
            ),
        },
    ));
    let streaming = time_frames(&mut streaming_app, frames, |app, i| {
        app.apply_record(&rec(
            0.0,
            Event::EditToken {
                id,
                piece: if i.is_multiple_of(12) {
                    "\",\n  \"lr\": 0.0001,\n  \"x\": \"".into()
                } else {
                    " token".into()
                },
            },
        ));
    });

    DrawBench {
        width: WIDTH,
        height: HEIGHT,
        cases: vec![
            summarise("still screen, long texts", still),
            summarise("streaming JSON self-edit", streaming),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lists_both_cases() {
        let report = bench_draw(10);
        assert_eq!(report.cases.len(), 2);
        assert!(report
            .cases
            .iter()
            .all(|c| c.frames == 10 && c.median <= c.max));
        let text = report.to_string();
        assert!(text.contains("200x60") && text.contains("median") && text.contains("p99"));
    }

    /// `cargo test --release --lib tui::bench::tests::full -- --ignored --nocapture`
    #[test]
    #[ignore = "a benchmark, not a check"]
    fn full() {
        println!("{}", bench_draw(300));
    }

    #[test]
    fn percentiles() {
        let t = summarise("x", (1..=100).map(Duration::from_millis).collect());
        assert_eq!(t.median, Duration::from_millis(50));
        assert_eq!(t.p99, Duration::from_millis(99));
        assert_eq!(t.max, Duration::from_millis(100));
    }
}
