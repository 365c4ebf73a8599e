//! The `egress-dlp` binary: parses the command line and calls the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use egress_dlp::{cli, config, logging, proxy};

/// egress-dlp: a data-loss-prevention egress proxy.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (every key defaults; flags override the config file).
    Serve {
        /// YAML config file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Proxy listen address (overrides `listen`).
        #[arg(long)]
        listen: Option<String>,
        /// Admin listen address (overrides `admin_listen`).
        #[arg(long)]
        admin_listen: Option<String>,
        /// Rules directory (overrides `rules`).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Data directory (overrides `data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Log line format (overrides `log.format`).
        #[arg(long, value_enum)]
        log_format: Option<config::LogFormat>,
    },
    /// Scan files (or stdin) with the same engine and policy as the proxy.
    Scan {
        /// Rules directory.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = cli::Format::Text)]
        format: cli::Format,
        /// Decode each input as a body of this Content-Type, as the proxy would
        /// (`application/json`, `multipart/form-data; boundary=...`).
        #[arg(long)]
        content_type: Option<String>,
        /// Decode each input as a body with this Content-Encoding (`gzip`, `gzip, br`).
        #[arg(long)]
        content_encoding: Option<String>,
        /// Files to scan; `-` or nothing reads stdin.
        inputs: Vec<PathBuf>,
    },
    /// Print a credentials-file line (`USER:$argon2id$...`) for a password read from stdin.
    Passwd {
        /// User name.
        user: String,
    },
    /// Check or test a rules directory.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Exact data match: build the index of the company's customer records.
    Edm {
        #[command(subcommand)]
        command: EdmCommand,
    },
    /// Manage the TLS interception CA.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

#[derive(Subcommand)]
enum EdmCommand {
    /// Index columns of a customer CSV as keyed hashes (no plaintext); the key file is
    /// created (0600) when missing. Exit 2 on any error.
    Build {
        /// Rules directory: the rule whose `edm.field` names a column says how to normalise it.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
        /// A CSV header name to index (repeat for several).
        #[arg(long = "column", required = true)]
        columns: Vec<String>,
        /// The key file.
        #[arg(long, default_value = "data/edm.key")]
        key: PathBuf,
        /// The index file to write.
        #[arg(long)]
        out: PathBuf,
        /// The customer CSV, with a header row (`-`: stdin).
        csv: PathBuf,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the CA (DATA_DIR/ca.pem, DATA_DIR/ca-key.pem mode 0600); never overwrites.
    Init {
        /// Data directory.
        #[arg(long, default_value = config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate every rule file (embedded tests included); exit 2 listing every problem.
    Check {
        /// Rules directory.
        #[arg(default_value = "rules")]
        dir: PathBuf,
    },
    /// Run every rule's embedded tests; exit 1 if any fails.
    Test {
        /// Rules directory.
        #[arg(default_value = "rules")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Only the one-shot commands lock stdout and stderr: `serve` logs from many threads.
    let locked = || (std::io::stdout().lock(), std::io::stderr().lock());
    let status = match args.command {
        Command::Serve {
            config,
            listen,
            admin_listen,
            rules,
            data_dir,
            log_format,
        } => serve(
            config.as_deref(),
            log_format,
            config::Overrides {
                listen,
                admin_listen,
                rules,
                data_dir,
            },
        ),
        Command::Scan {
            rules,
            format,
            content_type,
            content_encoding,
            inputs,
        } => {
            let (mut out, mut err) = locked();
            let body = cli::BodyHeaders {
                content_type,
                content_encoding,
            };
            cli::scan(&rules, &inputs, format, &body, &mut out, &mut err)
        }
        Command::Passwd { user } => {
            let (mut out, mut err) = locked();
            cli::passwd(&user, &mut std::io::stdin().lock(), &mut out, &mut err)
        }
        Command::Rules { command } => {
            let (mut out, mut err) = locked();
            match command {
                RulesCommand::Check { dir } => cli::rules_check(&dir, &mut out, &mut err),
                RulesCommand::Test { dir } => cli::rules_test(&dir, &mut out, &mut err),
            }
        }
        Command::Edm {
            command:
                EdmCommand::Build {
                    rules,
                    columns,
                    key,
                    out: index,
                    csv,
                },
        } => {
            let (mut out, mut err) = locked();
            let args = cli::edm::BuildArgs {
                rules,
                columns,
                key,
                out: index,
                csv,
            };
            cli::edm::build(&args, &mut out, &mut err)
        }
        Command::Ca {
            command: CaCommand::Init { data_dir },
        } => {
            let (mut out, mut err) = locked();
            cli::ca_init(&data_dir, &mut out, &mut err)
        }
    };
    ExitCode::from(status as u8)
}

/// `serve`: load and validate the config (every problem listed), install tracing (text, or
/// JSON by `--log-format` / `log.format`), create the CA on first start (`tls.intercept`),
/// run the proxy until SIGTERM/SIGINT (SIGHUP reloads). Exit 0 after
/// a clean drain, 2 on a bad config or start error.
fn serve(
    path: Option<&Path>,
    log_format: Option<config::LogFormat>,
    overrides: config::Overrides,
) -> i32 {
    let config = match config::load(path, &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("egress-dlp: {e}");
            return 2;
        }
    };
    // Kept until `serve` returns: dropping it writes out the queued log lines.
    let _log = logging::init(log_format.unwrap_or(config.log.format));
    let config = Arc::new(config);
    let source = proxy::reload::ReloadSource {
        config_path: path.map(Path::to_path_buf),
        overrides,
    };
    // What `prepare_ca` says (a CA created, how to trust it) goes out as a log line, so a
    // JSON log stays all JSON.
    let mut said = Vec::new();
    if let Err(e) = cli::prepare_ca(&config.tls, &mut said) {
        eprintln!("egress-dlp: CA: {e}");
        return 2;
    }
    if !said.is_empty() {
        tracing::info!("{}", String::from_utf8_lossy(&said).trim_end());
    }
    let result =
        tokio::runtime::Runtime::new().and_then(|rt| rt.block_on(proxy::serve(config, source)));
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("egress-dlp: {e}");
            2
        }
    }
}
