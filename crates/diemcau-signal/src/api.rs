//! REST API: the admin directory/meeting/token calls and the live statistics.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use diemcau_proto::{Role, SiteKind};
use diemcau_store::token::{self, Claims};
use diemcau_store::{Meeting, NewSite, Site};
use serde::{Deserialize, Serialize};

use crate::{AppError, AppState, unix_now};

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The claims of the join token given as `?token=` (`query`) or `Authorization: Bearer`; 401 when it is missing or
/// refused.
pub(crate) fn token_claims(state: &AppState, headers: &HeaderMap, query: Option<&str>) -> Result<Claims, AppError> {
    let Some(tok) = query.or_else(|| bearer(headers)) else {
        return Err(AppError::Unauthorized("missing token (?token= or Authorization: Bearer)".into()));
    };
    token::verify(&state.secret, tok, unix_now()).map_err(|e| AppError::Unauthorized(e.to_string()))
}

/// Parses a JSON body only after the caller is authorized, with errors in the API's `{"error": …}` shape.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AppError> {
    serde_json::from_slice(body).map_err(|e| AppError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Checks the admin bearer token (compared in constant time).
pub(crate) fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let Some(expected) = state.cfg.admin_token.as_deref() else {
        return Err(AppError::Forbidden("the admin API is disabled: set [admin] token in the config".into()));
    };
    let Some(given) = bearer(headers) else {
        return Err(AppError::Unauthorized("missing header: Authorization: Bearer <admin token>".into()));
    };
    let same = given.len() == expected.len()
        && given.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if same { Ok(()) } else { Err(AppError::Unauthorized("wrong admin token".into())) }
}

#[derive(Deserialize)]
pub(crate) struct TokenQuery {
    pub(crate) token: Option<String>,
}

