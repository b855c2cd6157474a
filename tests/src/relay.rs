//! A small lossy UDP relay on loopback, for putting a test client "behind a bad link".
//!
//! One socket on `127.0.0.1:0` faces both sides: datagrams from the target go to the client, datagrams from
//! anything else go to the target, and the first such sender becomes the client. Seen from the bridge the
//! relay *is* the client (ICE turns it into a peer-reflexive candidate); seen from the client the relay is
//! the bridge, once the answer's candidates are pointed at [`LossyRelay::addr`] (see
//! [`crate::webrtc_site::redirect_candidates`]).
//!
//! Only SRTP in the target→client direction is dropped, with a seeded pseudo-random choice so a run is
//! reproducible: STUN, DTLS and SRTCP always pass, in both directions (RFC 7983 demultiplexing: first byte
//! 128–191 is RTP or RTCP, and RFC 5761: RTCP's second byte, the packet type, is 192–223). The relay runs
//! as a tokio task and stops when its handle is dropped.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Whether a datagram is an RTP packet (SRTP) rather than STUN, DTLS, TURN channel data or RTCP.
pub fn is_rtp(datagram: &[u8]) -> bool {
    datagram.len() >= 12 && (128..=191).contains(&datagram[0]) && !(192..=223).contains(&datagram[1])
}

/// Counters of a running relay.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Datagrams forwarded client → target.
    pub to_target: AtomicU64,
    /// Datagrams forwarded target → client (RTP or not).
    pub to_client: AtomicU64,
    /// RTP datagrams seen target → client, dropped ones included.
    pub rtp_to_client: AtomicU64,
    /// RTP datagrams dropped target → client.
    pub dropped_rtp: AtomicU64,
    /// Datagrams that could not be routed (no target yet, or from the target before any client).
    pub unroutable: AtomicU64,
}

/// One RTP packet seen target → client (the RTP header of SRTP is in the clear).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpSeen {
    /// When the relay read it.
    pub at: std::time::Instant,
    /// SSRC.
    pub ssrc: u32,
    /// Payload type (marker bit removed).
    pub pt: u8,
    /// Sequence number.
    pub seq: u16,
    /// Datagram length.
    pub len: usize,
    /// Whether the relay dropped it.
    pub dropped: bool,
}

/// At most this many packets are kept in [`LossyRelay::rtp_log`].
const RTP_LOG_CAP: usize = 100_000;

/// Handle of a running relay; dropping it stops the relay.
pub struct LossyRelay {
    addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    stats: Arc<RelayStats>,
    log: Arc<Mutex<Vec<RtpSeen>>>,
    blocked: Arc<Mutex<Vec<u8>>>,
    task: JoinHandle<()>,
}

impl LossyRelay {
    /// Binds `127.0.0.1:0` and starts relaying to `target`, dropping each target→client RTP packet with
    /// probability `loss` (0.0–1.0), chosen by a PRNG seeded with `seed`.
    pub async fn start(target: SocketAddr, loss: f64, seed: u64) -> io::Result<LossyRelay> {
        let relay = Self::bind(loss, seed).await?;
        relay.set_target(target);
        Ok(relay)
    }

    /// Like [`LossyRelay::start`] with the target set later by [`LossyRelay::set_target`] (e.g. once it is
    /// read from the bridge's answer). Datagrams that arrive before that are counted as unroutable.
    pub async fn bind(loss: f64, seed: u64) -> io::Result<LossyRelay> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let target = Arc::new(Mutex::new(None));
        let stats = Arc::new(RelayStats::default());
        let threshold = (loss.clamp(0.0, 1.0) * u32::MAX as f64) as u64;
        let log = Arc::new(Mutex::new(Vec::new()));
        let blocked = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(run(
            socket,
            Arc::clone(&target),
            Arc::clone(&stats),
            Arc::clone(&log),
            Arc::clone(&blocked),
            (threshold, seed),
        ));
        Ok(LossyRelay { addr, target, stats, log, blocked, task })
    }

    /// Sets (or changes) where client datagrams go.
    pub fn set_target(&self, target: SocketAddr) {
        if let Ok(mut t) = self.target.lock() {
            *t = Some(target);
        }
    }

    /// Drops every RTP packet of payload type `pt` toward the client from now on (e.g. the resends, RTX, to see
    /// what repairs without them).
    pub fn block_payload_type(&self, pt: u8) {
        if let Ok(mut b) = self.blocked.lock() {
            b.push(pt);
        }
    }

    /// The relay's address: give this to the client as the bridge's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The live counters.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// RTP packets dropped toward the client so far.
    pub fn dropped_rtp(&self) -> u64 {
        self.stats.dropped_rtp.load(Ordering::Relaxed)
    }

    /// Every RTP packet seen toward the client so far (the first 100,000), dropped ones included.
    pub fn rtp_log(&self) -> Vec<RtpSeen> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// RTP packets seen toward the client so far, dropped ones included.
    pub fn rtp_to_client(&self) -> u64 {
        self.stats.rtp_to_client.load(Ordering::Relaxed)
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// xorshift64*: enough randomness for choosing drops, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // SplitMix64 step so that small or zero seeds still give a good, non-zero state.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }
}

