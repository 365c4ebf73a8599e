//! Hot reload: config, rules and the EDM index, on SIGHUP and when their files change.
//!
//! What a request is judged by lives in one [`Live`] snapshot: the validated config with its
//! rule set and EDM index, and the engine compiled from them. A request takes the current
//! snapshot when it starts and keeps it to its end, so in-flight requests finish under the
//! state they started with; new requests see a reload at once.
//!
//! A reload runs the whole of [`config::load`] again — every key validated, every rule file
//! parsed and its embedded tests run, the EDM index and key read — on a blocking thread,
//! and compiles the new engine with the same hash key (so cumulative windows keep counting
//! the same values the same way). Only when all of that succeeds is the snapshot swapped;
//! on any error the old state keeps serving and every problem is logged. Either way the
//! outcome is counted (`egress_dlp_rules_reloads_total{result}`).
//!
//! Taking effect on reload: `rules`, `policy.*`, `access.*`, `block_page`. Keys bound to
//! sockets and files opened at start (`listen`, `admin_listen`, `data_dir`, `limits.*`,
//! `tls.*`, `audit.*`) keep their start-up values until a restart; a reload that changes
//! them says so in a warning.
//!
//! Files are watched by polling (`reload.watch_interval`, default 2 s; 0 turns it off):
//! the config file, the rules directory and every rule file in it, the EDM index and its
//! key. Polling a handful of `stat`s is cheap, needs no platform notification API, and
//! catches editors that replace files by renaming.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::audit::SampleValues;
use crate::config::{self, Config, Overrides};
use crate::scan::{Engine, EngineOptions, ExactIndex};

/// What requests are judged by: swapped whole by a reload.
pub struct Live {
    /// The validated config, with its rule set and EDM index.
    pub config: Arc<Config>,
    /// The engine compiled from `config.rules`.
    pub engine: Engine,
    /// What recovers and masks the values behind the audit samples of findings of
    /// `config.rules` (by rule index: a request's findings go with its own snapshot's).
    pub samples: Arc<SampleValues>,
}

impl Live {
    /// Compiles the engine for `config` with the process's hash key.
    pub fn new(config: Arc<Config>, hash_key: [u64; 2]) -> Result<Live, String> {
        let engine = Engine::with_options(
            &config.rules,
            EngineOptions {
                hash_key,
                exact: config.edm.clone().map(|index| index as Arc<dyn ExactIndex>),
            },
        )
        .map_err(|e| e.to_string())?;
        let samples = Arc::new(SampleValues::new(&config.rules));
        Ok(Live {
            config,
            engine,
            samples,
        })
    }
}

/// The current snapshot, readable from every request.
pub struct LiveCell(RwLock<Arc<Live>>);

impl LiveCell {
    /// A cell holding `live`.
    pub fn new(live: Live) -> LiveCell {
        LiveCell(RwLock::new(Arc::new(live)))
    }

    /// The snapshot in force now.
    pub fn get(&self) -> Arc<Live> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, live: Live) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
    }
}

/// Where a reload reads from: the same file and command-line overrides as the start.
#[derive(Debug, Clone, Default)]
pub struct ReloadSource {
    /// The config file (`--config`), if any.
    pub config_path: Option<PathBuf>,
    /// The command-line flags, which still win over the file.
    pub overrides: Overrides,
}

/// The result of one reload: the new rule set's version, or every problem found.
pub type ReloadOutcome = Result<String, Vec<String>>;

/// Asks a running proxy to reload; cloneable. Dropping every handle does not stop the
/// proxy (file watching and SIGHUP go on).
#[derive(Clone)]
pub struct ReloadHandle {
    requests: mpsc::Sender<oneshot::Sender<ReloadOutcome>>,
}

impl ReloadHandle {
    /// Reloads now and waits for the outcome.
    pub async fn reload(&self) -> ReloadOutcome {
        let (tx, rx) = oneshot::channel();
        if self.requests.send(tx).await.is_err() {
            return Err(vec!["the proxy has stopped".into()]);
        }
        rx.await
            .unwrap_or_else(|_| Err(vec!["the proxy stopped during the reload".into()]))
    }
}

/// The receiving end of [`ReloadHandle`]s, handed to [`super::run_with`].
pub struct Reloads {
    pub(super) source: ReloadSource,
    pub(super) requests: mpsc::Receiver<oneshot::Sender<ReloadOutcome>>,
}

impl Reloads {
    /// A reload channel for a proxy started from `source`.
    pub fn new(source: ReloadSource) -> (Reloads, ReloadHandle) {
        let (tx, rx) = mpsc::channel(4);
        (
            Reloads {
                source,
                requests: rx,
            },
            ReloadHandle { requests: tx },
        )
    }
}

