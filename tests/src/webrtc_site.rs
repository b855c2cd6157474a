//! A site built on webrtc-rs (the `webrtc` crate, 0.21) — the independent second WebRTC implementation the
//! interop tests join to the bridge.
//!
//! It speaks exactly the browser's signalling ([`diemcau_proto`] over `/ws`): `hello`, wait for `welcome`,
//! one non-trickle `offer` carrying every gathered candidate, then the bridge's `answer`. After that a
//! background task keeps the WebSocket: it answers bridge-initiated renegotiations, keeps the connection
//! alive with `ping`, and records every other server message for the test to inspect.
//!
//! Two shapes:
//! - [`WebrtcSite::join_receiver`]: a commune site that only receives (one `recvonly` audio and one `recvonly`
//!   video transceiver, which the bridge fills with the chair). Every RTP packet read from the remote tracks
//!   is recorded, so a test can check sequence-number continuity after NACK/RTX repair.
//! - [`WebrtcSite::join_chair_publisher`]: a chair that publishes synthetic media on `sendonly` transceivers:
//!   VP8 at 15 fps (three ~1,000-byte packets per frame, a keyframe every 2 s and right after a PLI/FIR), and
//!   an 80-byte Opus-sized packet every 20 ms.
//!
//! The peer connection is webrtc-rs's own: VP8 (PT 96) with its RTX codec (PT 97, `apt=96`), Opus (PT 111),
//! and the default interceptors (NACK generator and responder, TWCC receiver, SR/RR). Two interceptors of
//! ours are added: keyframe requests reach the application only through one that marks them (webrtc 0.21
//! stops inbound RTCP at the end of the chain otherwise), and by default RTX is unwrapped before the NACK
//! generator as libwebrtc does (see [`SiteOptions`] for why; [`SiteOptions::as_shipped`] leaves it out).

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use diemcau_proto::{ClientMsg, PROTOCOL_VERSION, ServerMsg};
use futures_util::{SinkExt, StreamExt};
use rtc::interceptor::{Attribute, Interceptor, Packet as ChainPacket, Slot, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, RTCStatsReportEntry, Registry, register_default_interceptors,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

/// Payload type this client offers for VP8.
pub const VP8_PT: u8 = 96;
/// Payload type this client offers for VP8's RTX (`apt=96`).
pub const VP8_RTX_PT: u8 = 97;
/// Payload type this client offers for Opus.
pub const OPUS_PT: u8 = 111;

/// How long a join waits for each signalling step and for ICE + DTLS.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// Video frame interval (15 fps).
const FRAME_INTERVAL: Duration = Duration::from_micros(66_667);
/// RTP timestamp step per video frame at 90 kHz and 15 fps.
const VIDEO_TS_STEP: u32 = 90_000 / 15;
/// A keyframe every 2 s at 15 fps.
const KEYFRAME_EVERY_FRAMES: u64 = 30;
/// Packets per video frame and payload bytes per packet.
const PACKETS_PER_FRAME: usize = 3;
const VIDEO_PACKET_BYTES: usize = 1_000;
/// Audio packet interval and its RTP timestamp step at 48 kHz.
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
const AUDIO_TS_STEP: u32 = 960;
const AUDIO_PACKET_BYTES: usize = 80;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Rewrites an SDP from the bridge before it is applied (e.g. to send the media through a relay).
pub type SdpRewrite = Box<dyn Fn(String) -> String + Send>;

/// What the site has received and sent, shared with the reader and writer tasks.
#[derive(Default)]
struct Counters {
    video_seqs: Mutex<Vec<u16>>,
    video_payload_types: Mutex<Vec<u8>>,
    video_keyframes_received: AtomicUsize,
    audio_packets: AtomicUsize,
    video_frames_sent: AtomicU64,
    video_keyframes_sent: AtomicU64,
    audio_packets_sent: AtomicU64,
    keyframe_requests: AtomicU64,
    server_msgs: Mutex<Vec<ServerMsg>>,
    errors: Mutex<Vec<String>>,
}

impl Counters {
    fn note_error(&self, e: String) {
        if let Ok(mut errors) = self.errors.lock()
            && errors.len() < 100
        {
            errors.push(e);
        }
    }
}

/// webrtc-rs's statistics of the inbound video stream (`RTCInboundRtpStreamStats`), the fields that explain
/// a loss test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundVideoStats {
    /// Packets received on the primary SSRC (webrtc-rs counts RTX separately).
    pub packets_received: u64,
    /// NACK packets sent.
    pub nack_count: u32,
    /// PLI packets sent.
    pub pli_count: u32,
    /// Packets received on the RTX SSRC.
    pub retransmitted_packets_received: u64,
    /// Packets dropped because the track's event queue to the application was full.
    pub packets_discarded: u64,
}

/// A webrtc-rs peer joined to the bridge as a site (see the module docs).
pub struct WebrtcSite {
    pc: Arc<dyn PeerConnection>,
    counters: Arc<Counters>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    signalling: Option<JoinHandle<()>>,
    close_ws: Option<oneshot::Sender<()>>,
    state: watch::Receiver<RTCPeerConnectionState>,
    welcome: ServerMsg,
}

impl WebrtcSite {
    /// Joins as a receiving site: `recvonly` audio + video; the bridge sends the chair's media on them.
    ///
    /// `ws_url` is the bridge's signalling endpoint (`ws://host:port/ws`); the token is appended as a query.
    /// `rewrite_answer`, if given, rewrites every SDP from the bridge (its answer and any later offer) before
    /// it is applied. Returns once ICE and DTLS are up.
    pub async fn join_receiver(
        ws_url: &str,
        token: &str,
        rewrite_answer: Option<SdpRewrite>,
    ) -> anyhow::Result<WebrtcSite> {
        Self::join_receiver_with(ws_url, token, rewrite_answer, SiteOptions::default()).await
    }

