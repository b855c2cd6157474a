//! The shell around each room's [`Controller`]: chair actions from the REST API, site answers from the WebSocket,
//! deadlines from a clock; every event written to the store before it is applied and acknowledged, then its effects
//! (mutes, the floor's slots, messages to the chair and the sites).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use diemcau_media::Media;
use diemcau_meeting::{Action, Controller, Event, Input, Logged, Refusal, RollCallMode};
use diemcau_proto::{Role, ServerMsg};

use crate::api::{TokenQuery, require_admin, token_claims};
use crate::room::{Outgoing, Room};
use crate::{AppError, AppState, unix_now_ms};

/// A site's audio or video counts as arriving if packets of it came within this long before its "Có mặt".
pub(crate) const MEDIA_RECENT_MS: i64 = 5_000;

/// Why a control input did not go through.
#[derive(Debug)]
pub(crate) enum ControlError {
    /// The controller refused it.
    Refused(Refusal),
    /// The meeting has no open room (nobody connected).
    NotOpen(i64),
    /// The log could not be written: nothing was applied.
    Store(diemcau_store::StoreError),
}

impl From<ControlError> for AppError {
    fn from(e: ControlError) -> AppError {
        match e {
            ControlError::Refused(r @ (Refusal::NotInvited(_) | Refusal::BadOrder(_) | Refusal::BadSeconds)) => {
                AppError::BadRequest(r.to_string())
            }
            ControlError::Refused(r) => AppError::Conflict(r.to_string()),
            ControlError::NotOpen(id) => {
                AppError::Conflict(format!("meeting {id} is not open: nobody is connected to it"))
            }
            ControlError::Store(e) => AppError::Internal(format!("cannot write the control log: {e}")),
        }
    }
}

/// Decides `input` in meeting `meeting_id`'s room at `now_ms`; if it changes anything, logs it, applies it and
/// carries out its effects. `Ok(None)`: accepted, nothing changed. Blocking (it writes the store).
///
/// The meeting's control lock keeps decide → write → apply in order for the meeting; the rooms lock is held only
/// to decide and to apply, not during the write (an fsync), so a slow disk holds this meeting's next control input,
/// never another meeting's media events or joins. Lock order: control lock, then rooms.
pub(crate) fn handle(
    state: &AppState,
    meeting_id: i64,
    now_ms: i64,
    input: Input,
) -> Result<Option<Logged>, ControlError> {
    let serial = state.control_lock(meeting_id);
    let _serial = serial.lock().map_err(|_| ControlError::NotOpen(meeting_id))?;
    let logged = {
        let Ok(mut rooms) = state.rooms.lock() else { return Err(ControlError::NotOpen(meeting_id)) };
        let room = rooms.get_mut(&meeting_id).ok_or(ControlError::NotOpen(meeting_id))?;
        let input = match input {
            // The media check: what of the site's media arrived lately, as of now.
            Input::Present { site_id, .. } => {
                let (audio, video) = media_recent(room, site_id, now_ms);
                Input::Present { site_id, audio, video }
            }
            other => other,
        };
        let Some(event) = room.control.decide(now_ms, input).map_err(ControlError::Refused)? else {
            return Ok(None);
        };
        room.control.stamp(now_ms, event)
    };
    commit(state, meeting_id, &logged)?;
    Ok(Some(logged))
}

/// Writes `logged` to the meeting's log, then applies it to its room (if still open: a room that closed meanwhile
/// replays it from the log when it opens again) and carries out its effects. Called with the meeting's control
/// lock held and the rooms lock not.
fn commit(state: &AppState, meeting_id: i64, logged: &Logged) -> Result<(), ControlError> {
    state.store.append_control(meeting_id, logged).map_err(ControlError::Store)?;
    let Ok(mut rooms) = state.rooms.lock() else { return Ok(()) };
    let Some(room) = rooms.get_mut(&meeting_id) else { return Ok(()) };
    apply(state, room, logged);
    Ok(())
}

/// Applies a written event to the room and carries out its effects.
fn apply(state: &AppState, room: &mut Room, logged: &Logged) {
    let touches_mutes = matches!(
        logged.event,
        Event::MutedAll | Event::Muted { .. } | Event::Unmuted { .. } | Event::FloorGiven { .. } | Event::FloorTaken
    );
    let before: Vec<(diemcau_media::PeerId, bool)> = if touches_mutes {
        room.members
            .iter()
            .filter(|(_, m)| m.role == Role::Site)
            .map(|(p, m)| (*p, room.control.is_muted(m.site_id)))
            .collect()
    } else {
        Vec::new()
    };
    room.control.apply(logged);
    effects(room, &state.media, logged, &before);
}

