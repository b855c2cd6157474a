//! [`SyntheticSite`]: one real WebRTC endpoint (str0m as a client: full ICE, controlling; DTLS; SRTP) behind its own
//! emulated link, measuring what it receives and optionally publishing synthetic media.
//!
//! Sans-IO, like the `Rtc` inside it. The caller owns the socket and the clock:
//! - [`SyntheticSite::new`] makes the offer (VP8 and Opus only; the site's socket address as its one host
//!   candidate); [`apply_answer`](SyntheticSite::apply_answer) takes the bridge's answer;
//! - [`handle_datagram`](SyntheticSite::handle_datagram) takes what the socket received from the bridge: it enters the
//!   link's `Down` direction and reaches the `Rtc` when the link delivers it;
//! - [`handle_timeout`](SyntheticSite::handle_timeout) at [`poll_timeout`](SyntheticSite::poll_timeout) (the earliest
//!   of the `Rtc`'s timeout, the link's next delivery and the publisher's next packet);
//! - every call appends the datagrams the link delivers towards the bridge (`Up`) to the caller's buffer: the site
//!   sends nothing to the network any other way.
//!
//! After every mutation of the `Rtc` (input, timeout, RTP written, keyframe requested) `poll_output` is drained to
//! `Timeout`, as the bridge's shards do.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use diemcau_fec::Decoder;
use diemcau_netem::{Direction as LinkDir, LinkPair, Profile, Timeline};
use diemcau_proto::Role;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::format::VideoFecPts;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RedDecoder, RtpWrite, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tracing::{debug, trace};

use crate::DrillError;
use crate::metrics::{LinkReport, Metrics, PacketInfo, SiteReport};
use crate::publisher::{OutPacket, Publisher, PublisherConfig, SIMULCAST_RIDS};

/// Bytes of IPv4 + UDP header counted against the emulated link's capacity for every datagram.
pub const IP_UDP_OVERHEAD: usize = 28;
/// At most one keyframe request (PLI) per this interval per site.
const PLI_INTERVAL: Duration = Duration::from_secs(1);
/// Receive buffers kept for reuse.
const POOL: usize = 32;
/// Rounds of "deliver what is due, run what is due" per call, at most.
const MAX_ROUNDS: usize = 16;

/// A UDP datagram: to `addr` when it goes to the bridge, from `addr` when it comes from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The bridge's address (destination going up, source coming down).
    pub addr: SocketAddr,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// How to make a [`SyntheticSite`].
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// The site's id in the directory (for the report).
    pub site_id: i64,
    /// The role the bridge welcomed it as: a chair also offers `recv_video_slots` + `recv_audio_slots` slots.
    pub role: Role,
    /// The link preset's name (for the report).
    pub profile_name: String,
    /// Its link.
    pub profile: Profile,
    /// Scripted link changes from the join start.
    pub timeline: Timeline,
    /// Seeds the link and the publisher.
    pub seed: u64,
    /// The site's UDP socket address: its one ICE host candidate.
    pub local_addr: SocketAddr,
    /// Publish synthetic camera and microphone (`sendrecv`); `None` receives only (`recvonly`).
    pub publish: Option<PublisherConfig>,
    /// Extra receive-only video slots (a chair's grid size).
    pub recv_video_slots: u32,
    /// Extra receive-only audio slots (a chair's audio slots).
    pub recv_audio_slots: u32,
}

