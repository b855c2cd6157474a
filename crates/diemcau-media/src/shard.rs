//! One shard: a thread with its UDP socket and the `Rtc`s of its peers.
//!
//! The loop waits on three things — a datagram, a message from the bridge or another shard, the earliest peer
//! timeout — reads the clock once per turn and drives the affected `Rtc`s, always draining `poll_output` to
//! `Timeout` after each mutation (str0m's single-mutation invariant). Work that concerns other peers (forwarding a
//! packet, asking a publisher for a keyframe) is collected while draining and done after, so a peer's `Rtc` is never
//! borrowed twice.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::SdpOffer;
use str0m::format::{Codec, VideoFecPts};
use str0m::ice::StunMessage;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, Ssrc, UlpfecConfig, Vp8Descriptor};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, trace, warn};

use crate::alloc::{Allocator, DropFollower, Priority, Wanted, floor_kbps, loss_capped, next_step};
use crate::fec::{FecRate, with_fec};
use crate::keyframe::KeyframeGate;
use crate::layers::TrackLayers;
use crate::red::{LossyLink, RedHistory, RedReceiver};
use crate::rewrite::{InPacket, Mapped, SlotRewriter, Vp8Numbers};
use crate::vp8::Vp8Info;
use crate::{
    Command, KEYFRAME_REQUEST_INTERVAL, Kind, LayerIn, MediaError, MediaEvent, Negotiated, PeerId, PeerStats, ShardMsg,
    SlotInfo, StatsMap, TrackId,
};

/// A publisher's RTP packet, parsed once and shared by every shard that forwards it.
#[derive(Debug)]
pub struct Forwarded {
    /// The publishing track.
    pub track: TrackId,
    /// Codec of the payload.
    pub codec: Codec,
    /// Extended sequence number at the publisher.
    pub seq: u64,
    /// RTP timestamp at the publisher.
    pub ts: u32,
    /// RTP marker bit.
    pub marker: bool,
    /// First packet of a VP8 keyframe.
    pub keyframe: bool,
    /// Its VP8 payload descriptor (video), parsed once for every subscriber, and where its numbers lie (to rewrite
    /// them per subscriber).
    pub vp8: Option<(Vp8Info, Vp8Descriptor)>,
    /// RFC 6464 audio level, if sent.
    pub audio_level: Option<i8>,
    /// RFC 6464 voice activity flag, if sent.
    pub voice_activity: Option<bool>,
    /// The RTP payload (shared, never copied per subscriber).
    pub payload: Arc<[u8]>,
    /// When the bridge received it.
    pub received: Instant,
    /// The simulcast layer (rid) it belongs to, when the publisher sends simulcast.
    pub layer: Option<Rid>,
}

/// Index of a simulcast rid, lowest layer first (`q`, `h`, `f`; 0 without simulcast or for another name).
fn layer_index(rid: Option<Rid>) -> usize {
    match rid.as_deref() {
        Some("q") => 1,
        Some("h") => 2,
        Some("f") => 3,
        _ => 0,
    }
}

/// The rewriter's source id of `track`'s layer `rid` (`track` shifted left by 2, the layer index below).
fn source_id(track: TrackId, rid: Option<Rid>) -> u64 {
    track.as_u64() << 2 | layer_index(rid) as u64
}

/// The layer subscribers receive of a simulcast track whose layers `seen` arrived: `h` (the 360p layer) when the
/// publisher sends it, else the lowest. (Per-subscriber choice by bandwidth estimate is the allocator's, issue 4.)
fn chosen_layer(seen: &[Rid]) -> Option<Rid> {
    seen.iter().copied().find(|r| &**r == "h").or_else(|| seen.iter().copied().min_by_key(|r| layer_index(Some(*r))))
}

struct Slot {
    kind: Kind,
    source: Option<TrackId>,
    rewriter: SlotRewriter,
    /// The simulcast layer this slot forwards now.
    layer: Option<Rid>,
    /// The layer it should forward (reached at that layer's next keyframe).
    target: Target,
    /// The highest temporal layer (VP8 TID) it forwards now (`u8::MAX`: all); the target's is reached at a frame
    /// where that is safe (see `temporal_step`).
    max_tid: u8,
    /// The audio packet written before, for RED's redundant copy.
    red: RedHistory,
    /// ULPFEC in RED, when negotiated on this (video, send-only) line.
    fec: Option<UlpfecConfig>,
    /// Whether the media written now goes RED-wrapped with FEC, and how many went since the last FEC packet.
    fec_on: bool,
    fec_count: u8,
}

/// Which simulcast layer a slot should forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// No estimate yet (or adaptation off): the shard's default, `h` when sent, else the lowest.
    Auto,
    /// This simulcast layer with its temporal layers up to this TID (`u8::MAX`: all), as the subscriber's
    /// allocation says.
    Layer(Rid, u8),
    /// None: the subscriber's link has no room for this video.
    Paused,
}

struct Peer {
    rtc: Rtc,
    ufrag: String,
    addrs: Vec<SocketAddr>,
    next_timeout: Instant,
    /// The live entry of this peer in the shard's timer heap (older entries are stale and skipped).
    scheduled: Option<Instant>,
    /// Arrival times of the packets written into this subscriber this turn and not yet drained (for the delay
    /// histogram); non-empty means the peer is in the shard's `touched` list.
    pending: Vec<Instant>,
    publishes: HashMap<Mid, Kind>,
    slots: HashMap<Mid, Slot>,
    ssrc_mid: HashMap<Ssrc, (Mid, Option<Rid>)>,
    send_pt: Vec<(Codec, Pt)>,
    /// The RED payload type it negotiated for Opus, if any.
    red_pt: Option<Pt>,
    /// Its receiver reports show loss: audio goes to it with RED (when negotiated).
    lossy: LossyLink,
    /// Unwraps the RED audio it publishes.
    red_rx: RedReceiver,
    /// How much video FEC its reported loss calls for.
    fec_rate: FecRate,
    connected: bool,
    dead: bool,
    last_bytes: Option<(Instant, u64, u64)>,
    stats: PeerStats,
    /// A link check's probe train toward this peer, if one runs.
    probe: Option<Probe>,
    /// The bandwidth estimate toward this peer, kbit/s (adaptive mode): str0m's, averaged over 3 s.
    estimate_kbps: Option<u32>,
    /// Follows the estimator's latest value (read every [`STATS_INTERVAL`]) when the link drops.
    drop: DropFollower,
    /// Chooses its slots' layers from the estimate.
    alloc: Allocator,
    /// Sum and count of its audio packets' loudness (127 + RFC 6464 level) since the last levels report.
    speech: (u32, u32),
    /// Every simulcast video it receives is paused (last told to the signalling layer).
    audio_only: bool,
}

/// A link check's probe train: fixed-size VP8-shaped RTP packets on one of the peer's video slots, paced at a set
/// rate. The payload is an inter frame that never decodes (no keyframe precedes it): receivers count it and drop it.
struct Probe {
    mid: Mid,
    pt: Pt,
    interval: Duration,
    next: Instant,
    /// When the train began: RTP timestamps follow the 90 kHz clock from here (the sender reports map them to
    /// wall-clock time, and the round-trip time is measured from those).
    start: Instant,
    seq: u16,
    payload: Arc<[u8]>,
}

impl Probe {
    /// The packets due by `now` (at most 50 ms of them: after a stall the train resumes rather than bursts).
    fn due(&mut self, now: Instant) -> usize {
        if now.saturating_duration_since(self.next) > Duration::from_millis(50) {
            self.next = now;
        }
        let mut n = 0;
        while self.next <= now {
            self.next += self.interval;
            n += 1;
        }
        n
    }
}

enum Deferred {
    Forward(Forwarded),
    /// A keyframe of a track's layer (`None`: the default layer).
    Keyframe(TrackId, Option<Rid>),
    /// The peer's estimate changed (or what it receives did): choose its layers again.
    Allocate(PeerId),
    Connected(PeerId),
    Dead(PeerId),
    AudioOnly(PeerId, bool),
}

