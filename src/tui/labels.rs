//! How ids, numbers and durations are written on screen. Ids are shown 1-based ("r1 c2 e1"),
//! as a person counts; events and commands keep their 0-based indices.

use crate::record::state::{Activity, EditStatus};
use crate::record::{CtxId, EditId, RunMode};
use crate::text::sanitize::sanitize_line;

pub fn ctx(id: CtxId) -> String {
    format!("r{} c{}", id.round + 1, id.ctx + 1)
}

pub fn edit(id: EditId) -> String {
    format!("r{} c{} e{}", id.round + 1, id.ctx + 1, id.edit + 1)
}

/// A fraction as a whole percentage: 0.333 -> "33%".
pub fn pct(x: impl Into<Option<f64>>) -> String {
    match x.into().filter(|x| x.is_finite()) {
        Some(x) => format!("{:.0}%", x * 100.0),
        None => "–".into(),
    }
}

/// A signed difference of fractions in percentage points: 0.25 -> "+25pp".
pub fn gain(x: impl Into<Option<f64>>) -> String {
    match x.into().filter(|x| x.is_finite()) {
        Some(x) => format!("{:+.0}pp", x * 100.0),
        None => "–".into(),
    }
}

pub fn reward(x: Option<f64>) -> String {
    x.filter(|v| v.is_finite())
        .map_or_else(|| "–".into(), |v| format!("{v:.2}"))
}

pub fn loss(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "nan".into()
    }
}

pub fn lr(x: f64) -> String {
    format!("{x:.1e}")
}

/// Whole seconds as `42s`, `3m05s` or `1h02m`.
pub fn secs(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "–".into();
    }
    let s = s.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A session timestamp as `mm:ss` (or `h:mm:ss`).
pub fn clock(t: f64) -> String {
    let s = if t.is_finite() && t > 0.0 {
        t.floor() as u64
    } else {
        0
    };
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

/// Integers with thousands separators: 12345 -> "12,345".
pub fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn status(s: EditStatus) -> &'static str {
    match s {
        EditStatus::Sampling => "sampling",
        EditStatus::Queued => "queued",
        EditStatus::Training => "training",
        EditStatus::Evaluating => "evaluating",
        EditStatus::Scored => "scored",
        EditStatus::Failed => "failed",
    }
}

pub fn mode(m: RunMode) -> &'static str {
    match m {
        RunMode::Step => "STEP",
        RunMode::Auto => "AUTO",
        RunMode::Paused => "PAUSED",
    }
}

pub fn activity(a: &Activity) -> String {
    match a {
        Activity::Idle => "idle".into(),
        Activity::Baseline { id } => format!("baseline {}", ctx(*id)),
        Activity::Sampling { id } => format!("sampling {}", edit(*id)),
        Activity::Training { id } => format!("training {}", edit(*id)),
        Activity::Evaluating { id } => format!("evaluating {}", edit(*id)),
        Activity::PolicyUpdate { round } => format!("policy update r{}", round + 1),
        Activity::Heldout { pass } => format!("held-out pass {}", pass + 1),
        Activity::Cluster { job } => format!("slurm job {}", sanitize_line(job)),
        Activity::Finished => "finished".into(),
        Activity::Failed => "failed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_times() {
        assert_eq!(pct(1.0 / 3.0), "33%");
        assert_eq!(gain(0.25), "+25pp");
        assert_eq!(gain(-0.5), "-50pp");
        assert_eq!(reward(Some(0.6667)), "0.67");
        assert_eq!(reward(None), "–");
        assert_eq!(lr(0.0001), "1.0e-4");
        assert_eq!(secs(4.4), "4s");
        assert_eq!(secs(65.0), "1m05s");
        assert_eq!(secs(3720.0), "1h02m");
        assert_eq!(secs(f64::NAN), "–");
        assert_eq!(clock(83.9), "01:23");
        assert_eq!(clock(3661.0), "1:01:01");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(12), "12");
        let id = EditId {
            round: 0,
            ctx: 1,
            edit: 2,
        };
        assert_eq!(edit(id), "r1 c2 e3");
    }
}
