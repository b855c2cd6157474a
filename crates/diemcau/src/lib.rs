//! diemcau — the bridge binary's library: configuration, wiring of store + media + signalling, and [`start`], which
//! the CLI's `serve` and the end-to-end tests both use.

pub mod bench;
pub mod bench_rollcall;
pub mod config;
pub mod drill;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use diemcau_media::{Media, MediaConfig};
use diemcau_proto::Role;
use diemcau_signal::{AppState, SignalConfig};
use diemcau_store::{Demo, Store};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::Config;

impl Config {
    /// A configuration for tests: HTTP and media on ephemeral loopback ports, data in `dir`, two shards.
    pub fn for_tests(dir: &Path) -> Config {
        let mut c = Config::defaults();
        c.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c.media.port = 0;
        c.media.shards = 2;
        c.data.dir = dir.to_path_buf();
        c.admin.token = "test-admin-token".into();
        c
    }
}

/// The labelled demo links.
#[derive(Debug, Clone)]
pub struct DemoLinks {
    /// The chairing province's console.
    pub chair: String,
    /// The first commune's page.
    pub site: String,
    /// The technician's page.
    pub tech: String,
    /// The first commune's standby page: it rings when the chair convenes a meeting with it.
    pub standby: String,
}

/// A running bridge.
pub struct Running {
    /// Where HTTP (pages, API, WebSocket) listens.
    pub http_addr: SocketAddr,
    /// Base URL of the links.
    pub base_url: String,
    /// The demo meeting.
    pub demo: Demo,
    /// The demo links, each with its own token.
    pub links: DemoLinks,
    /// The media sockets.
    pub media_addrs: Vec<SocketAddr>,
    /// Shared state (for tests and admin commands).
    pub state: Arc<AppState>,
    media: Arc<Media>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    ttl_secs: i64,
}

impl Running {
    /// Mints a token for the demo meeting.
    pub fn token(&self, role: Role, site_id: i64) -> String {
        self.state.mint_token(self.demo.meeting_id, site_id, role, self.ttl_secs)
    }

    /// Closes every WebSocket, stops HTTP and the media shards.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        let media = self.media.clone();
        let _ = tokio::task::spawn_blocking(move || media.shutdown()).await;
    }
}

/// Opens the store (seeding the demo), starts the media shards and the HTTP server.
pub async fn start(cfg: Config) -> anyhow::Result<Running> {
    let db = cfg.data.dir.join("diemcau.sqlite3");
    let store = Arc::new(Store::open(&db).with_context(|| format!("opening the database {}", db.display()))?);
    let demo = store.seed_demo().context("seeding the demo meeting")?;

    let media_cfg = MediaConfig {
        bind_ip: cfg.media.bind,
        port: cfg.media.port,
        advertise_ip: cfg.advertise_ip(),
        shards: cfg.media.shards,
        adaptive: cfg.media.adaptive,
        video_fec: cfg.media.video_fec,
    };
    let (media, media_events) = Media::start(&media_cfg)
        .with_context(|| format!("binding the media sockets on {}:{}", cfg.media.bind, cfg.media.port))?;
    let media = Arc::new(media);
    let media_addrs = media.local_addrs().to_vec();

    let ttl_secs = i64::from(cfg.meeting.token_ttl_hours) * 3600;
    let signal_cfg = SignalConfig {
        admin_token: (!cfg.admin.token.is_empty()).then(|| cfg.admin.token.clone()),
        grid_size: cfg.meeting.grid_size,
        audio_slots: cfg.meeting.audio_slots,
        sites_start_muted: cfg.meeting.sites_start_muted,
        max_messages_per_sec: cfg.signal.max_messages_per_sec,
        token_ttl_secs: ttl_secs,
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = AppState::new(store, media.clone(), signal_cfg, shutdown_rx.clone())?;
    tokio::spawn(diemcau_signal::run_media_events(state.clone(), media_events));
    let app = diemcau_signal::app(state.clone());

    let listener =
        std::net::TcpListener::bind(cfg.http.listen).with_context(|| format!("binding HTTP on {}", cfg.http.listen))?;
    listener.set_nonblocking(true)?;
    let http_addr = listener.local_addr()?;
    let tls = !cfg.http.tls_cert.is_empty();
    let server = if tls {
        // One crypto provider for the whole process (aws-lc-rs, as str0m's DTLS); fails harmlessly if already set.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let rustls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cfg.http.tls_cert, &cfg.http.tls_key)
            .await
            .with_context(|| format!("loading TLS certificate {} and key {}", cfg.http.tls_cert, cfg.http.tls_key))?;
        let handle = axum_server::Handle::new();
        let h2 = handle.clone();
        let mut rx = shutdown_rx.clone();
        tokio::spawn(async move {
            let _ = rx.changed().await;
            h2.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
        });
        let srv = axum_server::from_tcp_rustls(listener, rustls)?.handle(handle);
        tokio::spawn(async move {
            if let Err(e) = srv.serve(app.into_make_service()).await {
                tracing::error!("HTTPS server failed: {e}");
            }
        })
    } else {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let mut rx = shutdown_rx.clone();
        tokio::spawn(async move {
            let res = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.changed().await;
                })
                .await;
            if let Err(e) = res {
                tracing::error!("HTTP server failed: {e}");
            }
        })
    };

    let base_url = if cfg.http.public_url.is_empty() {
        let host = if http_addr.ip().is_unspecified() { "localhost".to_string() } else { http_addr.ip().to_string() };
        format!("{}://{}:{}", if tls { "https" } else { "http" }, host, http_addr.port())
    } else {
        cfg.http.public_url.trim_end_matches('/').to_string()
    };
    let mint = |role, site| state.mint_token(demo.meeting_id, site, role, ttl_secs);
    let links = DemoLinks {
        chair: format!("{base_url}/chair?token={}", mint(Role::Chair, demo.chair_site_id)),
        site: format!("{base_url}/site?token={}", mint(Role::Site, demo.first_commune_id)),
        tech: format!("{base_url}/tech?token={}", mint(Role::Technician, demo.technician_site_id)),
        standby: format!("{base_url}/site?standby={}", state.mint_standby(demo.first_commune_id, ttl_secs)),
    };
    Ok(Running { http_addr, base_url, demo, links, media_addrs, state, media, shutdown: shutdown_tx, server, ttl_secs })
}