async fn run(
    socket: UdpSocket,
    target: Arc<Mutex<Option<SocketAddr>>>,
    stats: Arc<RelayStats>,
    log: Arc<Mutex<Vec<RtpSeen>>>,
    blocked: Arc<Mutex<Vec<u8>>>,
    (drop_threshold, seed): (u64, u64),
) {
    let mut rng = Rng::new(seed);
    let mut client: Option<SocketAddr> = None;
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            // ICMP port unreachable surfaces here on Linux as ECONNREFUSED; keep relaying.
            continue;
        };
        let datagram = &buf[..n];
        let target = target.lock().ok().and_then(|t| *t);
        let dest = match target {
            Some(t) if from == t => {
                let Some(c) = client else {
                    stats.unroutable.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                if is_rtp(datagram) {
                    stats.rtp_to_client.fetch_add(1, Ordering::Relaxed);
                    let pt = datagram[1] & 0x7f;
                    let dropped =
                        u64::from(rng.next_u32()) < drop_threshold || blocked.lock().is_ok_and(|b| b.contains(&pt));
                    if let Ok(mut log) = log.lock()
                        && log.len() < RTP_LOG_CAP
                    {
                        log.push(RtpSeen {
                            at: std::time::Instant::now(),
                            ssrc: u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]),
                            pt: datagram[1] & 0x7f,
                            seq: u16::from_be_bytes([datagram[2], datagram[3]]),
                            len: n,
                            dropped,
                        });
                    }
                    if dropped {
                        stats.dropped_rtp.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
                stats.to_client.fetch_add(1, Ordering::Relaxed);
                c
            }
            Some(t) => {
                client.get_or_insert(from);
                if client != Some(from) {
                    stats.unroutable.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                stats.to_target.fetch_add(1, Ordering::Relaxed);
                t
            }
            None => {
                stats.unroutable.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let _ = socket.send_to(datagram, dest).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn classifies_like_rfc7983() {
        let mut rtp = [0u8; 20];
        rtp[0] = 0x80;
        for pt in [96u8, 97, 111] {
            rtp[1] = pt;
            assert!(is_rtp(&rtp), "pt {pt}");
            rtp[1] = pt | 0x80; // marker bit
            assert!(is_rtp(&rtp), "pt {pt} with marker");
        }
        let mut rtcp = rtp;
        for pt in 192..=223u8 {
            rtcp[1] = pt;
            assert!(!is_rtp(&rtcp), "RTCP type {pt}");
        }
        let mut stun = [0u8; 20];
        stun[0] = 0x00;
        stun[1] = 0x01;
        assert!(!is_rtp(&stun));
        let mut dtls = [0u8; 20];
        dtls[0] = 22;
        dtls[1] = 0xfe;
        assert!(!is_rtp(&dtls));
        assert!(!is_rtp(&rtp[..8]), "too short");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relays_both_ways_and_drops_only_rtp_toward_the_client() -> anyhow::Result<()> {
        let target = UdpSocket::bind("127.0.0.1:0").await?;
        let client = UdpSocket::bind("127.0.0.1:0").await?;
        let relay = LossyRelay::start(target.local_addr()?, 0.5, 7).await?;
        let mut buf = [0u8; 2048];

        client.send_to(b"\x00\x01hello-stun-like-bytes", relay.addr()).await?;
        let (n, from) = tokio::time::timeout(Duration::from_secs(2), target.recv_from(&mut buf)).await??;
        assert_eq!(&buf[..n], b"\x00\x01hello-stun-like-bytes");
        assert_eq!(from, relay.addr());

        // Read on the client side while sending, and pace the sender, so that no socket buffer overflows.
        let reader = tokio::spawn(async move {
            let (mut got_rtp, mut got_rtcp) = (0u64, 0u64);
            let mut buf = [0u8; 2048];
            while let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_millis(500), client.recv_from(&mut buf)).await
            {
                if is_rtp(&buf[..n]) {
                    got_rtp += 1;
                } else {
                    got_rtcp += 1;
                }
            }
            (got_rtp, got_rtcp)
        });
        let mut rtp = [0u8; 100];
        rtp[0] = 0x80;
        rtp[1] = 96;
        let mut rtcp = rtp;
        rtcp[1] = 200;
        for i in 0..200u16 {
            rtp[2..4].copy_from_slice(&i.to_be_bytes());
            target.send_to(&rtp, relay.addr()).await?;
            target.send_to(&rtcp, relay.addr()).await?;
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let (got_rtp, got_rtcp) = reader.await?;
        assert_eq!(got_rtcp, 200, "RTCP is never dropped");
        assert_eq!(relay.rtp_to_client(), 200);
        assert_eq!(got_rtp + relay.dropped_rtp(), 200);
        assert!((60..=140).contains(&relay.dropped_rtp()), "about half dropped: {}", relay.dropped_rtp());
        Ok(())
    }

    #[test]
    fn rng_is_reproducible() {
        let (mut a, mut b) = (Rng::new(1), Rng::new(1));
        assert!((0..100).all(|_| a.next_u32() == b.next_u32()));
        let mut z = Rng::new(0);
        assert_ne!(z.next_u32(), z.next_u32());
    }
}