/// One synthetic site: an `Rtc` client, its emulated link, its metrics and its optional publisher.
pub struct SyntheticSite {
    site_id: i64,
    role: Role,
    profile_name: String,
    local_addr: SocketAddr,
    seed: u64,
    rtc: Rtc,
    rtc_timeout: Instant,
    link: LinkPair<Datagram>,
    metrics: Metrics,
    publish: Option<PublisherConfig>,
    publisher: Option<Publisher>,
    /// The other simulcast layers (`q`, `f`), video only, when publishing simulcast; `publisher` is then `h`.
    layers: Vec<(Rid, Publisher)>,
    pending: Option<SdpPendingOffer>,
    audio_mid: Mid,
    video_mid: Mid,
    pt_vp8: Option<Pt>,
    pt_opus: Option<Pt>,
    /// The RED payload type wrapping Opus (RFC 2198), when the bridge sends redundant audio.
    pt_red: Option<Pt>,
    /// ULPFEC in RED on video, when negotiated (the bridge sends it toward lossy links).
    pt_fec: Option<VideoFecPts>,
    /// The RTP headers of the video RED packets as they came (SRTP leaves them in the clear), by SSRC and sequence
    /// number: FEC protects them byte for byte, and str0m hands over only the parsed header.
    raw_headers: HashMap<(u32, u16), Vec<u8>>,
    raw_order: VecDeque<(u32, u16)>,
    /// One FEC decoder per video slot.
    fec_rx: HashMap<Mid, Decoder>,
    ssrc_mid: HashMap<Ssrc, (Mid, MediaKind)>,
    connected: bool,
    alive: bool,
    last_pli: Option<Instant>,
    scratch: Vec<OutPacket>,
    pool: Vec<Vec<u8>>,
    datagrams_in: u64,
    error: Option<String>,
}

impl std::fmt::Debug for SyntheticSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticSite")
            .field("site_id", &self.site_id)
            .field("profile", &self.profile_name)
            .field("local_addr", &self.local_addr)
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

/// How many video RED headers are kept for FEC (about 4 s of 180p at a VSAT site, well over a second at 720p).
const RAW_HEADERS: usize = 512;

/// What every synthetic site negotiates: VP8 and Opus (with RED), in RTP mode, and ULPFEC in RED on received video
/// with the payload types Chromium uses.
fn rtc_config() -> RtcConfig {
    let mut cfg = RtcConfig::new().set_rtp_mode(true).clear_codecs().enable_opus(true, true).enable_vp8(true);
    let fec = VideoFecPts { red: 118.into(), red_rtx: Some(119.into()), ulpfec: 120.into() };
    cfg.codec_config().set_video_fec(Codec::Vp8, Some(fec), false);
    cfg
}

/// SSRC, sequence number and header bytes of an RTP packet of payload type `pt` (SRTP keeps the header in the
/// clear); `None` for anything else (STUN, DTLS, RTCP, another payload type, too short).
fn red_header(d: &[u8], pt: u8) -> Option<(u32, u16, &[u8])> {
    if d.len() < 12 || d[0] >> 6 != 2 || d[1] & 0x7f != pt {
        return None;
    }
    let n = rtp_header_len(d)?;
    let seq = u16::from_be_bytes([d[2], d[3]]);
    let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
    Some((ssrc, seq, d.get(..n)?))
}

/// The length of an RTP header (CSRCs and extensions included), if `d` holds one.
fn rtp_header_len(d: &[u8]) -> Option<usize> {
    let mut n = 12 + 4 * usize::from(*d.first()? & 0x0f);
    if d[0] & 0x10 != 0 {
        let words = u16::from_be_bytes([*d.get(n + 2)?, *d.get(n + 3)?]);
        n += 4 + 4 * usize::from(words);
    }
    (n <= d.len()).then_some(n)
}

/// Sequence number, timestamp, marker and payload of a plain RTP packet (one FEC rebuilt).
fn rtp_fields(d: &[u8]) -> Option<(u16, u32, bool, &[u8])> {
    let n = rtp_header_len(d)?;
    let seq = u16::from_be_bytes([*d.get(2)?, *d.get(3)?]);
    let ts = u32::from_be_bytes([*d.get(4)?, *d.get(5)?, *d.get(6)?, *d.get(7)?]);
    Some((seq, ts, d[1] & 0x80 != 0, &d[n..]))
}

