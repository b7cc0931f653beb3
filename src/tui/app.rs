//! The application state: the run (folded from events) plus what the screen adds to it (focus,
//! zoom, selection, scrolling, overlays, the replay clock), and [`update`], the pure function
//! that turns an [`Action`] into state changes and the [`Command`]s to send to the loop.

use super::editor::{Editor, EditorOutcome};
use super::highlight::HighlightCache;
use super::keys::{Action, KeyMap};
use super::labels;
use super::replay::Replay;
use super::theme::Theme;
use crate::record::state::{Activity, ContextState, EditState, EditStatus, RoundState};
use crate::record::{
    Command, CtxId, Decision, EditId, Event, Record, RunMode, RunState, TaskStatus,
};
use crate::text::sanitize::sanitize_line;
use crate::text::story::{task_label, units_in_tasks};
use std::cell::Cell;
use std::ops::Range;

/// The panes, in focus order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pane {
    Context,
    Edits,
    Finetune,
    Rewards,
    Run,
}

impl Pane {
    pub const ALL: [Pane; 5] = [
        Pane::Context,
        Pane::Edits,
        Pane::Finetune,
        Pane::Rewards,
        Pane::Run,
    ];

    pub fn index(self) -> usize {
        Pane::ALL.iter().position(|&p| p == self).unwrap_or(0)
    }

    pub fn title(self) -> &'static str {
        match self {
            Pane::Context => "Context",
            Pane::Edits => "Self-edits",
            Pane::Finetune => "Finetune",
            Pane::Rewards => "Rewards",
            Pane::Run => "Run",
        }
    }

    fn step(self, by: isize) -> Pane {
        let n = Pane::ALL.len() as isize;
        Pane::ALL[(self.index() as isize + by).rem_euclid(n) as usize]
    }
}

/// Where a pane is scrolled. `Auto` lets the pane choose (the top, or the end of text that is
/// still streaming); `End` sticks to the end as content grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ScrollMode {
    #[default]
    Auto,
    At(u16),
    End,
}

/// A pane's scroll request, plus what the last frame made of it (the offset it showed, the
/// largest useful offset and the page height), so that keys scroll from what the user sees.
#[derive(Debug, Default)]
pub struct Scroll {
    pub mode: ScrollMode,
    shown: Cell<u16>,
    max: Cell<u16>,
    page: Cell<u16>,
}

impl Scroll {
    /// The offset to draw `content` lines in `height` rows at; `auto_end` is the pane's choice
    /// for `Auto`. Called while drawing.
    pub fn resolve(&self, content: usize, height: u16, auto_end: bool) -> u16 {
        let max = u16::try_from(content.saturating_sub(usize::from(height))).unwrap_or(u16::MAX);
        let offset = match self.mode {
            ScrollMode::Auto if auto_end => max,
            ScrollMode::Auto => 0,
            ScrollMode::At(n) => n.min(max),
            ScrollMode::End => max,
        };
        self.shown.set(offset);
        self.max.set(max);
        self.page.set(height);
        offset
    }

    pub fn by(&mut self, delta: i32) {
        let target = (i32::from(self.shown.get()) + delta).clamp(0, i32::from(self.max.get()));
        self.mode = ScrollMode::At(target as u16);
    }

    pub fn page(&mut self, direction: i32) {
        let page = i32::from(self.page.get().saturating_sub(1).max(1));
        self.by(direction * page);
    }

    pub fn reset(&mut self) {
        self.mode = ScrollMode::Auto;
    }
}

/// The quit dialog's progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum QuitState {
    #[default]
    Running,
    /// Asking whether to interrupt work in flight.
    Confirming,
    /// `Command::Quit` sent; waiting for the loop to close its event channel.
    Stopping,
    /// Leave the main loop now.
    Exit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    Decision,
    Info,
    Warning,
    Error,
}

/// A line of the run's log (decisions, selections, warnings), as replay and the run pane show it.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    pub t: f64,
    pub kind: LogKind,
    pub text: String,
}

const LOG_LIMIT: usize = 500;

