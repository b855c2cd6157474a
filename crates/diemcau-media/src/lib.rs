//! The data plane of diemcau: a selective-forwarding unit on [str0m].
//!
//! ```text
//!             ┌──────────── shard 0 (thread, UDP socket, its peers' Rtc) ─────────────┐
//!  UDP in ──▶ │ demux: address → peer, else STUN USERNAME ufrag → peer (hash maps)    │
//!             │ Rtc::handle_input → Event::RtpPacket ──▶ Arc<Forwarded> ──▶ every shard│
//!             │ per subscriber slot: rewrite seq/ts → StreamTx::write_rtp → seal → UDP │
//!             └───────────────────────────────────────────────────────────────────────┘
//! ```
//! * One [`str0m::Rtc`] per peer, in RTP mode, ICE-lite. Peers are spread over `shards` threads; each thread owns its
//!   UDP socket and the `Rtc`s of its peers, so no lock is taken on the packet path.
//! * A publisher's packet is parsed once, wrapped in an `Arc` ([`Forwarded`]) and handed to every shard; each shard
//!   writes it into its subscribers' `Rtc`s, which encrypt per subscriber.
//! * What a subscriber receives is decided outside, by the signalling layer: it assigns each *slot* (an outgoing `mid`
//!   of a peer) a source track with [`Media::set_slot`]. A slot switch is seamless (see [`rewrite`]).
//! * Simulcast: each layer (rid) of a publisher is its own rewriter source. With `adaptive` on (the default), str0m
//!   estimates the bandwidth toward every subscriber (TWCC, GoogCC, from 300 kbit/s, probing toward what the subscriber could use)
//!   and the [`alloc`]ator turns the estimate into a target layer per slot — or none, below the audio budget; a slot
//!   moves to its target at that layer's keyframe (asked for, at most one per 500 ms per track, whichever layer) while the old layer
//!   goes on. Without an estimate (or `adaptive` off) a slot gets `h` when sent, else the lowest.
//! * Every forwarded copy's delay (received → sealed and sent) goes into a per-shard [`histogram`]
//!   ([`Media::forward_delays`]).
//! * NACK/RTX both ways and RTCP are str0m's; keyframe requests from subscribers are forwarded to the publisher, at
//!   most one per [`KEYFRAME_REQUEST_INTERVAL`] per track.
//!
//! The crate is IO at its edges only: [`rewrite`] and [`vp8`] are pure and unit-tested; [`Media`] is the handle the
//! rest of the bridge uses.

pub mod alloc;
pub mod fec;
pub mod histogram;
pub mod keyframe;
pub mod layers;
pub mod red;
pub mod rewrite;
mod shard;
pub mod vp8;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

pub use shard::Forwarded;

/// At most one keyframe request per this interval reaches a publisher's track, however many subscribers ask.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// Where the bandwidth estimate toward a new peer starts, kbit/s, unless told otherwise ([`Media::offer_starting_at`]):
/// low, as a weak link must not be flooded before the first feedback.
pub const INITIAL_ESTIMATE_KBPS: u32 = 300;
/// The lowest start [`Media::offer_starting_at`] takes.
pub const MIN_INITIAL_ESTIMATE_KBPS: u32 = 64;

/// Identifies one peer (one WebSocket session with media) for the lifetime of the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PeerId(pub u64);

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Kind {
    /// Opus.
    Audio,
    /// VP8.
    Video,
}

/// One publishing track: the audio or the video a peer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct TrackId {
    /// The publisher.
    pub peer: PeerId,
    /// Which of its tracks.
    pub kind: Kind,
}

impl TrackId {
    /// A number unique per track, used by the slot rewriter.
    pub(crate) fn as_u64(self) -> u64 {
        self.peer.0 << 1 | u64::from(self.kind == Kind::Video)
    }
}

/// Configuration of the data plane.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Address the UDP sockets bind to.
    pub bind_ip: IpAddr,
    /// First UDP port; shard `i` binds `port + i`. `0` picks ephemeral ports.
    pub port: u16,
    /// Address written in ICE candidates (for NAT); defaults to `bind_ip`.
    pub advertise_ip: Option<IpAddr>,
    /// Number of shard threads; `0` means one per core.
    pub shards: usize,
    /// Per-subscriber adaptation: estimate each subscriber's downlink (TWCC, str0m's GoogCC) and choose each of its
    /// simulcast slots' layers with the [`alloc`]ator (on by default, see config/default.toml). Off: every subscriber
    /// gets the 360p layer (`h`), else the lowest.
    pub adaptive: bool,
    /// Video FEC (ULPFEC in RED, docs/adr/0004) toward the subscribers whose receiver reports show loss, on the
    /// video lines where they offer it (on by default). Off: video is repaired by NACK/RTX alone.
    pub video_fec: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            advertise_ip: None,
            shards: 0,
            adaptive: true,
            video_fec: true,
        }
    }
}

