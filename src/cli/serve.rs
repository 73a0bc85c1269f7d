//! `jitid serve` and `jitid dev`: the server, built by [`jitid::app::App`]
//! from a config file (or the dev trust domain's), with the dev banner and
//! the shutdown signals.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use clap::Args;
use jitid::app::App;
use jitid::config::{Config, StoreConfig};
use jitid::store::RedisStoreConfig;

#[derive(Args)]
pub(crate) struct DevArgs {
    /// Directory of the dev trust domain.
    #[arg(long, default_value = "certs/dev")]
    dir: PathBuf,
    /// Address to listen on (default: the config's, 127.0.0.1:8443).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Keep grants in Redis at this URL (redis://, rediss://, unix://)
    /// instead of in memory.
    #[arg(long)]
    redis: Option<String>,
    /// Keep no audit trail: only to measure what auditing costs (`jitid
    /// bench` against a server with and one without).
    #[arg(long)]
    no_audit: bool,
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Config file (TOML).
    #[arg(long, env = "JITID_CONFIG")]
    config: PathBuf,
}

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    run_server(config, &args.config, |addr| {
        tracing::info!(%addr, "listening");
    })
    .await
}

pub(crate) async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let env = jitid::dev::ensure(&args.dir, SystemTime::now())
        .with_context(|| format!("setting up the dev trust domain in {}", args.dir.display()))?;
    let mut config = Config::load(&env.config_path)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(url) = &args.redis {
        config.store = StoreConfig::Redis(RedisStoreConfig::new(url));
    }
    config.audit.enabled = !args.no_audit;
    let store_name = match &config.store {
        StoreConfig::Memory => "in-memory store",
        StoreConfig::Redis(_) => "Redis store",
    };
    let exe = std::env::current_exe()
        .map(|path| path.display().to_string())
        .unwrap_or_else(|_| "jitid".to_owned());
    let identity = env
        .identities
        .first()
        .context("dev trust domain has no demo identity")?
        .clone();
    let env_for_banner = env.clone();
    let config_path = env.config_path.clone();
    run_server(config, &config_path, move |addr| {
        let root = env_for_banner.ca.root_cert.display();
        let out = std::env::temp_dir().join("jitid-svid");
        let out = out.display();
        // The banner goes to stdout so it can be pasted; logs go to stderr.
        // A closed stdout must not stop the server, so write errors are
        // ignored (as `out!` does).
        let mut banner = format!(
            "# jitid dev: trust domain {} on {addr}, {store_name}\n\
             # config {}\n\
             # In another shell, act as the demo CI runner ({}):\n\
             export JITID_SERVER=https://{addr}\n\
             export JITID_CA={root}\n\
             export JITID_CERT={}\n\
             export JITID_KEY={}\n\
             {exe} fetch x509 --entitlement ci-publish --task build-1 --ttl 5m --out {out}\n\
             openssl verify -CAfile {root} -untrusted {out}/svid.pem {out}/svid.pem\n\
             {exe} fetch jwt --entitlement ci-publish --audience artifacts.example.org\n\
             # Other demo identities:\n",
            jitid::dev::DEV_TRUST_DOMAIN,
            env_for_banner.config_path.display(),
            identity.spiffe_id,
            identity.cert.display(),
            identity.key.display(),
        );
        for other in env_for_banner.identities.iter().skip(1) {
            banner.push_str(&format!(
                "#   {} {} {}\n",
                other.spiffe_id,
                other.cert.display(),
                other.key.display()
            ));
        }
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(banner.as_bytes());
        let _ = stdout.flush();
    })
    .await
}

/// Builds the server, binds its address, calls `on_bound` with it, and
/// serves until SIGINT or SIGTERM.
async fn run_server(
    config: Config,
    config_path: &Path,
    on_bound: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let app = App::builder(config, config_path).build().await?;
    let listener = app.bind().await?;
    on_bound(listener.local_addr()?);
    app.serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}