#[derive(Debug)]
pub struct App {
    pub state: RunState,
    pub session: String,
    pub theme: Theme,
    pub keymap: KeyMap,
    /// Present when the screen replays a recorded session.
    pub replay: Option<Replay>,
    pub focus: Pane,
    pub zoomed: bool,
    /// Whether the selection follows the newest work; navigating turns it off.
    pub follow: bool,
    pub selected_ctx: Option<CtxId>,
    pub selected_edit: usize,
    pub scroll: [Scroll; 5],
    pub help: bool,
    pub help_scroll: Scroll,
    pub quit: QuitState,
    pub editor: Option<Editor>,
    /// A short answer to the user's last key (why a command was refused, what was sent).
    pub notice: Option<String>,
    pub log: Vec<LogLine>,
    /// The loop closed its event channel.
    pub loop_ended: bool,
    /// Session time of the newest record folded.
    pub now: f64,
    pub highlights: HighlightCache,
}

impl App {
    pub fn live(session: impl Into<String>, theme: Theme, keymap: KeyMap) -> App {
        App {
            state: RunState::default(),
            session: session.into(),
            theme,
            keymap,
            replay: None,
            focus: Pane::Edits,
            zoomed: false,
            follow: true,
            selected_ctx: None,
            selected_edit: 0,
            scroll: Default::default(),
            help: false,
            help_scroll: Scroll::default(),
            quit: QuitState::Running,
            editor: None,
            notice: None,
            log: Vec::new(),
            loop_ended: false,
            now: 0.0,
            highlights: HighlightCache::default(),
        }
    }

    pub fn replay(
        session: impl Into<String>,
        records: Vec<Record>,
        theme: Theme,
        keymap: KeyMap,
    ) -> App {
        let mut app = App::live(session, theme, keymap);
        app.replay = Some(Replay::new(records));
        app
    }

    pub fn is_replay(&self) -> bool {
        self.replay.is_some()
    }

    pub fn scroll_of(&self, pane: Pane) -> &Scroll {
        &self.scroll[pane.index()]
    }

    /// Folds one record into the run, logs what a human should see, and moves the selection
    /// along when following.
    pub fn apply_record(&mut self, record: &Record) {
        self.state.apply(&record.event);
        self.now = self.now.max(record.t);
        self.log_event(record);
        if self.follow {
            self.follow_event(&record.event);
        }
    }

    /// Lets `dt` seconds pass on the replay clock; returns whether anything changed.
    pub fn tick(&mut self, dt: f64) -> bool {
        let Some(replay) = self.replay.as_mut() else {
            return false;
        };
        let due = replay.advance(dt);
        let finished = replay.is_done() && !due.is_empty();
        self.fold_replayed(due.clone());
        if finished {
            self.notice = Some("end of the recording".into());
        }
        !due.is_empty()
    }

    fn fold_replayed(&mut self, range: Range<usize>) {
        let Some(replay) = self.replay.take() else {
            return;
        };
        for record in &replay.records()[range] {
            self.apply_record(record);
        }
        self.replay = Some(replay);
    }

    fn push_log(&mut self, t: f64, kind: LogKind, text: String) {
        if self.log.len() >= LOG_LIMIT {
            self.log.drain(..LOG_LIMIT / 5);
        }
        self.log.push(LogLine { t, kind, text });
    }

