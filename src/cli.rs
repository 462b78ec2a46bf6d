//! The command line: `portcullis serve [--config FILE]`,
//! `portcullis check-config FILE`, `portcullis verify [--config FILE] IMAGE`,
//! `portcullis fsck [--config FILE]`, `portcullis export` / `import` /
//! `warm` for air-gapped sites and ahead-of-need pulls, and `portcullis gc`
//! for the shared bucket.
//!
//! Owns argument parsing, exit codes and the process's runtime. Configuration
//! errors are printed with their whole cause chain, naming the key. This
//! module must not contain serving logic.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::cache::scratch::{Scratch, ScratchError};
use crate::cache::{Cache, CacheError};
use crate::config::{Config, ConfigError};
use crate::error::chain;
use crate::gate::{Decision, Gate};
use crate::metrics::Metrics;
use crate::policy::{Policy, PolicyError};
use crate::reference::Reference;
use crate::router::{RouteError, Router};
use crate::upstream::Upstreams;
use crate::{server, telemetry};

/// Why `portcullis verify` could not reach a decision.
#[derive(Debug, thiserror::Error)]
enum VerifyError {
    #[error("the configuration names no policy: add policy = \"policy.toml\"")]
    NoPolicy,
    #[error("invalid policy")]
    Policy(#[source] PolicyError),
    #[error("invalid image reference")]
    Image(#[source] RouteError),
    #[error(transparent)]
    Scratch(ScratchError),
    #[error("cannot fetch the image's manifest")]
    Fetch(#[source] CacheError),
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

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
    /// Validate a configuration file (and its policy) and print what it configures.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Re-hash every cached object (the server must be stopped); corrupt
    /// ones are removed and reported. Exit 0 when all were sound, 1 when
    /// some were removed, 2 on errors.
    Fsck {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Export images, with their signatures, attestations and referrers,
    /// into an OCI image layout for an air-gapped site. An image the policy
    /// refuses is not exported (exit 1) unless `--unverified`.
    Export {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The layout directory to write (created if absent, added to if an
        /// export is there), or a `.tar` file.
        #[arg(short = 'o', long = "output", value_name = "PATH")]
        output: PathBuf,
        /// Only these platforms of multi-arch images (`os/arch[/variant]`).
        #[arg(long, value_name = "OS/ARCH")]
        platform: Vec<String>,
        /// Export images the policy refuses (they are still refused when served).
        #[arg(long)]
        unverified: bool,
        /// A file with one image per line (`#` starts a comment).
        #[arg(long, value_name = "LIST")]
        images_from: Option<PathBuf>,
        #[arg(value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Pull images (every platform; the gate fetches their signatures and
    /// attestations) into a running instance's cache ahead of need.
    /// Exit 0 when all were warmed, 1 when the instance refused some, 2 on errors.
    Warm {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The instance (default: the configured listener).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// A file with one image per line (`#` starts a comment).
        #[arg(long, value_name = "LIST")]
        images_from: Option<PathBuf>,
        /// Sign in to an instance with `[auth]` as this htpasswd user.
        #[arg(long, value_name = "USER", requires = "password_file")]
        username: Option<String>,
        /// The file holding that user's password (one line).
        #[arg(long, value_name = "FILE", requires = "username")]
        password_file: Option<PathBuf>,
        #[arg(value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Import a layout made by `export` (a directory or a `.tar`) into the
    /// cache; while the server runs, through its `admin_listen`. Exit 0 when
    /// every image was imported, 1 when the layout holds bad content
    /// (nothing of that image is served), 2 on errors.
    Import {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(value_name = "PATH")]
        path: PathBuf,
    },
    /// Delete objects in the shared bucket (`[store] backend = "s3"`) that
    /// no replica has used for `--older-than` (e.g. `30d`), with their
    /// access markers. Exit 0 when done, 2 on errors.
    Gc {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// How long unused, at least (`30d`, `12h`; at least twice
        /// `[store] access_interval`).
        #[arg(long, value_name = "AGE")]
        older_than: String,
        /// Report what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run the policy against an image through the configured upstreams.
    /// Exit 0 when it would be served, 1 when refused, 2 on errors.
    Verify {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// How to print the decision.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        /// e.g. `ghcr.io/acme/app:v1`, `alpine`, `registry.example/x@sha256:...`
        #[arg(value_name = "IMAGE")]
        image: String,
    },
}

fn load(path: Option<&PathBuf>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None => Config::embedded_default(),
    }
}

/// The multi-threaded runtime the commands run on.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("portcullis: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

/// The configuration and a runtime, or the exit code saying why not.
fn config_and_runtime(
    path: Option<&PathBuf>,
) -> Result<(Config, tokio::runtime::Runtime), ExitCode> {
    let config = load(path).map_err(|e| {
        eprintln!("portcullis: {}", chain(&e));
        ExitCode::from(2)
    })?;
    Ok((config, runtime()?))
}

/// Run the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => {
            let checked = load(Some(&file)).map_err(|e| chain(&e)).and_then(|c| {
                let policy = c
                    .policy
                    .as_deref()
                    .map(|p| Policy::load(p, &c.upstreams))
                    .transpose()
                    .map_err(|e| chain(&e))?;
                let auth = c
                    .auth
                    .as_ref()
                    .map(|a| {
                        crate::auth::Auth::new(
                            a,
                            &c.upstreams,
                            c.tls.is_some(),
                            Metrics::new(),
                            crate::clock::Clock::system(),
                        )
                    })
                    .transpose()
                    .map_err(|e| chain(&e))?;
                Ok((c, policy, auth))
            });
            match checked {
                Ok((c, policy, auth)) => {
                    println!("{}: ok", file.display());
                    print!("{}", summary(&c));
                    if let (Some(a), Some(cfg)) = (&auth, &c.auth) {
                        println!(
                            "auth: {} htpasswd users, client certificates {}, anonymous [{}], {} access rules, tokens valid {:?}",
                            a.users(),
                            if cfg.client_ca.is_empty() {
                                "off"
                            } else {
                                "on"
                            },
                            cfg.anonymous.join(", "),
                            cfg.access.len(),
                            cfg.token_ttl
                        );
                    }
                    if let Some(p) = policy {
                        print!("{}", policy_summary(&p));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Verify {
            config,
            output,
            image,
        } => {
            let (config, runtime) = match config_and_runtime(config.as_ref()) {
                Ok(x) => x,
                Err(code) => return code,
            };
            match runtime.block_on(verify(&config, &image)) {
                Ok(decision) => {
                    match output {
                        Output::Json => println!(
                            "{}",
                            serde_json::to_string_pretty(&decision).expect("decisions serialize")
                        ),
                        Output::Text => print!("{}", describe(&decision)),
                    }
                    if decision.outcome.serves() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("portcullis: {}", chain(&e));
                    ExitCode::from(2)
                }
            }
        }
        Command::Export {
            config,
            output,
            platform,
            unverified,
            images_from,
            images,
        } => {
            let (config, runtime, images) =
                match config_runtime_images(config.as_ref(), images, images_from.as_deref()) {
                    Ok(x) => x,
                    Err(code) => return code,
                };
            let opts = crate::airgap::export::Options {
                out: output,
                platforms: platform,
                unverified,
                images,
            };
            match runtime.block_on(crate::airgap::export::export(&config, &opts)) {
                Ok(report) => {
                    for (image, digest) in &report.exported {
                        let note = if report.unverified.contains(image) {
                            " (UNVERIFIED: the policy refuses it; it will be refused when served)"
                        } else {
                            ""
                        };
                        println!("exported {image} {digest}{note}");
                    }
                    for (image, why) in &report.refused {
                        if !report.unverified.contains(image) {
                            eprintln!("portcullis: not exported: {image}: {why}");
                        }
                    }
                    println!(
                        "{} images, {} objects, {} bytes in {}",
                        report.exported.len(),
                        report.objects,
                        report.bytes,
                        opts.out.display()
                    );
                    if report.refused.len() > report.unverified.len() {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("portcullis: {}", chain(&e));
                    ExitCode::from(2)
                }
            }
        }
        Command::Warm {
            config,
            url,
            images_from,
            username,
            password_file,
            images,
        } => {
            let credentials = match crate::config::credentials(
                ("--username", username),
                ("--password-file", password_file),
                std::path::Path::new(""),
            ) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("portcullis: {}", chain(&e));
                    return ExitCode::from(2);
                }
            };
            let (config, runtime, images) =
                match config_runtime_images(config.as_ref(), images, images_from.as_deref()) {
                    Ok(x) => x,
                    Err(code) => return code,
                };
            let warming = crate::airgap::warm::warm(&config, url.as_deref(), credentials, &images);
            match runtime.block_on(warming) {
                Ok(report) => {
                    for (image, digest) in &report.warmed {
                        println!("warmed {image} {digest}");
                    }
                    for (image, why) in &report.refused {
                        eprintln!("portcullis: not warmed: {image}: {why}");
                    }
                    println!(
                        "{} images, {} manifests, {} blobs, {} bytes",
                        report.warmed.len(),
                        report.manifests,
                        report.blobs,
                        report.bytes
                    );
                    if report.refused.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("portcullis: {}", chain(&e));
                    ExitCode::from(2)
                }
            }
        }
        Command::Import { config, path } => {
            let (config, runtime) = match config_and_runtime(config.as_ref()) {
                Ok(x) => x,
                Err(code) => return code,
            };
            match runtime.block_on(crate::airgap::import::import(&config, &path)) {
                Ok(report) => {
                    for (image, copied, skipped) in &report.images {
                        println!(
                            "imported {image}: {copied} objects copied, {skipped} already cached"
                        );
                    }
                    println!(
                        "{} images, {} bytes copied",
                        report.images.len(),
                        report.bytes
                    );
                    if report.trust > 0 {
                        println!(
                            "Docker Content Trust data for {} repositories",
                            report.trust
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("portcullis: {}", chain(&e));
                    ExitCode::from(if e.is_bad_content() { 1 } else { 2 })
                }
            }
        }
        Command::Gc {
            config,
            older_than,
            dry_run,
        } => {
            let (config, runtime) = match config_and_runtime(Some(&config)) {
                Ok(x) => x,
                Err(code) => return code,
            };
            let older = match crate::config::units::parse_duration(&older_than) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("portcullis: --older-than: {}", chain(&e));
                    return ExitCode::from(2);
                }
            };
            let crate::config::StoreConfig::S3(settings) = &config.store else {
                eprintln!(
                    "portcullis: {}",
                    chain(&crate::store::s3::access::GcError::NotShared)
                );
                return ExitCode::from(2);
            };
            let run = crate::store::s3::access::gc(settings, older, dry_run, Metrics::new());
            match runtime.block_on(run) {
                Ok(r) => {
                    let verb = if dry_run { "would delete" } else { "deleted" };
                    println!(
                        "bucket {} prefix {:?}: {} objects ({} bytes); {verb} {} unused for {older_than} ({} bytes) and {} stray access markers; {} other keys left alone",
                        settings.s3.bucket,
                        settings.prefix,
                        r.objects,
                        r.bytes,
                        r.old,
                        r.old_bytes,
                        r.stray_markers,
                        r.foreign
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("portcullis: {}", chain(&e));
                    ExitCode::from(2)
                }
            }
        }
        Command::Fsck { config } => {
            let (config, runtime) = match config_and_runtime(config.as_ref()) {
                Ok(x) => x,
                Err(code) => return code,
            };
            match runtime.block_on(fsck(&config)) {
                Ok(report) => {
                    println!(
                        "{}: checked {} objects ({} bytes)",
                        config.data_dir.display(),
                        report.checked,
                        report.bytes
                    );
                    for d in &report.corrupt {
                        println!("corrupt (removed; fetched again when asked for): {d}");
                    }
                    for d in &report.missing {
                        println!("missing (forgotten): {d}");
                    }
                    if report.corrupt.is_empty() && report.missing.is_empty() {
                        println!("every object matches its digest");
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("portcullis: {}", chain(&e));
                    ExitCode::from(2)
                }
            }
        }
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
            let runtime = match runtime() {
                Ok(r) => r,
                Err(code) => return code,
            };
            runtime.block_on(async move {
                // Signals are handled from here on: one that arrives while
                // binding shuts the server down as soon as it runs.
                let shutdown = server::shutdown_signal();
                match server::bind(&config).await {
                    Ok(bound) => {
                        bound.run(shutdown).await;
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

/// [`config_and_runtime`] and [`image_list`], for the commands that take images.
fn config_runtime_images(
    path: Option<&PathBuf>,
    images: Vec<String>,
    list: Option<&std::path::Path>,
) -> Result<(Config, tokio::runtime::Runtime, Vec<String>), ExitCode> {
    let (config, runtime) = config_and_runtime(path)?;
    Ok((config, runtime, image_list(images, list)?))
}

/// The images named on the command line, then those in `list` (one per
/// line, `#` starts a comment); at least one.
fn image_list(
    mut images: Vec<String>,
    list: Option<&std::path::Path>,
) -> Result<Vec<String>, ExitCode> {
    if let Some(list) = list {
        match std::fs::read_to_string(list) {
            Ok(text) => images.extend(
                text.lines()
                    .map(|l| l.split('#').next().unwrap_or("").trim())
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            ),
            Err(e) => {
                eprintln!("portcullis: cannot read {}: {e}", list.display());
                return Err(ExitCode::from(2));
            }
        }
    }
    if images.is_empty() {
        eprintln!("portcullis: name at least one image, or --images-from LIST");
        return Err(ExitCode::from(2));
    }
    Ok(images)
}

/// Fetch `image` through the configured upstreams (into a scratch cache, so
/// a running server's cache is not touched) and run the policy on it.
async fn verify(config: &Config, image: &str) -> Result<Decision, VerifyError> {
    let path = config.policy.as_deref().ok_or(VerifyError::NoPolicy)?;
    let policy = Policy::load(path, &config.upstreams).map_err(VerifyError::Policy)?;
    let router = Arc::new(Router::new(&config.upstreams));
    let (target, reference) = router.resolve_image(image).map_err(VerifyError::Image)?;
    let reference =
        reference.unwrap_or_else(|| Reference::Tag("latest".parse().expect("a valid tag")));
    let clock = crate::clock::Clock::system();
    let scratch = Scratch::open(config, "verify", &clock)
        .await
        .map_err(VerifyError::Scratch)?;
    let result = async {
        let (manifest, _) = scratch
            .cache
            .manifest(&target, &reference)
            .await
            .map_err(VerifyError::Fetch)?;
        let gate = Gate::over_cache(
            policy,
            path,
            config,
            &scratch.cache,
            router.clone(),
            scratch.metrics.clone(),
            clock.clone(),
        )
        .await;
        Ok(gate.check(&target, &reference, &manifest, None).await)
    }
    .await;
    scratch.close().await;
    result
}

/// Open the cache (adopting and re-hashing what the index does not name)
/// and re-hash every object in it.
async fn fsck(config: &Config) -> Result<crate::cache::scrub::Report, CacheError> {
    let mut config = config.clone();
    config.cache.scrub_rate = 0;
    let metrics = Metrics::new();
    let clock = crate::clock::Clock::system();
    let upstreams =
        Upstreams::new(&config.upstreams, &metrics, &clock).map_err(CacheError::Upstream)?;
    let cache = Cache::open(&config, upstreams, metrics, clock).await?;
    let report = cache.fsck().await;
    cache.close().await;
    report
}

/// A decision for people.
fn describe(d: &Decision) -> String {
    let mut s = format!(
        "image:    {}@{}\nrule:     {}\ndecision: {}\nreason:   {}\n",
        d.reference,
        d.digest,
        d.rule.as_deref().unwrap_or("(default)"),
        d.outcome.as_str(),
        d.reason
    );
    if !d.signers.is_empty() {
        s.push_str(&format!("signers:  {}\n", d.signers.join(", ")));
    }
    if !d.attestations.is_empty() {
        let signature = if d.requirement.as_deref() == Some(crate::gate::SIGNATURE) {
            "failed"
        } else {
            "passed"
        };
        s.push_str(&format!("requirements:\n  signature: {signature}\n"));
        for a in &d.attestations {
            s.push_str(&format!(
                "  attestation {:?} ({}): {}: {}\n",
                a.name,
                a.predicate_type,
                if a.passed { "passed" } else { "failed" },
                a.detail
            ));
        }
    }
    s
}

/// What a policy sets up, for `check-config`.
fn policy_summary(p: &Policy) -> String {
    let mut s = format!(
        "policy fingerprint {}\ndefault {:?}, verdicts kept {:?} (failures {:?})\n",
        p.fingerprint, p.default, p.verdict_ttl, p.failure_ttl
    );
    for r in &p.rules {
        let images: Vec<&str> = r.images.iter().map(|i| i.as_str()).collect();
        s.push_str(&format!(
            "rule {} [{}] {} threshold {} of {} signers: {}\n",
            r.name,
            r.mode.as_str(),
            images.join(","),
            r.threshold,
            r.signers.len(),
            r.signers
                .iter()
                .map(|x| x.describe())
                .collect::<Vec<_>>()
                .join("; ")
        ));
        for a in &r.attestations {
            s.push_str(&format!(
                "  attestation {} = {} threshold {} of {} signers{}, {} conditions{}\n",
                a.name,
                a.predicate_type,
                a.threshold,
                a.signers(&r.signers).len(),
                if a.signers.is_some() {
                    " (its own)"
                } else {
                    ""
                },
                a.conditions.len(),
                a.max_age_text
                    .as_deref()
                    .map(|m| format!(", max_age {m}"))
                    .unwrap_or_default()
            ));
        }
    }
    s
}

/// What a configuration sets up, for `check-config`.
pub fn summary(c: &Config) -> String {
    let mut s = format!(
        "listen {}{}\ndata_dir {}\ncache max_size {} bytes, tag_ttl {:?}, manifest_memory {} bytes\nfills {} at once, {} waiting; scrub {} bytes/s; verify_reads {}\nshutdown_grace {:?}, header_read_timeout {:?}, max_connections {}\n",
        c.listen,
        if c.tls.is_some() { " (TLS)" } else { "" },
        c.data_dir.display(),
        c.cache.max_size,
        c.cache.tag_ttl,
        c.cache.manifest_memory,
        c.cache.max_fills,
        c.cache.fill_queue,
        c.cache.scrub_rate,
        c.cache.verify_reads,
        c.shutdown_grace,
        c.header_read_timeout,
        c.max_connections.map_or_else(
            || "from the file descriptor limit".to_owned(),
            |n| n.to_string()
        ),
    );
    if let Some(a) = c.admin_listen {
        s.push_str(&format!("admin_listen {a}\n"));
    }
    if let crate::config::StoreConfig::S3(b) = &c.store {
        s.push_str(&format!(
            "store s3 {} bucket {} prefix {:?} ({} style), local_cache {} bytes, access_interval {:?}\n",
            b.s3.endpoint,
            b.s3.bucket,
            b.prefix,
            if b.s3.path_style { "path" } else { "virtual-host" },
            b.local_cache,
            b.access_interval
        ));
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
