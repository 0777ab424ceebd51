//! Pipelines by name: the old project's `qb_<entity>_backfill` pipelines and their variables,
//! turned into [`BackfillOptions`] (pure; no I/O).
//!
//! Every entity of the catalogue has one pipeline, named by [`Entity::pipeline_name`]
//! (`qb_customers_backfill`, `qb_invoices_backfill`, …, `qb_<name>_backfill`: `qbo-pipeline
//! entities` lists them). Variables:
//!
//! | variable | alias | meaning |
//! |---|---|---|
//! | `fecha_inicio` | `from` | first UTC day, `YYYY-MM-DD`, required |
//! | `fecha_fin` | `to` | last UTC day, included, required |
//! | `chunk` | | `auto` (default), `day`, `week`, `month`, `year` or `whole` |
//!
//! An unknown pipeline or variable, a missing or malformed one, is a [`PipelineError`] listing
//! every problem; callers turn it into a usage error (exit 2) before anything is written.

use crate::backfill::BackfillOptions;
use crate::entity::Entity;
use crate::window::{ChunkSize, Window, parse_day};
use std::collections::BTreeMap;

/// Variables as given (`--var k=v`, YAML `variables:`), by name.
pub type Variables = BTreeMap<String, String>;

/// What a pipeline runs: a validated, ready-to-run backfill of one entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineRun {
    pub pipeline: &'static str,
    pub entity: Entity,
    pub window: Window,
    pub chunk: ChunkSize,
}

/// Problems with a pipeline name or its variables, all at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct PipelineError {
    pub problems: Vec<String>,
}

/// A sync pipeline: `qb_sync` (every entity) or `qb_<entity>_sync`. It takes no variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRun {
    pub pipeline: &'static str,
    pub entities: Vec<Entity>,
}

/// The sync of every entity.
pub const SYNC_ALL: &str = "qb_sync";

/// A pipeline of either kind, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Backfill(PipelineRun),
    Sync(SyncRun),
}

impl Resolved {
    pub fn pipeline(&self) -> &'static str {
        match self {
            Resolved::Backfill(r) => r.pipeline,
            Resolved::Sync(r) => r.pipeline,
        }
    }
}

/// Validates a pipeline name of either kind (backfill or sync) and its variables for a run now.
pub fn resolve_pipeline(pipeline: &str, vars: &Variables) -> Result<Resolved, PipelineError> {
    resolve_pipeline_at(pipeline, vars, chrono::Utc::now())
}

/// [`resolve_pipeline`] for a run at `at`.
pub fn resolve_pipeline_at(
    pipeline: &str,
    vars: &Variables,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<Resolved, PipelineError> {
    let name = pipeline.trim();
    let sync = if name == SYNC_ALL {
        Some(SyncRun {
            pipeline: SYNC_ALL,
            entities: Entity::ALL.to_vec(),
        })
    } else {
        Entity::ALL
            .into_iter()
            .find(|e| e.spec().sync_pipeline == name)
            .map(|e| SyncRun {
                pipeline: e.spec().sync_pipeline,
                entities: vec![e],
            })
    };
    match sync {
        Some(run) if vars.is_empty() => Ok(Resolved::Sync(run)),
        Some(run) => Err(PipelineError {
            problems: vars
                .keys()
                .map(|k| {
                    format!(
                        "unknown variable '{k}': the sync pipeline {} takes no variables (it reads what changed since the last sync)",
                        run.pipeline
                    )
                })
                .collect(),
        }),
        None => resolve_at(pipeline, vars, at).map(Resolved::Backfill),
    }
}

/// The names of every pipeline, for messages and `--help`.
pub fn names() -> Vec<&'static str> {
    Entity::ALL.iter().map(|e| e.pipeline_name()).collect()
}

/// The entity a pipeline name back-fills.
pub fn entity_of(pipeline: &str) -> Result<Entity, PipelineError> {
    let name = pipeline.trim();
    Entity::ALL
        .into_iter()
        .find(|e| e.pipeline_name() == name)
        .ok_or_else(|| PipelineError {
            problems: vec![format!(
                "unknown pipeline '{pipeline}': pipelines are qb_<entity>_backfill and \
                 qb_<entity>_sync for every entity `qbo-pipeline entities` lists (e.g. \
                 qb_customers_backfill, qb_vendors_sync), and qb_sync for every entity"
            )],
        })
}