    fn log_event(&mut self, record: &Record) {
        let t = record.t;
        let (kind, text) = match &record.event {
            Event::EditDecision { id, decision } => {
                let what = match decision {
                    Decision::Approved => "approved".to_string(),
                    Decision::Rejected => "rejected".to_string(),
                    Decision::Edited { text } => {
                        format!("edited ({} chars)", text.chars().count())
                    }
                };
                (LogKind::Decision, format!("{} {what}", labels::edit(*id)))
            }
            Event::ContextFinished { id, kept, reason } => {
                let kept = match kept {
                    Some(e) => format!("kept e{}", e + 1),
                    None => "kept none".into(),
                };
                (
                    LogKind::Info,
                    format!("{} {kept}: {}", labels::ctx(*id), sanitize_line(reason)),
                )
            }
            Event::TrainFailed { id, message, .. } => (
                LogKind::Error,
                format!(
                    "{} training failed: {}",
                    labels::edit(*id),
                    sanitize_line(message)
                ),
            ),
            Event::PolicyUpdated { round, secs, .. } => (
                LogKind::Info,
                format!("r{} policy updated in {}", round + 1, labels::secs(*secs)),
            ),
            Event::PolicySkipped { round, reason } => (
                LogKind::Info,
                format!(
                    "r{} policy update skipped: {}",
                    round + 1,
                    sanitize_line(reason)
                ),
            ),
            Event::RoundFinished { round, metrics } => (
                LogKind::Info,
                format!(
                    "r{} done: accuracy {} → {}, {} kept",
                    round + 1,
                    labels::pct(metrics.accuracy_before),
                    labels::pct(metrics.accuracy_after),
                    metrics.edits_kept
                ),
            ),
            Event::HeldoutFinished { pass, summary } => (
                LogKind::Info,
                format!(
                    "held-out pass {}: {} ({}–{}), unadapted {}",
                    pass + 1,
                    labels::pct(summary.accuracy),
                    labels::pct(summary.ci95_low),
                    labels::pct(summary.ci95_high),
                    labels::pct(summary.baseline)
                ),
            ),
            Event::RunFinished { secs } => (
                LogKind::Info,
                format!("run finished in {}", labels::secs(*secs)),
            ),
            Event::ModeChanged { mode } => (
                LogKind::Info,
                format!("mode {}", labels::mode(*mode).to_lowercase()),
            ),
            Event::ClusterSubmitted {
                job,
                round,
                tasks,
                per_task,
            } => (
                LogKind::Info,
                format!(
                    "r{} slurm job {}: {} submitted",
                    round + 1,
                    sanitize_line(job),
                    units_in_tasks(tasks.len(), *per_task)
                ),
            ),
            Event::ClusterTask {
                job,
                index,
                status: TaskStatus::Failed,
                detail,
                task,
            } => (
                LogKind::Warning,
                format!(
                    "slurm task {} failed: {}",
                    sanitize_line(&task_label(job, *index, *task)),
                    sanitize_line(detail)
                ),
            ),
            Event::ClusterCancelled { job, reason } => (
                LogKind::Warning,
                format!(
                    "slurm job {} cancelled: {}",
                    sanitize_line(job),
                    sanitize_line(reason)
                ),
            ),
            Event::Warning { message } => (LogKind::Warning, sanitize_line(message).into_owned()),
            Event::Status { message } => (LogKind::Info, sanitize_line(message).into_owned()),
            Event::Failed { message } => (
                LogKind::Error,
                format!("failed: {}", sanitize_line(message)),
            ),
            _ => return,
        };
        self.push_log(t, kind, text);
    }

    fn follow_event(&mut self, event: &Event) {
        // While an array is out, many edits train at once: the finetune pane shows them all,
        // and the selection stays where the person put it.
        let on_cluster = matches!(self.state.activity, Activity::Cluster { .. });
        let target = match event {
            Event::TrainStarted { .. }
            | Event::TrainStep { .. }
            | Event::TrainFinished { .. }
            | Event::TrainFailed { .. }
            | Event::EditEvaluated { .. }
                if on_cluster =>
            {
                None
            }
            Event::ContextStarted { id, .. } => Some((*id, 0)),
            Event::ContextFinished { id, kept, .. } => {
                Some((*id, kept.unwrap_or(self.selected_edit)))
            }
            Event::EditSampling { id, .. }
            | Event::EditToken { id, .. }
            | Event::EditSampled { id, .. }
            | Event::EditDecision { id, .. }
            | Event::TrainStarted { id, .. }
            | Event::TrainStep { id, .. }
            | Event::TrainFinished { id, .. }
            | Event::TrainFailed { id, .. }
            | Event::EditEvaluated { id, .. }
            | Event::EditScored { id, .. } => Some((id.ctx_id(), id.edit)),
            _ => None,
        };
        if let Some((ctx, edit)) = target {
            self.select(ctx, edit);
        }
    }

