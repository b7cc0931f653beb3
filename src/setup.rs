//! A run's model and domain, built from its configuration: the default model fetched if
//! needed, the fingerprints pinned into the session, the knowledge or ARC domain. Everything
//! that can be checked without loading the model is checked first ([`Prepare::check`]), before
//! a session folder exists.

use crate::engine::{self, fetch, Model};
use crate::record::config::{DomainKind, Grader, RunConfig};
use crate::record::{Header, QuestionSource};
use crate::seal::domain::Domain;
use crate::seal::settings::{load_options, train_config};
use crate::seal::{Prepare, Setup};
use crate::tasks::arc::domain::{ArcDomain, STRATEGY};
use crate::tasks::arc::{self, ttt::Ttt};
use crate::tasks::knowledge::domain::{KnowledgeDomain, Questions};
use crate::tasks::knowledge::inner::Grading;
use crate::tasks::knowledge::judge::{check_api_key, JudgeTemplate};
use crate::tasks::knowledge::questions::QuestionsTemplate;
use crate::tasks::knowledge::{load_passages, AnswerTemplate, Passage, PromptTemplate};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A model's fingerprint: the file's sha256, or for a folder the sha256 over its weights,
/// config and tokenizer files (name and content, in name order).
pub fn model_fingerprint(path: &Path) -> Result<String> {
    if path.is_file() {
        return fetch::sha256_file(path);
    }
    let files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot list {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".safetensors") || name.ends_with(".json") || name.ends_with(".jinja")
        })
        .collect();
    files_fingerprint(files)
}