pub(crate) struct Shard {
    idx: usize,
    advertised: SocketAddr,
    shards: Vec<mpsc::UnboundedSender<ShardMsg>>,
    events: mpsc::UnboundedSender<MediaEvent>,
    stats: StatsMap,
    peers: HashMap<PeerId, Peer>,
    by_ufrag: HashMap<String, PeerId>,
    by_addr: HashMap<SocketAddr, PeerId>,
    timers: BinaryHeap<Reverse<(Instant, PeerId)>>,
    subs: HashMap<TrackId, Vec<(PeerId, Mid)>>,
    /// Keyframe requests toward each publishing track (all its layers together).
    keyframe_gates: HashMap<TrackId, KeyframeGate<Option<Rid>>>,
    deferred: Vec<Deferred>,
    garbage: u64,
    /// One DTLS certificate for every peer of the shard: generating one per join costs ~1.5 ms of shard CPU, which a
    /// join storm of hundreds of sites turns into stalled packet handling. (Its fingerprint is in every answer;
    /// sharing it across sessions is what browsers do per origin.)
    dtls_cert: Option<str0m::config::DtlsCert>,
    /// Forwarding delays of this shard's subscribers.
    delay: Arc<crate::histogram::DelayHistogram>,
    /// Publisher packets to forward this turn (own and other shards'), in arrival order.
    inbox: Vec<Arc<Forwarded>>,
    /// Subscribers written into this turn, to drain once each.
    touched: Vec<PeerId>,
    /// Simulcast layers seen per publishing track.
    layers: HashMap<TrackId, Vec<Rid>>,
    /// Peers holding the floor of their meeting (their tracks get the floor's priorities).
    floor: HashSet<PeerId>,
    /// Temporal layers and measured bitrates per publishing track (simulcast tracks).
    rates: HashMap<TrackId, TrackLayers>,
    /// Per-subscriber bandwidth estimation and layer allocation.
    adaptive: bool,
    /// Video FEC toward lossy subscribers (`[media] video_fec`).
    video_fec: bool,
    /// When this shard next reports its publishers' audio levels.
    levels_due: Instant,
}

const MAX_BATCH: usize = 64;
/// The video FEC payload types the bridge proposes (Chromium's: `red/90000`, its RTX, `ulpfec/90000`); an offer's
/// own numbers replace them.
const VIDEO_FEC_PTS: VideoFecPts = VideoFecPts {
    red: Pt::new_with_value(118),
    red_rtx: Some(Pt::new_with_value(119)),
    ulpfec: Pt::new_with_value(120),
};

/// How often str0m reports a peer's statistics in adaptive mode — the way to read its estimator's latest value (see
/// [`crate::alloc::DropFollower`]); otherwise every second, as before (the fan-out benchmark's workload).
const STATS_INTERVAL: Duration = Duration::from_millis(250);
/// How often a peer's rates and statistics are published (`Media::stats`, the technicians' page).
const PUBLISH_INTERVAL: Duration = Duration::from_millis(950);

/// What the allocator counts for an audio slot until its rate is measured, kbit/s: Opus at 32 kbit/s in 20 ms
/// packets (a browser's default for speech) with 16 kbit/s of packet overhead.
const AUDIO_KBPS: u32 = 48;

/// The nominal bitrate of a simulcast layer, kbit/s (the chair page's encodings: 180p, 360p, 720p).
fn layer_kbps(rid: Rid) -> u32 {
    match &*rid {
        "q" => 150,
        "f" => 1500,
        _ => 500,
    }
}

/// Bounds of a probe packet's payload, bytes.
const PROBE_MIN_BYTES: usize = 50;
const PROBE_MAX_BYTES: usize = 1200;

/// Resend cache of a subscriber's video slot: packets and age.
const RTX_CACHE_VIDEO_PACKETS: usize = 128;
const RTX_CACHE_VIDEO_AGE: Duration = Duration::from_millis(1500);
/// Queued resends are dropped when resent bytes pass this share of a slot's last second (str0m's default is 0.15).
/// str0m counts over one second, and 180p at 7.5 fps is ~10 packets a second: on VSAT (5% loss) two resends in a
/// second passed 0.15 and cleared every queued resend — the repair of a lost base-layer frame among them, so the
/// site froze until a keyframe (one site of twenty lost 87 video packets and got 5 back). A drop of the link no
/// longer needs the cap to stop a storm of resends: the drop flushes them ([`flush_send_buffers`]).
const RTX_RATIO_CAP: f32 = 0.3;
/// Of an audio slot (audio is never resent; str0m needs a cache all the same).
const RTX_CACHE_AUDIO_PACKETS: usize = 8;
const RTX_CACHE_AUDIO_AGE: Duration = Duration::from_millis(200);

impl Shard {
    pub(crate) fn new(
        idx: usize,
        advertised: SocketAddr,
        shards: Vec<mpsc::UnboundedSender<ShardMsg>>,
        events: mpsc::UnboundedSender<MediaEvent>,
        stats: StatsMap,
        delay: Arc<crate::histogram::DelayHistogram>,
        cfg: &crate::MediaConfig,
    ) -> Shard {
        Shard {
            idx,
            advertised,
            shards,
            events,
            stats,
            peers: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            timers: BinaryHeap::new(),
            subs: HashMap::new(),
            keyframe_gates: HashMap::new(),
            deferred: Vec::new(),
            garbage: 0,
            dtls_cert: str0m::crypto::from_feature_flags().dtls_provider.generate_certificate(),
            delay,
            inbox: Vec::new(),
            touched: Vec::new(),
            layers: HashMap::new(),
            floor: HashSet::new(),
            rates: HashMap::new(),
            adaptive: cfg.adaptive,
            video_fec: cfg.video_fec,
            levels_due: crate::now() + crate::LEVELS_INTERVAL,
        }
    }

    pub(crate) fn run(mut self, sock: std::net::UdpSocket, mut rx: mpsc::UnboundedReceiver<ShardMsg>) {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_time().enable_io().build() {
            Ok(rt) => rt,
            Err(e) => {
                warn!(shard = self.idx, "cannot start shard runtime: {e}");
                return;
            }
        };
        rt.block_on(async move {
            let socket = match UdpSocket::from_std(sock) {
                Ok(s) => s,
                Err(e) => {
                    warn!(shard = self.idx, "cannot register shard socket: {e}");
                    return;
                }
            };
            let local = socket.local_addr().unwrap_or(self.advertised);
            info!(shard = self.idx, %local, advertised = %self.advertised, "media shard started");
            let mut buf = vec![0u8; 2048];
            loop {
                let deadline =
                    self.timers.peek().map(|r| r.0.0).unwrap_or_else(|| crate::now() + Duration::from_secs(1));
                tokio::select! {
                    biased;
                    msg = rx.recv() => {
                        let Some(msg) = msg else { break };
                        if !self.handle_msg(msg, &socket) { break }
                        for _ in 0..MAX_BATCH {
                            match rx.try_recv() {
                                Ok(msg) => if !self.handle_msg(msg, &socket) { return },
                                Err(_) => break,
                            }
                        }
                    }
                    r = socket.recv_from(&mut buf) => {
                        if let Ok((n, src)) = r {
                            self.handle_datagram(&buf[..n], src, local, &socket);
                            for _ in 0..MAX_BATCH {
                                match socket.try_recv_from(&mut buf) {
                                    Ok((n, src)) => self.handle_datagram(&buf[..n], src, local, &socket),
                                    Err(_) => break,
                                }
                            }
                        }
                    }
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                }
                self.run_timers(&socket);
                self.flush_deferred(&socket);
            }
            info!(shard = self.idx, garbage = self.garbage, "media shard stopped");
        });
    }

    /// Returns `false` to stop the shard.
    fn handle_msg(&mut self, msg: ShardMsg, socket: &UdpSocket) -> bool {
        match msg {
            // Forwarded with the rest of this turn's packets (the loop's flush_deferred), each subscriber drained once.
            ShardMsg::Forward(f) => {
                self.inbox.push(f);
                return true;
            }
            ShardMsg::KeyframeRequest(track, layer) => self.request_keyframe(track, layer, socket),
            ShardMsg::Command(Command::Offer { peer, sdp, estimate, reply }) => {
                let res = self.offer(peer, &sdp, estimate, socket);
                let _ = reply.send(res);
            }
            ShardMsg::Command(Command::Remove { peer }) => self.remove_peer(peer),
            ShardMsg::Command(Command::SetSlot { peer, mid, source }) => self.set_slot(peer, &mid, source),
            ShardMsg::Command(Command::Probe { peer, kbps, packet_bytes }) => {
                self.set_probe(peer, kbps, packet_bytes, socket)
            }
            ShardMsg::Command(Command::Floor { peer, on }) => self.set_floor(peer, on),
            ShardMsg::Command(Command::Shutdown) => return false,
        }
        self.flush_deferred(socket);
        true
    }

    fn handle_datagram(&mut self, data: &[u8], src: SocketAddr, local: SocketAddr, socket: &UdpSocket) {
        let now = crate::now();
        let pid = match self.by_addr.get(&src) {
            Some(p) => Some(*p),
            None => StunMessage::parse(data)
                .ok()
                .and_then(|m| m.split_username().and_then(|(ours, _)| self.by_ufrag.get(ours).copied())),
        };
        let Some(pid) = pid else {
            self.garbage += 1;
            trace!(%src, len = data.len(), "datagram for no peer");
            return;
        };
        let Some(peer) = self.peers.get_mut(&pid) else { return };
        let Ok(recv) = Receive::new(Protocol::Udp, src, local, data) else {
            self.garbage += 1;
            return;
        };
        let input = Input::Receive(now, recv);
        if !peer.rtc.accepts(&input) {
            self.garbage += 1;
            return;
        }
        if let Err(e) = peer.rtc.handle_input(input) {
            debug!(peer = pid.0, "input rejected: {e}");
        }
        if !peer.addrs.contains(&src) {
            peer.addrs.push(src);
            self.by_addr.insert(src, pid);
        }
        drain(pid, peer, socket, &mut self.deferred, &self.stats, self.idx);
        schedule(&mut self.timers, peer, pid);
    }