/// Errors of the data plane, separated by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The remote sent an SDP we cannot use.
    #[error("invalid SDP from the peer: {0}")]
    BadSdp(String),
    /// The peer is not known (already gone).
    #[error("unknown peer {0:?}")]
    UnknownPeer(PeerId),
    /// The data plane is shutting down or a shard is gone.
    #[error("media shard unavailable")]
    Unavailable,
    /// Socket setup failed.
    #[error("media socket: {0}")]
    Io(#[from] std::io::Error),
}

/// A receiving slot of a peer: a `mid` the bridge may send on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotInfo {
    /// The transceiver's mid.
    pub mid: String,
    /// Audio or video.
    pub kind: Kind,
    /// The peer also publishes on this mid (a `sendrecv` transceiver).
    pub duplex: bool,
}

/// Result of accepting a peer's offer.
#[derive(Debug, Clone)]
pub struct Negotiated {
    /// The SDP answer.
    pub answer: String,
    /// The tracks the peer publishes (at most one audio and one video are forwarded).
    pub publishes: Vec<Kind>,
    /// The slots the bridge may fill, in m-line order.
    pub slots: Vec<SlotInfo>,
}

/// What the data plane tells the rest of the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// ICE and DTLS are up: media flows.
    Connected(PeerId),
    /// The peer's media is gone (ICE timeout, DTLS close, or removed).
    Disconnected(PeerId),
    /// Every video the peer receives is paused (`true`: its link has room for audio only) or one resumed (`false`).
    AudioOnly(PeerId, bool),
    /// How loud each publisher's microphone was over the last [`LEVELS_INTERVAL`], from its packets' RFC 6464 audio
    /// level: 0 (silence, −127 dBov) to 127 (0 dBov), the mean over the packets. Publishers whose packets carry no
    /// level are not listed. Sent by each shard for its own publishers.
    AudioLevels(Vec<(PeerId, u8)>),
}

/// How often each shard reports its publishers' audio levels.
pub const LEVELS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Per-peer statistics, refreshed about once a second by the peer's shard.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerStats {
    /// Shard index owning the peer.
    pub shard: usize,
    /// ICE/DTLS connected.
    pub connected: bool,
    /// Bitrate received from the peer, kbit/s.
    pub kbps_in: Option<f64>,
    /// Bitrate sent to the peer, kbit/s.
    pub kbps_out: Option<f64>,
    /// Loss toward the peer as it reports it (RTCP RR), percent.
    pub loss_pct: Option<f64>,
    /// Round-trip time, ms.
    pub rtt_ms: Option<f64>,
    /// RTP packets forwarded to the peer.
    pub packets_out: u64,
    /// RTP packets received from the peer.
    pub packets_in: u64,
    /// Of which audio (its microphone).
    pub audio_packets_in: u64,
    /// Of which video (its camera or screen).
    pub video_packets_in: u64,
    /// Loss from the peer as the bridge's receiver reports count it, percent.
    pub loss_in_pct: Option<f64>,
    /// Link-check probe packets sent to the peer.
    pub probe_packets: u64,
    /// Link-check probe payload bytes sent to the peer.
    pub probe_bytes: u64,
    /// The bridge's estimate of the bandwidth toward the peer, kbit/s (adaptive mode).
    pub estimate_kbps: Option<f64>,
    /// The simulcast layers of the peer's camera seen arriving, in the order first seen.
    pub layers_in: Vec<LayerIn>,
}

/// One simulcast layer a peer sends, as the bridge sees it arrive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerIn {
    /// Its RTP stream id (`q`, `h`, `f`).
    pub rid: String,
    /// How many temporal layers it carries (VP8 TID): 3 for L1T3, 1 without.
    pub temporal_layers: u8,
    /// Its measured bitrate with headers, kbit/s (`None` until a second of it has arrived).
    pub kbps: Option<u32>,
}

pub(crate) type StatsMap = Arc<Mutex<HashMap<PeerId, PeerStats>>>;