/// The sha256 over files' names and contents, in name order.
fn files_fingerprint(mut files: Vec<PathBuf>) -> Result<String> {
    files.sort();
    let mut hasher = Sha256::new();
    for f in files {
        hasher.update(
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        hasher.update(fetch::sha256_file(&f)?);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// The data's fingerprint: the file's sha256, or for a folder of `.txt` passages the sha256
/// over them (name and content, in name order).
pub fn data_fingerprint(path: &Path) -> Result<String> {
    if !path.is_dir() {
        return fetch::sha256_file(path);
    }
    let files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot list {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files_fingerprint(files)
}

/// Passages without gold questions can only be graded on questions the model writes, and
/// gold questions can only be compared with written ones where there are some.
pub fn check_question_source(
    passages: &[Passage],
    source: QuestionSource,
    data: &Path,
) -> Result<()> {
    let unlabeled = passages.iter().filter(|p| p.questions.is_empty()).count();
    if unlabeled > 0 && source != QuestionSource::SelfWritten {
        bail!(
            "{}: {unlabeled} of its {} passages have no gold questions (unlabeled text), so \
             questions = \"{}\" cannot grade them; use questions = \"self\" (the model writes \
             its own questions about each passage)",
            data.display(),
            passages.len(),
            source.name()
        );
    }
    Ok(())
}

/// A round's contexts are distinct: one that asks for more than the data holds would see some
/// twice within the round, which is refused rather than done quietly.
fn enough_contexts(cfg: &RunConfig, available: usize, what: &str) -> Result<()> {
    let wanted = cfg.task.contexts_per_round;
    if wanted > available {
        bail!(
            "task.contexts_per_round = {wanted}, but {} holds {available} {what}(s) for this \
             run: a round would use some twice. Lower contexts_per_round to at most {available}, \
             or give more data",
            cfg.task.data.display()
        );
    }
    Ok(())
}

/// Held-out contexts must load and share nothing with the training contexts: a passage (or ARC
/// task) in both would be trained on and then reported as never seen.
fn check_heldout(cfg: &RunConfig, path: &Path) -> Result<()> {
    match cfg.task.domain {
        DomainKind::Knowledge => {
            let heldout = load_passages(path).context("heldout.data")?;
            if heldout.is_empty() {
                bail!("heldout.data: {} holds no passages", path.display());
            }
            let train = load_passages(&cfg.task.data).context("task.data")?;
            let seen: std::collections::HashSet<&str> =
                train.iter().map(|p| p.context.trim()).collect();
            if let Some(p) = heldout.iter().find(|p| seen.contains(p.context.trim())) {
                bail!(
                    "heldout.data: the passage {:?} is also in task.data; held-out passages must be ones the policy never trains on",
                    p.title
                );
            }
        }
        DomainKind::Arc => {
            let heldout = arc::load_tasks(path, &cfg.task.tasks).context("heldout.data")?;
            if cfg.task.data.exists() {
                let train = arc::load_tasks(&cfg.task.data, &cfg.task.tasks)?;
                if let Some(t) = heldout.iter().find(|t| train.iter().any(|u| u.id == t.id)) {
                    bail!(
                        "heldout.data: task {} is also a training task; held-out tasks must be ones the policy never trains on",
                        t.id
                    );
                }
            }
        }
    }
    Ok(())
}

/// The product's own way to set up a run.
pub struct Standard;

pub fn standard() -> Box<dyn Prepare> {
    Box::new(Standard)
}

/// Whether `data` names the ARC collection the product fetches on demand.
fn is_fetched_arc_file(data: &Path) -> bool {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    abs(data) == abs(&arc::arc1_path())
}

impl Prepare for Standard {
    fn check(&self, cfg: &RunConfig) -> Result<()> {
        if let Some(path) = &cfg.model.path {
            if !path.exists() && fetch::named_model(path).is_none() {
                let names: Vec<&str> = fetch::KNOWN_MODELS.iter().map(|m| m.name).collect();
                bail!(
                    "model.path: {} does not exist (nor is it one of the models seal-tui can fetch: {})",
                    path.display(),
                    names.join(", ")
                );
            }
        }
        let data = &cfg.task.data;
        match cfg.task.domain {
            DomainKind::Knowledge => {
                let passages = load_passages(data).context("task.data")?;
                if passages.is_empty() {
                    bail!("task.data: {} holds no passages", data.display());
                }
                enough_contexts(cfg, passages.len(), "passage")?;
                check_question_source(&passages, cfg.knowledge.questions, data)
                    .context("knowledge.questions")?;
                let prompts = &cfg.knowledge.prompts_dir;
                if cfg.knowledge.questions.writes_questions() {
                    QuestionsTemplate::find(prompts).context("knowledge.prompts_dir")?;
                }
                PromptTemplate::find(prompts, &cfg.knowledge.template)
                    .context("knowledge.template")?;
                AnswerTemplate::find(prompts).context("knowledge.prompts_dir")?;
                if let (Grader::JudgeLocal, Some(judge)) =
                    (&cfg.knowledge.grader, &cfg.knowledge.judge_model)
                {
                    if !judge.exists() {
                        bail!("knowledge.judge_model: {} does not exist", judge.display());
                    }
                }
                if let Grader::JudgeHttp(judge) = &cfg.knowledge.grader {
                    JudgeTemplate::find(prompts).context("knowledge.prompts_dir")?;
                    check_api_key(judge).context("knowledge.grader.api_key_env")?;
                }
            }
            DomainKind::Arc => {
                if data.exists() {
                    let tasks = arc::load_tasks(data, &cfg.task.tasks).context("task")?;
                    if tasks.is_empty() {
                        bail!("task.tasks: {:?} selects no task", cfg.task.tasks);
                    }
                    enough_contexts(cfg, tasks.len(), "task")?;
                } else if !is_fetched_arc_file(data) {
                    bail!("task.data: {} does not exist", data.display());
                } else {
                    arc::parse_selection(&cfg.task.tasks).context("task.tasks")?;
                }
            }
        }
        if let Some(path) = &cfg.heldout.data {
            check_heldout(cfg, path)?;
        }
        Ok(())
    }

    fn check_unchanged(&self, header: &Header) -> Result<()> {
        let data = &header.config.task.data;
        let now = data_fingerprint(data)
            .with_context(|| format!("task.data: cannot read {}", data.display()))?;
        if now != header.data_sha256 {
            bail!(
                "{}: the data file has changed since this session started (sha256 {} then, {now} \
                 now); resuming would score other contexts than the ones recorded",
                data.display(),
                header.data_sha256
            );
        }
        let model = Path::new(&header.model_path);
        if !model.exists() {
            bail!(
                "{}: the model this session ran on is not there any more",
                model.display()
            );
        }
        // Its fingerprint is compared once it is loaded and hashed anyway: hashing a large
        // model twice would cost a resume minutes.
        Ok(())
    }

    fn build(&self, cfg: &RunConfig, say: &mut dyn FnMut(&str)) -> Result<Setup> {
        let model_path = match &cfg.model.path {
            Some(p) => fetch::resolve_model(p, say)?,
            None => fetch::ensure_default_model(say)?,
        };
        say(&format!("hashing {} ...", model_path.display()));
        let model_sha256 = model_fingerprint(&model_path)?;
        let loaded = load(cfg, &model_path, say)?;
        let data = cfg.task.data.as_path();
        let data_sha256 = data_fingerprint(data)
            .with_context(|| format!("task.data: cannot read {}", data.display()))?;
        let (domain, template_source) =
            build_domain(cfg, &loaded.model, loaded.judge.clone(), data, None, say)?;
        // Checked again here: a fetched ARC file could only be counted once it was fetched.
        enough_contexts(cfg, domain.num_contexts(), "context")?;
        let heldout = match &cfg.heldout.data {
            Some(path) => {
                let limit = (cfg.heldout.contexts > 0).then_some(cfg.heldout.contexts);
                let (d, _) = build_domain(cfg, &loaded.model, loaded.judge, path, limit, say)?;
                say(&format!("{} held-out context(s)", d.num_contexts()));
                Some(d)
            }
            None => None,
        };
        say("ready");
        Ok(Setup {
            model: loaded.model,
            domain,
            heldout,
            model_path,
            model_sha256,
            data_sha256,
            template_source,
            notices: loaded.notices,
        })
    }

    fn build_worker(
        &self,
        cfg: &RunConfig,
        model_path: &Path,
        say: &mut dyn FnMut(&str),
    ) -> Result<(Model, Box<dyn Domain>)> {
        let loaded = load(cfg, model_path, say)?;
        for notice in &loaded.notices {
            say(notice);
        }
        let (domain, _) =
            build_domain(cfg, &loaded.model, loaded.judge, &cfg.task.data, None, say)?;
        Ok((loaded.model, domain))
    }
}

/// A loaded model, the local judge model if the grader needs one, and what loading announced.
struct Loaded {
    model: Model,
    judge: Option<Model>,
    notices: Vec<String>,
}

/// Loads the model (and a local judge), and fetches the ARC collection when the run names it:
/// the part of a run's setup that a worker on a cluster node repeats for every inner loop.
fn load(cfg: &RunConfig, model_path: &Path, say: &mut dyn FnMut(&str)) -> Result<Loaded> {
    let mut notices = Vec::new();
    say(&format!("loading {} ...", model_path.display()));
    let (options, notice) = load_options(&cfg.model)?;
    notices.extend(notice);
    let model = engine::load_model(model_path, &options)?;
    notices.extend(model.info.notices.iter().cloned());
    let data = cfg.task.data.as_path();
    if cfg.task.domain == DomainKind::Arc && is_fetched_arc_file(data) {
        arc::fetch::ensure_arc_file(data, say)?;
    }
    let judge = match (&cfg.knowledge.grader, &cfg.knowledge.judge_model) {
        (Grader::JudgeLocal, None) if cfg.task.domain == DomainKind::Knowledge => {
            Some(model.clone())
        }
        (Grader::JudgeLocal, Some(path)) if cfg.task.domain == DomainKind::Knowledge => {
            Some(engine::load_model(path, &options)?)
        }
        _ => None,
    };
    Ok(Loaded {
        model,
        judge,
        notices,
    })
}

/// The run's domain over the contexts of `data` (the first `limit` of them, if given), with the
/// text a session records of its self-edit strategy.
fn build_domain(
    cfg: &RunConfig,
    model: &engine::Model,
    judge_model: Option<engine::Model>,
    data: &Path,
    limit: Option<usize>,
    say: &mut dyn FnMut(&str),
) -> Result<(Box<dyn Domain>, String)> {
    Ok(match cfg.task.domain {
        DomainKind::Knowledge => {
            let prompts = cfg.knowledge.prompts_dir.as_path();
            let mut passages = load_passages(data)?;
            if let Some(n) = limit {
                passages.truncate(n);
            }
            let template = PromptTemplate::find(prompts, &cfg.knowledge.template)?;
            let answer = AnswerTemplate::find(prompts)?;
            let grading = Grading::new(&cfg.knowledge.grader, prompts, judge_model)?;
            let source = template.source.clone();
            let k = &cfg.knowledge;
            check_question_source(&passages, k.questions, data).context("knowledge.questions")?;
            let writer = if k.questions.writes_questions() {
                Some((QuestionsTemplate::find(prompts)?, k.self_questions))
            } else {
                None
            };
            (
                Box::new(KnowledgeDomain {
                    passages,
                    template,
                    answer,
                    grading,
                    questions: Questions::new(k.questions, writer),
                }),
                source,
            )
        }
        DomainKind::Arc => {
            let mut tasks = arc::load_tasks(data, &cfg.task.tasks)?;
            if let Some(n) = limit {
                tasks.truncate(n);
            }
            say(&format!("{} ARC task(s) selected", tasks.len()));
            let ttt = Ttt::new(model, cfg.arc.clone(), &train_config(&cfg.inner), cfg.seed);
            let domain = ArcDomain::new(model, tasks, ttt)?;
            // The self-edit prompt is built in; each edit's rendered prompt is in the log.
            let source = format!(
                "{STRATEGY}: the built-in ARC self-edit prompt of seal-tui {}",
                env!("CARGO_PKG_VERSION")
            );
            (Box::new(domain), source)
        }
    })
}