    /// [`WebrtcSite::join_receiver`] with a choice of how the webrtc-rs stack is set up.
    pub async fn join_receiver_with(
        ws_url: &str,
        token: &str,
        rewrite_answer: Option<SdpRewrite>,
        options: SiteOptions,
    ) -> anyhow::Result<WebrtcSite> {
        Self::join(ws_url, token, Role::Receiver, rewrite_answer, options).await
    }

    /// Joins as the chair publishing synthetic VP8 + Opus on `sendonly` transceivers. Media starts as soon as
    /// the connection is up; returns then.
    pub async fn join_chair_publisher(ws_url: &str, token: &str) -> anyhow::Result<WebrtcSite> {
        Self::join(ws_url, token, Role::Publisher, None, SiteOptions::default()).await
    }

    /// Every RTP sequence number read from the remote video track, in arrival order (duplicates included).
    pub fn received_video_seqs(&self) -> Vec<u16> {
        self.counters.video_seqs.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Distinct payload types seen on the remote video track (after webrtc-rs's RTX de-encapsulation).
    pub fn received_video_payload_types(&self) -> Vec<u8> {
        self.counters.video_payload_types.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// VP8 keyframes (first packet of a frame with S=1 and P=0) read from the remote video track.
    pub fn received_video_keyframes(&self) -> usize {
        self.counters.video_keyframes_received.load(Ordering::Relaxed)
    }

    /// RTP packets read from the remote audio track.
    pub fn received_audio_packets(&self) -> usize {
        self.counters.audio_packets.load(Ordering::Relaxed)
    }

    /// Publisher: video frames written so far.
    pub fn sent_video_frames(&self) -> u64 {
        self.counters.video_frames_sent.load(Ordering::Relaxed)
    }

    /// Publisher: keyframes written so far (periodic and on request).
    pub fn sent_video_keyframes(&self) -> u64 {
        self.counters.video_keyframes_sent.load(Ordering::Relaxed)
    }

    /// Publisher: audio packets written so far.
    pub fn sent_audio_packets(&self) -> u64 {
        self.counters.audio_packets_sent.load(Ordering::Relaxed)
    }

    /// Publisher: PLI/FIR packets received from the bridge.
    pub fn keyframe_requests(&self) -> u64 {
        self.counters.keyframe_requests.load(Ordering::Relaxed)
    }

    /// The bridge's `welcome`.
    pub fn welcome(&self) -> &ServerMsg {
        &self.welcome
    }

    /// Server messages received after the answer (roster, slots, errors, renegotiation offers…).
    pub fn server_messages(&self) -> Vec<ServerMsg> {
        self.counters.server_msgs.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Errors met by the background tasks (write failures, renegotiation failures), for diagnostics.
    pub fn errors(&self) -> Vec<String> {
        self.counters.errors.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The current peer-connection state.
    pub fn connection_state(&self) -> RTCPeerConnectionState {
        *self.state.borrow()
    }

    /// webrtc-rs's statistics report, rendered with `Debug` (NACK counts, packets lost/discarded…).
    pub async fn stats_debug(&self) -> String {
        let report = self.pc.get_stats(Instant::now(), webrtc::peer_connection::StatsSelector::None).await;
        format!("{report:#?}")
    }

    /// webrtc-rs's own account of the inbound video stream, if one has started.
    pub async fn inbound_video_stats(&self) -> Option<InboundVideoStats> {
        let report = self.pc.get_stats(Instant::now(), webrtc::peer_connection::StatsSelector::None).await;
        report.iter().find_map(|e| match e {
            RTCStatsReportEntry::InboundRtp(s)
                if s.received_rtp_stream_stats.rtp_stream_stats.kind == RtpCodecKind::Video =>
            {
                Some(InboundVideoStats {
                    packets_received: s.received_rtp_stream_stats.packets_received,
                    nack_count: s.nack_count,
                    pli_count: s.pli_count,
                    retransmitted_packets_received: s.retransmitted_packets_received,
                    packets_discarded: s.packets_discarded,
                })
            }
            _ => None,
        })
    }

    /// Stops the media, closes the WebSocket (normal close) and the peer connection.
    pub async fn close(mut self) {
        self.stop_tasks();
        if let Some(tx) = self.close_ws.take() {
            let _ = tx.send(());
        }
        if let Some(sig) = self.signalling.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), sig).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.pc.close()).await;
    }

    fn stop_tasks(&self) {
        // The track pollers hold webrtc-rs's per-track event locks; stop them before the connection closes.
        if let Ok(mut tasks) = self.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }

    async fn join(
        ws_url: &str,
        token: &str,
        role: Role,
        rewrite: Option<SdpRewrite>,
        options: SiteOptions,
    ) -> anyhow::Result<WebrtcSite> {
        let url = format!("{ws_url}{}token={}", if ws_url.contains('?') { '&' } else { '?' }, encode_query(token));
        let (mut ws, _) = tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(url.as_str()))
            .await
            .context("timed out connecting the WebSocket")?
            .with_context(|| format!("connecting {ws_url}"))?;
        send(&mut ws, &ClientMsg::Hello { v: PROTOCOL_VERSION }).await?;

        let counters = Arc::new(Counters::default());
        let mut early = Vec::new();
        let welcome = loop {
            match recv(&mut ws).await.context("waiting for welcome")? {
                w @ ServerMsg::Welcome { .. } => break w,
                ServerMsg::Error { code, message } => bail!("bridge refused hello: {code}: {message}"),
                other => early.push(other),
            }
        };

        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (gathered_tx, mut gathered_rx) = watch::channel(false);
        let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
        let handler = Arc::new(Handler {
            gathered: gathered_tx,
            state: state_tx,
            counters: Arc::clone(&counters),
            tasks: Arc::clone(&tasks),
        });
        let pc = build_peer_connection(handler, options).await?;

        let publisher = match role {
            Role::Receiver => {
                for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
                    pc.add_transceiver_from_kind(kind, Some(init(RTCRtpTransceiverDirection::Recvonly)))
                        .await
                        .with_context(|| format!("adding a recvonly {kind} transceiver"))?;
                }
                None
            }
            Role::Publisher => {
                let ssrcs = [random_u32(), random_u32(), random_u32()];
                let audio = Arc::new(TrackLocalStaticRTP::new(local_track(
                    RtpCodecKind::Audio,
                    opus_codec().rtp_codec,
                    ssrcs[0],
                    None,
                )));
                let video = Arc::new(TrackLocalStaticRTP::new(local_track(
                    RtpCodecKind::Video,
                    vp8_codec().rtp_codec,
                    ssrcs[1],
                    Some(ssrcs[2]),
                )));
                pc.add_transceiver_from_track(
                    Arc::clone(&audio) as Arc<dyn TrackLocal>,
                    Some(init(RTCRtpTransceiverDirection::Sendonly)),
                )
                .await
                .context("adding the sendonly audio transceiver")?;
                pc.add_transceiver_from_track(
                    Arc::clone(&video) as Arc<dyn TrackLocal>,
                    Some(init(RTCRtpTransceiverDirection::Sendonly)),
                )
                .await
                .context("adding the sendonly video transceiver")?;
                Some((audio, ssrcs[0], video, ssrcs[1]))
            }
        };

        // Non-trickle: the offer goes out once gathering is complete, with every candidate in it.
        let offer = pc.create_offer(None).await.context("create_offer")?;
        pc.set_local_description(offer).await.context("set_local_description(offer)")?;
        tokio::time::timeout(STEP_TIMEOUT, gathered_rx.wait_for(|done| *done))
            .await
            .context("timed out waiting for ICE gathering")?
            .context("handler gone")?;
        let offer_sdp = pc.local_description().await.context("no local description after gathering")?.sdp;
        send(&mut ws, &ClientMsg::Offer { sdp: offer_sdp }).await?;

        let answer = loop {
            match recv(&mut ws).await.context("waiting for the answer")? {
                ServerMsg::Answer { sdp } => break sdp,
                ServerMsg::Error { code, message } => bail!("bridge refused the offer: {code}: {message}"),
                other => early.push(other),
            }
        };
        let answer = match &rewrite {
            Some(f) => f(answer),
            None => answer,
        };
        pc.set_remote_description(RTCSessionDescription::answer(answer).context("parsing the answer")?)
            .await
            .context("set_remote_description(answer)")?;
        if let Ok(mut msgs) = counters.server_msgs.lock() {
            msgs.extend(early);
        }

        let (close_tx, close_rx) = oneshot::channel();
        let signalling = tokio::spawn(signalling_loop(ws, Arc::clone(&pc), rewrite, Arc::clone(&counters), close_rx));

        let mut site = WebrtcSite {
            pc,
            counters,
            tasks,
            signalling: Some(signalling),
            close_ws: Some(close_tx),
            state: state_rx,
            welcome,
        };

        let mut state = site.state.clone();
        let connected = tokio::time::timeout(
            STEP_TIMEOUT,
            state.wait_for(|s| {
                matches!(
                    s,
                    RTCPeerConnectionState::Connected | RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
                )
            }),
        )
        .await;
        let now = *site.state.borrow();
        if connected.is_err() || now != RTCPeerConnectionState::Connected {
            let errors = site.errors();
            site.close().await;
            return Err(anyhow!("peer connection did not connect: state {now}; background errors: {errors:?}"));
        }

        if let Some((audio, audio_ssrc, video, video_ssrc)) = publisher {
            site.start_publishing(audio, audio_ssrc, video, video_ssrc).await;
        }
        Ok(site)
    }

