//! The `egress-dlp` binary: parses the command line and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use egress_dlp::cli;

/// egress-dlp: a data-loss-prevention egress proxy.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let status = match args.command {
        Command::Scan {
            rules,
            format,
            inputs,
        } => cli::scan(&rules, &inputs, format, &mut out, &mut err),
        Command::Rules { command } => match command {
            RulesCommand::Check { dir } => cli::rules_check(&dir, &mut out, &mut err),
            RulesCommand::Test { dir } => cli::rules_test(&dir, &mut out, &mut err),
        },
    };
    ExitCode::from(status as u8)
}
