//! Emergency convening: a meeting created now with the sites named, and the ringing of their open pages.
//!
//! ```text
//! standby page (/site?standby=…)            bridge                                 chair console
//! /ws/standby: hello ─────────────────▶
//!        ◀─────────────────────────── standby {site_id, site_name}
//!                                         ◀── POST /api/convene {title, sites, subtrees}
//!        ◀─────────────────────────── incoming {meeting_id, title, chair_name, token, until_ms}
//! "Tham gia" → /site?token=…  (joins)        ──▶ {meeting_id, chair_token, rings}
//! "Từ chối" → decline {meeting_id} ───▶      ──▶ rings {…declined…} to the new meeting's chair
//! ```
//! A site page already in another meeting is rung too (it gets the same `incoming`). A standby page opened while a
//! ring is still on gets the prompt when it connects. `POST /api/meetings/{id}/ring` rings again every invited
//! site that has not joined. Rings live in memory: a restart of the bridge ends them (the meeting and its
//! invitations are in the store; a re-ring starts them again). Lock order: `rooms` before `standby`, never the
//! other way round.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use diemcau_meeting::convene::{DirSite, resolve};
use diemcau_proto::control::{ConveneRequest, Ring, RingStatus};
use diemcau_proto::{ClientMsg, PROTOCOL_VERSION, Role, ServerMsg, close};
use diemcau_store::token::{self, Claims, STANDBY_MEETING};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::api::{TokenQuery, require_admin, token_claims};
use crate::room::Outgoing;
use crate::ws::{Budget, Frame, admit, close_with, frame, limited};
use crate::{AppError, AppState, unix_now, unix_now_ms};

/// How long a prompt rings when the request does not say, s.
pub(crate) const DEFAULT_RING_SECS: u32 = 120;
/// Longest title of a convened meeting, characters.
const MAX_TITLE_CHARS: usize = 200;

/// The ringing of one convened meeting.
struct MeetingRing {
    title: String,
    chair_name: String,
    until_ms: i64,
    sites: HashMap<i64, Ring>,
}

/// Open standby pages and the rings in progress (in [`AppState`]).
#[derive(Default)]
pub(crate) struct Standby {
    /// Site → its open standby pages (a commune may keep two computers waiting).
    pages: HashMap<i64, Vec<(u64, mpsc::UnboundedSender<Outgoing>)>>,
    rings: HashMap<i64, MeetingRing>,
    next_page: u64,
}

/// Who called: the admin, or the chair of some meeting (acting for its chairing site).
fn caller_chair_site(state: &AppState, headers: &HeaderMap, tok: Option<&str>) -> Result<Option<i64>, AppError> {
    if require_admin(state, headers).is_ok() {
        return Ok(None);
    }
    let claims = token_claims(state, headers, tok)?;
    match claims.role {
        Role::Chair => Ok(Some(claims.site_id)),
        Role::Technician => Err(AppError::Forbidden("technicians cannot convene a meeting; the chair does".into())),
        Role::Site => Err(AppError::Forbidden(
            "a site token cannot convene a meeting: only the chairing site (or the admin) does".into(),
        )),
    }
}