    fn run_timers(&mut self, socket: &UdpSocket) {
        let now = crate::now();
        while let Some(Reverse((t, pid))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(peer) = self.peers.get_mut(&pid) else { continue };
            if peer.scheduled != Some(t) {
                continue; // stale: a newer, earlier entry replaced it
            }
            peer.scheduled = None;
            send_probe(peer, now);
            if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                debug!(peer = pid.0, "timeout input failed: {e}");
            }
            drain(pid, peer, socket, &mut self.deferred, &self.stats, self.idx);
            schedule(&mut self.timers, peer, pid);
        }
    }

    fn flush_deferred(&mut self, socket: &UdpSocket) {
        loop {
            self.flush_events(socket);
            if self.inbox.is_empty() {
                break;
            }
            self.forward_inbox(socket);
        }
        self.report_levels();
    }

    /// Every [`crate::LEVELS_INTERVAL`]: the mean loudness of each of this shard's publishers heard since the last
    /// report (Last-N audio: the signalling layer forwards the loudest recent speakers to the chair).
    fn report_levels(&mut self) {
        let now = crate::now();
        if now < self.levels_due {
            return;
        }
        self.levels_due = now + crate::LEVELS_INTERVAL;
        let mut levels = Vec::new();
        for (pid, peer) in &mut self.peers {
            let (sum, n) = std::mem::take(&mut peer.speech);
            if let Some(mean) = sum.checked_div(n) {
                levels.push((*pid, u8::try_from(mean).unwrap_or(127)));
            }
        }
        if !levels.is_empty() {
            let _ = self.events.send(MediaEvent::AudioLevels(levels));
        }
    }

    fn flush_events(&mut self, socket: &UdpSocket) {
        while !self.deferred.is_empty() {
            for d in std::mem::take(&mut self.deferred) {
                match d {
                    Deferred::Forward(f) => {
                        let f = Arc::new(f);
                        for (i, s) in self.shards.iter().enumerate() {
                            if i != self.idx {
                                let _ = s.send(ShardMsg::Forward(f.clone()));
                            }
                        }
                        self.inbox.push(f);
                    }
                    Deferred::Keyframe(track, layer) => {
                        if self.peers.contains_key(&track.peer) {
                            self.request_keyframe(track, layer, socket);
                        } else {
                            for (i, s) in self.shards.iter().enumerate() {
                                if i != self.idx {
                                    let _ = s.send(ShardMsg::KeyframeRequest(track, layer));
                                }
                            }
                        }
                    }
                    Deferred::Allocate(pid) => self.allocate(pid),
                    Deferred::Connected(pid) => {
                        let _ = self.events.send(MediaEvent::Connected(pid));
                    }
                    Deferred::AudioOnly(pid, on) => {
                        let _ = self.events.send(MediaEvent::AudioOnly(pid, on));
                    }
                    Deferred::Dead(pid) => {
                        if self.peers.contains_key(&pid) {
                            self.remove_peer(pid);
                            let _ = self.events.send(MediaEvent::Disconnected(pid));
                        }
                    }
                }
            }
        }
    }

    fn offer(
        &mut self,
        pid: PeerId,
        sdp: &str,
        estimate: Option<u32>,
        socket: &UdpSocket,
    ) -> Result<Negotiated, MediaError> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| MediaError::BadSdp(e.to_string()))?;
        let now = crate::now();
        let is_new = !self.peers.contains_key(&pid);
        if is_new {
            let mut cfg = RtcConfig::new()
                .set_ice_lite(true)
                .set_rtp_mode(true)
                .clear_codecs()
                .enable_opus(true, true)
                .enable_vp8(true)
                .set_stats_interval(Some(if self.adaptive { STATS_INTERVAL } else { Duration::from_secs(1) }));
            // Video FEC (ULPFEC in RED) toward subscribers, on the send-only video lines of those that offer it, with
            // their payload types (these are Chromium's, for an offer that names none).
            if self.video_fec {
                cfg.codec_config().set_video_fec(Codec::Vp8, Some(VIDEO_FEC_PTS), true);
            }
            // Adaptive: estimate the bandwidth toward every peer (TWCC + GoogCC), starting low for weak links.
            let cfg = match estimate {
                Some(kbps) if self.adaptive => cfg.enable_bwe(Some(Bitrate::kbps(u64::from(kbps)))),
                _ => cfg,
            };
            let cfg = match &self.dtls_cert {
                Some(cert) => cfg.set_dtls_cert(cert.clone()),
                None => cfg,
            };
            let mut rtc = cfg.build(now);
            let cand = Candidate::host(self.advertised, "udp").map_err(|e| MediaError::BadSdp(e.to_string()))?;
            rtc.add_local_candidate(cand);
            let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
            let peer = Peer {
                rtc,
                ufrag: ufrag.clone(),
                addrs: Vec::new(),
                next_timeout: now,
                scheduled: None,
                pending: Vec::new(),
                publishes: HashMap::new(),
                slots: HashMap::new(),
                ssrc_mid: HashMap::new(),
                send_pt: Vec::new(),
                red_pt: None,
                lossy: LossyLink::starting(now),
                red_rx: RedReceiver::default(),
                fec_rate: FecRate::default(),
                connected: false,
                dead: false,
                last_bytes: None,
                stats: PeerStats { shard: self.idx, ..Default::default() },
                probe: None,
                estimate_kbps: None,
                drop: DropFollower::default(),
                alloc: Allocator::new(),
                audio_only: false,
                speech: (0, 0),
            };
            self.peers.insert(pid, peer);
            self.by_ufrag.insert(ufrag, pid);
        }
        let Some(peer) = self.peers.get_mut(&pid) else { return Err(MediaError::UnknownPeer(pid)) };
        let answer = match peer.rtc.sdp_api().accept_offer(offer) {
            Ok(a) => a,
            Err(e) => {
                if is_new {
                    self.remove_peer(pid);
                }
                return Err(MediaError::BadSdp(e.to_string()));
            }
        };
        // str0m announces media (Event::MediaAdded) only once DTLS is up; the slots are needed now, for the answer's
        // slot map, so read them from the negotiated session by the offer's mids.
        for line in sdp.lines() {
            let Some(mid) = line.trim().strip_prefix("a=mid:") else { continue };
            let mid = Mid::from(mid);
            let found = peer.rtc.media(mid).map(|m| (m.kind(), m.direction()));
            if let Some((kind, dir)) = found {
                update_media(peer, mid, kind, dir);
            }
        }
        drain(pid, peer, socket, &mut self.deferred, &self.stats, self.idx);
        schedule(&mut self.timers, peer, pid);
        peer.send_pt.clear();
        peer.red_pt = None;
        for p in peer.rtc.codec_config().params() {
            let codec = p.spec().codec;
            // str0m keeps its own RED payload type on the codec when the offer had none: RED counts as negotiated
            // only when the offer maps that payload type to red.
            if codec == Codec::Opus && peer.red_pt.is_none() {
                peer.red_pt = p.red().filter(|pt| offers_red(sdp, **pt));
            }
            if !peer.send_pt.iter().any(|(c, _)| *c == codec) {
                peer.send_pt.push((codec, p.pt()));
            }
        }
        // Video FEC goes on the lines where both sides agreed on it: the bridge's send-only video lines.
        let fec_pts = peer
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == Codec::Vp8)
            .and_then(|p| p.video_fec())
            .map(|f| UlpfecConfig { red: f.red, red_rtx: f.red_rtx, ulpfec: f.ulpfec });
        for (mid, slot) in peer.slots.iter_mut() {
            let line = peer.rtc.media(*mid);
            let agreed =
                line.is_some_and(|m| m.direction() == Direction::SendOnly && m.remote_video_fec() == Some(true));
            slot.fec = fec_pts.filter(|_| agreed && slot.kind == Kind::Video);
        }
        debug!(peer = pid.0, red = ?peer.red_pt, fec = ?fec_pts, "negotiated");
        if let Ok(mut s) = self.stats.lock() {
            s.entry(pid).or_insert_with(|| peer.stats.clone());
        }
        let mut publishes: Vec<Kind> = peer.publishes.values().copied().collect();
        publishes.sort_by_key(|k| *k == Kind::Video);
        publishes.dedup();
        let mut slots: Vec<SlotInfo> = peer
            .slots
            .iter()
            .map(|(mid, s)| SlotInfo { mid: mid.to_string(), kind: s.kind, duplex: peer.publishes.contains_key(mid) })
            .collect();
        slots.sort_by_key(|s| mid_order(&s.mid));
        debug!(peer = pid.0, shard = self.idx, ?publishes, slots = slots.len(), "offer accepted");
        Ok(Negotiated { answer: answer.to_sdp_string(), publishes, slots })
    }

    fn remove_peer(&mut self, pid: PeerId) {
        let Some(peer) = self.peers.remove(&pid) else { return };
        self.by_ufrag.remove(&peer.ufrag);
        for a in &peer.addrs {
            self.by_addr.remove(a);
        }
        for (mid, slot) in &peer.slots {
            if let Some(src) = slot.source {
                unsubscribe(&mut self.subs, src, pid, *mid);
            }
        }
        for kind in [Kind::Audio, Kind::Video] {
            self.subs.remove(&TrackId { peer: pid, kind });
            self.layers.remove(&TrackId { peer: pid, kind });
            self.rates.remove(&TrackId { peer: pid, kind });
        }
        self.keyframe_gates.retain(|t, _| t.peer != pid);
        if let Ok(mut s) = self.stats.lock() {
            s.remove(&pid);
        }
        debug!(peer = pid.0, shard = self.idx, "peer removed");
    }

    fn set_floor(&mut self, holder: PeerId, on: bool) {
        let changed = if on { self.floor.insert(holder) } else { self.floor.remove(&holder) };
        if !changed {
            return;
        }
        for kind in [Kind::Audio, Kind::Video] {
            for (sub, _) in self.subs.get(&TrackId { peer: holder, kind }).into_iter().flatten() {
                if self.peers.get(sub).is_some_and(|p| p.estimate_kbps.is_some()) {
                    self.deferred.push(Deferred::Allocate(*sub));
                }
            }
        }
    }

    fn set_slot(&mut self, pid: PeerId, mid: &str, source: Option<TrackId>) {
        let Some(peer) = self.peers.get_mut(&pid) else { return };
        let Some((mid, slot)) = peer.slots.iter_mut().find(|(m, _)| &***m == mid) else {
            warn!(peer = pid.0, mid, "set_slot for an unknown mid");
            return;
        };
        let mid = *mid;
        if let Some(src) = source
            && src.kind != slot.kind
        {
            warn!(peer = pid.0, %mid, "set_slot with a source of the wrong kind");
            return;
        }
        if slot.source == source {
            return;
        }
        let old = slot.source;
        if let Some(old) = old {
            unsubscribe(&mut self.subs, old, pid, mid);
        }
        slot.source = source;
        slot.rewriter.select(source.map(|t| source_id(t, None)));
        slot.layer = None;
        slot.target = Target::Auto;
        slot.max_tid = u8::MAX;
        if let Some(src) = source {
            self.subs.entry(src).or_default().push((pid, mid));
            // Not before the subscriber is connected: the keyframe would go by unforwarded, and the request, spent,
            // would hold back the one its first packets of the track make in the gate (a joiner's first chair frame
            // came 0.6 s after connecting instead of 0.1 s, and 1.07 s once, failing e2e_chromium).
            if src.kind == Kind::Video && peer.connected {
                self.deferred.push(Deferred::Keyframe(src, None));
            }
        }
        if peer.estimate_kbps.is_some() {
            self.deferred.push(Deferred::Allocate(pid));
        }
        // Another shard's publisher nobody here receives any more: forget its layers (learnt again from its packets
        // if someone subscribes).
        if let Some(old) = old
            && !self.subs.contains_key(&old)
            && !self.peers.contains_key(&old.peer)
        {
            self.layers.remove(&old);
            self.rates.remove(&old);
        }
    }

    /// Forwards this turn's packets: every packet is written into each of its subscribers first, then each
    /// subscriber is drained once (sealed and sent), so str0m's per-peer output machinery runs once per subscriber per
    /// turn rather than once per packet per subscriber (a video frame is several packets arriving together).
    fn forward_inbox(&mut self, socket: &UdpSocket) {
        let mut inbox = std::mem::take(&mut self.inbox);
        for f in &inbox {
            // Layers are learnt from the packets, for the tracks someone here receives and for this shard's own
            // publishers (their keyframe requests name the layer being forwarded).
            if !self.subs.contains_key(&f.track) && !self.peers.contains_key(&f.track.peer) {
                continue;
            }
            let default_layer = match f.layer {
                Some(rid) => {
                    let seen = self.layers.entry(f.track).or_default();
                    let mut new = !seen.contains(&rid);
                    if new {
                        seen.push(rid);
                    }
                    let tid = f.vp8.and_then(|(i, _)| i.tid);
                    let rates = self.rates.entry(f.track).or_default();
                    let windows = rates.windows();
                    new |= rates.record(f.received, layer_index(Some(rid)), tid, f.payload.len());
                    let window_closed = rates.windows() != windows;
                    let default = chosen_layer(seen);
                    // The publisher's statistics: its layers, refreshed at a new one and with each window.
                    if (new || window_closed)
                        && let Some(publisher) = self.peers.get_mut(&f.track.peer)
                    {
                        let rates = self.rates.get(&f.track);
                        publisher.stats.layers_in = seen
                            .iter()
                            .map(|rid| {
                                let layer = layer_index(Some(*rid));
                                LayerIn {
                                    rid: rid.to_string(),
                                    temporal_layers: rates.map_or(1, |r| r.temporal_layers(layer)),
                                    kbps: rates.and_then(|r| r.measured_kbps(layer)),
                                }
                            })
                            .collect();
                    }
                    // A new layer: the adaptive subscribers of this track choose again.
                    if new && self.adaptive {
                        for (pid, _) in self.subs.get(&f.track).map(Vec::as_slice).unwrap_or_default() {
                            self.deferred.push(Deferred::Allocate(*pid));
                        }
                    }
                    // Not adaptive: every slot takes the default layer, so the others stop here, before the
                    // subscribers are visited (the fan-out benchmark's path).
                    if !self.adaptive && default != Some(rid) {
                        continue;
                    }
                    default
                }
                // A simulcast packet whose layer is not bound yet: which layer it is, nobody knows.
                None if self.layers.contains_key(&f.track) => continue,
                None => None,
            };
            if f.track.kind == Kind::Audio && self.adaptive {
                self.rates.entry(f.track).or_default().record(f.received, 0, None, f.payload.len());
            }
            let Some(list) = self.subs.get(&f.track) else { continue };
            let mut want_keyframe = false;
            for (pid, mid) in list {
                let Some(peer) = self.peers.get_mut(pid) else { continue };
                if !peer.connected {
                    continue;
                }
                let Some(pt) = peer.send_pt.iter().find(|(c, _)| *c == f.codec).map(|(_, pt)| *pt) else { continue };
                let Some(slot) = peer.slots.get_mut(mid) else { continue };
                if let Some(rid) = f.layer {
                    let take = match slot.target {
                        Target::Auto => default_layer == Some(rid),
                        Target::Paused => false,
                        Target::Layer(t, _) if slot.layer == Some(t) => rid == t,
                        // Switching: at the target layer's keyframe; until then the old layer goes on.
                        Target::Layer(t, _) if rid == t => {
                            if !f.keyframe {
                                want_keyframe = true;
                            }
                            f.keyframe
                        }
                        Target::Layer(..) => slot.layer == Some(rid),
                    };
                    if !take {
                        continue;
                    }
                }
                // Temporal layers above the subscriber's are skipped (their numbers closed up by the rewriter).
                let skip = match f.vp8 {
                    Some((info, _)) if f.layer.is_some() => temporal_step(slot, &info),
                    _ => false,
                };
                // Each simulcast layer is its own source: the slot follows the track onto the layer being
                // forwarded, and a change of layer waits for that layer's keyframe (continuity kept).
                let source = source_id(f.track, f.layer);
                if slot.rewriter.selected().is_some_and(|s| s >> 2 == f.track.as_u64() && s != source) {
                    slot.rewriter.select(Some(source));
                }
                let mapped = slot.rewriter.map(InPacket {
                    source,
                    seq: f.seq,
                    ts: f.ts,
                    keyframe: f.keyframe,
                    at: f.received,
                    vp8: f.vp8.map(|(i, _)| Vp8Numbers::from(i)),
                    skip,
                });
                let (seq, ts, numbers) = match mapped {
                    Mapped::Write { seq, ts, vp8 } => {
                        slot.layer = f.layer;
                        (seq, ts, vp8)
                    }
                    Mapped::NeedKeyframe => {
                        want_keyframe = true;
                        continue;
                    }
                    Mapped::Drop => continue,
                };
                // Audio toward a lossy subscriber: RED, the packet before riding along (never retransmitted). The
                // history is kept only for subscribers that negotiated RED.
                let (pt, payload) = match peer.red_pt {
                    Some(red_pt) if slot.kind == Kind::Audio => {
                        match slot.red.wrap(*pt, seq, ts, &f.payload, peer.lossy.active(f.received)) {
                            Some(wrapped) => (red_pt, Arc::from(wrapped)),
                            None => (pt, f.payload.clone()),
                        }
                    }
                    _ => (pt, f.payload.clone()),
                };
                let mut api = peer.rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(*mid, None) else { continue };
                let ext = ExtensionValues {
                    audio_level: f.audio_level,
                    voice_activity: f.voice_activity,
                    ..Default::default()
                };
                let patch = match (f.vp8, numbers) {
                    (Some((info, desc)), Some(out)) => vp8_patch(&info, &desc, &out),
                    _ => None,
                };
                // Video toward a lossy subscriber that negotiated FEC: RED-wrapped (each packet, so that its
                // receiver can rebuild any of them), with an FEC packet after every group (str0m fills it in).
                let fec = match (slot.fec, peer.fec_rate.group()) {
                    (Some(cfg), Some(group)) if slot.kind == Kind::Video => Some((cfg, group)),
                    _ => None,
                };
                if fec.is_some() != slot.fec_on {
                    slot.fec_on = fec.is_some();
                    slot.fec_count = 0;
                    // A fresh start: no packet of an earlier spell in the first group.
                    tx.set_ulpfec(None);
                    tx.set_ulpfec(slot.fec);
                    debug!(peer = pid.0, %mid, group = ?fec.map(|f| f.1), "video FEC");
                }
                let write = match fec {
                    Some((cfg, _)) => {
                        let mut wrapped = Vec::with_capacity(payload.len() + 1);
                        wrapped.push(*pt);
                        wrapped.extend_from_slice(&payload);
                        if let Some(patch) = patch {
                            patch.apply(&mut wrapped[1..]);
                        }
                        RtpWrite::new(cfg.red, seq.into(), ts, f.received, wrapped)
                    }
                    None => {
                        let write = RtpWrite::new(pt, seq.into(), ts, f.received, payload);
                        match patch {
                            Some(patch) => write.vp8_patch(patch),
                            None => write,
                        }
                    }
                };
                tx.write_rtp(write.marker(f.marker).ext_vals(ext).nackable(f.track.kind == Kind::Video));
                peer.stats.packets_out += 1;
                // The FEC packet goes at the end of a frame (after its marker packet), never inside one: a
                // receiver's frame assembly needs a frame's sequence numbers to be its own packets (libwebrtc sends
                // its FEC the same way).
                if let Some((cfg, group)) = fec {
                    slot.fec_count = slot.fec_count.saturating_add(1);
                    if f.marker
                        && slot.fec_count >= group
                        && let Some(fec_seq) = slot.rewriter.insert()
                    {
                        tx.write_rtp(RtpWrite::new(cfg.red, fec_seq.into(), ts, f.received, vec![*cfg.ulpfec]));
                        slot.fec_count = 0;
                        peer.stats.packets_out += 1;
                    }
                }
                if peer.pending.is_empty() {
                    self.touched.push(*pid);
                }
                peer.pending.push(f.received);
            }
            if want_keyframe {
                self.deferred.push(Deferred::Keyframe(f.track, f.layer));
            }
        }
        inbox.clear();
        self.inbox = inbox;
        for pid in std::mem::take(&mut self.touched) {
            let Some(peer) = self.peers.get_mut(&pid) else { continue };
            drain(pid, peer, socket, &mut self.deferred, &self.stats, self.idx);
            // Sealed and handed to the socket: this subscriber's forwarding delay, per packet.
            let now = crate::now();
            for at in peer.pending.drain(..) {
                self.delay.record(now.saturating_duration_since(at));
            }
            schedule(&mut self.timers, peer, pid);
        }
    }

    /// Starts, changes or (`kbps == 0`) stops the probe train toward `pid`, on its first video slot that carries
    /// nothing (a link check's peer receives nothing else).
    fn set_probe(&mut self, pid: PeerId, kbps: u32, packet_bytes: usize, socket: &UdpSocket) {
        let Some(peer) = self.peers.get_mut(&pid) else { return };
        if kbps == 0 {
            peer.probe = None;
            return;
        }
        let size = packet_bytes.clamp(PROBE_MIN_BYTES, PROBE_MAX_BYTES);
        let interval = Duration::from_secs_f64(size as f64 * 8.0 / (f64::from(kbps) * 1000.0));
        if let Some(probe) = peer.probe.as_mut() {
            if probe.payload.len() != size {
                probe.payload = probe_payload(size);
            }
            probe.interval = interval;
            return;
        }
        let Some(pt) = peer.send_pt.iter().find(|(c, _)| *c == Codec::Vp8).map(|(_, pt)| *pt) else {
            warn!(peer = pid.0, "probe: the peer negotiated no VP8");
            return;
        };
        let mut video: Vec<Mid> =
            peer.slots.iter().filter(|(_, s)| s.kind == Kind::Video && s.source.is_none()).map(|(m, _)| *m).collect();
        video.sort_by_key(|m| mid_order(m));
        let Some(mid) = video.first().copied() else {
            warn!(peer = pid.0, "probe: the peer has no free video slot");
            return;
        };
        let now = crate::now();
        peer.probe = Some(Probe { mid, pt, interval, next: now, start: now, seq: 1, payload: probe_payload(size) });
        send_probe(peer, now);
        drain(pid, peer, socket, &mut self.deferred, &self.stats, self.idx);
        schedule(&mut self.timers, peer, pid);
    }

    /// Chooses the layer of each of `pid`'s simulcast slots from its bandwidth estimate ([`Allocator`]), and tells
    /// its estimator how much it could use (so that it probes toward it).
    fn allocate(&mut self, pid: PeerId) {
        let Some(peer) = self.peers.get_mut(&pid) else { return };
        let Some(estimate) = peer.estimate_kbps else { return };
        let (budget, dropped) = peer.drop.budget(crate::now(), estimate);
        let mut mids: Vec<Mid> = peer.slots.keys().copied().collect();
        mids.sort_by_key(|m| mid_order(m));
        let mut wanted: Vec<Wanted> = Vec::new();
        let mut ladders: Vec<(Mid, Vec<(Rid, u8)>)> = Vec::new();
        let mut first_video = true;
        for mid in mids {
            let Some(slot) = peer.slots.get(&mid) else { continue };
            let Some(src) = slot.source else { continue };
            let (priority, rids, kbps) = match slot.kind {
                // Audio at its measured rate; with RED, its payload twice.
                Kind::Audio => {
                    let red = peer.red_pt.is_some() && peer.lossy.active(crate::now());
                    let (kbps, overhead) = match self.rates.get(&src) {
                        Some(r) => (r.kbps(0, u8::MAX, AUDIO_KBPS), r.overhead_kbps(0)),
                        None => (AUDIO_KBPS, 16),
                    };
                    let kbps = if red { kbps + kbps.saturating_sub(overhead) } else { kbps };
                    (slot_priority(Kind::Audio, false, self.floor.contains(&src.peer)), Vec::new(), vec![kbps])
                }
                Kind::Video => {
                    // Without simulcast there is nothing to choose: the track is forwarded as it comes.
                    let Some(seen) = self.layers.get(&src).filter(|s| !s.is_empty()) else { continue };
                    let unmeasured = TrackLayers::default();
                    let (mut rids, mut kbps) = ladder(seen, self.rates.get(&src).unwrap_or(&unmeasured));
                    // While the link is falling, only the lowest simulcast layer (at the frame rates its estimate
                    // allows): the estimate is still on its way down (1,157 → 735 → 486 → 148 kbit/s in four
                    // readings, 1 s, in the link-drop drill), and every larger layer sent meanwhile waits in the
                    // queues ahead of the small layer's keyframe. Larger layers come back after a hold.
                    // (Only when even what it sends now does not fit the latest estimate: an estimate falling
                    // back after a probe at join also reads as a drop.)
                    let sending = slot_cost(slot, &rids, &kbps);
                    if dropped
                        && sending.is_some_and(|c| c > budget)
                        && let Some(lowest) = rids.first().map(|r| r.0)
                    {
                        let n = rids.iter().take_while(|r| r.0 == lowest).count();
                        rids.truncate(n);
                        kbps.truncate(n);
                    }
                    // With FEC toward this subscriber, each layer costs its share more.
                    if slot.fec.is_some() {
                        let group = peer.fec_rate.group();
                        kbps.iter_mut().for_each(|k| *k = with_fec(*k, group));
                    }
                    let priority = slot_priority(Kind::Video, first_video, self.floor.contains(&src.peer));
                    first_video = false;
                    (priority, rids, kbps)
                }
            };
            wanted.push(Wanted { id: wanted.len() as u64, priority, layers_kbps: kbps });
            ladders.push((mid, rids));
        }
        let now = crate::now();
        let overloaded = peer.drop.loss.overloaded(now);
        let (sending, _) = next_step(&wanted, peer.alloc.current());
        let floor = floor_kbps(&wanted, peer.alloc.current());
        let budget = loss_capped(budget, sending, floor, peer.drop.loss.mean(now));
        // A link drop being followed lowers at once, as an overloaded link does.
        let choices = peer.alloc.update_with(now, budget, overloaded || dropped, &wanted).to_vec();
        let mut videos = 0;
        let mut paused = 0;
        for ((mid, rids), choice) in ladders.iter().zip(choices.iter()) {
            if rids.is_empty() {
                continue;
            }
            let Some(slot) = peer.slots.get_mut(mid) else { continue };
            let target = match choice.layer {
                Some(l) => rids.get(l).map_or(Target::Auto, |(rid, tid)| Target::Layer(*rid, *tid)),
                None => Target::Paused,
            };
            videos += 1;
            paused += usize::from(target == Target::Paused);
            if slot.target != target {
                debug!(peer = pid.0, %mid, ?target, estimate, budget, dropped, overloaded, "layer target");
                if target == Target::Paused {
                    // Resuming later starts at a keyframe, with the next sequence number.
                    slot.layer = None;
                    slot.rewriter.restart();
                }
                slot.target = target;
            }
            // The link is dropping or overloaded (the subscriber reports ≥ 10% loss) and the slot still forwards a
            // larger layer than its target: that layer stops now rather than at the new layer's keyframe, and what
            // str0m still holds of it goes too — its pacer queue (paced at the fallen estimate, it held seconds of
            // 720p ahead of the small layer's keyframe) and its resends. Checked at every allocation, not only when
            // the target moves: the loss reports often come after the estimate has already lowered it.
            if let Target::Layer(rid, _) = slot.target
                && (dropped || overloaded)
                && slot.layer.is_some_and(|l| layer_index(Some(l)) > layer_index(Some(rid)))
            {
                debug!(peer = pid.0, %mid, layer = ?slot.layer, "larger layer cut, send buffers flushed");
                slot.layer = None;
                flush_send_buffers(&mut peer.rtc, *mid);
            }
        }
        // The estimator probes toward everything at its top layer (str0m's probes stay within twice the estimate),
        // and padding keeps the traffic toward this subscriber at what the next raise needs (its cost with
        // HEADROOM; str0m never pads past the estimate, nor while it sees overuse). Without it, an estimate stuck
        // below the next layer never moved: GoogCC grows it to at most 1.5 × the measured throughput, and on a lossy
        // 3G link str0m's own probes are gated off (loss-limited), so half the 3G sites of the rural-mix drill sat
        // at 180p with 780 kbit/s; and a paused video, with audio alone flowing, stayed paused. Padding also means
        // that an overuse (GoogCC: estimate = 0.85 × throughput) lands near the padded rate instead of below the
        // lowest layer, and that a raise is made after the higher rate has flowed for HOLD without overuse.
        // The cost: on fibre the climb to 720p takes ~10 s instead of ~8 s (padding ends str0m's ALR probes).
        let (used, next) = next_step(&wanted, &choices);
        let top: u32 = wanted.iter().map(|w| w.layers_kbps.last().copied().unwrap_or(0)).sum();
        let minimum = next.map_or(used, |n| (f64::from(n) * crate::alloc::HEADROOM) as u32);
        trace!(peer = pid.0, budget, used, minimum, prices = ?wanted.iter().map(|w| w.layers_kbps.first().copied().unwrap_or(0)).collect::<Vec<_>>(), "allocated");
        peer.rtc.bwe().set_bitrate(Bitrate::kbps(u64::from(minimum)), Bitrate::kbps(u64::from(top.max(AUDIO_KBPS))));
        let audio_only = videos > 0 && paused == videos;
        if audio_only != peer.audio_only {
            peer.audio_only = audio_only;
            self.deferred.push(Deferred::AudioOnly(pid, audio_only));
        }
    }

    /// Asks the publisher of `track` for a keyframe of `layer` (`None`: the default layer), at most once per
    /// [`KEYFRAME_REQUEST_INTERVAL`] per track, the layer waiting longest first, whatever the number of subscribers
    /// asking ([`KeyframeGate`]). (Per layer, 200 subscribers switching layers had each of three layers send two
    /// keyframes a second.)
    fn request_keyframe(&mut self, track: TrackId, layer: Option<Rid>, socket: &UdpSocket) {
        if track.kind != Kind::Video {
            return;
        }
        let Some(peer) = self.peers.get_mut(&track.peer) else { return };
        let now = crate::now();
        // Under simulcast, the layer asked for, else the one subscribers receive by default.
        let layer = layer.or_else(|| self.layers.get(&track).and_then(|seen| chosen_layer(seen)));
        let gate = self.keyframe_gates.entry(track).or_insert_with(|| KeyframeGate::new(KEYFRAME_REQUEST_INTERVAL));
        let Some(layer) = gate.ask(now, layer) else { return };
        let Some(mid) = peer.publishes.iter().find(|(_, k)| **k == Kind::Video).map(|(m, _)| *m) else { return };
        let mut api = peer.rtc.direct_api();
        let layer = if api.stream_rx_by_mid(mid, layer).is_some() { layer } else { None };
        let Some(rx) = api.stream_rx_by_mid(mid, layer) else { return };
        rx.request_keyframe(KeyframeRequestKind::Pli);
        trace!(peer = track.peer.0, "keyframe requested");
        drain(track.peer, peer, socket, &mut self.deferred, &self.stats, self.idx);
        schedule(&mut self.timers, peer, track.peer);
    }
}