    async fn start_publishing(
        &mut self,
        audio: Arc<TrackLocalStaticRTP>,
        audio_ssrc: u32,
        video: Arc<TrackLocalStaticRTP>,
        video_ssrc: u32,
    ) {
        // Send with the payload types negotiated on each sender (we offered 96/111; the answer may only keep them).
        let mut video_pt = VP8_PT;
        let mut audio_pt = OPUS_PT;
        for sender in self.pc.get_senders().await {
            let Ok(params) = sender.get_parameters().await else { continue };
            for c in &params.rtp_parameters.codecs {
                if c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_VP8) {
                    video_pt = c.payload_type;
                } else if c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_OPUS) {
                    audio_pt = c.payload_type;
                }
            }
        }

        let force_keyframe = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();

        // Keyframe requests (PLI/FIR) marked for the application by `KeyframeRequestForwarder`.
        let (poll_track, force, counters) =
            (Arc::clone(&video), Arc::clone(&force_keyframe), Arc::clone(&self.counters));
        tasks.push(tokio::spawn(async move {
            while let Some(evt) = poll_track.poll().await {
                let TrackLocalEvent::OnRtcpPacket(packets) = evt else { continue };
                let n = packets.iter().filter(|p| is_keyframe_request(p.as_ref())).count();
                if n > 0 {
                    counters.keyframe_requests.fetch_add(n as u64, Ordering::Relaxed);
                    force.store(true, Ordering::Relaxed);
                }
            }
        }));

        let counters = Arc::clone(&self.counters);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(FRAME_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = random_u32() as u16;
            let mut ts = random_u32();
            let mut frame: u64 = 0;
            let mut failed = false;
            loop {
                tick.tick().await;
                let key = frame.is_multiple_of(KEYFRAME_EVERY_FRAMES) || force_keyframe.swap(false, Ordering::Relaxed);
                for (i, payload) in vp8_frame(key, frame).into_iter().enumerate() {
                    let packet = rtp_packet(video_pt, seq, ts, video_ssrc, i + 1 == PACKETS_PER_FRAME, payload);
                    if let Err(e) = video.write_rtp(packet).await
                        && !failed
                    {
                        failed = true;
                        counters.note_error(format!("video write_rtp: {e}"));
                    }
                    seq = seq.wrapping_add(1);
                }
                ts = ts.wrapping_add(VIDEO_TS_STEP);
                frame += 1;
                counters.video_frames_sent.fetch_add(1, Ordering::Relaxed);
                if key {
                    counters.video_keyframes_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));

        let counters = Arc::clone(&self.counters);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(AUDIO_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = random_u32() as u16;
            let mut ts = random_u32();
            let mut n: u64 = 0;
            let mut failed = false;
            loop {
                tick.tick().await;
                let packet = rtp_packet(audio_pt, seq, ts, audio_ssrc, n == 0, opus_payload(n));
                if let Err(e) = audio.write_rtp(packet).await
                    && !failed
                {
                    failed = true;
                    counters.note_error(format!("audio write_rtp: {e}"));
                }
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(AUDIO_TS_STEP);
                n += 1;
                counters.audio_packets_sent.fetch_add(1, Ordering::Relaxed);
            }
        }));

        if let Ok(mut all) = self.tasks.lock() {
            all.extend(tasks);
        }
    }
}

