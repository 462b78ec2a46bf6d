//! The command line: `portcullis serve [--config FILE]` and
//! `portcullis check-config FILE`.
//!
//! Owns argument parsing, exit codes and the process's runtime. Configuration
//! errors are printed with their whole cause chain, naming the key. This
//! module must not contain serving logic.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::error::chain;
use crate::{server, telemetry};

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "A pull-through cache for OCI registries that serves only what it has verified"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry mirror.
    Serve {
        /// Configuration file; without it, the embedded default (a Docker Hub
        /// mirror on 127.0.0.1:5000, data in ./portcullis-data).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and print what it configures.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

fn load(path: Option<&PathBuf>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None => Config::embedded_default(),
    }
}

/// Run the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match load(Some(&file)) {
            Ok(c) => {
                println!("{}: ok", file.display());
                print!("{}", summary(&c));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis: {}", chain(&e));
                ExitCode::from(2)
            }
        },
        Command::Serve { config } => {
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("portcullis: {}", chain(&e));
                    return ExitCode::from(2);
                }
            };
            let format = match telemetry::effective_format(config.log_format) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    return ExitCode::from(2);
                }
            };
            telemetry::init(format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("portcullis: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(async move {
                match server::bind(&config).await {
                    Ok(bound) => {
                        bound.run(server::shutdown_signal()).await;
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        tracing::error!(error = %chain(&e), "cannot start");
                        ExitCode::FAILURE
                    }
                }
            })
        }
    }
}

/// What a configuration sets up, for `check-config`.
pub fn summary(c: &Config) -> String {
    let mut s = format!(
        "listen {}{}\ndata_dir {}\ncache max_size {} bytes, tag_ttl {:?}\n",
        c.listen,
        if c.tls.is_some() { " (TLS)" } else { "" },
        c.data_dir.display(),
        c.cache.max_size,
        c.cache.tag_ttl,
    );
    if let Some(a) = c.admin_listen {
        s.push_str(&format!("admin_listen {a}\n"));
    }
    if c.offline {
        s.push_str("offline: upstreams are never contacted\n");
    }
    for u in &c.upstreams {
        s.push_str(&format!(
            "upstream {} -> {}{}{}{}\n",
            u.name,
            u.url,
            if u.default { " (default)" } else { "" },
            if u.aliases.is_empty() {
                String::new()
            } else {
                format!(
                    " aliases {}",
                    u.aliases
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            },
            if u.credentials.is_some() {
                " (credentials)"
            } else {
                ""
            },
        ));
    }
    s
}