fn unsubscribe(subs: &mut HashMap<TrackId, Vec<(PeerId, Mid)>>, src: TrackId, pid: PeerId, mid: Mid) {
    if let Some(list) = subs.get_mut(&src) {
        list.retain(|(p, m)| !(*p == pid && *m == mid));
        if list.is_empty() {
            subs.remove(&src);
        }
    }
}

/// Numeric mids ("0", "1", …) sort by value, others after them by text.
fn mid_order(mid: &str) -> (u64, String) {
    (mid.parse().unwrap_or(u64::MAX), mid.to_string())
}

fn kind_of(k: MediaKind) -> Kind {
    if k.is_audio() { Kind::Audio } else { Kind::Video }
}

fn update_media(peer: &mut Peer, mid: Mid, kind: MediaKind, dir: Direction) {
    let kind = kind_of(kind);
    if dir.is_receiving() {
        peer.publishes.insert(mid, kind);
    } else {
        peer.publishes.remove(&mid);
    }
    if dir.is_sending() {
        let clock = if kind == Kind::Video { 90_000 } else { 48_000 };
        if !peer.slots.contains_key(&mid) {
            // The resend cache, sized to what a subscriber can still use: video at the 360p layer is ~60 packets/s and
            // a resend is useless after ~1.5 s even at VSAT's 400 ms RTT; audio is never resent (not nackable). str0m's
            // default (1,024 packets, 3 s) held ~440 KB per subscriber after traffic.
            let (packets, age) = match kind {
                Kind::Video => (RTX_CACHE_VIDEO_PACKETS, RTX_CACHE_VIDEO_AGE),
                Kind::Audio => (RTX_CACHE_AUDIO_PACKETS, RTX_CACHE_AUDIO_AGE),
            };
            if let Some(tx) = peer.rtc.direct_api().stream_tx_by_mid(mid, None) {
                tx.set_rtx_cache(packets, age, Some(RTX_RATIO_CAP));
            }
        }
        peer.slots.entry(mid).or_insert_with(|| Slot {
            kind,
            source: None,
            rewriter: SlotRewriter::new(clock, kind == Kind::Video),
            layer: None,
            target: Target::Auto,
            max_tid: u8::MAX,
            red: RedHistory::default(),
            fec: None,
            fec_on: false,
            fec_count: 0,
        });
    } else {
        peer.slots.remove(&mid);
    }
}

