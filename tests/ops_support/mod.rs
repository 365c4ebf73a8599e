//! Helpers for the operations tests: a proxy with its admin listener and a data directory
//! of its own, scraping and parsing `/metrics`, reading the audit log.
//!
//! Everything listens and connects on loopback only.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use egress_dlp::config::{self, Config, Overrides};
use egress_dlp::logging::{self, Capture, EnvFilter, LogFormat};
use egress_dlp::proxy::{self, RunOptions};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::{Reply, exchange, fixture_rules, parse_reply};

/// A proxy on `127.0.0.1:0` with its admin listener on another `127.0.0.1:0` and a
/// temporary data directory (fingerprint key, audit log).
pub struct OpsProxy {
    /// Proxy address.
    pub addr: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    /// The configuration it runs.
    pub config: Arc<Config>,
    /// The data directory (removed on drop).
    pub data: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
    reopen: tokio::sync::mpsc::UnboundedSender<()>,
}

impl OpsProxy {
    /// Starts with the fixture rules, the temporary data dir, and `yaml` as the rest of
    /// the config (`{data}` in it is replaced by the data directory's path).
    pub async fn start(yaml: &str) -> OpsProxy {
        Self::start_with_rules(&fixture_rules(), yaml).await
    }

    /// [`OpsProxy::start`] with the rules in `rules` (a directory).
    pub async fn start_with_rules(rules: &std::path::Path, yaml: &str) -> OpsProxy {
        let data = tempfile::tempdir().unwrap();
        // CONNECT is a blind tunnel here (the TLS tests configure interception).
        let tls = if yaml.contains("tls:") {
            ""
        } else {
            "tls: { intercept: false }\n"
        };
        let text = format!(
            "rules: {}\ndata_dir: {}\n{tls}{}",
            rules.display(),
            data.path().display(),
            yaml.replace("{data}", &data.path().display().to_string())
        );
        let config = config::from_yaml(&text, None, &Overrides::default())
            .unwrap_or_else(|e| panic!("test config: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
        let config = Arc::new(config);
        let (stop, stopped) = oneshot::channel::<()>();
        let (reopen, reopen_rx) = tokio::sync::mpsc::unbounded_channel();
        let options = RunOptions {
            admin: Some(admin),
            reopen_audit: Some(reopen_rx),
            reloads: None,
            auth_counters: None,
            tls: None,
        };
        let task = tokio::spawn(proxy::run_with(listener, options, config.clone(), async {
            let _ = stopped.await;
        }));
        OpsProxy {
            addr,
            admin: admin_addr,
            config,
            data,
            stop: Some(stop),
            task: Some(task),
            reopen,
        }
    }

    /// GET on the admin listener.
    pub async fn admin_get(&self, path: &str, accept: &str) -> Reply {
        let raw = format!(
            "GET {path} HTTP/1.1\r\nHost: admin\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        );
        parse_reply(&exchange(self.admin, raw.as_bytes()).await)
    }

    /// Scrapes and parses `/metrics`.
    pub async fn scrape(&self) -> Scrape {
        let reply = self.admin_get("/metrics", "*/*").await;
        assert_eq!(reply.status, 200);
        assert!(
            reply
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/plain; version=0.0.4"))
        );
        Scrape::parse(&reply.text())
    }

    /// The audit log path.
    pub fn audit_path(&self) -> PathBuf {
        self.config.audit.path.clone()
    }

    /// Asks the proxy to reopen its audit log (what SIGHUP does in `serve`).
    pub fn reopen_audit(&self) {
        self.reopen.send(()).unwrap();
    }

    /// Shuts down and waits until `run` returns (audit log written and synced).
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("stopped once");
        tokio::time::timeout(std::time::Duration::from_secs(60), task)
            .await
            .expect("the proxy stopped")
            .unwrap()
            .unwrap();
    }
}

impl Drop for OpsProxy {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Reads a JSON-lines file: one value per line (none if the file is absent).
pub fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// One parsed scrape: every sample by its series (`name{label="v",...}` as printed).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Series -> value.
    pub samples: BTreeMap<String, f64>,
    /// The raw text.
    pub text: String,
}

impl Scrape {
    /// Parses the text exposition format.
    pub fn parse(text: &str) -> Scrape {
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            samples.insert(series.to_owned(), value);
        }
        Scrape {
            samples,
            text: text.to_owned(),
        }
    }

    /// The value of `series` (`name` or `name{label="value"}`); panics if absent.
    pub fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("{series} not in the scrape:\n{}", self.text))
    }

    /// Metric names present (sample names, with `_bucket`/`_sum`/`_count` as printed).
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        self.samples
            .keys()
            .map(|s| s.split('{').next().unwrap().to_owned())
            .collect()
    }

    /// How much each series moved since `before` (series absent before count from 0).
    pub fn delta(&self, before: &Scrape, series: &str) -> f64 {
        self.get(series) - before.samples.get(series).copied().unwrap_or(0.0)
    }
}

/// Every log line of this test binary at `filter` level and above (the first call sets
/// the level: one subscriber per binary).
pub fn captured_logs(filter: &str) -> &'static Capture {
    static LOGS: OnceLock<Capture> = OnceLock::new();
    LOGS.get_or_init(|| {
        let capture = Capture::default();
        logging::try_init(
            LogFormat::Text,
            EnvFilter::new(filter),
            capture.clone(),
            false,
        )
        .expect("the first subscriber of this binary");
        capture
    })
}
