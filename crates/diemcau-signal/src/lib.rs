//! The signalling service: HTTP API, WebSocket signalling and the embedded web client, as one axum [`Router`].
//!
//! * `GET /healthz` — liveness.
//! * `GET /ws?token=…` — the WebSocket of a chair, site or technician page ([`diemcau_proto`] messages). The token
//!   is checked before anything else; every refusal is a close code with a reason (see `docs/signalling.md`).
//! * `GET /api/meetings/{id}/stats` — live per-peer statistics for the technician page (meeting token of a chair or
//!   technician, or the admin token).
//! * `GET /ws/standby?token=…` — a site's standby page, rung when a meeting is convened with it.
//! * `POST /api/convene`, `POST /api/meetings/{id}/ring` — emergency convening (chair token or admin).
//! * `/api/sites`, `/api/sites/import`, `/api/meetings`, `/api/tokens` — the admin API (bearer admin token).
//! * `/`, `/chair`, `/site`, `/tech`, `/static/*` — the web client, compiled into the binary.
//!
//! Rooms live in memory behind one mutex that is never held across an `.await`; media decisions are handed to
//! [`diemcau_media::Media`], whose shards do the packet work. The app is a value ([`app`]) so tests drive it with
//! `tower::ServiceExt::oneshot` or serve it on port 0.

mod api;
mod attendance;
mod check;
mod control;
mod convene;
mod error;
pub mod linkcheck;
mod room;
mod web;
mod ws;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::{get, post};
use diemcau_media::{Media, MediaEvent};
use diemcau_store::Store;
use tokio::sync::{mpsc, watch};

pub use convene::STANDBY_TTL_SECS;
pub use error::AppError;

/// Settings of the signalling service.
#[derive(Debug, Clone)]
pub struct SignalConfig {
    /// Bearer token of the admin API; `None` disables it.
    pub admin_token: Option<String>,
    /// Video tiles the chair offers.
    pub grid_size: u32,
    /// Audio slots the chair offers.
    pub audio_slots: u32,
    /// Sites join with their microphone muted.
    pub sites_start_muted: bool,
    /// Messages per second a connection may send (sustained; bursts of twice that are allowed).
    pub max_messages_per_sec: u32,
    /// Lifetime of tokens minted through the API when none is asked for.
    pub token_ttl_secs: i64,
}

impl Default for SignalConfig {
    fn default() -> Self {
        SignalConfig {
            admin_token: None,
            grid_size: 16,
            audio_slots: 3,
            sites_start_muted: false,
            max_messages_per_sec: 20,
            token_ttl_secs: 24 * 3600,
        }
    }
}