/// A simulcast track's ladder, lowest first, with each step's price (kbit/s, measured from the packets, nominal until
/// then): the lowest layer at each of its frame rates (7.5, 15, 30 fps with L1T3), then each higher layer at 15 fps
/// and at its full rate (a larger picture at 7.5 fps is not worth the 180p at 30 that costs about as much). The 360p
/// layer at 15 fps (≈ 60% of its rate) is what a 3G commune whose estimate sits below the full 360p still carries.
fn ladder(seen: &[Rid], rates: &TrackLayers) -> (Vec<(Rid, u8)>, Vec<u32>) {
    let mut sorted = seen.to_vec();
    sorted.sort_by_key(|r| layer_index(Some(*r)));
    let mut rids = Vec::new();
    let mut kbps = Vec::new();
    for (i, rid) in sorted.iter().enumerate() {
        let layer = layer_index(Some(*rid));
        let temporal = rates.temporal_layers(layer);
        let lowest = if i == 0 { 0 } else { 1.min(temporal - 1) };
        for t in lowest..temporal {
            let tid = if t + 1 == temporal { u8::MAX } else { t };
            rids.push((*rid, tid));
            kbps.push(rates.kbps(layer, tid, layer_kbps(*rid)));
        }
    }
    (rids, kbps)
}