    /// Selects a context and edit; scroll positions that belong to the old selection reset.
    fn select(&mut self, ctx: CtxId, edit: usize) {
        if self.selected_ctx != Some(ctx) {
            self.selected_ctx = Some(ctx);
            for pane in [Pane::Context, Pane::Edits, Pane::Finetune, Pane::Rewards] {
                self.scroll[pane.index()].reset();
            }
        } else if self.selected_edit != edit {
            for pane in [Pane::Edits, Pane::Finetune, Pane::Rewards] {
                self.scroll[pane.index()].reset();
            }
        }
        self.selected_edit = edit;
    }

    /// Every context of the run, in order.
    pub fn context_ids(&self) -> Vec<CtxId> {
        self.state
            .rounds
            .iter()
            .flat_map(|r| r.contexts.iter().map(|c| c.id))
            .collect()
    }

    /// The context on screen: the selected one, else the newest.
    pub fn context_id(&self) -> Option<CtxId> {
        self.selected_ctx
            .filter(|id| self.state.context(*id).is_some())
            .or_else(|| self.state.current_context())
    }

    pub fn context(&self) -> Option<&ContextState> {
        self.state.context(self.context_id()?)
    }

    pub fn round(&self) -> Option<&RoundState> {
        match self.context_id() {
            Some(id) => self.state.rounds.get(id.round),
            None => self.state.rounds.last(),
        }
    }

    pub fn edit_id(&self) -> Option<EditId> {
        let ctx = self.context()?;
        let edit = self.selected_edit.min(ctx.edits.len().checked_sub(1)?);
        Some(EditId {
            round: ctx.id.round,
            ctx: ctx.id.ctx,
            edit,
        })
    }

    pub fn edit(&self) -> Option<&EditState> {
        self.state.edit(self.edit_id()?)
    }

    fn refuse_in_replay(&mut self) -> bool {
        if self.is_replay() {
            self.notice = Some("replay is read-only: this would change the run".into());
        }
        self.is_replay()
    }

    fn command(&mut self, command: Command, said: &str) -> Vec<Command> {
        if self.refuse_in_replay() {
            return Vec::new();
        }
        if self.loop_ended {
            self.notice = Some("the loop has stopped; nothing to send".into());
            return Vec::new();
        }
        self.notice = Some(said.to_string());
        vec![command]
    }

    /// The selected edit if a decision about it can still matter, else a notice why not.
    fn decidable_edit(&mut self, verb: &str) -> Option<EditId> {
        let Some(id) = self.edit_id() else {
            self.notice = Some(format!("no self-edit to {verb}"));
            return None;
        };
        let sampling = self
            .edit()
            .is_some_and(|e| e.status == EditStatus::Sampling);
        let finished = self.context().is_some_and(|c| c.finished);
        if sampling {
            self.notice = Some(format!("{} is still being sampled", labels::edit(id)));
            None
        } else if finished {
            self.notice = Some(format!(
                "{} is finished; too late to {verb}",
                labels::ctx(id.ctx_id())
            ));
            None
        } else {
            Some(id)
        }
    }

    fn navigate_context(&mut self, by: isize) {
        let ids = self.context_ids();
        let Some(current) = self.context_id() else {
            return;
        };
        let at = ids.iter().position(|&c| c == current).unwrap_or(0) as isize;
        let to = (at + by).clamp(0, ids.len() as isize - 1) as usize;
        self.follow = false;
        let edit = self.selected_edit;
        self.select(ids[to], edit);
    }

    fn navigate_edit(&mut self, by: isize) {
        let Some(ctx) = self.context() else {
            return;
        };
        let (id, last) = (ctx.id, ctx.edits.len().saturating_sub(1));
        let at = self.selected_edit.min(last) as isize;
        let to = (at + by).clamp(0, last as isize) as usize;
        self.follow = false;
        self.select(id, to);
    }

    fn scroll_target(&mut self) -> &mut Scroll {
        if self.help {
            &mut self.help_scroll
        } else {
            &mut self.scroll[self.focus.index()]
        }
    }

