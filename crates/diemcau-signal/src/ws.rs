//! The `/ws` session of one page: token check, hello, then offers, mutes and statistics until it closes.
//!
//! Every refusal is a WebSocket close with a code from [`diemcau_proto::close`] and a reason that says what was
//! wrong; nothing a client sends can disturb another connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use diemcau_media::{PeerId, TrackId};
use diemcau_proto::{ClientMsg, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, Role, ServerMsg, close};
use diemcau_store::Meeting;
use diemcau_store::token::{self, Claims};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::api::TokenQuery;
use crate::room::{Outgoing, Room, RoomSite};
use crate::{AppState, unix_now, unix_now_ms};

/// Frames larger than this are refused by the WebSocket layer itself; between [`MAX_MESSAGE_BYTES`] and this, the
/// session closes with [`close::TOO_BIG`] and says so.
const HARD_FRAME_LIMIT: usize = 2 * MAX_MESSAGE_BYTES;
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn handler(
    ws: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    Query(q): Query<TokenQuery>,
) -> Response {
    limited(ws).on_upgrade(move |socket| session(state, socket, q.token))
}

/// The upgrade with the frame size limits every WebSocket of the bridge has.
pub(crate) fn limited(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.max_message_size(HARD_FRAME_LIMIT).max_frame_size(HARD_FRAME_LIMIT)
}

/// Closes with a code and a reason (truncated to the 123 bytes a close frame allows).
pub(crate) async fn close_with(ws: &mut (impl SinkExt<Message> + Unpin), code: u16, reason: &str) {
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame { code, reason: Utf8Bytes::from(&reason[..end]) };
    let _ = ws.send(Message::Close(Some(frame))).await;
}

pub(crate) fn check_claims(state: &AppState, tok: Option<&str>) -> Result<(Claims, Meeting), String> {
    let tok = tok.ok_or("missing token: open the link with ?token=…")?;
    let claims = token::verify(&state.secret, tok, unix_now()).map_err(|e| e.to_string())?;
    if claims.meeting_id == token::STANDBY_MEETING {
        return Err("this is a standby token: open it as /site?standby=… to wait for a meeting".into());
    }
    let meeting = state
        .store
        .meeting(claims.meeting_id)
        .map_err(|e| format!("cannot load the meeting: {e}"))?
        .ok_or_else(|| format!("meeting {} does not exist", claims.meeting_id))?;
    let allowed = match claims.role {
        Role::Chair | Role::Technician => claims.site_id == meeting.chair_site_id,
        Role::Site => meeting.invited.contains(&claims.site_id),
    };
    if !allowed {
        return Err(format!(
            "site {} is not invited to meeting {} as {}",
            claims.site_id,
            meeting.id,
            claims.role.as_str()
        ));
    }
    Ok((claims, meeting))
}

/// The room of `meeting` as it opens: the chair and every invited site, read in two queries (once per opening of a
/// room: a join to a room already open reads none of it — it was one query per invited site on every join, 3,000 in
/// a 3,000-site meeting).
fn open_room(state: &AppState, meeting: Meeting) -> Room {
    let mut sites = Vec::with_capacity(meeting.invited.len() + 1);
    if let Ok(Some(s)) = state.store.site(meeting.chair_site_id) {
        sites.push(RoomSite { id: s.id, name: s.name, kind: s.kind, parent_id: s.parent_id });
    }
    let mut hints = HashMap::new();
    match state.store.invited_sites(meeting.id) {
        Ok(invited) => {
            for s in invited.into_iter().filter(|s| s.id != meeting.chair_site_id) {
                hints.insert(s.id, s.link_hint);
                sites.push(RoomSite { id: s.id, name: s.name, kind: s.kind, parent_id: s.parent_id });
            }
        }
        Err(e) => warn!(meeting = meeting.id, "cannot load the invited sites: {e}"),
    }
    let mut room = Room::new(meeting.title, meeting.chair_site_id, sites);
    room.control = crate::control::restore(state, meeting.id, meeting.invited.clone());
    match state.store.quality(meeting.id) {
        Ok(q) => room.quality.extend(q),
        Err(e) => warn!(meeting = meeting.id, "cannot read the link quality so far: {e}"),
    }
    match state.store.session_events(meeting.id) {
        Ok(events) => room.joined_before.extend(events.into_iter().filter(|e| e.event == "join").map(|e| e.site_id)),
        Err(e) => warn!(meeting = meeting.id, "cannot read the session log: {e}"),
    }
    room.pending_hints = Some(hints);
    settle_weakest_link(state, &mut room);
    room
}