/// Drops what str0m holds to send on `mid` — its pacer queue, its resend cache and queued resends — by turning the
/// section inactive and back: str0m resets a section's send buffers when it stops sending. Nothing is renegotiated
/// (the change is never applied to the SDP); sequence numbers are ours (RTP mode) and go on.
fn flush_send_buffers(rtc: &mut Rtc, mid: Mid) {
    let Some(dir) = rtc.media(mid).map(|m| m.direction()) else { return };
    if !dir.is_sending() {
        return;
    }
    // A section the peer also sends on keeps receiving: only its sending half is turned off (str0m resets the
    // receive buffers of a section that stops receiving).
    let off = if dir.is_receiving() { Direction::RecvOnly } else { Direction::Inactive };
    let mut api = rtc.sdp_api();
    api.set_direction(mid, off);
    api.set_direction(mid, dir);
}

/// What `slot` costs now on its track's ladder (`rids`, `kbps`: the step it targets), if it targets a layer on it.
fn slot_cost(slot: &Slot, rids: &[(Rid, u8)], kbps: &[u32]) -> Option<u32> {
    let Target::Layer(rid, tid) = slot.target else { return None };
    rids.iter().position(|r| *r == (rid, tid)).and_then(|i| kbps.get(i).copied())
}

/// Whether `slot` skips the frame of this packet (a temporal layer above its own), after moving its temporal layer
/// toward its target where that is safe: down at any frame start (nothing below references a higher layer), up at a
/// base-layer frame or a layer-sync frame within the new limit (the first frame of the added layers then finds its
/// references forwarded).
fn temporal_step(slot: &mut Slot, info: &Vp8Info) -> bool {
    let Some(tid) = info.tid else { return false };
    let want = match slot.target {
        Target::Layer(_, t) => t,
        Target::Auto | Target::Paused => u8::MAX,
    };
    if want != slot.max_tid && info.frame_start && (want < slot.max_tid || tid == 0 || (info.layer_sync && tid <= want))
    {
        slot.max_tid = want;
    }
    tid > slot.max_tid
}