    /// Scrolls a pane directly (mouse wheel over it).
    pub fn scroll_pane(&mut self, pane: Pane, delta: i32) {
        self.scroll[pane.index()].by(delta);
    }

    pub fn focus_pane(&mut self, pane: Pane) {
        self.focus = pane;
    }

    /// Applies an editor key; saving sends `Command::Edit`.
    pub fn editor_key(&mut self, key: crossterm::event::KeyEvent) -> Vec<Command> {
        let Some(editor) = self.editor.as_mut() else {
            return Vec::new();
        };
        match editor.handle_key(key) {
            None => Vec::new(),
            Some(EditorOutcome::Cancel) => {
                self.editor = None;
                self.notice = Some("edit cancelled".into());
                Vec::new()
            }
            Some(EditorOutcome::Save(text)) => {
                let modified = editor.is_modified();
                let id = editor.id;
                self.editor = None;
                if !modified {
                    self.notice = Some("text unchanged; nothing sent".into());
                    return Vec::new();
                }
                let said = format!(
                    "sent the new text of {}; it will be evaluated again",
                    labels::edit(id)
                );
                self.command(Command::Edit { id, text }, &said)
            }
        }
    }

    /// The answer to the quit dialog.
    pub fn confirm_quit(&mut self, yes: bool) -> Vec<Command> {
        if self.quit != QuitState::Confirming {
            return Vec::new();
        }
        if yes {
            self.quit = QuitState::Stopping;
            self.command(
                Command::Quit,
                "stopping: the loop records what is done, then exits",
            )
        } else {
            self.quit = QuitState::Running;
            self.notice = None;
            Vec::new()
        }
    }
}