impl SyntheticSite {
    /// A site whose join started at `join_start`, and its SDP offer for the bridge.
    pub fn new(now: Instant, join_start: Instant, cfg: SiteConfig) -> Result<(Self, String), DrillError> {
        let link = LinkPair::new(join_start, cfg.profile.clone(), cfg.timeline.clone(), cfg.seed)?;
        let mut rtc = rtc_config().build(now);
        let cand =
            Candidate::host(cfg.local_addr, "udp").map_err(|e| DrillError::Sdp(format!("host candidate: {e}")))?;
        rtc.add_local_candidate(cand);
        let dir = if cfg.publish.is_some() { Direction::SendRecv } else { Direction::RecvOnly };
        let mut api = rtc.sdp_api();
        let audio_mid = api.add_media(MediaKind::Audio, dir, None, None, None);
        let simulcast = cfg.publish.as_ref().is_some_and(|p| p.simulcast && p.video).then(|| {
            let mut s = Simulcast::new();
            for rid in SIMULCAST_RIDS {
                s.add_send_layer(SimulcastLayer::new(rid));
            }
            s
        });
        let video_mid = api.add_media(MediaKind::Video, dir, None, None, simulcast);
        if cfg.role == Role::Chair {
            for _ in 0..cfg.recv_video_slots {
                api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
            }
            for _ in 0..cfg.recv_audio_slots {
                api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
            }
        }
        let (offer, pending) = api.apply().ok_or_else(|| DrillError::Sdp("str0m made no offer".into()))?;
        let mut site = Self::assemble(now, join_start, cfg, rtc, link, audio_mid, video_mid);
        site.pending = Some(pending);
        site.drain(now);
        Ok((site, offer.to_sdp_string()))
    }

    /// A site that *answers* `offer` (a peer that offers first, e.g. Janus' VideoRoom to a subscriber), whose join
    /// started at `join_start`, and its SDP answer. str0m then is ICE-controlled; the site's socket address is its one
    /// host candidate, in the answer. It receives what the offer sends (`recvonly` to a `sendonly` m-line) and
    /// publishes only if `cfg.publish` is set and the offer lets it send. Its audio and video slots are the offer's
    /// first audio and first video m-lines (there must be a video one); payload types are the negotiated ones, so the
    /// metrics measure exactly as for [`new`](Self::new). `cfg.role` chair slots do not apply (the offer decides).
    /// Candidates the offerer trickles later go to [`add_remote_candidate`](Self::add_remote_candidate).
    pub fn new_answerer(
        now: Instant,
        join_start: Instant,
        cfg: SiteConfig,
        offer_sdp: &str,
    ) -> Result<(Self, String), DrillError> {
        let link = LinkPair::new(join_start, cfg.profile.clone(), cfg.timeline.clone(), cfg.seed)?;
        let offer = SdpOffer::from_sdp_string(offer_sdp).map_err(|e| DrillError::Sdp(format!("bad offer: {e}")))?;
        let mut rtc = rtc_config().build(now);
        let cand =
            Candidate::host(cfg.local_addr, "udp").map_err(|e| DrillError::Sdp(format!("host candidate: {e}")))?;
        rtc.add_local_candidate(cand);
        let answer =
            rtc.sdp_api().accept_offer(offer).map_err(|e| DrillError::Sdp(format!("offer not accepted: {e}")))?;
        let mut audio_mid = None;
        let mut video_mid = None;
        for mid in offer_sdp.lines().filter_map(|l| l.trim().strip_prefix("a=mid:")).map(|m| Mid::from(m.trim())) {
            match rtc.media(mid).map(|m| m.kind()) {
                Some(MediaKind::Audio) if audio_mid.is_none() => audio_mid = Some(mid),
                Some(MediaKind::Video) if video_mid.is_none() => video_mid = Some(mid),
                _ => {}
            }
        }
        let video_mid = video_mid.ok_or_else(|| DrillError::Sdp("the offer has no video m-line".into()))?;
        // No audio m-line: a mid no media has, so nothing is ever sent on it.
        let audio_mid = audio_mid.unwrap_or_else(|| Mid::from("-"));
        let mut site = Self::assemble(now, join_start, cfg, rtc, link, audio_mid, video_mid);
        site.learn_payload_types();
        site.drain(now);
        Ok((site, answer.to_sdp_string()))
    }

    /// A candidate the remote peer trickled: `candidate:…` as in an SDP attribute (`a=` or not). Janus sends them
    /// this way only with `full_trickle`; otherwise they are in its SDP already.
    pub fn add_remote_candidate(&mut self, cand_sdp_line: &str) -> Result<(), DrillError> {
        let line = cand_sdp_line.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        let cand = Candidate::from_sdp_string(line)
            .map_err(|e| DrillError::Sdp(format!("bad remote candidate {line:?}: {e}")))?;
        self.rtc.add_remote_candidate(cand);
        Ok(())
    }