/// The descriptor patch that writes `out`'s renumbered fields into a packet whose descriptor is `desc`, when any
/// differs from what it carries.
fn vp8_patch(info: &Vp8Info, desc: &Vp8Descriptor, out: &Vp8Numbers) -> Option<str0m::rtp::Vp8Patch> {
    let mut b = desc.patch();
    let mut any = false;
    if let Some(p) = out.picture_id.filter(|p| Some(*p) != info.picture_id) {
        b = b.picture_id(p);
        any = true;
    }
    if let Some(t) = out.tl0_pic_idx.filter(|t| Some(*t) != info.tl0_pic_idx) {
        b = b.tl0_pic_idx(t);
        any = true;
    }
    if let Some(k) = out.key_idx.filter(|k| Some(*k) != info.key_idx) {
        b = b.key_idx(k);
        any = true;
    }
    if !any {
        return None;
    }
    b.build().map_err(|e| trace!(error = %e, "VP8 descriptor not rewritten")).ok()
}

/// Adds one audio packet's loudness (127 − |RFC 6464 level|) to a publisher's running sum and count.
fn note_loudness(speech: &mut (u32, u32), level: Option<i8>) {
    if let Some(level) = level {
        let loud = 127 - u32::from(level.unsigned_abs()).min(127);
        *speech = (speech.0.saturating_add(loud), speech.1.saturating_add(1));
    }
}

/// Whether `sdp` maps payload type `pt` to RED (`a=rtpmap:PT red/48000/2`).
fn offers_red(sdp: &str, pt: u8) -> bool {
    let prefix = format!("a=rtpmap:{pt} ");
    sdp.lines().any(|l| l.trim().strip_prefix(&prefix).is_some_and(|c| c.to_ascii_lowercase().starts_with("red/")))
}

/// A VP8 payload of `size` bytes: descriptor (start of partition 0) and a frame header marking an inter frame.
fn probe_payload(size: usize) -> Arc<[u8]> {
    let mut p = vec![0u8; size];
    p[0] = 0x10;
    p[1] = 0x01;
    p.into()
}

/// Writes the probe packets due by `now` into the peer's `Rtc` (sent by the next drain).
fn send_probe(peer: &mut Peer, now: Instant) {
    let Some(probe) = peer.probe.as_mut() else { return };
    let n = probe.due(now);
    if n == 0 {
        return;
    }
    let mut api = peer.rtc.direct_api();
    let Some(tx) = api.stream_tx_by_mid(probe.mid, None) else { return };
    let ts = (now.saturating_duration_since(probe.start).as_micros() * 9 / 100) as u32;
    for _ in 0..n {
        // Not nackable: never cached nor resent (a resend would count twice in what the link carried).
        let w = RtpWrite::new(probe.pt, u64::from(probe.seq).into(), ts, now, probe.payload.clone())
            .marker(true)
            .nackable(false);
        tx.write_rtp(w);
        probe.seq = probe.seq.wrapping_add(1);
        peer.stats.probe_packets += 1;
        peer.stats.probe_bytes += probe.payload.len() as u64;
    }
}

/// Puts the peer's next timeout in the heap, unless an entry at or before it is already there: a forwarded packet
/// moves most subscribers' timeouts, and one heap entry per packet per subscriber made the heap the hot path's biggest
/// data structure. A timeout that moved later fires early once (str0m ignores an early `Timeout`), then is rescheduled.
fn schedule(timers: &mut BinaryHeap<Reverse<(Instant, PeerId)>>, peer: &mut Peer, pid: PeerId) {
    let due = match &peer.probe {
        Some(p) => p.next.min(peer.next_timeout),
        None => peer.next_timeout,
    };
    if peer.scheduled.is_none_or(|s| due < s) {
        peer.scheduled = Some(due);
        timers.push(Reverse((due, pid)));
    }
}

/// Drains `poll_output` to `Timeout`: transmits go to the socket, events are handled or deferred.
fn drain(
    pid: PeerId,
    peer: &mut Peer,
    socket: &UdpSocket,
    deferred: &mut Vec<Deferred>,
    stats: &StatsMap,
    shard: usize,
) {
    loop {
        if !peer.rtc.is_alive() {
            if !peer.dead {
                peer.dead = true;
                deferred.push(Deferred::Dead(pid));
            }
            peer.next_timeout = crate::now() + Duration::from_secs(3600);
            return;
        }
        let out = match peer.rtc.poll_output() {
            Ok(o) => o,
            Err(e) => {
                warn!(peer = pid.0, "rtc failed: {e}");
                peer.rtc.disconnect();
                continue;
            }
        };
        match out {
            Output::Timeout(t) => {
                peer.next_timeout = t;
                return;
            }
            Output::Transmit(t) => {
                if let Err(e) = socket.try_send_to(&t.contents, t.destination) {
                    trace!(peer = pid.0, "send failed: {e}");
                }
            }
            Output::Event(e) => handle_event(pid, peer, e, deferred, stats, shard),
        }
    }
}