/// Shared state of the service.
pub struct AppState {
    pub(crate) store: Arc<Store>,
    pub(crate) secret: Vec<u8>,
    pub(crate) media: Arc<Media>,
    pub(crate) cfg: SignalConfig,
    pub(crate) rooms: Mutex<HashMap<i64, room::Room>>,
    /// Open standby pages and rings; lock it after `rooms` when both are needed, never before.
    pub(crate) standby: Mutex<convene::Standby>,
    /// Per meeting, the lock that keeps its control inputs in order (decide, write, apply); taken before `rooms`.
    control_locks: Mutex<HashMap<i64, Arc<Mutex<()>>>>,
    pub(crate) next_peer: AtomicU64,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// Builds the state. `shutdown` turning `true` closes every WebSocket with [`diemcau_proto::close::SHUTDOWN`].
    pub fn new(
        store: Arc<Store>,
        media: Arc<Media>,
        cfg: SignalConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<AppState>, diemcau_store::StoreError> {
        let secret = store.secret()?;
        Ok(Arc::new(AppState {
            store,
            secret,
            media,
            cfg,
            rooms: Mutex::default(),
            standby: Mutex::default(),
            control_locks: Mutex::default(),
            next_peer: AtomicU64::new(1),
            shutdown,
        }))
    }

    /// Mints a token for `site_id` in `meeting_id` with `role`, valid `ttl_secs` from now.
    pub fn mint_token(&self, meeting_id: i64, site_id: i64, role: diemcau_proto::Role, ttl_secs: i64) -> String {
        let claims = diemcau_store::token::Claims { meeting_id, site_id, role, exp: unix_now() + ttl_secs };
        diemcau_store::token::sign(&self.secret, &claims)
    }

    /// Mints the standby token of `site_id` (its page waits on `/ws/standby` to be rung), valid `ttl_secs`.
    pub fn mint_standby(&self, site_id: i64, ttl_secs: i64) -> String {
        self.mint_token(diemcau_store::token::STANDBY_MEETING, site_id, diemcau_proto::Role::Site, ttl_secs)
    }

    /// Runs a chair action in meeting `meeting_id` as the API does (logged, then applied; blocking: it writes the
    /// store). `Ok(None)`: it changed nothing. For drills and admin commands.
    pub fn act(
        &self,
        meeting_id: i64,
        action: diemcau_proto::control::Action,
    ) -> Result<Option<diemcau_proto::control::Logged>, AppError> {
        Ok(control::handle(self, meeting_id, unix_now_ms(), diemcau_meeting::Input::Chair(action))?)
    }

    /// The attendance report of meeting `meeting_id`, as `GET /api/meetings/{id}/attendance` answers it.
    pub fn attendance(&self, meeting_id: i64) -> Result<serde_json::Value, AppError> {
        let a = attendance::build(self, meeting_id)?;
        serde_json::to_value(a).map_err(|e| AppError::Internal(format!("attendance: {e}")))
    }

    /// The lock that orders meeting `meeting_id`'s control inputs.
    pub(crate) fn control_lock(&self, meeting_id: i64) -> Arc<Mutex<()>> {
        match self.control_locks.lock() {
            Ok(mut m) => m.entry(meeting_id).or_default().clone(),
            // Poisoned only if a thread panicked holding it: a fresh lock still orders what follows.
            Err(_) => Arc::default(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Number of live WebSocket members over all rooms.
    pub fn member_count(&self) -> usize {
        self.rooms.lock().map(|r| r.values().map(|room| room.members.len()).sum()).unwrap_or(0)
    }
}

/// Consumes the data plane's events (media connected / gone) and updates the rooms. Run it as a task.
///
/// It is also the meetings' clock: every [`CONTROL_TICK`] it fires the roll-call deadlines that have passed, and
/// once a second it notes whose audio and video are arriving (the roll call's media check).
pub async fn run_media_events(state: Arc<AppState>, mut events: mpsc::UnboundedReceiver<MediaEvent>) {
    let mut clock = tokio::time::interval(CONTROL_TICK);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    loop {
        let ev = tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => ev,
                None => return,
            },
            _ = clock.tick() => {
                let now = unix_now_ms();
                ticks += 1;
                if ticks.is_multiple_of(4) {
                    control::refresh_media_seen(&state, now);
                }
                if ticks.is_multiple_of(QUALITY_EVERY) {
                    control::sample_quality(&state);
                }
                if ticks.is_multiple_of(QUALITY_SAVE_EVERY) {
                    let st = state.clone();
                    tokio::task::spawn_blocking(move || control::save_quality(&st, now));
                }
                control::tick(&state, now);
                continue;
            }
        };
        let Ok(mut rooms) = state.rooms.lock() else { return };
        if let MediaEvent::AudioLevels(levels) = &ev {
            let now = std::time::Instant::now();
            for room in rooms.values_mut() {
                if room.audio_levels(now, levels) {
                    room.plan(&state.media);
                }
            }
            continue;
        }
        for room in rooms.values_mut() {
            let peer = match ev {
                MediaEvent::Connected(p) | MediaEvent::Disconnected(p) | MediaEvent::AudioOnly(p, _) => p,
                MediaEvent::AudioLevels(_) => continue,
            };
            if !room.members.contains_key(&peer) {
                continue;
            }
            match ev {
                MediaEvent::Connected(p) => {
                    if let Some(m) = room.members.get_mut(&p) {
                        m.connected = true;
                    }
                }
                MediaEvent::Disconnected(p) => room.media_lost(p),
                // Nothing to plan: only the page is told.
                MediaEvent::AudioOnly(p, on) => {
                    room.send(p, diemcau_proto::ServerMsg::AudioOnly { on });
                    continue;
                }
                MediaEvent::AudioLevels(_) => continue,
            }
            room.plan(&state.media);
            room.broadcast_roster();
        }
    }
}

/// How often the meetings' deadlines are looked at: a call ends at most this late.
pub const CONTROL_TICK: std::time::Duration = std::time::Duration::from_millis(250);
/// A link-quality sample of every connected site every 8 ticks (2 s) …
const QUALITY_EVERY: u64 = 8;
/// … saved to the store every 120 ticks (30 s) and when the room closes.
const QUALITY_SAVE_EVERY: u64 = 120;

/// The whole HTTP application.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/ws", get(ws::handler))
        .route("/ws/check", get(check::handler))
        .route("/ws/standby", get(convene::handler))
        .route("/api/convene", post(convene::post))
        .route("/api/meetings/{id}/ring", post(convene::ring_again))
        .route("/api/link-checks", get(api::link_checks))
        .route("/api/meetings/{id}/stats", get(api::stats))
        .route("/api/meetings/{id}/control", get(control::get).post(control::post))
        .route("/api/meetings/{id}/attendance", get(attendance::json))
        .route("/api/meetings/{id}/attendance.csv", get(attendance::csv_file))
        .route("/api/meetings/{id}/attendance.html", get(attendance::html_page))
        .route("/api/sites", get(api::list_sites).post(api::add_site))
        .route("/api/sites/import", post(api::import_sites))
        .route("/api/meetings", get(api::list_meetings).post(api::create_meeting))
        .route("/api/tokens", post(api::create_token))
        .route("/api/bridge/metrics", get(api::bridge_metrics))
        .merge(web::routes())
        .with_state(state)
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

pub(crate) fn unix_now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
