//! A run's model and domain, built from its configuration: the default model fetched if
//! needed, the fingerprints pinned into the session, the knowledge or ARC domain. Everything
//! that can be checked without loading the model is checked first ([`Prepare::check`]), before
//! a session folder exists.

use crate::engine::{self, fetch};
use crate::record::config::{DomainKind, Grader, RunConfig};
use crate::record::Header;
use crate::seal::domain::Domain;
use crate::seal::settings::{load_options, train_config};
use crate::seal::{Prepare, Setup};
use crate::tasks::arc::domain::{ArcDomain, STRATEGY};
use crate::tasks::arc::{self, ttt::Ttt};
use crate::tasks::knowledge::domain::KnowledgeDomain;
use crate::tasks::knowledge::inner::Grading;
use crate::tasks::knowledge::judge::{check_api_key, JudgeTemplate};
use crate::tasks::knowledge::{load_passages, AnswerTemplate, PromptTemplate};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A model's fingerprint: the file's sha256, or for a folder the sha256 over its weights,
/// config and tokenizer files (name and content, in name order).
pub fn model_fingerprint(path: &Path) -> Result<String> {
    if path.is_file() {
        return fetch::sha256_file(path);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot list {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".safetensors") || name.ends_with(".json") || name.ends_with(".jinja")
        })
        .collect();
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
            if !path.exists() {
                bail!("model.path: {} does not exist", path.display());
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
                let prompts = &cfg.knowledge.prompts_dir;
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
        Ok(())
    }

    fn check_unchanged(&self, header: &Header) -> Result<()> {
        let data = &header.config.task.data;
        let now = fetch::sha256_file(data)
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
        let mut notices = Vec::new();
        let model_path = match &cfg.model.path {
            Some(p) => p.clone(),
            None => fetch::ensure_default_model(say)?,
        };
        say(&format!("hashing {} ...", model_path.display()));
        let model_sha256 = model_fingerprint(&model_path)?;
        say(&format!("loading {} ...", model_path.display()));
        let (options, notice) = load_options(&cfg.model)?;
        notices.extend(notice);
        let model = engine::load_model(&model_path, &options)?;
        notices.extend(model.info.notices.iter().cloned());
        let data = cfg.task.data.as_path();
        if cfg.task.domain == DomainKind::Arc && is_fetched_arc_file(data) {
            arc::fetch::ensure_arc_file(data, say)?;
        }
        let data_sha256 = fetch::sha256_file(data)
            .with_context(|| format!("task.data: cannot read {}", data.display()))?;
        let (domain, template_source): (Box<dyn Domain>, String) = match cfg.task.domain {
            DomainKind::Knowledge => {
                let prompts = cfg.knowledge.prompts_dir.as_path();
                let passages = load_passages(data)?;
                let template = PromptTemplate::find(prompts, &cfg.knowledge.template)?;
                let answer = AnswerTemplate::find(prompts)?;
                let judge_model = match (&cfg.knowledge.grader, &cfg.knowledge.judge_model) {
                    (Grader::JudgeLocal, None) => Some(model.clone()),
                    (Grader::JudgeLocal, Some(path)) => Some(engine::load_model(path, &options)?),
                    _ => None,
                };
                let grading = Grading::new(&cfg.knowledge.grader, prompts, judge_model)?;
                let source = template.source.clone();
                (
                    Box::new(KnowledgeDomain {
                        passages,
                        template,
                        answer,
                        grading,
                    }),
                    source,
                )
            }
            DomainKind::Arc => {
                let tasks = arc::load_tasks(data, &cfg.task.tasks)?;
                enough_contexts(cfg, tasks.len(), "task")?;
                say(&format!("{} ARC task(s) selected", tasks.len()));
                let ttt = Ttt::new(&model, cfg.arc.clone(), &train_config(&cfg.inner), cfg.seed);
                let domain = ArcDomain::new(&model, tasks, ttt)?;
                // The self-edit prompt is built in; each edit's rendered prompt is in the log.
                let source = format!(
                    "{STRATEGY}: the built-in ARC self-edit prompt of seal-tui {}",
                    env!("CARGO_PKG_VERSION")
                );
                (Box::new(domain), source)
            }
        };
        say("ready");
        Ok(Setup {
            model,
            domain,
            model_path,
            model_sha256,
            data_sha256,
            template_source,
            notices,
        })
    }
}