/// Works out `room.weakest_link` if it has not been (once per opening of a room: it reads every site's latest link
/// check).
fn settle_weakest_link(state: &AppState, room: &mut Room) {
    if let Some(hints) = room.pending_hints.take() {
        room.weakest_link = weakest_link(state, hints);
    }
}

/// The weakest link among invited sites (`hints`: site id → directory link hint): each site's latest link check's
/// recommendation, else its hint.
fn weakest_link(state: &AppState, hints: HashMap<i64, Option<String>>) -> Option<diemcau_proto::LinkProfile> {
    let mut checked = HashMap::new();
    if let Ok(checks) = state.store.latest_link_checks(None) {
        for c in checks.into_iter().filter(|c| hints.contains_key(&c.site_id)) {
            checked.insert(c.site_id, c.result.recommended);
        }
    }
    hints
        .into_iter()
        .filter_map(|(id, hint)| {
            checked.get(&id).copied().or_else(|| hint.as_deref().and_then(diemcau_proto::LinkProfile::from_link_hint))
        })
        .min()
}

/// The opening of every page socket: the token's check (`checked`; a refusal closes with [`close::BAD_TOKEN`] and
/// its reason), then the hello. `None`: the socket was closed.
pub(crate) async fn admit<T>(
    sink: &mut Sink,
    stream: &mut Stream,
    checked: Result<T, String>,
    what: &str,
) -> Option<T> {
    let v = match checked {
        Ok(v) => v,
        Err(reason) => {
            debug!("refused {what}: {reason}");
            close_with(sink, close::BAD_TOKEN, &reason).await;
            return None;
        }
    };
    expect_hello(sink, stream).await.then_some(v)
}

async fn session(state: Arc<AppState>, socket: WebSocket, tok: Option<String>) {
    let (mut sink, mut stream) = socket.split();
    let checked = check_claims(&state, tok.as_deref());
    let Some((claims, meeting)) = admit(&mut sink, &mut stream, checked, "connection").await else { return };

    let peer = PeerId(state.next_peer.fetch_add(1, Ordering::Relaxed));
    let span = info_span!("peer", peer = peer.0, site = claims.site_id, role = claims.role.as_str());
    run(state, claims, meeting, peer, sink, stream).instrument(span).await;
}

/// A connection's message budget: `per_sec` messages a second sustained, bursts of twice that (a token bucket).
pub(crate) struct Budget {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Budget {
    pub(crate) fn new(per_sec: u32) -> Budget {
        let rate = f64::from(per_sec.max(1));
        Budget { rate, tokens: rate * 2.0, last: Instant::now() }
    }