pub(crate) enum Command {
    /// `estimate`: run the bandwidth estimator for this peer from this many kbit/s (adaptive mode; never for a link
    /// check, whose probe must not be paced by it).
    Offer {
        peer: PeerId,
        sdp: String,
        estimate: Option<u32>,
        reply: oneshot::Sender<Result<Negotiated, MediaError>>,
    },
    Remove {
        peer: PeerId,
    },
    SetSlot {
        peer: PeerId,
        mid: String,
        source: Option<TrackId>,
    },
    Probe {
        peer: PeerId,
        kbps: u32,
        packet_bytes: usize,
    },
    /// `peer` holds the floor (`on`) or no longer does.
    Floor {
        peer: PeerId,
        on: bool,
    },
    Shutdown,
}

pub(crate) enum ShardMsg {
    Command(Command),
    Forward(Arc<Forwarded>),
    /// A keyframe of `track`, of one simulcast layer (`None`: the layer forwarded by default).
    KeyframeRequest(TrackId, Option<str0m::media::Rid>),
}

/// Handle to the running data plane. Cheap to share behind an `Arc`.
pub struct Media {
    shards: Vec<mpsc::UnboundedSender<ShardMsg>>,
    addrs: Vec<SocketAddr>,
    placement: Mutex<HashMap<PeerId, usize>>,
    stats: StatsMap,
    threads: Mutex<Vec<JoinHandle<()>>>,
    delays: Vec<Arc<histogram::DelayHistogram>>,
}