fn effects(room: &mut Room, media: &Media, l: &Logged, mutes_before: &[(diemcau_media::PeerId, bool)]) {
    let mut replan = false;
    for (p, was) in mutes_before {
        let Some(m) = room.members.get(p) else { continue };
        let now = room.control.is_muted(m.site_id);
        if now != *was {
            let _ = m.tx.send(Outgoing::Msg(ServerMsg::Muted { muted: now }));
            replan = true;
        }
    }
    if replan || matches!(l.event, Event::FloorGiven { .. } | Event::FloorTaken) {
        room.plan(media);
        room.broadcast_roster();
    }
    // The chair and technicians: one small message per answer while an all-at-once roll call goes on; the whole
    // state on anything else.
    let answer = match &l.event {
        Event::Confirmed { site_id, .. } | Event::CallExpired { site_id, .. }
            if room.control.mode() == Some(RollCallMode::AllAtOnce) =>
        {
            room.control.result(*site_id).map(|r| (*site_id, r))
        }
        _ => None,
    };
    let msg = match answer {
        Some((site_id, result)) => ServerMsg::RollCallResult { site_id, result, counts: room.control.counts() },
        None => ServerMsg::Control { state: room.control.state() },
    };
    for m in room.members.values().filter(|m| matches!(m.role, Role::Chair | Role::Technician)) {
        let _ = m.tx.send(Outgoing::Msg(msg.clone()));
    }
    // The sites whose page it changes.
    let concerned = room.control.concerns(&l.event);
    for m in room.members.values().filter(|m| m.role == Role::Site) {
        if concerned.as_ref().is_none_or(|c| c.contains(&m.site_id)) {
            let _ = m.tx.send(Outgoing::Msg(room.site_control(m.site_id)));
        }
    }
}

/// Whether `site`'s audio and video arrived within [`MEDIA_RECENT_MS`] of `now_ms`.
fn media_recent(room: &Room, site_id: i64, now_ms: i64) -> (bool, bool) {
    let recent = |k: usize| {
        room.members
            .values()
            .filter(|m| m.site_id == site_id && m.role == Role::Site)
            .any(|m| m.media_seen[k].1.is_some_and(|t| now_ms - t <= MEDIA_RECENT_MS))
    };
    (recent(0), recent(1))
}

/// Once a second: notes, for every member, whether its audio and video packet counts grew.
pub(crate) fn refresh_media_seen(state: &AppState, now_ms: i64) {
    let stats = state.media.stats();
    let Ok(mut rooms) = state.rooms.lock() else { return };
    for room in rooms.values_mut() {
        for (pid, m) in &mut room.members {
            let Some(s) = stats.get(pid) else { continue };
            for (k, count) in [s.audio_packets_in, s.video_packets_in].into_iter().enumerate() {
                if count > m.media_seen[k].0 {
                    m.media_seen[k] = (count, Some(now_ms));
                }
            }
        }
    }
}

/// Fires every deadline that has passed (roll-call calls and rounds), in every room: the rooms with one due are
/// found under the rooms lock, their events written and applied off the async workers.
pub(crate) fn tick(state: &Arc<AppState>, now_ms: i64) {
    let due: Vec<i64> = {
        let Ok(rooms) = state.rooms.lock() else { return };
        rooms.iter().filter(|(_, r)| r.control.poll_timeout().is_some_and(|t| t <= now_ms)).map(|(id, _)| *id).collect()
    };
    if due.is_empty() {
        return;
    }
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        for id in due {
            fire_deadlines(&st, id, now_ms);
        }
    });
}

/// The deadlines of meeting `id` passed at `now_ms`, one event each.
fn fire_deadlines(state: &AppState, id: i64, now_ms: i64) {
    let serial = state.control_lock(id);
    let Ok(_serial) = serial.lock() else { return };
    // A one-by-one roll call whose bridge was down past several deadlines expires them one at a time.
    for _ in 0..10_000 {
        let logged = {
            let Ok(mut rooms) = state.rooms.lock() else { return };
            let Some(room) = rooms.get_mut(&id) else { return };
            let Some(ev) = room.control.on_timeout(now_ms) else { return };
            room.control.stamp(now_ms, ev)
        };
        if let Err(e) = commit(state, id, &logged) {
            tracing::warn!(meeting = id, "deadline not applied: {e:?}");
            return;
        }
    }
}

/// The controller of a room as it opens: its log replayed.
pub(crate) fn restore(state: &AppState, meeting_id: i64, invited: Vec<i64>) -> Controller {
    match state.store.control_log(meeting_id) {
        Ok(log) => Controller::restore(invited, &log),
        Err(e) => {
            // Refusing the meeting would stop it; a state without its log is reported loudly instead.
            tracing::error!(meeting = meeting_id, "cannot read the control log, starting from nothing: {e}");
            Controller::new(invited)
        }
    }
}