impl Drop for WebrtcSite {
    fn drop(&mut self) {
        self.stop_tasks();
        if let Some(sig) = self.signalling.take() {
            sig.abort();
        }
    }
}

/// How a site's webrtc-rs stack is set up.
#[derive(Debug, Clone, Copy)]
pub struct SiteOptions {
    /// Turn RTX retransmissions back into the packets they carry *before* webrtc-rs's NACK generator sees
    /// them, as libwebrtc does, instead of only on their way to the application. On by default, so that the
    /// site asks for a lost packet the way a browser does; `false` is webrtc-rs 0.21 exactly as it ships.
    ///
    /// webrtc-rs 0.21 de-encapsulates RTX (RFC 4588) in its endpoint handler, which sits application-ward of
    /// the interceptor chain. Its NACK generator therefore sees a repair only as a packet of the RTX SSRC and
    /// never marks the original sequence number received: it asks again for every repaired packet every
    /// 100 ms for as long as the packet stays in its 512-packet receive log (and NACKs holes in the RTX
    /// stream's own sequence numbers too). Against a sender that caps its retransmissions (str0m discards its
    /// queued resends while they exceed 15% of the stream's bytes over the last second), that asking again
    /// crowds out the repair of new losses. The tracks still see the original sequence numbers either way.
    pub unwrap_rtx_before_nack_generator: bool,
}

impl Default for SiteOptions {
    fn default() -> Self {
        SiteOptions { unwrap_rtx_before_nack_generator: true }
    }
}

impl SiteOptions {
    /// webrtc-rs 0.21 exactly as it ships (default interceptors, nothing added on the receive path).
    pub fn as_shipped() -> Self {
        SiteOptions { unwrap_rtx_before_nack_generator: false }
    }
}

#[derive(Clone, Copy)]
enum Role {
    Receiver,
    Publisher,
}

fn init(direction: RTCRtpTransceiverDirection) -> RTCRtpTransceiverInit {
    RTCRtpTransceiverInit { direction, streams: vec![], send_encodings: vec![] }
}

fn video_feedback() -> Vec<RTCPFeedback> {
    [("ccm", "fir"), ("nack", ""), ("nack", "pli")]
        .into_iter()
        .map(|(typ, parameter)| RTCPFeedback { typ: typ.to_owned(), parameter: parameter.to_owned() })
        .collect()
}

fn vp8_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: video_feedback(),
        },
        payload_type: VP8_PT,
    }
}

fn vp8_rtx_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_RTX.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: format!("apt={VP8_PT}"),
            rtcp_feedback: vec![],
        },
        payload_type: VP8_RTX_PT,
    }
}

fn opus_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: OPUS_PT,
    }
}

async fn build_peer_connection(handler: Arc<Handler>, options: SiteOptions) -> anyhow::Result<Arc<dyn PeerConnection>> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_codec(opus_codec(), RtpCodecKind::Audio).context("register Opus")?;
    media_engine.register_codec(vp8_codec(), RtpCodecKind::Video).context("register VP8")?;
    media_engine.register_codec(vp8_rtx_codec(), RtpCodecKind::Video).context("register VP8 RTX")?;
    // NACK generator + responder, TWCC receiver, sender/receiver reports; registers their feedback and
    // header extensions on the codecs above, so it runs after them.
    let registry = register_default_interceptors(Registry::new(), &mut media_engine).context("default interceptors")?;
    // Application-most, so every interceptor has seen the RTCP before this one marks the keyframe requests.
    let registry = registry.with(Slot::from(14_000), KeyframeRequestForwarder::default());
    let registry = if options.unwrap_rtx_before_nack_generator {
        registry.with(Slot::from(RtxUnwrapper::SLOT), RtxUnwrapper::default())
    } else {
        registry
    };
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await
        .context("building the webrtc-rs peer connection")?;
    Ok(Arc::new(pc))
}