/// Applies `action` to the app; returns the commands to send to the loop (none in a replay).
pub fn update(app: &mut App, action: Action) -> Vec<Command> {
    app.notice = None;
    if app.help {
        match action {
            Action::Help | Action::Back | Action::Quit => app.help = false,
            Action::ForceQuit => return update_quit(app, true),
            Action::ScrollUp => app.help_scroll.by(-1),
            Action::ScrollDown => app.help_scroll.by(1),
            Action::PageUp => app.help_scroll.page(-1),
            Action::PageDown => app.help_scroll.page(1),
            Action::ScrollTop => app.help_scroll.mode = ScrollMode::At(0),
            Action::ScrollBottom => app.help_scroll.mode = ScrollMode::End,
            _ => {}
        }
        return Vec::new();
    }
    match action {
        Action::Step => return app.command(Command::Step, "step: running the next phase"),
        Action::ToggleAuto => {
            return if app.state.mode == RunMode::Auto {
                app.command(
                    Command::Pause,
                    "leaving auto: the loop pauses after this phase",
                )
            } else {
                app.command(Command::Auto { rounds: None }, "auto: running until paused")
            };
        }
        Action::Pause => {
            if let Some(replay) = app.replay.as_mut() {
                replay.set_playing(false);
                return Vec::new();
            }
            return app.command(Command::Pause, "pausing after this phase");
        }
        Action::Approve | Action::Reject => {
            if app.refuse_in_replay() {
                return Vec::new();
            }
            let approve = action == Action::Approve;
            let Some(id) = app.decidable_edit(if approve { "approve" } else { "reject" }) else {
                return Vec::new();
            };
            return if approve {
                app.command(
                    Command::Approve { id },
                    &format!("approved {}", labels::edit(id)),
                )
            } else {
                app.command(
                    Command::Reject { id },
                    &format!("rejected {}", labels::edit(id)),
                )
            };
        }
        Action::Edit => {
            if app.refuse_in_replay() {
                return Vec::new();
            }
            if let Some(id) = app.decidable_edit("edit") {
                let text = app.edit().map(|e| e.text.clone()).unwrap_or_default();
                app.editor = Some(Editor::new(id, &text, &app.theme));
            }
        }
        Action::SkipContext => {
            return app.command(Command::SkipContext, "skipping the rest of this context");
        }
        Action::NextEdit => app.navigate_edit(1),
        Action::PrevEdit => app.navigate_edit(-1),
        Action::NextContext => app.navigate_context(1),
        Action::PrevContext => app.navigate_context(-1),
        Action::Follow => {
            app.follow = true;
            if let Some(id) = app.state.current_context() {
                let edit = match &app.state.activity {
                    Activity::Sampling { id }
                    | Activity::Training { id }
                    | Activity::Evaluating { id } => id.edit,
                    _ => app
                        .state
                        .context(id)
                        .map_or(0, |c| c.edits.len().saturating_sub(1)),
                };
                app.select(id, edit);
            }
            app.notice = Some("following the newest work".into());
        }
        Action::FocusNext => app.focus = app.focus.step(1),
        Action::FocusPrev => app.focus = app.focus.step(-1),
        Action::FocusContext => app.focus = Pane::Context,
        Action::FocusEdits => app.focus = Pane::Edits,
        Action::FocusFinetune => app.focus = Pane::Finetune,
        Action::FocusRewards => app.focus = Pane::Rewards,
        Action::FocusRun => app.focus = Pane::Run,
        Action::Zoom => app.zoomed = !app.zoomed,
        Action::Back => app.zoomed = false,
        Action::ScrollUp => app.scroll_target().by(-1),
        Action::ScrollDown => app.scroll_target().by(1),
        Action::PageUp => app.scroll_target().page(-1),
        Action::PageDown => app.scroll_target().page(1),
        Action::ScrollTop => app.scroll_target().mode = ScrollMode::At(0),
        Action::ScrollBottom => app.scroll_target().mode = ScrollMode::End,
        Action::PlayPause | Action::SpeedUp | Action::SpeedDown => {
            let Some(replay) = app.replay.as_mut() else {
                app.notice = Some("playback keys work in a replay".into());
                return Vec::new();
            };
            match action {
                Action::PlayPause if replay.is_done() => {
                    app.notice = Some("end of the recording".into());
                }
                Action::PlayPause => replay.toggle(),
                Action::SpeedUp => replay.faster(),
                _ => replay.slower(),
            }
        }
        Action::JumpRound | Action::JumpContext => {
            let Some(replay) = app.replay.as_mut() else {
                app.notice = Some("jumps work in a replay".into());
                return Vec::new();
            };
            let range = if action == Action::JumpRound {
                replay.next_round()
            } else {
                replay.next_context()
            };
            app.follow = true;
            app.fold_replayed(range);
            if app.replay.as_ref().is_some_and(Replay::is_done) {
                app.notice = Some("end of the recording".into());
            }
        }
        Action::Help => app.help = true,
        Action::Quit => return update_quit(app, false),
        Action::ForceQuit => return update_quit(app, true),
        Action::None => {}
    }
    Vec::new()
}