/// Checks that the caller is the admin, or the chair of meeting `id` (a technician too when `tech`).
pub(crate) fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    tok: Option<&str>,
    id: i64,
    tech: bool,
) -> Result<(), AppError> {
    if require_admin(state, headers).is_ok() {
        return Ok(());
    }
    let claims = token_claims(state, headers, tok)?;
    if claims.meeting_id != id {
        return Err(AppError::Forbidden("the token is for another meeting".into()));
    }
    match claims.role {
        Role::Chair => Ok(()),
        Role::Technician if tech => Ok(()),
        Role::Technician => Err(AppError::Forbidden("technicians watch the meeting; only the chair runs it".into())),
        Role::Site => Err(AppError::Forbidden(
            "chair actions are refused for site tokens: only the chairing site runs the roll call and the floor".into(),
        )),
    }
}

/// `POST /api/meetings/{id}/control`: one chair action (JSON [`Action`]). Answers the logged event, or
/// `"changed": false` when it changed nothing.
pub(crate) async fn post(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, AppError> {
    authorize(&state, &headers, q.token.as_deref(), id, false)?;
    let action: Action = serde_json::from_slice(&body).map_err(|e| {
        AppError::BadRequest(format!(
            "invalid action: {e} (expected e.g. {{\"action\":\"start_roll_call\",\"mode\":\"all_at_once\"}})"
        ))
    })?;
    // The store write is blocking: off the async workers.
    let st = state.clone();
    let done = tokio::task::spawn_blocking(move || handle(&st, id, unix_now_ms(), Input::Chair(action)))
        .await
        .map_err(|e| AppError::Internal(format!("control task: {e}")))??;
    Ok(Json(match done {
        Some(l) => serde_json::json!({ "changed": true, "seq": l.seq, "at_ms": l.at_ms, "event": l.event }),
        None => serde_json::json!({ "changed": false }),
    }))
}

/// `GET /api/meetings/{id}/control`: the whole control state (chair, technician or admin).
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Json<diemcau_meeting::ControlState>, AppError> {
    authorize(&state, &headers, q.token.as_deref(), id, true)?;
    let live = state.rooms.lock().ok().and_then(|r| r.get(&id).map(|room| room.control.state()));
    if let Some(s) = live {
        return Ok(Json(s));
    }
    // Not open: the state its log leaves.
    let meeting = state.store.meeting(id)?.ok_or_else(|| AppError::NotFound(format!("meeting {id}")))?;
    let log = state.store.control_log(id)?;
    Ok(Json(Controller::restore(meeting.invited, &log).state()))
}

/// Every few seconds: adds one sample of every connected site's link (the bridge's bitrate, loss and round trip
/// toward it; its page's decoded height and audio) to the room's quality sums.
pub(crate) fn sample_quality(state: &AppState) {
    let stats = state.media.stats();
    let Ok(mut rooms) = state.rooms.lock() else { return };
    for room in rooms.values_mut() {
        let Room { members, quality, .. } = room;
        for (pid, m) in members.iter_mut() {
            if m.role != Role::Site || !m.connected {
                continue;
            }
            let q = quality.entry(m.site_id).or_default();
            q.samples += 1;
            if let Some(s) = stats.get(pid) {
                q.kbps_sum += s.kbps_out.unwrap_or(0.0);
                if let Some(l) = s.loss_pct {
                    q.loss_sum += l;
                    q.loss_samples += 1;
                }
                if let Some(r) = s.rtt_ms {
                    q.rtt_sum += r;
                    q.rtt_samples += 1;
                }
            }
            if let Some(c) = &m.client_stats {
                if let Some(h) = c.height {
                    let h = i64::from(h);
                    q.lowest_height = Some(q.lowest_height.map_or(h, |l| l.min(h)));
                }
                // Counters restart with a new peer connection: only growth counts.
                let (played, concealed) = m.audio_reported;
                if c.audio_samples >= played && c.audio_concealed >= concealed {
                    q.audio_samples += i64::try_from(c.audio_samples - played).unwrap_or(0);
                    q.audio_concealed += i64::try_from(c.audio_concealed - concealed).unwrap_or(0);
                }
                m.audio_reported = (c.audio_samples, c.audio_concealed);
            }
        }
    }
}

/// Writes every open room's quality sums to the store (outside the rooms lock).
pub(crate) fn save_quality(state: &AppState, now_ms: i64) {
    let all: Vec<(i64, Vec<(i64, diemcau_store::QualitySums)>)> = match state.rooms.lock() {
        Ok(rooms) => rooms
            .iter()
            .filter(|(_, r)| !r.quality.is_empty())
            .map(|(id, r)| (*id, r.quality.iter().map(|(s, q)| (*s, q.clone())).collect()))
            .collect(),
        Err(_) => return,
    };
    for (id, sums) in all {
        if let Err(e) = state.store.save_quality(id, now_ms, &sums) {
            tracing::warn!(meeting = id, "cannot save link quality: {e}");
        }
    }
}
