//! The `egress-dlp` binary: parses the command line and calls the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use egress_dlp::{cli, config, proxy};

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
    },
    /// Scan files (or stdin) with the same engine and policy as the proxy.
    Scan {
        /// Rules directory.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = cli::Format::Text)]
        format: cli::Format,
        /// Files to scan; `-` or nothing reads stdin.
        inputs: Vec<PathBuf>,
    },
    /// Check or test a rules directory.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Manage the TLS interception CA.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
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
        } => serve(
            config.as_deref(),
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
            inputs,
        } => {
            let (mut out, mut err) = locked();
            cli::scan(&rules, &inputs, format, &mut out, &mut err)
        }
        Command::Rules { command } => {
            let (mut out, mut err) = locked();
            match command {
                RulesCommand::Check { dir } => cli::rules_check(&dir, &mut out, &mut err),
                RulesCommand::Test { dir } => cli::rules_test(&dir, &mut out, &mut err),
            }
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

/// `serve`: load and validate the config (every problem listed), install tracing, create
/// the CA on first start (`tls.intercept`), run the proxy until SIGTERM/SIGINT. Exit 0 after a clean drain, 2 on a bad config or start error.
fn serve(path: Option<&Path>, overrides: config::Overrides) -> i32 {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match config::load(path, &overrides) {
        Ok(config) => Arc::new(config),
        Err(e) => {
            eprintln!("egress-dlp: {e}");
            return 2;
        }
    };
    if let Err(e) = cli::prepare_ca(&config.tls, &mut std::io::stderr()) {
        eprintln!("egress-dlp: CA: {e}");
        return 2;
    }
    let result = tokio::runtime::Runtime::new().and_then(|rt| rt.block_on(proxy::serve(config)));
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("egress-dlp: {e}");
            2
        }
    }
}