/// Loads the config again and, when all of it is valid, swaps the snapshot.
pub(super) async fn reload(
    source: &ReloadSource,
    cell: &LiveCell,
    hash_key: [u64; 2],
    apply: impl FnOnce(&Config),
) -> ReloadOutcome {
    let loaded = {
        let source = source.clone();
        tokio::task::spawn_blocking(move || {
            let config = config::load(source.config_path.as_deref(), &source.overrides)
                .map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
            let config = Arc::new(config);
            Live::new(config, hash_key).map_err(|e| vec![e])
        })
        .await
        .unwrap_or_else(|e| Err(vec![format!("reload task failed: {e}")]))
    };
    match loaded {
        Ok(live) => {
            let old = cell.get();
            for key in restart_only_changes(&old.config, &live.config) {
                warn!(
                    key,
                    "changed in the config, takes effect at the next restart"
                );
            }
            let version = live.config.rules.version().to_owned();
            let rules = live.config.rules.rules().len();
            apply(&live.config);
            cell.set(live);
            info!(version, rules, "reloaded config and rules");
            Ok(version)
        }
        Err(problems) => {
            for problem in &problems {
                warn!(
                    problem,
                    "reload refused, the previous config and rules stay in force"
                );
            }
            Err(problems)
        }
    }
}

/// Keys whose change needs a restart.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |key, differs: bool| {
        if differs {
            changed.push(key);
        }
    };
    check("listen", old.listen != new.listen);
    check("admin_listen", old.admin_listen != new.admin_listen);
    check("data_dir", old.data_dir != new.data_dir);
    check(
        "limits",
        format!("{:?}", old.limits) != format!("{:?}", new.limits),
    );
    check("tls", format!("{:?}", old.tls) != format!("{:?}", new.tls));
    check(
        "audit",
        format!("{:?}", old.audit) != format!("{:?}", new.audit),
    );
    // Read once at start too (found in review: changes went unmentioned).
    check("log", format!("{:?}", old.log) != format!("{:?}", new.log));
    check(
        "reload.watch_interval",
        old.reload.watch_interval != new.reload.watch_interval,
    );
    check(
        "policy.auth.max_verifications",
        old.policy.auth.as_ref().map(|a| a.limits.max_verifications)
            != new.policy.auth.as_ref().map(|a| a.limits.max_verifications),
    );
    changed
}

/// The files whose change triggers a reload, with what they looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Watched(Vec<(PathBuf, Option<(SystemTime, u64)>)>);

impl Watched {
    /// Looks at the config file, the rules directory and its rule files, and the EDM files.
    pub(super) fn look(source: &ReloadSource, config: &Config) -> Watched {
        let mut paths: Vec<PathBuf> = Vec::new();
        paths.extend(source.config_path.clone());
        paths.push(config.rules_dir.clone());
        if let Ok(entries) = std::fs::read_dir(&config.rules_dir) {
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| crate::rules::is_rule_file_name(p))
                .collect();
            files.sort();
            paths.extend(files);
        }
        paths.extend(config.edm_files.iter().cloned());
        Watched(
            paths
                .into_iter()
                .map(|p| {
                    let stamp = stamp(&p);
                    (p, stamp)
                })
                .collect(),
        )
    }

    /// What a reload that started at `before` and ended at `after` has loaded: the stamps
    /// taken before it read the files, when it watches the same files (a file saved while
    /// it ran differs from them, so the next look reloads it; found in review: stamps taken
    /// after the reload took that save for loaded, and it was never applied); else `after`.
    pub(super) fn loaded(before: Watched, after: Watched) -> Watched {
        let same = before.0.len() == after.0.len()
            && before.0.iter().zip(&after.0).all(|(b, a)| b.0 == a.0);
        if same { before } else { after }
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// How often watched files are looked at; zero turns watching off.
pub(super) fn watch_interval(config: &Config) -> Option<Duration> {
    Some(config.reload.watch_interval).filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, from_yaml};

    fn config(yaml: &str) -> Config {
        let overrides = Overrides {
            rules: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rules").into()),
            ..Overrides::default()
        };
        from_yaml(yaml, None, &overrides).expect("config loads")
    }

    /// Every key read only at start is named when a reload changes it (found in review:
    /// `log.*`, `reload.watch_interval` and `policy.auth.max_verifications` changed silently).
    #[test]
    fn a_reload_names_every_restart_only_key_it_changes() {
        let auth = "policy: { auth: { clients: {'10.0.0.1': bob}, max_verifications: 2 } }\n";
        let old = config(auth);
        let cases = [
            ("log: { format: json }\n", "log"),
            ("reload: { watch_interval: 5s }\n", "reload.watch_interval"),
            (
                "policy: { auth: { clients: {'10.0.0.1': bob}, max_verifications: 3 } }\n",
                "policy.auth.max_verifications",
            ),
            ("limits: { drain_time: 7s }\n", "limits"),
        ];
        for (yaml, key) in cases {
            let new = config(&if yaml.starts_with("policy") {
                yaml.to_owned()
            } else {
                format!("{auth}{yaml}")
            });
            assert_eq!(restart_only_changes(&old, &new), vec![key], "{yaml}");
        }
        // What a reload applies is not warned about.
        let new = config(&format!("{auth}block_page: {{ contact: call 555 }}\n"));
        assert!(restart_only_changes(&old, &new).is_empty());
    }
}