impl Media {
    /// Binds the shard sockets and starts the shard threads. Events arrive on the returned receiver.
    pub fn start(cfg: &MediaConfig) -> Result<(Media, mpsc::UnboundedReceiver<MediaEvent>), MediaError> {
        let n = if cfg.shards == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            cfg.shards
        };
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let stats: StatsMap = Arc::default();
        let mut sockets = Vec::with_capacity(n);
        for i in 0..n {
            let port = if cfg.port == 0 { 0 } else { cfg.port.saturating_add(i as u16) };
            let sock = bind_udp(SocketAddr::new(cfg.bind_ip, port))?;
            sockets.push(sock);
        }
        let mut senders = Vec::with_capacity(n);
        let mut receivers = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            receivers.push(rx);
        }
        let mut addrs = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        let mut delays = Vec::with_capacity(n);
        for (i, (sock, rx)) in sockets.into_iter().zip(receivers).enumerate() {
            let local = sock.local_addr()?;
            let advertised = SocketAddr::new(cfg.advertise_ip.unwrap_or(local.ip()), local.port());
            addrs.push(local);
            let delay = Arc::new(histogram::DelayHistogram::default());
            delays.push(delay.clone());
            let shard = shard::Shard::new(i, advertised, senders.clone(), ev_tx.clone(), stats.clone(), delay, cfg);
            let handle =
                std::thread::Builder::new().name(format!("media-shard-{i}")).spawn(move || shard.run(sock, rx))?;
            threads.push(handle);
        }
        let media =
            Media { shards: senders, addrs, placement: Mutex::default(), stats, threads: Mutex::new(threads), delays };
        Ok((media, ev_rx))
    }

    /// The local addresses of the shard sockets.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    fn shard_of(&self, peer: PeerId) -> Option<usize> {
        self.placement.lock().ok()?.get(&peer).copied()
    }

    fn place(&self, peer: PeerId) -> usize {
        let Ok(mut placement) = self.placement.lock() else { return 0 };
        if let Some(s) = placement.get(&peer) {
            return *s;
        }
        // Least-loaded shard.
        let mut load = vec![0usize; self.shards.len()];
        for s in placement.values() {
            load[*s] += 1;
        }
        let shard = (0..load.len()).min_by_key(|i| load[*i]).unwrap_or(0);
        placement.insert(peer, shard);
        shard
    }

    fn send(&self, shard: usize, msg: ShardMsg) -> Result<(), MediaError> {
        self.shards.get(shard).ok_or(MediaError::Unavailable)?.send(msg).map_err(|_| MediaError::Unavailable)
    }

    /// Accepts an SDP offer from a peer: creates its `Rtc` on first use, renegotiates afterwards.
    pub async fn offer(&self, peer: PeerId, sdp: String) -> Result<Negotiated, MediaError> {
        self.offer_as(peer, sdp, Some(INITIAL_ESTIMATE_KBPS)).await
    }

    /// [`Media::offer`] with the bandwidth estimate toward the peer starting at `kbps` (its link's expected rate:
    /// a satellite site's first allocation must not send it the 180p layer it cannot carry). Used only when the
    /// peer is new.
    pub async fn offer_starting_at(&self, peer: PeerId, sdp: String, kbps: u32) -> Result<Negotiated, MediaError> {
        self.offer_as(peer, sdp, Some(kbps.clamp(MIN_INITIAL_ESTIMATE_KBPS, INITIAL_ESTIMATE_KBPS))).await
    }

    /// [`Media::offer`] for a link check's peer: no bandwidth estimator (its pacer would throttle the probe train
    /// the check measures with).
    pub async fn offer_link_check(&self, peer: PeerId, sdp: String) -> Result<Negotiated, MediaError> {
        self.offer_as(peer, sdp, None).await
    }

    async fn offer_as(&self, peer: PeerId, sdp: String, estimate: Option<u32>) -> Result<Negotiated, MediaError> {
        let shard = self.place(peer);
        let (reply, rx) = oneshot::channel();
        self.send(shard, ShardMsg::Command(Command::Offer { peer, sdp, estimate, reply }))?;
        let res = rx.await.map_err(|_| MediaError::Unavailable)?;
        if res.is_err()
            && let Ok(mut p) = self.placement.lock()
            && self.stats.lock().map(|s| !s.contains_key(&peer)).unwrap_or(true)
        {
            // The first offer failed: the peer was never created there.
            p.remove(&peer);
        }
        res
    }

    /// Removes a peer and everything it published or subscribed to.
    pub fn remove(&self, peer: PeerId) {
        let shard = self.placement.lock().ok().and_then(|mut p| p.remove(&peer));
        if let Some(shard) = shard {
            let _ = self.send(shard, ShardMsg::Command(Command::Remove { peer }));
        }
    }

    /// Makes slot `mid` of `peer` carry `source` (or nothing).
    pub fn set_slot(&self, peer: PeerId, mid: &str, source: Option<TrackId>) -> Result<(), MediaError> {
        let shard = self.shard_of(peer).ok_or(MediaError::UnknownPeer(peer))?;
        self.send(shard, ShardMsg::Command(Command::SetSlot { peer, mid: mid.to_string(), source }))
    }

    /// Marks `peer` as holding the floor of its meeting (`on`) or not: every subscriber's allocation then ranks its
    /// audio and video as the floor holder's (after the chair's audio, after the chair's video, before the tiles).
    pub fn set_floor(&self, peer: PeerId, on: bool) {
        for shard in 0..self.shards.len() {
            let _ = self.send(shard, ShardMsg::Command(Command::Floor { peer, on }));
        }
    }

    /// Sends a link check's probe train to `peer` — `packet_bytes`-byte RTP packets at `kbps` on a free video slot —
    /// or stops it (`kbps == 0`). The packets are never resent.
    pub fn probe(&self, peer: PeerId, kbps: u32, packet_bytes: usize) -> Result<(), MediaError> {
        let shard = self.shard_of(peer).ok_or(MediaError::UnknownPeer(peer))?;
        self.send(shard, ShardMsg::Command(Command::Probe { peer, kbps, packet_bytes }))
    }

    /// Asks the publisher of `track` for a keyframe (rate-limited per track).
    pub fn request_keyframe(&self, track: TrackId) {
        for s in &self.shards {
            let _ = s.send(ShardMsg::KeyframeRequest(track, None));
        }
    }

    /// A snapshot of every peer's statistics.
    pub fn stats(&self) -> HashMap<PeerId, PeerStats> {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// One peer's statistics (without copying everyone's).
    pub fn peer_stats(&self, peer: PeerId) -> Option<PeerStats> {
        self.stats.lock().ok()?.get(&peer).cloned()
    }

    /// The forwarding delays so far (every shard's histogram added up): publisher packet received → sealed and sent
    /// to one subscriber, one sample per packet per subscriber.
    pub fn forward_delays(&self) -> histogram::Snapshot {
        let mut all = histogram::Snapshot::default();
        for d in &self.delays {
            all.add(&d.snapshot());
        }
        all
    }

    /// Number of shard threads.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Stops the shards and waits for their threads.
    pub fn shutdown(&self) {
        for s in &self.shards {
            let _ = s.send(ShardMsg::Command(Command::Shutdown));
        }
        let threads = self.threads.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Media {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Socket buffers of a shard: a join storm of hundreds of sites (STUN + DTLS flights) overflows the kernel's default
/// ~208 KB receive buffer (measured: ~9,500 datagrams dropped with 500 sites joining over 2 s).
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Binds a non-blocking UDP socket with large buffers (the kernel caps them at `net.core.rmem_max`/`wmem_max`).
fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let sock =
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Best effort: a smaller buffer still works, it only drops earlier under a burst.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    sock.bind(&addr.into())?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

/// Reads the clock once for a turn of a shard loop (the only clock read of the data plane).
pub(crate) fn now() -> Instant {
    Instant::now()
}
