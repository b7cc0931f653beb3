//! Builds what a run needs from its configuration: the model (fetching the default one if
//! needed), the fingerprints pinned into the session, and the domain.

use super::config::{DomainKind, RunConfig};
use super::runner::{Setup, SetupFn};
use crate::engine::{self, device, fetch, LoadOptions, Quantize};
use crate::tasks::arc::domain::{ArcDomain, STRATEGY};
use crate::tasks::arc::{self, ttt::Ttt};
use crate::tasks::knowledge::domain::KnowledgeDomain;
use crate::tasks::knowledge::inner::Grading;
use crate::tasks::knowledge::{load_passages, AnswerTemplate, Grader, PromptTemplate};
use anyhow::{Context, Result};
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
            name.ends_with(".safetensors") || name.ends_with(".json")
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

pub fn load_options(cfg: &RunConfig) -> Result<LoadOptions> {
    Ok(LoadOptions {
        device: device::select_device(&cfg.model.device)?,
        dtype: match cfg.model.dtype.trim() {
            "" => None,
            d => Some(device::parse_dtype(d)?),
        },
        quantize: Quantize::parse(&cfg.model.quantize)?,
    })
}

/// The setup step of a run, executed on the runner's thread (model loading is slow).
pub fn standard_setup() -> SetupFn {
    Box::new(|cfg: &RunConfig, say: &mut dyn FnMut(&str)| build(cfg, say))
}

fn build(cfg: &RunConfig, say: &mut dyn FnMut(&str)) -> Result<Setup> {
    let model_path = match cfg.model_path() {
        Some(p) => p,
        None => fetch::ensure_default_model(say)?,
    };
    say(&format!("hashing {} ...", model_path.display()));
    let model_sha256 = model_fingerprint(&model_path)?;
    say(&format!("loading {} ...", model_path.display()));
    let model = engine::load_model(&model_path, &load_options(cfg)?)?;
    let data = Path::new(&cfg.task.data);
    if cfg.task.domain == DomainKind::Arc && data == arc::arc1_path() {
        arc::fetch::ensure_arc_file(data, say)?;
    }
    let data_sha256 = fetch::sha256_file(data)
        .with_context(|| format!("task.data: cannot read {}", data.display()))?;
    let (domain, template_source): (Box<dyn super::domain::Domain>, String) = match cfg.task.domain
    {
        DomainKind::Knowledge => {
            let prompts = Path::new(&cfg.knowledge.prompts_dir);
            let passages = load_passages(data)?;
            let template = PromptTemplate::find(prompts, &cfg.knowledge.template)?;
            let answer = AnswerTemplate::find(prompts)?;
            let judge_model = match &cfg.knowledge.grader {
                Grader::JudgeLocal if cfg.knowledge.judge_model.trim().is_empty() => {
                    Some(model.clone())
                }
                Grader::JudgeLocal => Some(engine::load_model(
                    Path::new(cfg.knowledge.judge_model.trim()),
                    &load_options(cfg)?,
                )?),
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
            say(&format!("{} ARC task(s) selected", tasks.len()));
            let ttt = Ttt::new(&model, cfg.arc.clone(), &cfg.inner, cfg.seed);
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
    })
}