    /// Takes one message from the budget; `false` when it is spent.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate * 2.0);
        self.last = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// What a frame read from a page's socket comes to.
pub(crate) enum Frame {
    /// A text message within the size limit and the budget.
    Text(Utf8Bytes),
    /// Nothing to handle (a ping or pong).
    Skip,
    /// The session ends: the page left, or it broke a limit and was closed with the code that says which.
    End,
}

/// Checks one frame from the page against the limits every socket of the bridge has: text only, at most
/// [`MAX_MESSAGE_BYTES`], within `budget`. A frame that breaks one closes the socket with its code and reason.
pub(crate) async fn frame(
    sink: &mut Sink,
    incoming: Option<Result<Message, axum::Error>>,
    budget: &mut Budget,
) -> Frame {
    let text = match incoming {
        Some(Ok(Message::Text(t))) => t,
        Some(Ok(Message::Binary(_))) => {
            close_with(sink, close::BAD_MESSAGE, "binary messages are not accepted").await;
            return Frame::End;
        }
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Frame::Skip,
        Some(Ok(Message::Close(_))) | None => return Frame::End,
        Some(Err(e)) => {
            debug!("websocket error: {e}");
            close_with(sink, close::TOO_BIG, "message too large or broken frame").await;
            return Frame::End;
        }
    };
    if text.len() > MAX_MESSAGE_BYTES {
        let reason = format!("message of {} bytes exceeds the limit of {MAX_MESSAGE_BYTES}", text.len());
        close_with(sink, close::TOO_BIG, &reason).await;
        return Frame::End;
    }
    if !budget.take() {
        close_with(sink, close::RATE_LIMITED, "too many messages").await;
        return Frame::End;
    }
    Frame::Text(text)
}

pub(crate) type Sink = futures_util::stream::SplitSink<WebSocket, Message>;
pub(crate) type Stream = futures_util::stream::SplitStream<WebSocket>;

/// Reads the first message, which must be a `hello` with our protocol version; on anything else closes with the
/// matching code and returns `false`.
pub(crate) async fn expect_hello(sink: &mut Sink, stream: &mut Stream) -> bool {
    let hello = tokio::time::timeout(HELLO_TIMEOUT, stream.next()).await;
    let hello = match hello {
        Ok(Some(Ok(Message::Text(t)))) if t.len() <= MAX_MESSAGE_BYTES => ClientMsg::parse(&t),
        Ok(Some(Ok(Message::Text(_)))) => {
            close_with(sink, close::TOO_BIG, "message too large").await;
            return false;
        }
        Err(_) => {
            close_with(sink, close::BAD_MESSAGE, "expected a hello message within 10 s").await;
            return false;
        }
        _ => {
            close_with(sink, close::BAD_MESSAGE, "expected a hello message").await;
            return false;
        }
    };
    match hello {
        Ok(ClientMsg::Hello { v }) if v == PROTOCOL_VERSION => {}
        Ok(ClientMsg::Hello { v }) => {
            let reason = format!("protocol version {v} is not supported; this bridge speaks {PROTOCOL_VERSION}");
            close_with(sink, close::BAD_VERSION, &reason).await;
            return false;
        }
        Ok(_) => {
            close_with(sink, close::BAD_MESSAGE, "the first message must be hello").await;
            return false;
        }
        Err(e) => {
            close_with(sink, close::BAD_MESSAGE, &format!("bad message: {e}")).await;
            return false;
        }
    }

    true
}

/// Where the bandwidth estimate toward an audio-only site (satellite, EDGE) starts, kbit/s: its audio fits, the
/// lowest video layer (180p + audio, 182 kbit/s) does not, so it starts on audio alone, told so, and gets video only
/// once its estimate has grown (padding probes it).
const AUDIO_ONLY_START_KBPS: u32 = 100;

/// The link profile a site's page should send with: its latest link check's recommendation, else what the directory's
/// link hint implies; none for technicians.
fn site_profile(state: &AppState, claims: &Claims) -> Option<diemcau_proto::LinkProfile> {
    if claims.role == Role::Technician {
        return None;
    }
    if let Ok(checks) = state.store.latest_link_checks(Some(claims.site_id))
        && let Some(c) = checks.first()
    {
        return Some(c.result.recommended).filter(|p| *p != diemcau_proto::LinkProfile::Full);
    }
    let hint = state.store.site(claims.site_id).ok().flatten()?.link_hint?;
    diemcau_proto::LinkProfile::from_link_hint(&hint)
}

async fn run(state: Arc<AppState>, claims: Claims, meeting: Meeting, peer: PeerId, mut sink: Sink, mut stream: Stream) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let meeting_id = claims.meeting_id;
    let profile = site_profile(&state, &claims);
    // The room is read from the store when this join opens it, outside the rooms lock (under it only if the room
    // closed in between).
    let mut fresh_room =
        (!state.rooms.lock().is_ok_and(|r| r.contains_key(&meeting_id))).then(|| open_room(&state, meeting.clone()));
    let welcome = {
        let Ok(mut rooms) = state.rooms.lock() else { return };
        let room =
            rooms.entry(meeting_id).or_insert_with(|| fresh_room.take().unwrap_or_else(|| open_room(&state, meeting)));
        if claims.role == Role::Site && room.control.locked() && !room.joined_before.contains(&claims.site_id) {
            None
        } else {
            room.joined_before.insert(claims.site_id);
            if let Some(old) = room.join(peer, claims.site_id, claims.role, tx.clone(), state.cfg.sites_start_muted)
                && let Some(m) = room.leave(old)
            {
                let _ = m.tx.send(Outgoing::Close(close::REPLACED, "the same site connected again elsewhere".into()));
                state.media.remove(old);
            }
            let welcome = ServerMsg::Welcome {
                v: PROTOCOL_VERSION,
                role: claims.role,
                meeting_id,
                meeting_title: room.title.clone(),
                site_id: claims.site_id,
                site_name: room.site_name(claims.site_id),
                chair_site_id: room.chair_site_id,
                grid_size: state.cfg.grid_size,
                audio_slots: state.cfg.audio_slots,
                profile,
                weakest_link: room.weakest_link,
            };
            room.broadcast_roster();
            if claims.role == Role::Site && state.cfg.sites_start_muted {
                room.send(peer, ServerMsg::Muted { muted: true });
            }
            // What the control of the meeting is now: after the welcome (the channel is read after it is sent).
            match claims.role {
                Role::Site => {
                    room.send(peer, room.site_control(claims.site_id));
                    if room.control.is_muted(claims.site_id) {
                        room.send(peer, ServerMsg::Muted { muted: true });
                    }
                }
                Role::Chair | Role::Technician => {
                    room.send(peer, ServerMsg::Control { state: room.control.state() });
                    if let Some(rings) = crate::convene::rings_of(&state, meeting_id) {
                        room.send(peer, ServerMsg::Rings { rings });
                    }
                }
            }
            Some(welcome)
        }
    };
    let Some(welcome) = welcome else {
        info!("refused: the meeting is locked");
        // The refused join may have been the one that opened the room: an empty room is not kept.
        if let Ok(mut rooms) = state.rooms.lock()
            && rooms.get(&meeting_id).is_some_and(|r| r.members.is_empty())
        {
            rooms.remove(&meeting_id);
        }
        close_with(&mut sink, close::LOCKED, "the chair locked the meeting: no new site may join").await;
        return;
    };
    if sink.send(Message::Text(welcome.to_json().into())).await.is_err() {
        leave(&state, meeting_id, peer);
        return;
    }
    info!("joined");
    if let Err(e) = state.store.record_session(meeting_id, claims.site_id, "join", unix_now_ms()) {
        warn!("cannot record join: {e}");
    }

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
                let msg = match ClientMsg::parse(&text) {
                    Ok(m) => m,
                    Err(e) => {
                        close_with(&mut sink, close::BAD_MESSAGE, &format!("bad message: {e}")).await;
                        break;
                    }
                };
                if let Some(reply) = handle(&state, &claims, peer, msg).await
                    && sink.send(Message::Text(reply.to_json().into())).await.is_err()
                {
                    break;
                }
            }
            out = rx.recv() => {
                match out {
                    Some(Outgoing::Msg(m)) => {
                        if sink.send(Message::Text(m.to_json().into())).await.is_err() { break }
                    }
                    Some(Outgoing::Close(code, reason)) => {
                        close_with(&mut sink, code, &reason).await;
                        // Replaced: the new connection already took this member's place.
                        if code == close::REPLACED {
                            record_leave(&state, meeting_id, claims.site_id);
                            return;
                        }
                        break;
                    }
                    None => break,
                }
            }
            _ = shutdown.changed() => {
                close_with(&mut sink, close::SHUTDOWN, "the bridge is shutting down").await;
                break;
            }
        }
    }
    leave(&state, meeting_id, peer);
    record_leave(&state, meeting_id, claims.site_id);
    info!("left");
}