/// Parses `k=v` (as given to `--var`).
pub fn parse_var(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!(
            "--var '{text}' is not KEY=VALUE (e.g. --var fecha_inicio=2014-01-01)"
        )),
    }
}

/// Parses every `--var k=v`; a key given twice is a problem.
pub fn parse_vars(texts: &[String]) -> Result<Variables, PipelineError> {
    let mut vars = Variables::new();
    let mut problems = Vec::new();
    for t in texts {
        match parse_var(t) {
            Ok((k, v)) => {
                if vars.insert(k.clone(), v).is_some() {
                    problems.push(format!("variable '{k}' is given twice"));
                }
            }
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        Ok(vars)
    } else {
        Err(PipelineError { problems })
    }
}

/// Validates a pipeline name and its variables for a run now.
pub fn resolve(pipeline: &str, vars: &Variables) -> Result<PipelineRun, PipelineError> {
    resolve_at(pipeline, vars, chrono::Utc::now())
}

/// Validates a pipeline name and its variables for a run at `at` (the window may end at
/// most the day after: a trigger firing next month may name a window ending then).
pub fn resolve_at(
    pipeline: &str,
    vars: &Variables,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<PipelineRun, PipelineError> {
    let mut problems = Vec::new();
    let entity = entity_of(pipeline)
        .map_err(|e| problems.extend(e.problems))
        .ok();
    for key in vars.keys() {
        if !["fecha_inicio", "from", "fecha_fin", "to", "chunk"].contains(&key.as_str()) {
            problems.push(format!(
                "unknown variable '{key}': pipelines take fecha_inicio (alias from), fecha_fin (alias to) and chunk"
            ));
        }
    }
    let mut day = |primary: &str, alias: &str| {
        let value = match (vars.get(primary), vars.get(alias)) {
            (Some(a), Some(b)) if a != b => {
                problems.push(format!(
                    "{primary}={a} and its alias {alias}={b} disagree: give one"
                ));
                return None;
            }
            (Some(v), _) | (None, Some(v)) => v,
            (None, None) => {
                problems.push(format!(
                    "variable {primary} (YYYY-MM-DD) is required, e.g. {primary}=2014-01-01"
                ));
                return None;
            }
        };
        parse_day(value)
            .map_err(|e| problems.push(format!("{primary}: {e}")))
            .ok()
    };
    let from = day("fecha_inicio", "from");
    let to = day("fecha_fin", "to");
    let window = match (from, to) {
        (Some(f), Some(t)) => Window::new_at(f, t, at)
            .map_err(|e| {
                problems.push(
                    e.to_string()
                        .replace("--from", "fecha_inicio")
                        .replace("--to", "fecha_fin"),
                )
            })
            .ok(),
        _ => None,
    };
    let chunk = match vars.get("chunk") {
        None => Some(ChunkSize::default()),
        Some(c) => c
            .parse::<ChunkSize>()
            .map_err(|e| problems.push(format!("chunk: {e}")))
            .ok(),
    };
    match (entity, window, chunk) {
        (Some(entity), Some(window), Some(chunk)) if problems.is_empty() => Ok(PipelineRun {
            pipeline: entity.pipeline_name(),
            entity,
            window,
            chunk,
        }),
        _ => Err(PipelineError { problems }),
    }
}

impl PipelineRun {
    /// The engine's options for this run; `trigger` is recorded in the run ledger.
    pub fn backfill_options(&self, trigger: Option<&str>, progress: bool) -> BackfillOptions {
        BackfillOptions {
            entities: vec![self.entity],
            window: self.window,
            chunk: self.chunk,
            page_size: 1000,
            restart: false,
            concurrency: 4,
            pipeline: Some(self.pipeline.to_string()),
            trigger: trigger.map(str::to_string),
            progress,
            realm_lock_held: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Variables {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_entity_has_its_pipeline() {
        assert_eq!(names().len(), 40);
        assert_eq!(
            names()[..3],
            [
                "qb_customers_backfill",
                "qb_invoices_backfill",
                "qb_items_backfill"
            ]
        );
        for e in Entity::ALL {
            assert_eq!(entity_of(e.pipeline_name()), Ok(e));
        }
        let vendors = entity_of("qb_vendors_backfill").unwrap();
        assert_eq!(vendors.qbo_name(), "Vendor");
        let run = resolve(
            "qb_exchange_rates_backfill",
            &vars(&[("from", "2014-01-01"), ("to", "2014-12-31")]),
        )
        .unwrap();
        assert_eq!(run.entity.qbo_name(), "ExchangeRate");
        assert_eq!(run.pipeline, "qb_exchange_rates_backfill");
    }

    #[test]
    fn spanish_names_and_aliases_give_the_same_run() {
        let a = resolve(
            "qb_invoices_backfill",
            &vars(&[("fecha_inicio", "2014-01-01"), ("fecha_fin", "2025-12-31")]),
        )
        .unwrap();
        let b = resolve(
            "qb_invoices_backfill",
            &vars(&[("from", "2014-01-01"), ("to", "2025-12-31")]),
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.entity, Entity::INVOICE);
        assert_eq!(a.chunk, ChunkSize::Auto);
        let opts = a.backfill_options(Some("invoice_trigger"), false);
        assert_eq!(opts.entities, vec![Entity::INVOICE]);
        assert_eq!(opts.pipeline.as_deref(), Some("qb_invoices_backfill"));
        assert_eq!(opts.trigger.as_deref(), Some("invoice_trigger"));
        let c = resolve(
            "qb_items_backfill",
            &vars(&[
                ("from", "2014-01-01"),
                ("to", "2014-12-31"),
                ("chunk", "month"),
            ]),
        )
        .unwrap();
        assert_eq!(c.chunk, ChunkSize::Month);
    }

    #[test]
    fn every_problem_is_named() {
        let err = resolve(
            "qb_vendorz_backfill",
            &vars(&[
                ("fecha_inicio", "2014-13-01"),
                ("colour", "red"),
                ("chunk", "fortnight"),
            ]),
        )
        .unwrap_err();
        let text = err.to_string();
        for want in [
            "unknown pipeline 'qb_vendorz_backfill'",
            "qb_customers_backfill",
            "unknown variable 'colour'",
            "fecha_inicio: invalid date",
            "fecha_fin (YYYY-MM-DD) is required",
            "chunk: unknown chunk size",
        ] {
            assert!(text.contains(want), "{want:?} in {text}");
        }
        let err = resolve(
            "qb_items_backfill",
            &vars(&[
                ("fecha_inicio", "2014-01-01"),
                ("from", "2015-01-01"),
                ("fecha_fin", "2025-12-31"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("disagree"), "{err}");
        let err = resolve(
            "qb_items_backfill",
            &vars(&[("fecha_inicio", "2025-01-02"), ("fecha_fin", "2025-01-01")]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("fecha_inicio 2025-01-02 is after fecha_fin"),
            "{err}"
        );
    }

    #[test]
    fn sync_pipelines_resolve_and_take_no_variables() {
        let all = resolve_pipeline("qb_sync", &Variables::new()).unwrap();
        let Resolved::Sync(run) = &all else {
            panic!("{all:?}")
        };
        assert_eq!(run.entities.len(), 40);
        assert_eq!(
            resolve_pipeline("qb_invoices_sync", &Variables::new()).unwrap(),
            Resolved::Sync(SyncRun {
                pipeline: "qb_invoices_sync",
                entities: vec![Entity::INVOICE]
            })
        );
        let err = resolve_pipeline("qb_sync", &vars(&[("from", "2014-01-01")])).unwrap_err();
        assert!(err.to_string().contains("takes no variables"), "{err}");
        assert!(matches!(
            resolve_pipeline(
                "qb_items_backfill",
                &vars(&[("from", "2014-01-01"), ("to", "2014-12-31")])
            ),
            Ok(Resolved::Backfill(_))
        ));
        let err = resolve_pipeline("qb_nothing_sync", &Variables::new()).unwrap_err();
        assert!(err.to_string().contains("qb_<entity>_sync"), "{err}");
    }

    #[test]
    fn vars_parse_from_key_value_text() {
        let v =
            parse_vars(&["fecha_inicio=2014-01-01".into(), " to = 2025-12-31 ".into()]).unwrap();
        assert_eq!(
            v,
            vars(&[("fecha_inicio", "2014-01-01"), ("to", "2025-12-31")])
        );
        assert!(
            parse_vars(&["nokey".into()])
                .unwrap_err()
                .to_string()
                .contains("KEY=VALUE")
        );
        assert!(
            parse_vars(&["a=1".into(), "a=2".into()])
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }
}
