//! `/ws/check`: a site's pre-meeting link check (the shell around [`crate::linkcheck::LinkCheck`]).
//!
//! ```text
//! client                                   bridge
//! hello ───────────────────────────────▶   (token: any role; the site is the token's site)
//!       ◀─────────────────────────────── welcome
//! offer (video sendrecv) ──────────────▶
//!       ◀─────────────────────────────── answer           … ICE + DTLS (15 s at most)
//!       ◀─────────────────────────────── check_step {down, 64}   + probe RTP on the video mid
//! check_report {rx_packets, rx_bytes, rx_lost, rtt_ms} ─▶  (every 250 ms)
//!       ◀─────────────────────────────── check_step {up, 150}    the client sends video at 150 kbit/s
//!       ◀─────────────────────────────── check_result {…}         stored with the site; then close 1000
//! ```
//! A check joins no meeting room: the chair does not see it, and it does not count as attendance.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use diemcau_media::PeerId;
use diemcau_proto::{ClientMsg, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, ServerMsg, close};
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tracing::{Instrument, info, info_span, warn};

use crate::api::TokenQuery;
use crate::linkcheck::{Action, LinkCheck};
use crate::ws::{Sink, Stream, admit, check_claims, close_with, limited};
use crate::{AppState, unix_now_ms};

/// How long the client has to send its offer after the welcome.
const OFFER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long ICE and DTLS may take before the check gives up (UDP blocked, most likely).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The shell's tick: bridge statistics are sampled and the plan polled at least this often.
const TICK: Duration = Duration::from_millis(100);

pub(crate) async fn handler(
    ws: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    Query(q): Query<TokenQuery>,
) -> Response {
    limited(ws).on_upgrade(move |socket| session(state, socket, q.token))
}

async fn session(state: Arc<AppState>, socket: WebSocket, tok: Option<String>) {
    let (mut sink, mut stream) = socket.split();
    let checked = check_claims(&state, tok.as_deref()).map(|(claims, _)| claims);
    let Some(claims) = admit(&mut sink, &mut stream, checked, "link check").await else { return };
    let peer = PeerId(state.next_peer.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let span = info_span!("link_check", peer = peer.0, site = claims.site_id);
    async {
        let outcome = run(&state, &claims, peer, &mut sink, &mut stream).await;
        state.media.remove(peer);
        match outcome {
            Ok(()) => close_with(&mut sink, close::NORMAL, "link check done").await,
            Err((code, reason)) => {
                info!("link check ended: {reason}");
                close_with(&mut sink, code, &reason).await;
            }
        }
    }
    .instrument(span)
    .await;
}

type Ended = (u16, String);

async fn send(sink: &mut Sink, msg: &ServerMsg) -> Result<(), Ended> {
    sink.send(Message::Text(msg.to_json().into())).await.map_err(|_| (close::NORMAL, "client gone".to_string()))
}

/// The next client message, or why the session ends.
async fn next_msg(stream: &mut Stream) -> Result<ClientMsg, Ended> {
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(t))) if t.len() > MAX_MESSAGE_BYTES => {
                return Err((close::TOO_BIG, "message too large".into()));
            }
            Some(Ok(Message::Text(t))) => {
                return ClientMsg::parse(&t).map_err(|e| (close::BAD_MESSAGE, format!("bad message: {e}")));
            }
            Some(Ok(Message::Binary(_))) => return Err((close::BAD_MESSAGE, "binary messages are not used".into())),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                return Err((close::NORMAL, "the client left before the check finished".into()));
            }
            Some(Ok(_)) => continue,
        }
    }
}