fn record_leave(state: &AppState, meeting_id: i64, site_id: i64) {
    if let Err(e) = state.store.record_session(meeting_id, site_id, "leave", unix_now_ms()) {
        warn!("cannot record leave: {e}");
    }
}

fn leave(state: &AppState, meeting_id: i64, peer: PeerId) {
    state.media.remove(peer);
    let Ok(mut rooms) = state.rooms.lock() else { return };
    if let Some(room) = rooms.get_mut(&meeting_id) {
        room.leave(peer);
        if room.members.is_empty() {
            if let Some(closed) = rooms.remove(&meeting_id) {
                let sums: Vec<_> = closed.quality.into_iter().collect();
                drop(rooms);
                if !sums.is_empty()
                    && let Err(e) = state.store.save_quality(meeting_id, unix_now_ms(), &sums)
                {
                    warn!(meeting = meeting_id, "cannot save link quality: {e}");
                }
            }
        } else {
            room.plan(&state.media);
            room.broadcast_roster();
        }
    }
}

/// Runs a control input from a page (its store write off the async workers); a refusal is the page's error.
async fn control_reply(state: &Arc<AppState>, meeting_id: i64, input: diemcau_meeting::Input) -> Option<ServerMsg> {
    let st = state.clone();
    let done = tokio::task::spawn_blocking(move || crate::control::handle(&st, meeting_id, unix_now_ms(), input)).await;
    match done {
        Ok(Ok(_)) => None,
        Ok(Err(crate::control::ControlError::Refused(r))) => error("refused", r.to_string()),
        Ok(Err(e)) => {
            warn!("control input failed: {e:?}");
            error("internal", "the bridge could not record this; try again")
        }
        Err(e) => {
            warn!("control task: {e}");
            error("internal", "the bridge could not record this; try again")
        }
    }
}

fn error(code: &str, message: impl Into<String>) -> Option<ServerMsg> {
    Some(ServerMsg::Error { code: code.into(), message: message.into() })
}