/// Query of the statistics endpoint: token, and the page of peers wanted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatsQuery {
    token: Option<String>,
    /// `site_id` (default), `name`, `loss`, `rtt`, `kbps_in`, `kbps_out`.
    sort: Option<String>,
    /// `asc` (default) or `desc`.
    order: Option<String>,
    offset: Option<usize>,
    /// At most [`MAX_PAGE`]; default [`DEFAULT_PAGE`].
    limit: Option<usize>,
}

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// Orders two optional figures, `desc` or not, with "unknown" after every known value either way.
fn cmp_opt(a: Option<f64>, b: Option<f64>, desc: bool) -> std::cmp::Ordering {
    match (a, b) {
        (Some(a), Some(b)) if desc => b.total_cmp(&a),
        (Some(a), Some(b)) => a.total_cmp(&b),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
}

/// Sorts the rows and answers one page of them with the totals.
fn page_json(
    id: i64,
    mut rows: Vec<PeerRow>,
    sort: &str,
    desc: bool,
    offset: usize,
    limit: usize,
    shards: usize,
) -> serde_json::Value {
    let total = rows.len();
    let connected = rows.iter().filter(|r| r.state == "connected").count();
    // Ties (and unknown figures) fall back to the site id so pages are stable from one second to the next.
    rows.sort_by(|a, b| {
        let by = match sort {
            "name" if desc => b.name.cmp(&a.name),
            "name" => a.name.cmp(&b.name),
            "loss" => cmp_opt(a.loss_pct, b.loss_pct, desc),
            "rtt" => cmp_opt(a.rtt_ms, b.rtt_ms, desc),
            "kbps_in" => cmp_opt(a.kbps_in, b.kbps_in, desc),
            "kbps_out" => cmp_opt(a.kbps_out, b.kbps_out, desc),
            _ if desc => b.site_id.cmp(&a.site_id),
            _ => std::cmp::Ordering::Equal,
        };
        by.then(a.site_id.cmp(&b.site_id))
    });
    let page: Vec<PeerRow> = rows.into_iter().skip(offset).take(limit).collect();
    serde_json::json!({
        "meeting_id": id,
        "total": total,
        "connected": connected,
        "offset": offset,
        "limit": limit,
        "peers": page,
        "bridge": { "shards": shards },
    })
}

/// One peer in the statistics answer.
#[derive(Serialize)]
struct PeerRow {
    site_id: i64,
    name: String,
    role: Role,
    state: &'static str,
    muted: bool,
    kbps_in: Option<f64>,
    kbps_out: Option<f64>,
    loss_pct: Option<f64>,
    rtt_ms: Option<f64>,
    /// The bridge's bandwidth estimate toward the peer, kbit/s (`[media] adaptive` only).
    estimate_kbps: Option<f64>,
    packets_in: u64,
    packets_out: u64,
    shard: Option<usize>,
    /// The simulcast layers of its camera arriving at the bridge, with their temporal layers.
    layers_in: Vec<diemcau_media::LayerIn>,
    client: Option<diemcau_proto::ClientStats>,
}

/// `GET /api/meetings/{id}/stats`: every connected peer with the bridge's and the client's figures.
pub(crate) async fn stats(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Query(q): Query<StatsQuery>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, AppError> {
    let desc = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(o) => return Err(AppError::BadRequest(format!("order: {o:?} is not asc or desc"))),
    };
    let sort = q.sort.as_deref().unwrap_or("site_id");
    if !["site_id", "name", "loss", "rtt", "kbps_in", "kbps_out"].contains(&sort) {
        return Err(AppError::BadRequest(format!(
            "sort: {sort:?} is not one of site_id, name, loss, rtt, kbps_in, kbps_out"
        )));
    }
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AppError::BadRequest(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let offset = q.offset.unwrap_or(0);
    let via_token = q.token.as_deref().or_else(|| bearer(&headers));
    let admin = require_admin(&state, &headers).is_ok();
    if !admin {
        let claims = token_claims(&state, &headers, q.token.as_deref())?;
        if claims.meeting_id != id {
            return Err(AppError::Forbidden("the token is for another meeting".into()));
        }
        if claims.role == Role::Site {
            return Err(AppError::Forbidden("statistics are for the chair and technicians".into()));
        }
    }
    let meeting = state.store.meeting(id)?.ok_or_else(|| AppError::NotFound(format!("meeting {id}")))?;
    if !admin
        && let Some(tok) = via_token
        && let Ok(claims) = token::verify(&state.secret, tok, unix_now())
        && claims.site_id != meeting.chair_site_id
    {
        return Err(AppError::Forbidden("chair and technician tokens must be for the meeting's chairing site".into()));
    }
    let media_stats = state.media.stats();
    let rows: Vec<PeerRow> = {
        let rooms = state.rooms.lock().map_err(|_| AppError::Internal("rooms lock poisoned".into()))?;
        let mut rows: Vec<PeerRow> = Vec::new();
        let Some(room) = rooms.get(&id) else {
            return Ok(Json(page_json(id, rows, sort, desc, offset, limit, state.media.shard_count())));
        };
        rows = room
            .members
            .iter()
            .filter(|(_, m)| m.role != Role::Technician)
            .map(|(pid, m)| {
                let s = media_stats.get(pid);
                PeerRow {
                    site_id: m.site_id,
                    name: room.site_name(m.site_id),
                    role: m.role,
                    state: if m.connected { "connected" } else { "connecting" },
                    muted: m.muted,
                    kbps_in: s.and_then(|s| s.kbps_in),
                    kbps_out: s.and_then(|s| s.kbps_out),
                    loss_pct: s.and_then(|s| s.loss_pct),
                    rtt_ms: s.and_then(|s| s.rtt_ms),
                    estimate_kbps: s.and_then(|s| s.estimate_kbps),
                    packets_in: s.map(|s| s.packets_in).unwrap_or(0),
                    packets_out: s.map(|s| s.packets_out).unwrap_or(0),
                    shard: s.map(|s| s.shard),
                    layers_in: s.map(|s| s.layers_in.clone()).unwrap_or_default(),
                    client: m.client_stats.clone(),
                }
            })
            .collect();
        rows
    };
    Ok(Json(page_json(id, rows, sort, desc, offset, limit, state.media.shard_count())))
}

/// `GET /api/sites`: the directory, for the admin and for a chair (whose console picks the sites to convene).
pub(crate) async fn list_sites(
    State(state): State<Arc<AppState>>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Json<Vec<Site>>, AppError> {
    if let Err(not_admin) = require_admin(&state, &headers) {
        // Something that is not a join token at all is answered as the admin API answers it.
        let Some(tok) = q.token.as_deref().or_else(|| bearer(&headers)) else { return Err(not_admin) };
        let claims = match token::verify(&state.secret, tok, unix_now()) {
            Ok(c) => c,
            Err(token::TokenError::Malformed) => return Err(not_admin),
            Err(e) => return Err(AppError::Unauthorized(e.to_string())),
        };
        if claims.role != Role::Chair {
            return Err(AppError::Forbidden("the directory is for the admin and the chair".into()));
        }
    }
    Ok(Json(state.store.sites()?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewSiteBody {
    code: String,
    name: String,
    kind: String,
    parent_id: Option<i64>,
    link_hint: Option<String>,
}

pub(crate) async fn add_site(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, AppError> {
    require_admin(&state, &headers)?;
    let body: NewSiteBody = json_body(&body)?;
    let kind = SiteKind::parse(&body.kind).ok_or_else(|| {
        AppError::BadRequest(format!(
            "kind: unknown site kind {:?} (expected province, department, district or commune)",
            body.kind
        ))
    })?;
    let id = state.store.insert_site(&NewSite {
        code: body.code,
        name: body.name,
        kind,
        parent_id: body.parent_id,
        link_hint: body.link_hint,
    })?;
    Ok(Json(serde_json::json!({ "id": id })))
}

pub(crate) async fn import_sites(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<diemcau_store::ImportReport>, AppError> {
    require_admin(&state, &headers)?;
    Ok(Json(state.store.import_sites_csv(&body[..])?))
}

pub(crate) async fn list_meetings(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<Meeting>>, AppError> {
    require_admin(&state, &headers)?;
    Ok(Json(state.store.meetings()?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewMeetingBody {
    title: String,
    chair_site_id: i64,
    invited: Vec<i64>,
}

pub(crate) async fn create_meeting(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, AppError> {
    require_admin(&state, &headers)?;
    let body: NewMeetingBody = json_body(&body)?;
    let id = state.store.create_meeting(&body.title, body.chair_site_id, &body.invited)?;
    Ok(Json(serde_json::json!({ "id": id })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTokenBody {
    /// Not given for a standby token.
    #[serde(default)]
    meeting_id: Option<i64>,
    site_id: i64,
    role: String,
    ttl_secs: Option<i64>,
}

pub(crate) async fn create_token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, AppError> {
    require_admin(&state, &headers)?;
    let body: NewTokenBody = json_body(&body)?;
    if body.role == "standby" {
        let ttl = body.ttl_secs.unwrap_or(crate::convene::STANDBY_TTL_SECS);
        if !(1..=366 * 24 * 3600).contains(&ttl) {
            return Err(AppError::BadRequest("ttl_secs must be between 1 and one year".into()));
        }
        if body.meeting_id.is_some() {
            return Err(AppError::BadRequest("a standby token is for no meeting: leave meeting_id out".into()));
        }
        state.store.site(body.site_id)?.ok_or_else(|| AppError::NotFound(format!("site {}", body.site_id)))?;
        let exp = unix_now() + ttl;
        let tok = state.mint_token(token::STANDBY_MEETING, body.site_id, Role::Site, ttl);
        return Ok(Json(serde_json::json!({ "token": tok, "exp": exp, "url": format!("/site?standby={tok}") })));
    }
    let role = Role::parse(&body.role).ok_or_else(|| {
        AppError::BadRequest(format!("role: {:?} is not chair, site, technician or standby", body.role))
    })?;
    let Some(meeting_id) = body.meeting_id else {
        return Err(AppError::BadRequest("meeting_id is required (except for a standby token)".into()));
    };
    let meeting =
        state.store.meeting(meeting_id)?.ok_or_else(|| AppError::NotFound(format!("meeting {meeting_id}")))?;
    let allowed = match role {
        Role::Chair | Role::Technician => body.site_id == meeting.chair_site_id,
        Role::Site => meeting.invited.contains(&body.site_id),
    };
    if !allowed {
        return Err(AppError::BadRequest(format!(
            "site {} cannot join meeting {} as {}",
            body.site_id,
            meeting_id,
            role.as_str()
        )));
    }
    let ttl = body.ttl_secs.unwrap_or(state.cfg.token_ttl_secs);
    if !(1..=366 * 24 * 3600).contains(&ttl) {
        return Err(AppError::BadRequest("ttl_secs must be between 1 and one year".into()));
    }
    let exp = unix_now() + ttl;
    let tok = token::sign(&state.secret, &Claims { meeting_id, site_id: body.site_id, role, exp });
    Ok(Json(serde_json::json!({ "token": tok, "exp": exp })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(site_id: i64, loss: Option<f64>) -> PeerRow {
        PeerRow {
            site_id,
            name: format!("Xã {site_id}"),
            role: Role::Site,
            state: "connected",
            muted: false,
            kbps_in: None,
            kbps_out: None,
            loss_pct: loss,
            rtt_ms: None,
            estimate_kbps: None,
            packets_in: 0,
            packets_out: 0,
            shard: None,
            layers_in: Vec::new(),
            client: None,
        }
    }

    fn ids(v: &serde_json::Value) -> Vec<i64> {
        v["peers"].as_array().unwrap().iter().map(|p| p["site_id"].as_i64().unwrap()).collect()
    }

    #[test]
    fn worst_loss_first_with_unknown_last_and_pages() {
        let rows = || vec![row(1, Some(0.5)), row(2, None), row(3, Some(7.0)), row(4, Some(0.5)), row(5, Some(2.0))];
        let v = page_json(9, rows(), "loss", true, 0, 10, 2);
        assert_eq!(ids(&v), vec![3, 5, 1, 4, 2]);
        assert_eq!(v["total"], 5);
        assert_eq!(ids(&page_json(9, rows(), "loss", false, 0, 10, 2)), vec![1, 4, 5, 3, 2]);
        let page = page_json(9, rows(), "loss", true, 1, 2, 2);
        assert_eq!(ids(&page), vec![5, 1]);
        assert_eq!((page["offset"].as_u64(), page["limit"].as_u64()), (Some(1), Some(2)));
        assert_eq!(ids(&page_json(9, rows(), "site_id", true, 0, 3, 2)), vec![5, 4, 3]);
        assert_eq!(ids(&page_json(9, rows(), "site_id", false, 4, 3, 2)), vec![5]);
    }
}

/// `GET /api/bridge/metrics` (admin): the data plane's own figures, for benchmarks and monitoring.
#[derive(Serialize)]
pub(crate) struct BridgeMetrics {
    /// Shard threads.
    shards: usize,
    /// Peers with media.
    peers: usize,
    /// WebSocket members over all meetings.
    members: usize,
    /// RTP packets forwarded to subscribers, all peers.
    packets_out: u64,
    /// RTP packets received from publishers, all peers.
    packets_in: u64,
    /// Publisher packet received → sealed and sent to one subscriber, one sample per packet per subscriber, since
    /// the bridge started (subtract two reads' `buckets` for a window).
    forward_delay: diemcau_media::histogram::Summary,
}

pub(crate) async fn bridge_metrics(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<BridgeMetrics>, AppError> {
    require_admin(&state, &headers)?;
    let stats = state.media.stats();
    Ok(Json(BridgeMetrics {
        shards: state.media.shard_count(),
        peers: stats.len(),
        members: state.member_count(),
        packets_out: stats.values().map(|s| s.packets_out).sum(),
        packets_in: stats.values().map(|s| s.packets_in).sum(),
        forward_delay: state.media.forward_delays().summary(),
    }))
}

/// `GET /api/link-checks`: the latest link check of each site. The admin sees every site; a chair or technician
/// token, the meeting's sites; a site token, its own site.
pub(crate) async fn link_checks(
    State(state): State<Arc<AppState>>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, AppError> {
    let checks = if require_admin(&state, &headers).is_ok() {
        state.store.latest_link_checks(None)?
    } else {
        let claims = token_claims(&state, &headers, q.token.as_deref())?;
        if claims.role == Role::Site {
            state.store.latest_link_checks(Some(claims.site_id))?
        } else {
            let meeting = state
                .store
                .meeting(claims.meeting_id)?
                .ok_or_else(|| AppError::NotFound(format!("meeting {}", claims.meeting_id)))?;
            if claims.site_id != meeting.chair_site_id {
                return Err(AppError::Forbidden(
                    "chair and technician tokens must be for the meeting's chairing site".into(),
                ));
            }
            let mut checks = state.store.latest_link_checks(None)?;
            checks.retain(|c| c.site_id == meeting.chair_site_id || meeting.invited.contains(&c.site_id));
            checks
        }
    };
    Ok(Json(serde_json::json!({ "checks": checks })))
}