/// `POST /api/convene`: creates the meeting, rings the sites, answers the chair's link and where each ring stands.
pub(crate) async fn post(
    State(state): State<Arc<AppState>>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, AppError> {
    let caller = caller_chair_site(&state, &headers, q.token.as_deref())?;
    let req: ConveneRequest = serde_json::from_slice(&body).map_err(|e| {
        AppError::BadRequest(format!(
            "invalid body: {e} (expected e.g. {{\"title\":\"Họp khẩn\",\"sites\":[\"Xã La Bằng\"],\"subtrees\":[\"Huyện Đại Từ\"]}})"
        ))
    })?;
    let title = req.title.trim().to_string();
    if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
        return Err(AppError::BadRequest(format!("title must have 1 to {MAX_TITLE_CHARS} characters")));
    }
    let ring_secs = req.ring_secs.unwrap_or(DEFAULT_RING_SECS);
    if !(10..=600).contains(&ring_secs) {
        return Err(AppError::BadRequest("ring_secs must be between 10 and 600".into()));
    }
    let chair = match (caller, req.chair_site_id) {
        (Some(site), None) => site,
        (Some(site), Some(asked)) if asked == site => site,
        (Some(_), Some(_)) => {
            return Err(AppError::Forbidden("a chair token convenes with its own site as the chair".into()));
        }
        (None, Some(asked)) => asked,
        (None, None) => return Err(AppError::BadRequest("chair_site_id: the admin must say which site chairs".into())),
    };
    let st = state.clone();
    let (meeting_id, invited, chair_name) = tokio::task::spawn_blocking(move || -> Result<_, AppError> {
        let sites = st.store.sites()?;
        let chair_name = sites
            .iter()
            .find(|s| s.id == chair)
            .map(|s| s.name.clone())
            .ok_or_else(|| AppError::BadRequest(format!("chair_site_id: site {chair} is not in the directory")))?;
        let dir: Vec<DirSite<'_>> =
            sites.iter().map(|s| DirSite { id: s.id, code: &s.code, name: &s.name, parent_id: s.parent_id }).collect();
        let invited =
            resolve(&dir, &req.sites, &req.subtrees, chair).map_err(|e| AppError::BadRequest(e.to_string()))?;
        let id = st.store.create_meeting(&title, chair, &invited)?;
        Ok((id, invited, chair_name))
    })
    .await
    .map_err(|e| AppError::Internal(format!("convene task: {e}")))??;
    let until_ms = unix_now_ms() + i64::from(ring_secs) * 1000;
    let title = state.store.meeting(meeting_id)?.map(|m| m.title).unwrap_or_default();
    let rings = ring(&state, meeting_id, &title, &chair_name, &invited, until_ms);
    let chair_token = state.mint_token(meeting_id, chair, Role::Chair, state.cfg.token_ttl_secs);
    info!(meeting = meeting_id, invited = invited.len(), "meeting convened");
    Ok(Json(serde_json::json!({
        "meeting_id": meeting_id,
        "title": title,
        "chair_site_id": chair,
        "invited": invited,
        "until_ms": until_ms,
        "ringing": rings.iter().filter(|r| r.status == RingStatus::Ringing).count(),
        "unreachable": rings.iter().filter(|r| r.status == RingStatus::Unreachable).count(),
        "rings": rings,
        "chair_token": chair_token,
        "chair_url": format!("/chair?token={chair_token}"),
    })))
}