    fn assemble(
        now: Instant,
        join_start: Instant,
        cfg: SiteConfig,
        rtc: Rtc,
        link: LinkPair<Datagram>,
        audio_mid: Mid,
        video_mid: Mid,
    ) -> Self {
        Self {
            site_id: cfg.site_id,
            role: cfg.role,
            profile_name: cfg.profile_name,
            local_addr: cfg.local_addr,
            seed: cfg.seed,
            rtc,
            rtc_timeout: now,
            link,
            metrics: Metrics::new(join_start),
            publish: cfg.publish,
            publisher: None,
            layers: Vec::new(),
            pending: None,
            audio_mid,
            video_mid,
            pt_vp8: None,
            pt_opus: None,
            pt_red: None,
            pt_fec: None,
            raw_headers: HashMap::new(),
            raw_order: VecDeque::new(),
            fec_rx: HashMap::new(),
            ssrc_mid: HashMap::new(),
            connected: false,
            alive: true,
            last_pli: None,
            scratch: Vec::new(),
            pool: Vec::new(),
            datagrams_in: 0,
            error: None,
        }
    }

    /// The VP8 and Opus payload types, once negotiated.
    fn learn_payload_types(&mut self) {
        for p in self.rtc.codec_config().params() {
            match p.spec().codec {
                Codec::Vp8 if self.pt_vp8.is_none() => {
                    self.pt_vp8 = Some(p.pt());
                    self.pt_fec = p.video_fec();
                }
                Codec::Opus if self.pt_opus.is_none() => {
                    self.pt_opus = Some(p.pt());
                    self.pt_red = p.red();
                }
                _ => {}
            }
        }
    }

    /// Video inside RED: media (block PT = VP8) is measured and kept for FEC; ULPFEC (block PT = ulpfec) rebuilds
    /// what it can of its group, and what it rebuilds is measured as received. A packet whose header did not come
    /// with it (a resend, through RTX) is measured and not kept.
    fn on_video_red(&mut self, now: Instant, mid: Mid, p: &str0m::rtp::RtpPacket, fec: VideoFecPts) {
        // One block, without a RED header list (F = 0), as libwebrtc and the bridge send video RED.
        let Some((&block, body)) = p.payload.split_first() else { return };
        if block & 0x80 != 0 {
            return;
        }
        let seq = *p.seq_no;
        let seq16 = p.header.sequence_number;
        let header = self.raw_headers.remove(&(*p.header.ssrc, seq16));
        let decoder = self.fec_rx.entry(mid).or_default();
        let recovered = if block == *fec.ulpfec {
            self.metrics.on_fec_packet(now, mid, seq, body.len());
            decoder.add_fec(seq16, body).unwrap_or_default()
        } else if self.pt_vp8.is_some_and(|vp8| *vp8 == block) {
            let (ts, marker) = (p.header.timestamp, p.header.marker);
            self.metrics.on_packet(now, PacketInfo { mid, kind: MediaKind::Video, seq, ts, marker, payload: body });
            match header {
                Some(mut h) => {
                    h[1] = (h[1] & 0x80) | block;
                    h.extend_from_slice(body);
                    decoder.add_media(&h).unwrap_or_default()
                }
                None => Vec::new(),
            }
        } else {
            return;
        };
        for r in recovered {
            let Some((rseq, ts, marker, payload)) = rtp_fields(&r) else { continue };
            // The rebuilt packet's place in the extended numbering: near the packet that rebuilt it.
            let back = i64::from(seq16.wrapping_sub(rseq) as i16);
            let Some(rseq) = seq.checked_add_signed(-back) else { continue };
            self.metrics
                .on_fec_recovered(now, PacketInfo { mid, kind: MediaKind::Video, seq: rseq, ts, marker, payload });
        }
    }

    /// Changes the video bitrate it publishes (a link check's uplink steps); no effect when it does not publish.
    pub fn set_video_kbps(&mut self, kbps: u32) {
        if let Some(cfg) = self.publish.as_mut() {
            cfg.video_kbps = kbps.max(1);
        }
        if let Some(p) = self.publisher.as_mut() {
            p.set_video_kbps(kbps);
        }
    }