fn handle_event(pid: PeerId, peer: &mut Peer, e: Event, deferred: &mut Vec<Deferred>, stats: &StatsMap, shard: usize) {
    match e {
        Event::Connected => {
            peer.connected = true;
            peer.stats.connected = true;
            deferred.push(Deferred::Connected(pid));
        }
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) if !peer.dead => {
            peer.dead = true;
            deferred.push(Deferred::Dead(pid));
        }
        Event::MediaAdded(m) => update_media(peer, m.mid, m.kind, m.direction),
        Event::MediaChanged(m) => {
            let kind = peer.rtc.media(m.mid).map(|md| md.kind());
            if let Some(kind) = kind {
                update_media(peer, m.mid, kind, m.direction);
            }
        }
        Event::RtpPacket(p) => {
            peer.stats.packets_in += 1;
            let ssrc = p.header.ssrc;
            let (mid, layer) = match peer.ssrc_mid.get(&ssrc) {
                Some(m) => *m,
                None => {
                    let Some(found) = peer.rtc.direct_api().stream_rx(&ssrc).map(|s| (s.mid(), s.rid())) else {
                        return;
                    };
                    // A simulcast layer's SSRC may be known (from the SDP) before str0m binds its rid from the RTP
                    // header extension: keep asking until it has one (video only; audio has no layers).
                    let is_video = peer.publishes.get(&found.0) == Some(&Kind::Video);
                    if found.1.is_some() || !is_video {
                        peer.ssrc_mid.insert(ssrc, found);
                    }
                    found
                }
            };
            let Some(kind) = peer.publishes.get(&mid).copied() else { return };
            match kind {
                Kind::Audio => peer.stats.audio_packets_in += 1,
                Kind::Video => peer.stats.video_packets_in += 1,
            }
            if kind == Kind::Audio && peer.red_pt == Some(p.header.payload_type) {
                // RED from the publisher: forwarded as the Opus inside, a packet lost on the way in restored.
                let track = TrackId { peer: pid, kind };
                for (seq, ts, payload) in peer.red_rx.unwrap(*p.seq_no, p.header.timestamp, &p.payload) {
                    let primary = seq == *p.seq_no;
                    deferred.push(Deferred::Forward(Forwarded {
                        track,
                        codec: Codec::Opus,
                        seq,
                        ts,
                        marker: p.header.marker && primary,
                        keyframe: false,
                        vp8: None,
                        audio_level: p.header.ext_vals.audio_level.filter(|_| primary),
                        voice_activity: p.header.ext_vals.voice_activity.filter(|_| primary),
                        payload,
                        received: p.timestamp,
                        layer: None,
                    }));
                }
                note_loudness(&mut peer.speech, p.header.ext_vals.audio_level);
                return;
            }
            let Some(codec) = peer.rtc.codec_config().find(|c| c.pt() == p.header.payload_type).map(|c| c.spec().codec)
            else {
                return;
            };
            let vp8 = match (kind, codec) {
                (Kind::Video, Codec::Vp8) => crate::vp8::parse(&p.payload)
                    .and_then(|info| Vp8Descriptor::parse(&p.payload).ok().map(|desc| (info, desc))),
                _ => None,
            };
            let keyframe = vp8.is_some_and(|(i, _)| i.keyframe);
            if kind == Kind::Audio {
                note_loudness(&mut peer.speech, p.header.ext_vals.audio_level);
            }
            deferred.push(Deferred::Forward(Forwarded {
                track: TrackId { peer: pid, kind },
                codec,
                seq: *p.seq_no,
                ts: p.header.timestamp,
                marker: p.header.marker,
                keyframe,
                vp8,
                audio_level: p.header.ext_vals.audio_level,
                voice_activity: p.header.ext_vals.voice_activity,
                payload: p.payload,
                received: p.timestamp,
                layer,
            }));
        }
        Event::KeyframeRequest(r) => {
            if let Some(slot) = peer.slots.get(&r.mid)
                && let Some(src) = slot.source
            {
                deferred.push(Deferred::Keyframe(src, slot.layer));
            }
        }
        Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
            let kbps = (estimate.as_f64() / 1000.0).clamp(0.0, f64::from(u32::MAX)) as u32;
            trace!(peer = pid.0, kbps, "estimate");
            peer.estimate_kbps = Some(kbps);
            peer.stats.estimate_kbps = Some(f64::from(kbps));
            deferred.push(Deferred::Allocate(pid));
        }
        Event::PeerStats(s) => {
            // The estimator's own latest estimate, every STATS_INTERVAL: EgressBitrateEstimate is a 3 s average,
            // which followed a fall from 1.5 Mbit/s to 250 kbit/s only after 3–4 s (the link-drop drill).
            if let Some(b) = s.bwe_tx {
                let latest = (b.as_f64() / 1000.0).clamp(0.0, f64::from(u32::MAX)) as u32;
                trace!(
                    peer = pid.0,
                    latest,
                    averaged = peer.estimate_kbps,
                    kbps_out = peer.stats.kbps_out,
                    "estimate latest"
                );
                peer.drop.observe(peer.estimate_kbps, latest);
            }
            if let Some(l) = s.egress_loss_fraction {
                peer.stats.loss_pct = Some(f64::from(l) * 100.0);
            }
            if let Some(l) = s.ingress_loss_fraction {
                peer.stats.loss_in_pct = Some(f64::from(l) * 100.0);
            }
            if let Some(r) = s.rtt {
                peer.stats.rtt_ms = Some(r.as_secs_f64() * 1000.0);
            }
            // Rates and the shared statistics once a second, whatever the stats interval.
            let due =
                peer.last_bytes.is_none_or(|(at, _, _)| s.timestamp.saturating_duration_since(at) >= PUBLISH_INTERVAL);
            if due {
                if let Some((at, rx, tx)) = peer.last_bytes {
                    let secs = s.timestamp.saturating_duration_since(at).as_secs_f64();
                    if secs > 0.0 {
                        peer.stats.kbps_in = Some(s.peer_bytes_rx.saturating_sub(rx) as f64 * 8.0 / secs / 1000.0);
                        peer.stats.kbps_out = Some(s.peer_bytes_tx.saturating_sub(tx) as f64 * 8.0 / secs / 1000.0);
                    }
                }
                peer.last_bytes = Some((s.timestamp, s.peer_bytes_rx, s.peer_bytes_tx));
                peer.stats.shard = shard;
                if let Ok(mut m) = stats.lock() {
                    m.insert(pid, peer.stats.clone());
                }
            }
            // The estimator speaks only when its estimate moves; a raise waiting out its hold is taken here, once a
            // second — or at every reading while the latest estimate is falling or the link reports overload.
            if peer.estimate_kbps.is_some() && (due || peer.drop.alert(crate::now())) {
                deferred.push(Deferred::Allocate(pid));
            }
        }
        Event::MediaEgressStats(s) => {
            if let Some(rtt) = s.rtt {
                peer.stats.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
            }
            if let Some(loss) = s.loss {
                peer.stats.loss_pct = Some(f64::from(loss) * 100.0);
                let now = crate::now();
                peer.lossy.on_report(now, loss);
                if peer.slots.get(&s.mid).is_some_and(|sl| sl.kind == Kind::Video) {
                    peer.drop.loss.on_report(now, loss);
                    let mean = peer.drop.loss.mean(now).unwrap_or(loss);
                    peer.fec_rate.on_report(now, loss, mean);
                }
            }
        }
        _ => {}
    }
}

/// The allocator's priority of a slot: audio is the chair's unless it comes from the floor holder; the first video
/// slot is the main picture (the chair's, on a site page), the floor holder's picture wherever it is comes next, and
/// the others are tiles.
fn slot_priority(kind: Kind, first_video: bool, from_floor: bool) -> Priority {
    match (kind, first_video, from_floor) {
        (Kind::Audio, _, true) => Priority::FloorAudio,
        (Kind::Audio, _, false) => Priority::ChairAudio,
        (Kind::Video, true, _) => Priority::ChairVideo,
        (Kind::Video, false, true) => Priority::FloorVideo,
        (Kind::Video, false, false) => Priority::Thumbnail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_holder_ranks_after_the_chair_and_before_the_tiles() {
        assert_eq!(slot_priority(Kind::Audio, false, false), Priority::ChairAudio);
        assert_eq!(slot_priority(Kind::Audio, false, true), Priority::FloorAudio);
        assert_eq!(slot_priority(Kind::Video, true, false), Priority::ChairVideo);
        assert_eq!(slot_priority(Kind::Video, false, true), Priority::FloorVideo);
        assert_eq!(slot_priority(Kind::Video, false, false), Priority::Thumbnail);
        // The order the allocator raises them in.
        assert!(Priority::ChairVideo < Priority::FloorVideo && Priority::FloorVideo < Priority::Thumbnail);
        assert!(Priority::ChairAudio < Priority::FloorAudio && Priority::FloorAudio < Priority::ChairVideo);
    }

    #[test]
    fn red_is_negotiated_only_when_the_offer_maps_its_payload_type() {
        let offer = "m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:63 red/48000/2\r\n";
        assert!(offers_red(offer, 63));
        assert!(!offers_red(offer, 111));
        assert!(!offers_red("a=rtpmap:111 opus/48000/2\r\n", 63));
        assert!(offers_red("a=rtpmap:100 RED/48000/2", 100));
    }

    #[test]
    fn subscribers_get_the_360p_layer_when_it_is_sent_else_the_lowest() {
        let r = |s: &str| Rid::from(s);
        assert_eq!(chosen_layer(&[]), None);
        assert_eq!(chosen_layer(&[r("f"), r("q"), r("h")]), Some(r("h")));
        assert_eq!(chosen_layer(&[r("f"), r("q")]), Some(r("q")));
        assert_eq!(chosen_layer(&[r("f")]), Some(r("f")));
        // Each layer is its own rewriter source; the track without layers is layer 0.
        let t = TrackId { peer: PeerId(7), kind: Kind::Video };
        let ids: Vec<u64> = [None, Some(r("q")), Some(r("h")), Some(r("f"))].map(|l| source_id(t, l)).to_vec();
        assert_eq!(ids.iter().map(|i| i >> 2).collect::<Vec<_>>(), vec![t.as_u64(); 4]);
        assert_eq!(ids.iter().map(|i| i & 3).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn the_ladder_has_every_frame_rate_of_180p_then_15_and_30_fps_of_larger_layers() {
        let r = |s: &str| Rid::from(s);
        // Without temporal layers: one step per simulcast layer, nominal prices.
        let (rids, kbps) = ladder(&[r("h"), r("q"), r("f")], &TrackLayers::default());
        assert_eq!(rids, vec![(r("q"), u8::MAX), (r("h"), u8::MAX), (r("f"), u8::MAX)]);
        assert_eq!(kbps, vec![150, 500, 1500]);
        // L1T3 on every layer (prices still nominal: 40 / 60 / 100% of each layer).
        let mut rates = TrackLayers::default();
        let t0 = std::time::Instant::now();
        for layer in 1..=3 {
            for tid in [0, 1, 2] {
                rates.record(t0, layer, Some(tid), 100);
            }
        }
        let (rids, kbps) = ladder(&[r("q"), r("h"), r("f")], &rates);
        let want = [(r("q"), 0), (r("q"), 1), (r("q"), u8::MAX), (r("h"), 1), (r("h"), u8::MAX), (r("f"), 1)];
        assert_eq!(rids[..6], want);
        assert_eq!(rids[6], (r("f"), u8::MAX));
        assert_eq!(kbps, vec![60, 90, 150, 300, 500, 900, 1500]);
        assert!(kbps.windows(2).all(|w| w[0] < w[1]), "prices rise with the ladder: {kbps:?}");
    }
}