/// `POST /api/meetings/{id}/ring` (chair or admin): rings again every invited site that is not in the meeting now.
pub(crate) async fn ring_again(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, AppError> {
    crate::control::authorize(&state, &headers, q.token.as_deref(), id, false)?;
    let meeting = state.store.meeting(id)?.ok_or_else(|| AppError::NotFound(format!("meeting {id}")))?;
    let chair_name = state.store.site(meeting.chair_site_id)?.map(|s| s.name).unwrap_or_default();
    let present: HashSet<i64> = {
        let rooms = state.rooms.lock().map_err(|_| AppError::Internal("rooms lock poisoned".into()))?;
        rooms.get(&id).map(|r| r.members.values().map(|m| m.site_id).collect()).unwrap_or_default()
    };
    let absent: Vec<i64> = meeting.invited.iter().copied().filter(|s| !present.contains(s)).collect();
    let ring_secs = state
        .standby
        .lock()
        .ok()
        .and_then(|s| s.rings.get(&id).map(|r| (r.until_ms - unix_now_ms()).max(0) / 1000))
        .filter(|s| *s >= 10)
        .unwrap_or(i64::from(DEFAULT_RING_SECS));
    let until_ms = unix_now_ms() + ring_secs * 1000;
    let rings = ring(&state, id, &meeting.title, &chair_name, &absent, until_ms);
    Ok(Json(serde_json::json!({
        "meeting_id": id,
        "until_ms": until_ms,
        "ringing": rings.iter().filter(|r| r.status == RingStatus::Ringing).count(),
        "unreachable": rings.iter().filter(|r| r.status == RingStatus::Unreachable).count(),
        "rings": rings,
    })))
}

/// Sends the incoming-meeting prompt to every open page of `sites` (standby pages and pages in other meetings),
/// records where each ring stands, tells the meeting's chair. Returns the rings of `sites`.
fn ring(state: &AppState, meeting_id: i64, title: &str, chair_name: &str, sites: &[i64], until_ms: i64) -> Vec<Ring> {
    let now = unix_now_ms();
    let ttl = state.cfg.token_ttl_secs;
    let incoming = |site: i64| ServerMsg::Incoming {
        meeting_id,
        title: title.to_string(),
        chair_name: chair_name.to_string(),
        token: state.mint_token(meeting_id, site, Role::Site, ttl),
        until_ms,
        now_ms: now,
    };
    let wanted: HashSet<i64> = sites.iter().copied().collect();
    let mut reached: HashSet<i64> = HashSet::new();
    // Pages in other meetings.
    if let Ok(rooms) = state.rooms.lock() {
        for (id, room) in rooms.iter().filter(|(id, _)| **id != meeting_id) {
            for m in room.members.values().filter(|m| m.role == Role::Site && wanted.contains(&m.site_id)) {
                if m.tx.send(Outgoing::Msg(incoming(m.site_id))).is_ok() {
                    debug!(meeting = id, site = m.site_id, "rang a page in another meeting");
                    reached.insert(m.site_id);
                }
            }
        }
    }
    let rings: Vec<Ring> = {
        let Ok(mut sb) = state.standby.lock() else { return Vec::new() };
        for site in sites {
            if let Some(pages) = sb.pages.get_mut(site) {
                pages.retain(|(_, tx)| tx.send(Outgoing::Msg(incoming(*site))).is_ok());
                if !pages.is_empty() {
                    reached.insert(*site);
                }
            }
        }
        let entry = sb.rings.entry(meeting_id).or_insert_with(|| MeetingRing {
            title: title.to_string(),
            chair_name: chair_name.to_string(),
            until_ms,
            sites: HashMap::new(),
        });
        entry.until_ms = until_ms;
        let rings: Vec<Ring> = sites
            .iter()
            .map(|s| {
                let status = if reached.contains(s) { RingStatus::Ringing } else { RingStatus::Unreachable };
                Ring { site_id: *s, status, at_ms: now, until_ms }
            })
            .collect();
        entry.sites.extend(rings.iter().map(|r| (r.site_id, *r)));
        // Rings long over are forgotten (their meetings stay in the store).
        sb.rings.retain(|_, r| r.until_ms + 3_600_000 > now);
        rings
    };
    let rung: Vec<i64> = rings.iter().filter(|r| r.status == RingStatus::Ringing).map(|r| r.site_id).collect();
    if !rung.is_empty()
        && let Err(e) = state.store.record_sessions(meeting_id, &rung, "rung", now)
    {
        warn!(meeting = meeting_id, "cannot record the rings: {e}");
    }
    tell_chair(state, meeting_id, rings.clone());
    rings
}

/// Sends rings to the chair and technicians of `meeting_id`, if its room is open.
fn tell_chair(state: &AppState, meeting_id: i64, rings: Vec<Ring>) {
    if let Ok(rooms) = state.rooms.lock()
        && let Some(room) = rooms.get(&meeting_id)
    {
        for m in room.members.values().filter(|m| matches!(m.role, Role::Chair | Role::Technician)) {
            let _ = m.tx.send(Outgoing::Msg(ServerMsg::Rings { rings: rings.clone() }));
        }
    }
}

/// Every ring of `meeting_id` (for a chair joining it), if it was convened since the bridge started.
pub(crate) fn rings_of(state: &AppState, meeting_id: i64) -> Option<Vec<Ring>> {
    let sb = state.standby.lock().ok()?;
    let r = sb.rings.get(&meeting_id)?;
    let mut v: Vec<Ring> = r.sites.values().copied().collect();
    v.sort_by_key(|r| r.site_id);
    Some(v)
}

/// `site` declined `meeting_id` (from its standby page or a page in another meeting). Refused when the site was not
/// rung for it.
pub(crate) fn decline(state: &AppState, site: i64, meeting_id: i64) -> Result<(), String> {
    let now = unix_now_ms();
    let ring = {
        let mut sb = state.standby.lock().map_err(|_| "internal error".to_string())?;
        let Some(r) = sb.rings.get_mut(&meeting_id).and_then(|m| m.sites.get_mut(&site)) else {
            return Err(format!("this site was not rung for meeting {meeting_id}"));
        };
        r.status = RingStatus::Declined;
        r.at_ms = now;
        *r
    };
    if let Err(e) = state.store.record_session(meeting_id, site, "declined", now) {
        warn!(meeting = meeting_id, "cannot record a decline: {e}");
    }
    info!(meeting = meeting_id, site, "declined the meeting");
    tell_chair(state, meeting_id, vec![ring]);
    Ok(())
}

/// `/ws/standby?token=…`: a site's page waiting to be rung (a standby token: `meeting_id` 0, role site).
pub(crate) async fn handler(
    ws: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    Query(q): Query<TokenQuery>,
) -> Response {
    limited(ws).on_upgrade(move |socket| session(state, socket, q.token))
}

fn standby_claims(state: &AppState, tok: Option<&str>) -> Result<(Claims, String), String> {
    let tok = tok.ok_or("missing token: open the standby link with ?standby=…")?;
    let claims = token::verify(&state.secret, tok, unix_now()).map_err(|e| e.to_string())?;
    if claims.meeting_id != STANDBY_MEETING || claims.role != Role::Site {
        return Err("this is a meeting token, not a standby token: open it as /site?token=…".into());
    }
    let name = state
        .store
        .site(claims.site_id)
        .map_err(|e| format!("cannot load the site: {e}"))?
        .ok_or_else(|| format!("site {} is not in the directory", claims.site_id))?
        .name;
    Ok((claims, name))
}

async fn session(state: Arc<AppState>, socket: WebSocket, tok: Option<String>) {
    let (mut sink, mut stream) = socket.split();
    let checked = standby_claims(&state, tok.as_deref());
    let Some((claims, site_name)) = admit(&mut sink, &mut stream, checked, "standby page").await else { return };
    let site = claims.site_id;
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let _ = tx.send(Outgoing::Msg(ServerMsg::Standby { v: PROTOCOL_VERSION, site_id: site, site_name }));
    let page = {
        let Ok(mut sb) = state.standby.lock() else { return };
        sb.next_page += 1;
        let page = sb.next_page;
        sb.pages.entry(site).or_default().push((page, tx.clone()));
        // A ring still on for this site reaches a page opened after it.
        let now = unix_now_ms();
        for (meeting_id, r) in sb.rings.iter().filter(|(_, r)| r.until_ms > now) {
            if r.sites.get(&site).is_some_and(|x| x.status != RingStatus::Declined) {
                let _ = tx.send(Outgoing::Msg(ServerMsg::Incoming {
                    meeting_id: *meeting_id,
                    title: r.title.clone(),
                    chair_name: r.chair_name.clone(),
                    token: state.mint_token(*meeting_id, site, Role::Site, state.cfg.token_ttl_secs),
                    until_ms: r.until_ms,
                    now_ms: now,
                }));
            }
        }
        page
    };
    info!(site, "standby page open");
    let mut budget = Budget::new(state.cfg.max_messages_per_sec);
    let mut shutdown = state.shutdown.clone();
    loop {
        tokio::select! {
            incoming = stream.next() => {
                let text = match frame(&mut sink, incoming, &mut budget).await {
                    Frame::Text(t) => t,
                    Frame::Skip => continue,
                    Frame::End => break,
                };
                let reply = match ClientMsg::parse(&text) {
                    Ok(ClientMsg::Ping {}) => Some(ServerMsg::Pong),
                    Ok(ClientMsg::Decline { meeting_id }) => decline(&state, site, meeting_id)
                        .err()
                        .map(|message| ServerMsg::Error { code: "refused".into(), message }),
                    Ok(_) => Some(ServerMsg::Error {
                        code: "unexpected".into(),
                        message: "a standby page only sends ping and decline".into(),
                    }),
                    Err(e) => {
                        close_with(&mut sink, close::BAD_MESSAGE, &format!("bad message: {e}")).await;
                        break;
                    }
                };
                if let Some(r) = reply
                    && sink.send(Message::Text(r.to_json().into())).await.is_err()
                {
                    break;
                }
            }
            out = rx.recv() => match out {
                Some(Outgoing::Msg(m)) => {
                    if sink.send(Message::Text(m.to_json().into())).await.is_err() { break }
                }
                Some(Outgoing::Close(code, reason)) => {
                    close_with(&mut sink, code, &reason).await;
                    break;
                }
                None => break,
            },
            _ = shutdown.changed() => {
                close_with(&mut sink, close::SHUTDOWN, "the bridge is shutting down").await;
                break;
            }
        }
    }
    if let Ok(mut sb) = state.standby.lock()
        && let Some(pages) = sb.pages.get_mut(&site)
    {
        pages.retain(|(p, _)| *p != page);
        if pages.is_empty() {
            sb.pages.remove(&site);
        }
    }
    info!(site, "standby page closed");
}

/// How long a standby token lives when none is asked for, s: a standby page stays open for weeks.
pub const STANDBY_TTL_SECS: i64 = 90 * 24 * 3600;