async fn run(
    state: &AppState,
    claims: &diemcau_store::token::Claims,
    peer: PeerId,
    sink: &mut Sink,
    stream: &mut Stream,
) -> Result<(), Ended> {
    let site_name = state.store.site(claims.site_id).ok().flatten().map(|s| s.name).unwrap_or_default();
    let meeting_title = state.store.meeting(claims.meeting_id).ok().flatten().map(|m| m.title).unwrap_or_default();
    let chair_site_id = state.store.meeting(claims.meeting_id).ok().flatten().map(|m| m.chair_site_id).unwrap_or(0);
    let welcome = ServerMsg::Welcome {
        v: PROTOCOL_VERSION,
        role: claims.role,
        meeting_id: claims.meeting_id,
        meeting_title,
        site_id: claims.site_id,
        site_name,
        chair_site_id,
        grid_size: 0,
        audio_slots: 0,
        profile: None,
        weakest_link: None,
    };
    send(sink, &welcome).await?;

    // The offer.
    let sdp = loop {
        let msg = tokio::time::timeout(OFFER_TIMEOUT, next_msg(stream))
            .await
            .map_err(|_| (close::BAD_MESSAGE, "expected an offer within 20 s".to_string()))??;
        match msg {
            ClientMsg::Offer { sdp } => break sdp,
            ClientMsg::Ping {} => send(sink, &ServerMsg::Pong).await?,
            other => {
                let msg = format!("expected an offer, got {}", type_name(&other));
                send(sink, &ServerMsg::Error { code: "unexpected".into(), message: msg }).await?;
            }
        }
    };
    let negotiated = state.media.offer_link_check(peer, sdp).await.map_err(|e| (close::BAD_MESSAGE, e.to_string()))?;
    if !negotiated.slots.iter().any(|s| s.kind == diemcau_media::Kind::Video) {
        return Err((close::BAD_MESSAGE, "the offer must receive video (the downlink probe travels on it)".into()));
    }
    send(sink, &ServerMsg::Answer { sdp: negotiated.answer }).await?;

    // Media up, or a clear reason why not.
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        if state.media.peer_stats(peer).is_some_and(|s| s.connected) {
            break;
        }
        if Instant::now() >= deadline {
            let msg = "media did not connect within 15 s: UDP to the bridge is probably blocked by a firewall";
            send(sink, &ServerMsg::Error { code: "no_media".into(), message: msg.into() }).await?;
            return Err((close::NORMAL, msg.into()));
        }
        tokio::select! {
            msg = next_msg(stream) => {
                if let ClientMsg::Ping {} = msg? {
                    send(sink, &ServerMsg::Pong).await?;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }

    let mut check = LinkCheck::new(Instant::now().into_std());
    let mut last_sample: Option<(u64, u64)> = None;
    loop {
        let now = Instant::now();
        // The bridge's own figures, each time its shard refreshed them (about once a second).
        if let Some(s) = state.media.peer_stats(peer) {
            let key = (s.packets_in, s.probe_packets);
            if last_sample != Some(key) {
                last_sample = Some(key);
                check.on_bridge_stats(now.into_std(), s.kbps_in, s.loss_in_pct, s.rtt_ms);
            }
        }
        for action in check.poll(now.into_std()) {
            match action {
                Action::Probe { kbps, packet_bytes } => {
                    if let Err(e) = state.media.probe(peer, kbps, packet_bytes) {
                        warn!("probe: {e}");
                    }
                }
                Action::Step { phase, kbps, percent } => {
                    send(sink, &ServerMsg::CheckStep { phase, kbps, percent }).await?
                }
                Action::Finish(result) => {
                    let _ = state.media.probe(peer, 0, 0);
                    if let Err(e) =
                        state.store.record_link_check(claims.site_id, Some(claims.meeting_id), unix_now_ms(), &result)
                    {
                        warn!("cannot store the link check: {e}");
                    }
                    info!(
                        down_kbps = ?result.down_kbps,
                        up_kbps = ?result.up_kbps,
                        loss = ?result.down_loss_pct,
                        rtt_ms = ?result.rtt_ms,
                        recommended = result.recommended.as_str(),
                        "link check done"
                    );
                    send(sink, &ServerMsg::CheckResult { result }).await?;
                    return Ok(());
                }
            }
        }
        let wake = Instant::from_std(check.poll_timeout()).min(now + TICK);
        tokio::select! {
            msg = next_msg(stream) => match msg? {
                ClientMsg::CheckReport(r) => check.on_report(Instant::now().into_std(), &r),
                ClientMsg::Ping {} => send(sink, &ServerMsg::Pong).await?,
                ClientMsg::Stats(_) => {}
                other => {
                    let msg = format!("{} is not part of a link check", type_name(&other));
                    send(sink, &ServerMsg::Error { code: "unexpected".into(), message: msg }).await?;
                }
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

fn type_name(m: &ClientMsg) -> &'static str {
    match m {
        ClientMsg::Hello { .. } => "hello",
        ClientMsg::Offer { .. } => "offer",
        ClientMsg::Answer { .. } => "answer",
        ClientMsg::Mute { .. } => "mute",
        ClientMsg::MuteSite { .. } => "mute_site",
        ClientMsg::RequestKeyframe {} => "request_keyframe",
        ClientMsg::Stats(_) => "stats",
        ClientMsg::Ping {} => "ping",
        ClientMsg::CheckReport(_) => "check_report",
        ClientMsg::Present {} => "present",
        ClientMsg::Hand { .. } => "hand",
        ClientMsg::Decline { .. } => "decline",
    }
}