fn update_quit(app: &mut App, at_once: bool) -> Vec<Command> {
    if app.is_replay() || app.loop_ended {
        app.quit = QuitState::Exit;
        return Vec::new();
    }
    let already_stopping = app.quit == QuitState::Stopping;
    if at_once || already_stopping {
        app.quit = QuitState::Exit;
        // A second quit while stopping has already sent the command.
        return if already_stopping {
            Vec::new()
        } else {
            vec![Command::Quit]
        };
    }
    if app.state.activity.is_busy() {
        app.quit = QuitState::Confirming;
        return Vec::new();
    }
    app.quit = QuitState::Stopping;
    app.command(
        Command::Quit,
        "stopping: the loop records what is done, then exits",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ContextBody, ContextView, RunInfo};

    fn rec(t: f64, event: Event) -> Record {
        Record { t, event }
    }

    fn eid(ctx: usize, edit: usize) -> EditId {
        EditId {
            round: 0,
            ctx,
            edit,
        }
    }

    /// A round with two contexts; the second has two sampled edits and the first of them is
    /// training.
    fn records() -> Vec<Record> {
        let context = |n: usize| ContextView {
            id: format!("p{n}"),
            title: format!("Passage {n}"),
            body: ContextBody::Passage {
                text: "Text.".into(),
            },
            questions: vec![],
        };
        let mut out = vec![
            rec(
                0.0,
                Event::RunStarted {
                    info: RunInfo {
                        session: "s".into(),
                        domain: "knowledge".into(),
                        model: "m".into(),
                        device: "cpu".into(),
                        template: "implications".into(),
                        grader: "em".into(),
                        rounds: 1,
                        contexts_per_round: 2,
                        k: 2,
                        repeats: 1,
                        approval_required: true,
                        gain_rule: Default::default(),
                    },
                },
            ),
            rec(
                0.0,
                Event::RoundStarted {
                    round: 0,
                    contexts: 2,
                },
            ),
        ];
        for ctx in 0..2 {
            out.push(rec(
                1.0,
                Event::ContextStarted {
                    id: CtxId { round: 0, ctx },
                    context: context(ctx),
                },
            ));
            for edit in 0..2 {
                out.push(rec(
                    2.0,
                    Event::EditSampling {
                        id: eid(ctx, edit),
                        prompt: "p".into(),
                    },
                ));
                out.push(rec(
                    3.0,
                    Event::EditSampled {
                        id: eid(ctx, edit),
                        text: format!("edit {edit}"),
                        tokens: 2,
                        secs: 1.0,
                    },
                ));
            }
        }
        out.push(rec(
            4.0,
            Event::TrainStarted {
                id: eid(1, 0),
                rev: 0,
                repeat: 0,
                total_steps: 10,
                examples: 3,
                tokens: 100,
            },
        ));
        out
    }

    fn live() -> App {
        let mut app = App::live("s", Theme::dark(), KeyMap::default());
        for r in records() {
            app.apply_record(&r);
        }
        app
    }

    #[test]
    fn selection_follows_the_newest_work() {
        let app = live();
        assert_eq!(app.edit_id(), Some(eid(1, 0)));
        assert!(app.state.activity.is_busy());
    }

    #[test]
    fn approve_and_reject_address_the_selected_edit() {
        let mut app = live();
        assert_eq!(
            update(&mut app, Action::Approve),
            vec![Command::Approve { id: eid(1, 0) }]
        );
        update(&mut app, Action::NextEdit);
        assert!(!app.follow);
        assert_eq!(
            update(&mut app, Action::Reject),
            vec![Command::Reject { id: eid(1, 1) }]
        );
        update(&mut app, Action::PrevContext);
        assert_eq!(app.edit_id(), Some(eid(0, 1)));
        assert_eq!(
            update(&mut app, Action::Approve),
            vec![Command::Approve { id: eid(0, 1) }]
        );
        // Following again returns to the edit in flight.
        update(&mut app, Action::Follow);
        assert_eq!(app.edit_id(), Some(eid(1, 0)));
    }

    #[test]
    fn no_decision_on_an_edit_still_sampling() {
        let mut app = live();
        app.apply_record(&rec(
            5.0,
            Event::EditSampling {
                id: eid(1, 1),
                prompt: "p".into(),
            },
        ));
        assert_eq!(update(&mut app, Action::Approve), vec![]);
        assert!(app
            .notice
            .as_deref()
            .unwrap()
            .contains("still being sampled"));
    }

    #[test]
    fn quit_with_work_in_flight_asks_first() {
        let mut app = live();
        assert_eq!(update(&mut app, Action::Quit), vec![]);
        assert_eq!(app.quit, QuitState::Confirming);
        assert_eq!(app.confirm_quit(false), vec![]);
        assert_eq!(app.quit, QuitState::Running);
        update(&mut app, Action::Quit);
        assert_eq!(app.confirm_quit(true), vec![Command::Quit]);
        assert_eq!(app.quit, QuitState::Stopping);
        // Quitting again while the loop winds down leaves at once.
        assert_eq!(update(&mut app, Action::Quit), vec![]);
        assert_eq!(app.quit, QuitState::Exit);
    }

    #[test]
    fn quit_when_idle_does_not_ask_and_ctrl_c_is_immediate() {
        let mut app = live();
        app.apply_record(&rec(
            6.0,
            Event::TrainFailed {
                id: eid(1, 0),
                rev: 0,
                message: "oom".into(),
            },
        ));
        assert!(!app.state.activity.is_busy());
        assert_eq!(update(&mut app, Action::Quit), vec![Command::Quit]);
        assert_eq!(app.quit, QuitState::Stopping);

        let mut app = live();
        assert_eq!(update(&mut app, Action::ForceQuit), vec![Command::Quit]);
        assert_eq!(app.quit, QuitState::Exit);
    }

    #[test]
    fn run_commands_and_auto_toggle() {
        let mut app = live();
        assert_eq!(update(&mut app, Action::Step), vec![Command::Step]);
        assert_eq!(
            update(&mut app, Action::ToggleAuto),
            vec![Command::Auto { rounds: None }]
        );
        app.apply_record(&rec(
            7.0,
            Event::ModeChanged {
                mode: RunMode::Auto,
            },
        ));
        assert_eq!(update(&mut app, Action::ToggleAuto), vec![Command::Pause]);
        assert_eq!(
            update(&mut app, Action::SkipContext),
            vec![Command::SkipContext]
        );
        app.loop_ended = true;
        assert_eq!(update(&mut app, Action::Step), vec![]);
    }

    #[test]
    fn editor_saves_an_edit_command() {
        let mut app = live();
        update(&mut app, Action::Edit);
        let editor = app.editor.as_ref().expect("editor opens");
        assert_eq!(editor.id, eid(1, 0));
        use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
        let key = |c, m| KeyEvent::new(c, m);
        assert!(app
            .editor_key(key(KeyCode::Char('s'), KeyModifiers::CONTROL))
            .is_empty());
        assert!(
            app.editor.is_none(),
            "unchanged text closes without sending"
        );
        update(&mut app, Action::Edit);
        app.editor_key(key(KeyCode::End, KeyModifiers::NONE));
        app.editor_key(key(KeyCode::Char('!'), KeyModifiers::NONE));
        assert_eq!(
            app.editor_key(key(KeyCode::Char('s'), KeyModifiers::CONTROL)),
            vec![Command::Edit {
                id: eid(1, 0),
                text: "edit 0!".into()
            }]
        );
    }

    #[test]
    fn replay_refuses_run_commands_but_navigates() {
        let mut app = App::replay("s", records(), Theme::dark(), KeyMap::default());
        update(&mut app, Action::JumpRound);
        update(&mut app, Action::JumpContext);
        assert_eq!(app.context_id(), Some(CtxId { round: 0, ctx: 0 }));
        for a in [
            Action::Step,
            Action::Approve,
            Action::Reject,
            Action::Edit,
            Action::SkipContext,
        ] {
            assert_eq!(update(&mut app, a), vec![]);
            assert!(
                app.notice.as_deref().unwrap().contains("read-only"),
                "{a:?}"
            );
        }
        assert!(app.editor.is_none());
        update(&mut app, Action::JumpContext);
        assert_eq!(app.context_id(), Some(CtxId { round: 0, ctx: 1 }));
        update(&mut app, Action::PrevContext);
        assert_eq!(app.context_id(), Some(CtxId { round: 0, ctx: 0 }));
        assert_eq!(update(&mut app, Action::Quit), vec![]);
        assert_eq!(app.quit, QuitState::Exit);
    }

    #[test]
    fn focus_cycles_and_help_is_modal() {
        let mut app = live();
        assert_eq!(app.focus, Pane::Edits);
        update(&mut app, Action::FocusNext);
        assert_eq!(app.focus, Pane::Finetune);
        update(&mut app, Action::FocusPrev);
        update(&mut app, Action::FocusPrev);
        update(&mut app, Action::FocusPrev);
        assert_eq!(app.focus, Pane::Run);
        update(&mut app, Action::Help);
        assert_eq!(
            update(&mut app, Action::Step),
            vec![],
            "keys under help do nothing"
        );
        update(&mut app, Action::Back);
        assert!(!app.help);
    }
}