fn local_track(kind: RtpCodecKind, codec: RTCRtpCodec, ssrc: u32, rtx_ssrc: Option<u32>) -> MediaStreamTrack {
    MediaStreamTrack::new(
        "diemcau-webrtc-rs".to_owned(),
        format!("diemcau-webrtc-rs-{kind}"),
        format!("synthetic {kind}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                rtx: rtx_ssrc.map(|ssrc| RTCRtpRtxParameters { ssrc }),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )
}

fn rtp_packet(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: Bytes) -> rtc::rtp::Packet {
    rtc::rtp::Packet {
        header: rtc::rtp::Header {
            version: 2,
            marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload,
    }
}

/// One synthetic VP8 frame as three RTP payloads of [`VIDEO_PACKET_BYTES`] each.
///
/// Each payload starts with the one-byte VP8 payload descriptor (RFC 7741 §4.2: X=0, N=0, S=1 on the first
/// packet of the frame, PID=0). The first packet then carries the VP8 frame tag (RFC 6386 §9.1): bit 0 is P,
/// 0 for a keyframe; show_frame=1; a first-partition size. A keyframe adds the start code `9d 01 2a` and a
/// 320×180 size, so depacketizers and keyframe detectors (str0m's included) recognise it.
pub fn vp8_frame(keyframe: bool, frame: u64) -> Vec<Bytes> {
    (0..PACKETS_PER_FRAME)
        .map(|i| {
            let mut p = Vec::with_capacity(VIDEO_PACKET_BYTES);
            p.push(if i == 0 { 0x10 } else { 0x00 });
            if i == 0 {
                let first_part_size: u32 = 200;
                let tag = (first_part_size << 5) | (1 << 4) | u32::from(!keyframe);
                p.extend_from_slice(&tag.to_le_bytes()[..3]);
                if keyframe {
                    p.extend_from_slice(&[0x9d, 0x01, 0x2a]);
                    p.extend_from_slice(&320u16.to_le_bytes());
                    p.extend_from_slice(&180u16.to_le_bytes());
                }
            }
            let fill = (frame as u8).wrapping_add(i as u8);
            p.resize(VIDEO_PACKET_BYTES, fill);
            Bytes::from(p)
        })
        .collect()
}

/// Whether an RTP payload read from a VP8 track is the first packet of a keyframe.
pub fn is_vp8_keyframe_start(payload: &[u8]) -> bool {
    let Some(&d) = payload.first() else { return false };
    if d & 0x10 == 0 || d & 0x07 != 0 {
        return false;
    }
    // Skip the extended descriptor fields (RFC 7741 §4.2).
    let mut at = 1;
    if d & 0x80 != 0 {
        let Some(&x) = payload.get(at) else { return false };
        at += 1;
        if x & 0x80 != 0 {
            let Some(&pid) = payload.get(at) else { return false };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1;
        }
        if x & 0x30 != 0 {
            at += 1;
        }
    }
    payload.get(at).is_some_and(|b| b & 0x01 == 0)
}

/// An Opus-sized audio payload: a TOC byte (config 31 = CELT FB 20 ms, mono, one frame) and filler.
fn opus_payload(n: u64) -> Bytes {
    let mut p = vec![(n as u8) | 1; AUDIO_PACKET_BYTES];
    p[0] = 0xf8;
    Bytes::from(p)
}

fn random_u32() -> u32 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x0064_6965_6d63_6175);
    (h.finish() >> 16) as u32
}

fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn send(ws: &mut Ws, msg: &ClientMsg) -> anyhow::Result<()> {
    let text = serde_json::to_string(msg)?;
    ws.send(Message::text(text)).await.context("sending on the WebSocket")
}

/// The next signalling message, skipping WebSocket control frames.
async fn recv(ws: &mut Ws) -> anyhow::Result<ServerMsg> {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .context("timed out waiting for a signalling message")?
            .ok_or_else(|| anyhow!("WebSocket ended"))?
            .context("reading the WebSocket")?;
        match msg {
            Message::Text(text) => {
                return serde_json::from_str(text.as_str())
                    .with_context(|| format!("unparseable server message: {}", text.as_str()));
            }
            Message::Close(frame) => bail!("bridge closed the WebSocket: {frame:?}"),
            Message::Binary(_) => bail!("unexpected binary WebSocket message"),
            _ => {}
        }
    }
}

/// Keeps the WebSocket after the first answer: renegotiations, keep-alive pings, and a record of the rest.
async fn signalling_loop(
    mut ws: Ws,
    pc: Arc<dyn PeerConnection>,
    rewrite: Option<SdpRewrite>,
    counters: Arc<Counters>,
    mut close: oneshot::Receiver<()>,
) {
    let mut ping = tokio::time::interval(Duration::from_secs(10));
    ping.tick().await;
    loop {
        tokio::select! {
            _ = &mut close => {
                let _ = ws.close(None).await;
                // Drain until the server's close so the close handshake completes.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Some(Ok(_)) = ws.next().await {}
                }).await;
                return;
            }
            _ = ping.tick() => {
                if send(&mut ws, &ClientMsg::Ping {}).await.is_err() {
                    return;
                }
            }
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => {
                        counters.note_error(format!("bridge closed the WebSocket: {frame:?}"));
                        return;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        counters.note_error(format!("WebSocket error: {e}"));
                        return;
                    }
                    None => return,
                };
                let msg: ServerMsg = match serde_json::from_str(text.as_str()) {
                    Ok(m) => m,
                    Err(e) => {
                        counters.note_error(format!("unparseable server message {}: {e}", text.as_str()));
                        continue;
                    }
                };
                if let ServerMsg::Offer { sdp } = &msg {
                    let sdp = match &rewrite {
                        Some(f) => f(sdp.clone()),
                        None => sdp.clone(),
                    };
                    match answer_offer(pc.as_ref(), sdp).await {
                        Ok(answer) => {
                            if send(&mut ws, &ClientMsg::Answer { sdp: answer }).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => counters.note_error(format!("renegotiation: {e:#}")),
                    }
                }
                if let Ok(mut msgs) = counters.server_msgs.lock() {
                    msgs.push(msg);
                }
            }
        }
    }
}