    /// Applies the bridge's answer to our offer.
    pub fn apply_answer(&mut self, now: Instant, sdp: &str) -> Result<(), DrillError> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| DrillError::Sdp(format!("bad answer: {e}")))?;
        let pending = self.pending.take().ok_or_else(|| DrillError::Sdp("no offer is pending".into()))?;
        let res = self.rtc.sdp_api().accept_answer(pending, answer);
        self.drain(now);
        res.map_err(|e| DrillError::Sdp(format!("answer not accepted: {e}")))?;
        self.learn_payload_types();
        Ok(())
    }

    /// Answers an offer from the bridge (renegotiation it starts; the v1 bridge never does).
    pub fn handle_offer(&mut self, now: Instant, sdp: &str) -> Result<String, DrillError> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| DrillError::Sdp(format!("bad offer: {e}")))?;
        self.pending = None;
        let res = self.rtc.sdp_api().accept_offer(offer);
        self.drain(now);
        let answer = res.map_err(|e| DrillError::Sdp(format!("offer not accepted: {e}")))?;
        Ok(answer.to_sdp_string())
    }

    /// A datagram the site's socket received from `from`. It goes through the link's `Down` direction first.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8], out: &mut Vec<Datagram>) {
        self.datagrams_in += 1;
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(bytes);
        self.link.send(now, LinkDir::Down, bytes.len() + IP_UDP_OVERHEAD, Datagram { addr: from, bytes: buf });
        // Usually the link holds it for its delay: then there is nothing to do until `poll_timeout`.
        if self.poll_timeout() <= now {
            self.run(now, out);
        }
    }

    /// Time has come (see [`poll_timeout`](Self::poll_timeout)).
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Datagram>) {
        self.run(now, out);
    }

    /// When the site next needs [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self) -> Instant {
        let publisher = if self.connected { self.next_publish() } else { None };
        [Some(self.rtc_timeout), self.link.poll_timeout(), publisher]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.rtc_timeout)
    }

    /// Gives back a buffer (e.g. of a sent [`Datagram`]) for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < POOL {
            self.pool.push(buf);
        }
    }

    /// The site's id in the directory.
    pub fn site_id(&self) -> i64 {
        self.site_id
    }

    /// ICE and DTLS are up (and were not lost since).
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The `Rtc` is still alive.
    pub fn is_alive(&self) -> bool {
        self.alive
    }

    /// The site's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The site's metrics, to sample rates.
    pub fn metrics_mut(&mut self) -> &mut Metrics {
        &mut self.metrics
    }

    /// The publisher, once connected (when publishing).
    pub fn publisher(&self) -> Option<&Publisher> {
        self.publisher.as_ref()
    }

    /// The site's socket address (its ICE candidate).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Datagrams handed to [`handle_datagram`](Self::handle_datagram).
    pub fn datagrams_in(&self) -> u64 {
        self.datagrams_in
    }

    /// The site's report as of `now`.
    pub fn report(&self, now: Instant) -> SiteReport {
        let mut r = self.metrics.summary(now);
        let link = self.link.stats();
        r.site_id = self.site_id;
        r.profile = self.profile_name.clone();
        r.role = self.role.as_str().to_owned();
        r.error = self.error.clone();
        r.link = LinkReport {
            down_delivered: link.down.delivered,
            down_dropped: link.down.dropped_loss + link.down.dropped_queue + link.down.dropped_outage,
            up_delivered: link.up.delivered,
            up_dropped: link.up.dropped_loss + link.up.dropped_queue + link.up.dropped_outage,
        };
        r.published = self.publisher.as_ref().map(|p| {
            let mut all = p.stats();
            for (_, layer) in &self.layers {
                let l = layer.stats();
                all.frames += l.frames;
                all.keyframes += l.keyframes;
                all.keyframe_requests += l.keyframe_requests;
                all.video_packets += l.video_packets;
                all.video_bytes += l.video_bytes;
            }
            all
        });
        r
    }

    fn run(&mut self, now: Instant, out: &mut Vec<Datagram>) {
        let mut timed_out = false;
        for _ in 0..MAX_ROUNDS {
            let mut progressed = false;
            while let Some((dir, d)) = self.link.poll_deliver(now) {
                progressed = true;
                match dir {
                    LinkDir::Up => out.push(d),
                    LinkDir::Down => self.receive(now, d),
                }
            }
            if !timed_out && self.rtc_timeout <= now {
                timed_out = true;
                progressed = true;
                if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
                    debug!(site = self.site_id, "timeout input failed: {e}");
                }
                self.drain(now);
            }
            if self.connected && self.next_publish().is_some_and(|t| t <= now) {
                progressed = true;
                self.publish(now);
            }
            if let Some(mid) = self.metrics.stuck_video(now)
                && self.last_pli.is_none_or(|t| now.saturating_duration_since(t) >= PLI_INTERVAL)
            {
                self.last_pli = Some(now);
                self.metrics.on_keyframe_request();
                self.metrics.reset_stuck(mid, now);
                if let Some(rx) = self.rtc.direct_api().stream_rx_by_mid(mid, None) {
                    rx.request_keyframe(KeyframeRequestKind::Pli);
                }
                self.drain(now);
            }
            if !progressed {
                break;
            }
        }
    }

    fn receive(&mut self, now: Instant, d: Datagram) {
        if let Some(fec) = self.pt_fec
            && let Some((ssrc, seq, header)) = red_header(&d.bytes, *fec.red)
        {
            if self.raw_headers.insert((ssrc, seq), header.to_vec()).is_none() {
                self.raw_order.push_back((ssrc, seq));
            }
            while self.raw_order.len() > RAW_HEADERS {
                if let Some(k) = self.raw_order.pop_front() {
                    self.raw_headers.remove(&k);
                }
            }
        }
        match Receive::new(Protocol::Udp, d.addr, self.local_addr, &d.bytes) {
            Ok(recv) => {
                if let Err(e) = self.rtc.handle_input(Input::Receive(now, recv)) {
                    trace!(site = self.site_id, "input rejected: {e}");
                }
            }
            Err(e) => trace!(site = self.site_id, "unparseable datagram: {e}"),
        }
        self.recycle(d.bytes);
        self.drain(now);
    }

    /// When the next packet of any publisher (the main one and the simulcast layers) is due.
    fn next_publish(&self) -> Option<Instant> {
        let main = self.publisher.as_ref().and_then(Publisher::poll_timeout);
        self.layers.iter().filter_map(|(_, p)| p.poll_timeout()).chain(main).min()
    }

    fn publish(&mut self, now: Instant) {
        let Some(publisher) = &mut self.publisher else { return };
        let main_rid = (!self.layers.is_empty()).then(|| Rid::from("h"));
        let mut packets = std::mem::take(&mut self.scratch);
        publisher.poll_packets(now, &mut packets);
        Self::write(
            &mut self.rtc,
            &mut packets,
            main_rid,
            (self.audio_mid, self.pt_opus),
            (self.video_mid, self.pt_vp8),
        );
        for (rid, layer) in &mut self.layers {
            layer.poll_packets(now, &mut packets);
            Self::write(
                &mut self.rtc,
                &mut packets,
                Some(*rid),
                (self.audio_mid, self.pt_opus),
                (self.video_mid, self.pt_vp8),
            );
        }
        self.scratch = packets;
        // One drain for the whole burst (a video frame is several packets).
        self.drain(now);
    }

    /// Drains `poll_output` to `Timeout`: transmits enter the link's `Up` direction, events update the metrics.
    fn drain(&mut self, now: Instant) {
        loop {
            if !self.rtc.is_alive() {
                self.alive = false;
                self.connected = false;
                self.rtc_timeout = now + Duration::from_secs(3600);
                return;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.rtc_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let bytes: Vec<u8> = t.contents.into();
                    let size = bytes.len() + IP_UDP_OVERHEAD;
                    self.link.send(now, LinkDir::Up, size, Datagram { addr: t.destination, bytes });
                }
                Ok(Output::Event(e)) => self.on_event(now, e),
                Err(e) => {
                    debug!(site = self.site_id, "rtc failed: {e}");
                    self.error.get_or_insert_with(|| format!("WebRTC failed: {e}"));
                    self.rtc.disconnect();
                }
            }
        }
    }

    /// Writes `packets` (draining it); video on simulcast layer `rid` when given.
    fn write(
        rtc: &mut Rtc,
        packets: &mut Vec<OutPacket>,
        rid: Option<Rid>,
        audio: (Mid, Option<Pt>),
        video: (Mid, Option<Pt>),
    ) {
        let mut api = rtc.direct_api();
        for p in packets.drain(..) {
            let ((mid, pt), rid) = match p.kind {
                MediaKind::Audio => (audio, None),
                MediaKind::Video => (video, rid),
            };
            let (Some(pt), Some(tx)) = (pt, api.stream_tx_by_mid(mid, rid)) else { continue };
            tx.write_rtp(
                RtpWrite::new(pt, p.seq.into(), p.ts, p.capture, p.payload)
                    .marker(p.marker)
                    .nackable(p.kind == MediaKind::Video),
            );
        }
    }

    fn on_event(&mut self, now: Instant, e: Event) {
        match e {
            Event::Connected => {
                self.connected = true;
                self.metrics.on_connected(now);
                if let Some(cfg) = &self.publish
                    && self.publisher.is_none()
                {
                    self.publisher = Some(Publisher::new(cfg.clone(), now, self.seed ^ 0x70b1_15e7));
                    if cfg.simulcast && cfg.video {
                        for (i, rid) in SIMULCAST_RIDS.into_iter().enumerate().filter(|(_, r)| *r != "h") {
                            let p = Publisher::new(cfg.layer(rid), now, self.seed ^ (0x51_0000 + i as u64));
                            self.layers.push((Rid::from(rid), p));
                        }
                    }
                }
                debug!(site = self.site_id, "connected");
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                if !self.metrics.connected() {
                    self.error.get_or_insert_with(|| "ICE failed: no answer to the connectivity checks".into());
                }
                self.connected = false;
                debug!(site = self.site_id, "ICE disconnected");
            }
            Event::RtpPacket(p) => {
                let ssrc = p.header.ssrc;
                let found = match self.ssrc_mid.get(&ssrc) {
                    Some(v) => Some(*v),
                    None => {
                        let mid = self.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid());
                        let kind = mid.and_then(|m| self.rtc.media(m).map(|md| md.kind()));
                        let v = mid.zip(kind);
                        if let Some(v) = v {
                            self.ssrc_mid.insert(ssrc, v);
                        }
                        v
                    }
                };
                let Some((mid, kind)) = found else { return };
                let seq = *p.seq_no;
                let (ts, marker) = (p.header.timestamp, p.header.marker);
                if kind == MediaKind::Audio && self.pt_red.is_some_and(|red| red == p.header.payload_type) {
                    // RED (RFC 2198): the primary block is this packet; a redundant block `n` places before the
                    // primary (one level here: the packet before) is seq − n, and counts as a repair if that
                    // one was lost. A malformed payload counts as nothing received.
                    let Ok(blocks) = RedDecoder::decode(&p.payload) else { return };
                    let Some(primary) = blocks.iter().find(|b| b.is_primary) else { return };
                    self.metrics.on_packet(now, PacketInfo { mid, kind, seq, ts, marker, payload: primary.payload });
                    let redundant = blocks.iter().filter(|b| !b.is_primary).rev();
                    for (back, b) in (1u64..).zip(redundant) {
                        let Some(seq) = seq.checked_sub(back) else { break };
                        let ts = ts.wrapping_sub(b.timestamp_offset);
                        self.metrics
                            .on_packet(now, PacketInfo { mid, kind, seq, ts, marker: false, payload: b.payload });
                    }
                    return;
                }
                if kind == MediaKind::Video
                    && let Some(fec) = self.pt_fec.filter(|f| f.red == p.header.payload_type)
                {
                    self.on_video_red(now, mid, &p, fec);
                    return;
                }
                self.metrics.on_packet(now, PacketInfo { mid, kind, seq, ts, marker, payload: &p.payload });
            }
            Event::KeyframeRequest(r) => {
                if r.mid != self.video_mid {
                    return;
                }
                // A request names its layer (rid) under simulcast; the main publisher is `h`, or the only one.
                let main = r.rid.is_none() || self.layers.is_empty() || r.rid == Some(Rid::from("h"));
                if main && let Some(p) = &mut self.publisher {
                    p.request_keyframe();
                }
                for (rid, p) in &mut self.layers {
                    if r.rid.is_none() || r.rid == Some(*rid) {
                        p.request_keyframe();
                    }
                }
            }
            _ => {}
        }
    }
}