/// Handles one parsed message; returns the direct reply, if any.
async fn handle(state: &Arc<AppState>, claims: &Claims, peer: PeerId, msg: ClientMsg) -> Option<ServerMsg> {
    match msg {
        ClientMsg::Hello { .. } => error("unexpected", "hello was already received"),
        ClientMsg::Offer { sdp } => {
            if claims.role == Role::Technician {
                return error("forbidden", "technicians do not send media");
            }
            // The estimate toward a site starts where its link is expected to be (directory hint or link check).
            let start = match site_profile(state, claims) {
                Some(diemcau_proto::LinkProfile::AudioOnly) => AUDIO_ONLY_START_KBPS,
                _ => diemcau_media::INITIAL_ESTIMATE_KBPS,
            };
            match state.media.offer_starting_at(peer, sdp, start).await {
                Ok(neg) => {
                    let Ok(mut rooms) = state.rooms.lock() else { return None };
                    let room = rooms.get_mut(&claims.meeting_id)?;
                    room.negotiated(peer, neg.publishes, neg.slots);
                    // The answer must reach the client before the slot map that refers to its mids.
                    room.send(peer, ServerMsg::Answer { sdp: neg.answer });
                    room.plan(&state.media);
                    None
                }
                Err(e) => error("bad_sdp", e.to_string()),
            }
        }
        ClientMsg::Answer { .. } => error("unexpected", "the bridge has not sent an offer"),
        ClientMsg::Mute { muted } => {
            let Ok(mut rooms) = state.rooms.lock() else { return None };
            let room = rooms.get_mut(&claims.meeting_id)?;
            if !muted && claims.role == Role::Site && room.control.is_muted(claims.site_id) {
                room.send(peer, ServerMsg::Muted { muted: true });
                return error("forbidden", "the chair muted this site: ask for the floor (raise your hand)");
            }
            if let Some(m) = room.members.get_mut(&peer) {
                m.muted = muted;
            }
            room.plan(&state.media);
            room.broadcast_roster();
            None
        }
        ClientMsg::MuteSite { site_id, muted } => {
            if claims.role != Role::Chair {
                return error("forbidden", "only the chair can mute or unmute a site");
            }
            let action = if muted {
                diemcau_meeting::Action::Mute { site_id }
            } else {
                diemcau_meeting::Action::Unmute { site_id }
            };
            let reply = control_reply(state, claims.meeting_id, diemcau_meeting::Input::Chair(action)).await;
            // The chair's unmute also turns on a microphone the site had turned off itself.
            if !muted && reply.is_none() {
                let Ok(mut rooms) = state.rooms.lock() else { return None };
                let room = rooms.get_mut(&claims.meeting_id)?;
                let mut changed = false;
                for m in room.members.values_mut().filter(|m| m.site_id == site_id && m.role == Role::Site) {
                    if m.muted {
                        m.muted = false;
                        changed = true;
                        let _ = m.tx.send(Outgoing::Msg(ServerMsg::Muted { muted: false }));
                    }
                }
                if changed {
                    room.plan(&state.media);
                    room.broadcast_roster();
                }
            }
            reply
        }
        ClientMsg::Present {} => {
            if claims.role != Role::Site {
                return error("forbidden", "only a site answers the roll call");
            }
            control_reply(
                state,
                claims.meeting_id,
                diemcau_meeting::Input::Present { site_id: claims.site_id, audio: false, video: false },
            )
            .await
        }
        ClientMsg::Hand { raised } => {
            if claims.role != Role::Site {
                return error("forbidden", "only a site raises its hand");
            }
            control_reply(state, claims.meeting_id, diemcau_meeting::Input::Hand { site_id: claims.site_id, raised })
                .await
        }
        ClientMsg::RequestKeyframe {} => {
            let sources: Vec<PeerId> = {
                let Ok(rooms) = state.rooms.lock() else { return None };
                let room = rooms.get(&claims.meeting_id)?;
                room.sources_of(peer)
            };
            for p in sources {
                state.media.request_keyframe(TrackId { peer: p, kind: diemcau_media::Kind::Video });
            }
            None
        }
        ClientMsg::Stats(s) => {
            let Ok(mut rooms) = state.rooms.lock() else { return None };
            if let Some(m) = rooms.get_mut(&claims.meeting_id).and_then(|r| r.members.get_mut(&peer)) {
                m.client_stats = Some(s);
            }
            None
        }
        ClientMsg::Ping {} => Some(ServerMsg::Pong),
        ClientMsg::CheckReport(_) => error("unexpected", "check_report belongs to a link check (/ws/check)"),
        ClientMsg::Decline { meeting_id } => {
            if claims.role != Role::Site {
                return error("forbidden", "only a site declines a meeting it was rung for");
            }
            crate::convene::decline(state, claims.site_id, meeting_id).err().and_then(|m| error("refused", m))
        }
    }
}