async fn answer_offer(pc: &dyn PeerConnection, sdp: String) -> anyhow::Result<String> {
    pc.set_remote_description(RTCSessionDescription::offer(sdp)?).await?;
    let answer = pc.create_answer(None).await?;
    pc.set_local_description(answer).await?;
    Ok(pc.local_description().await.context("no local description")?.sdp)
}

struct Handler {
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    counters: Arc<Counters>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Called from webrtc-rs's driver loop: hand the reading to a task and return at once.
        let kind = track.kind().await;
        let counters = Arc::clone(&self.counters);
        let reader = tokio::spawn(async move {
            while let Some(evt) = track.poll().await {
                match evt {
                    TrackRemoteEvent::OnRtpPacket(p) => match kind {
                        RtpCodecKind::Video => {
                            if let Ok(mut seqs) = counters.video_seqs.lock() {
                                seqs.push(p.header.sequence_number);
                            }
                            if let Ok(mut pts) = counters.video_payload_types.lock()
                                && !pts.contains(&p.header.payload_type)
                            {
                                pts.push(p.header.payload_type);
                            }
                            if is_vp8_keyframe_start(&p.payload) {
                                counters.video_keyframes_received.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {
                            counters.audio_packets.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(reader);
        }
    }
}

/// Marks inbound PLI and FIR for the application (webrtc 0.21 ends inbound RTCP at the end of the chain
/// unless an interceptor vouches for it) and drops the rest of the RTCP there, after every other
/// interceptor has seen it. The shape is webrtc-rs's own `rtcp-processing` example.
#[derive(Default)]
struct KeyframeRequestForwarder {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

fn is_keyframe_request(p: &dyn rtc::rtcp::Packet) -> bool {
    let any = p.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let ChainPacket::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> =
                packets.iter().filter(|p| is_keyframe_request(p.as_ref())).cloned().collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = ChainPacket::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequestForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Rewrites RTX packets (RFC 4588) into the original packets they carry, between the FEC decoder and the
/// NACK generator (see [`SiteOptions::unwrap_rtx_before_nack_generator`]). The primary stream and its RTX
/// SSRC and payload type come from webrtc-rs's own binding of the remote stream (the answer's
/// `a=ssrc-group:FID` and the `apt=` of the RTX codec). A rewritten packet reaches the endpoint handler with
/// the primary SSRC, so webrtc-rs's own de-encapsulation leaves it alone.
#[derive(Default)]
struct RtxUnwrapper {
    /// RTX SSRC → (primary SSRC, primary payload type, RTX payload type).
    streams: std::collections::HashMap<u32, (u32, u8, u8)>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl RtxUnwrapper {
    /// Between `Slot::FecDecoder` (6,000) and `Slot::NackGenerator` (7,000).
    const SLOT: usize = 6_500;
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtxUnwrapper {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let ChainPacket::Rtp(p) = &mut msg.message.packet
            && let Some(&(ssrc, pt, rtx_pt)) = self.streams.get(&p.header.ssrc)
            && p.header.payload_type == rtx_pt
        {
            if p.payload.len() < 2 {
                // Padding-only RTX (a bandwidth probe): nothing to recover.
                return Ok(());
            }
            let osn = u16::from_be_bytes([p.payload[0], p.payload[1]]);
            p.header.ssrc = ssrc;
            p.header.payload_type = pt;
            p.header.sequence_number = osn;
            p.header.padding = false;
            p.payload = p.payload.slice(2..);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for RtxUnwrapper {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        if let (Some(rtx_ssrc), Some(rtx_pt)) = (info.ssrc_rtx, info.payload_type_rtx) {
            self.streams.insert(rtx_ssrc, (info.ssrc, info.payload_type, rtx_pt));
        }
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        if let Some(rtx_ssrc) = info.ssrc_rtx {
            self.streams.remove(&rtx_ssrc);
        }
    }
}

/// Points every UDP ICE candidate in `sdp` that names the bridge's first UDP candidate address at `to`
/// instead, and drops every other candidate line (TCP, other addresses), so all media goes through `to`.
///
/// Returns the rewritten SDP and the address the candidates named before (the relay's target), or `None`
/// when the SDP has no UDP candidate.
pub fn redirect_candidates(sdp: &str, to: SocketAddr) -> (String, Option<SocketAddr>) {
    let mut original: Option<SocketAddr> = None;
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        let Some(cand) = body.strip_prefix("a=candidate:") else {
            out.push_str(line);
            continue;
        };
        // foundation component transport priority address port "typ" type ...
        let mut fields: Vec<String> = cand.split(' ').map(str::to_owned).collect();
        let addr = (fields.len() >= 6 && fields[2].eq_ignore_ascii_case("udp"))
            .then(|| format!("{}:{}", fields[4], fields[5]).parse::<SocketAddr>().ok())
            .flatten();
        let Some(addr) = addr else { continue };
        if *original.get_or_insert(addr) != addr {
            continue;
        }
        fields[4] = to.ip().to_string();
        fields[5] = to.port().to_string();
        out.push_str("a=candidate:");
        out.push_str(&fields.join(" "));
        out.push_str(ending);
    }
    (out, original)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_frames_are_well_formed() {
        let key = vp8_frame(true, 0);
        assert_eq!(key.len(), PACKETS_PER_FRAME);
        assert!(key.iter().all(|p| p.len() == VIDEO_PACKET_BYTES));
        assert!(is_vp8_keyframe_start(&key[0]));
        assert_eq!(&key[0][4..7], &[0x9d, 0x01, 0x2a]);
        assert!(!is_vp8_keyframe_start(&key[1]), "only the first packet has S=1");
        let delta = vp8_frame(false, 1);
        assert_eq!(delta[0][0], 0x10);
        assert!(!is_vp8_keyframe_start(&delta[0]), "P=1 marks an inter frame");
    }

    #[test]
    fn candidates_are_redirected() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
                   a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n\
                   a=candidate:2 1 tcp 1518280447 127.0.0.1 40001 typ host tcptype passive\r\n\
                   a=candidate:3 1 udp 2130706431 10.0.0.5 40000 typ host\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
                   a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n";
        let relay: SocketAddr = "127.0.0.1:5555".parse().unwrap_or_else(|_| unreachable!());
        let (out, orig) = redirect_candidates(sdp, relay);
        assert_eq!(orig, "127.0.0.1:40000".parse().ok());
        assert_eq!(out.matches("a=candidate:").count(), 2, "{out}");
        assert_eq!(out.matches("127.0.0.1 5555 typ host\r\n").count(), 2, "{out}");
        assert!(!out.contains("tcp") && !out.contains("10.0.0.5"), "{out}");
        assert!(out.starts_with("v=0\r\nm=audio"));
    }

    /// A stand-in for the bridge made of webrtc-rs itself, to check this client, the relay and webrtc-rs's
    /// NACK/RTX repair without the bridge: it speaks the signalling, answers the offer, and either sends
    /// synthetic VP8 (RTX enabled) on the site's recvonly video, or receives the chair's and asks for keyframes.
    async fn fake_bridge(
        listener: tokio::net::TcpListener,
        send_video: bool,
        received: Arc<AtomicU64>,
    ) -> anyhow::Result<()> {
        let (tcp, _) = listener.accept().await?;
        let mut ws = tokio_tungstenite::accept_async(tcp).await?;
        let next = |text: Option<Result<Message, _>>| -> anyhow::Result<ClientMsg> {
            match text {
                Some(Ok(Message::Text(t))) => Ok(ClientMsg::parse(t.as_str())?),
                other => bail!("unexpected {other:?}"),
            }
        };
        assert_eq!(next(ws.next().await)?, ClientMsg::Hello { v: PROTOCOL_VERSION });
        let welcome = ServerMsg::Welcome {
            v: PROTOCOL_VERSION,
            role: diemcau_proto::Role::Site,
            meeting_id: 1,
            meeting_title: "thử".into(),
            site_id: 2,
            site_name: "xã".into(),
            chair_site_id: 1,
            grid_size: 4,
            audio_slots: 2,
            profile: None,
            weakest_link: None,
        };
        ws.send(Message::text(welcome.to_json())).await?;
        let ClientMsg::Offer { sdp } = next(ws.next().await)? else { bail!("expected an offer") };

        let (gathered_tx, mut gathered_rx) = watch::channel(false);
        let (state_tx, _state_rx) = watch::channel(RTCPeerConnectionState::New);
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let counters = Arc::new(Counters::default());
        let pc = build_peer_connection(
            Arc::new(Handler {
                gathered: gathered_tx,
                state: state_tx,
                counters: Arc::clone(&counters),
                tasks: Arc::clone(&tasks),
            }),
            SiteOptions::as_shipped(),
        )
        .await?;
        pc.set_remote_description(RTCSessionDescription::offer(sdp)?).await?;
        let (ssrc, rtx) = (random_u32(), random_u32());
        let video = Arc::new(TrackLocalStaticRTP::new(local_track(
            RtpCodecKind::Video,
            vp8_codec().rtp_codec,
            ssrc,
            Some(rtx),
        )));
        if send_video {
            pc.add_track(Arc::clone(&video) as Arc<dyn TrackLocal>).await?;
        }
        let answer = pc.create_answer(None).await?;
        pc.set_local_description(answer).await?;
        gathered_rx.wait_for(|g| *g).await?;
        let sdp = pc.local_description().await.context("no answer")?.sdp;
        ws.send(Message::text(ServerMsg::Answer { sdp }.to_json())).await?;

        let mut tick = tokio::time::interval(FRAME_INTERVAL);
        let (mut seq, mut ts, mut frame) = (65_000u16, 0u32, 0u64);
        let mut pli_sent = false;
        for _ in 0..(5 * 15) {
            tick.tick().await;
            if send_video {
                for (i, payload) in vp8_frame(frame.is_multiple_of(30), frame).into_iter().enumerate() {
                    let p = rtp_packet(VP8_PT, seq, ts, ssrc, i + 1 == PACKETS_PER_FRAME, payload);
                    let _ = video.write_rtp(p).await;
                    seq = seq.wrapping_add(1);
                }
                ts = ts.wrapping_add(VIDEO_TS_STEP);
                frame += 1;
            } else {
                let n = counters.video_seqs.lock().map(|v| v.len()).unwrap_or(0);
                received.store(n as u64, Ordering::Relaxed);
                if n > 20 && !pli_sent {
                    pli_sent = true;
                    for r in pc.get_receivers().await {
                        let track = r.track();
                        if track.kind().await == RtpCodecKind::Video
                            && let Some(&media_ssrc) = track.ssrcs().await.first()
                        {
                            track
                                .write_rtcp(vec![Box::new(PictureLossIndication { sender_ssrc: 0, media_ssrc })])
                                .await?;
                        }
                    }
                }
            }
        }
        if let Ok(mut t) = tasks.lock() {
            t.drain(..).for_each(|t| t.abort());
        }
        pc.close().await?;
        Ok(())
    }

    /// Joins a receiver to [`fake_bridge`] through a relay dropping 5% of the RTP toward it, for 4 s.
    /// Returns (holes before the last 10, most reads of one sequence number, payload types, report).
    async fn receive_through_lossy_relay(options: SiteOptions) -> anyhow::Result<(Vec<i64>, u32, Vec<u8>, String)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("ws://{}/ws", listener.local_addr()?);
        let bridge = tokio::spawn(fake_bridge(listener, true, Arc::default()));
        let relay = Arc::new(crate::relay::LossyRelay::bind(0.05, 3).await?);
        let r = Arc::clone(&relay);
        let rewrite: SdpRewrite = Box::new(move |sdp: String| {
            let (sdp, target) = redirect_candidates(&sdp, r.addr());
            if let Some(t) = target {
                r.set_target(t);
            }
            sdp
        });
        let site = WebrtcSite::join_receiver_with(&url, "tok+en", Some(rewrite), options).await?;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let seqs = site.received_video_seqs();
        let mut ext: Vec<i64> = Vec::new();
        let mut prev: Option<(u16, i64)> = None;
        for &s in &seqs {
            let e = prev.map_or(i64::from(s), |(ps, pe)| pe + i64::from(s.wrapping_sub(ps) as i16));
            ext.push(e);
            prev = Some((s, e));
        }
        let last = ext.iter().copied().max().unwrap_or_default();
        ext.sort_unstable();
        ext.dedup();
        let holes: Vec<i64> = ext.windows(2).flat_map(|w| w[0] + 1..w[1]).filter(|&h| h < last - 10).collect();
        let mut counts = std::collections::HashMap::new();
        for s in &seqs {
            *counts.entry(*s).or_insert(0u32) += 1;
        }
        let most = counts.values().max().copied().unwrap_or(0);
        let report = format!(
            "{options:?}: read {} ({} distinct, {} read more than once, at most {most} times), dropped {} of {}, \
             pts {:?}, keyframes {}, holes {:?}",
            seqs.len(),
            ext.len(),
            counts.values().filter(|&&c| c > 1).count(),
            relay.dropped_rtp(),
            relay.rtp_to_client(),
            site.received_video_payload_types(),
            site.received_video_keyframes(),
            holes
        );
        eprintln!("{report}");
        let pts = site.received_video_payload_types();
        let enough = seqs.len() > 100 && relay.dropped_rtp() > 0;
        site.close().await;
        bridge.abort();
        anyhow::ensure!(enough, "too little traffic or no loss: {report}");
        Ok((holes, most, pts, report))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn receiver_through_lossy_relay_gets_every_packet_repaired() -> anyhow::Result<()> {
        let (holes, _, pts, report) = receive_through_lossy_relay(SiteOptions::as_shipped()).await?;
        assert!(holes.is_empty(), "{report}");
        assert_eq!(pts, vec![VP8_PT], "RTX is de-encapsulated before the track: {report}");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unwrapping_rtx_before_the_nack_generator_stops_repeated_nacks() -> anyhow::Result<()> {
        let (holes, most, pts, report) = receive_through_lossy_relay(SiteOptions::default()).await?;
        assert!(holes.is_empty(), "{report}");
        assert_eq!(pts, vec![VP8_PT], "{report}");
        assert!(most <= 3, "a repaired packet is no longer asked for again and again: {report}");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publisher_sends_media_and_answers_pli_with_a_keyframe() -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("ws://{}/ws", listener.local_addr()?);
        let received = Arc::new(AtomicU64::new(0));
        let bridge = tokio::spawn(fake_bridge(listener, false, Arc::clone(&received)));
        let chair = WebrtcSite::join_chair_publisher(&url, "token").await?;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let stats = format!(
            "bridge read {} video packets; chair sent {} frames, {} keyframes, {} audio, {} keyframe requests, errors {:?}",
            received.load(Ordering::Relaxed),
            chair.sent_video_frames(),
            chair.sent_video_keyframes(),
            chair.sent_audio_packets(),
            chair.keyframe_requests(),
            chair.errors()
        );
        eprintln!("{stats}");
        let (requests, keyframes) = (chair.keyframe_requests(), chair.sent_video_keyframes());
        chair.close().await;
        bridge.abort();
        assert!(received.load(Ordering::Relaxed) > 100, "{stats}");
        assert!(requests >= 1, "{stats}");
        // Periodic keyframes at frames 0 and 30 in ~4 s, plus at least one on request.
        assert!(keyframes >= 3, "{stats}");
        Ok(())
    }

    #[test]
    fn tokens_are_query_encoded() {
        assert_eq!(encode_query("a.b-c_d~"), "a.b-c_d~");
        assert_eq!(encode_query("a+b/c=="), "a%2Bb%2Fc%3D%3D");
    }
}
