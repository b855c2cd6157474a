//! RFC 2198 redundant audio (RED) toward lossy subscribers.
//!
//! At a 400 ms round trip a retransmitted audio packet comes too late to be played, so toward a subscriber whose
//! receiver reports show loss, each Opus packet of an audio slot is sent wrapped in RED together with a copy of the
//! packet before it (one level, distance 1, as browsers send): one lost packet is recovered from the next. With 5%
//! random loss that leaves 0.05² = 0.25% unrecovered (audio continuity 99.75%), for twice the audio bitrate.
//!
//! RED is used only where the subscriber negotiated it (`red/48000/2` in its offer: Chromium and the synthetic sites
//! do) and only while it reports loss ([`LossyLink`]). Pure; time is an argument.

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::rtp::{RedDecoder, RedEncoder, RedundantBlock};

/// A receiver report with at least this fraction lost turns RED on.
pub const RED_LOSS: f32 = 0.005;
/// RED stays on this long after the last lossy report.
pub const RED_HOLD: Duration = Duration::from_secs(20);
/// RED is on from the start for this long: a receiver report on audio comes every 5 s (str0m, Chromium), and a VSAT
/// site would lose 5% of its first seconds unrepaired; a clean link stops paying for it after this.
pub const RED_START: Duration = Duration::from_secs(10);

/// Whether a subscriber's link loses packets, from its receiver reports.
#[derive(Debug, Default, Clone)]
pub struct LossyLink {
    until: Option<Instant>,
}

impl LossyLink {
    /// A link joining at `now`: taken as lossy for [`RED_START`], until reports say otherwise.
    pub fn starting(now: Instant) -> LossyLink {
        LossyLink { until: Some(now + RED_START) }
    }

    /// A receiver report of `fraction` lost (0..=1) at `now`.
    pub fn on_report(&mut self, now: Instant, fraction: f32) {
        if fraction >= RED_LOSS {
            self.until = Some(now + RED_HOLD);
        }
    }

    /// Whether to send redundancy at `now`.
    pub fn active(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }
}

/// The previous packet written on one audio slot, for the redundant copy in the next.
#[derive(Debug, Default, Clone)]
pub struct RedHistory {
    prev: Option<(u64, u32, Arc<[u8]>)>,
}

impl RedHistory {
    /// Records the Opus packet written as `seq`/`ts` and returns its RED payload (payload type `opus_pt` in the
    /// blocks) when `wrap`: the previous packet as the redundant block if it was `seq - 1` (a receiver takes a
    /// distance-1 block as the packet just before), then this one as the primary.
    pub fn wrap(&mut self, opus_pt: u8, seq: u64, ts: u32, payload: &Arc<[u8]>, wrap: bool) -> Option<Vec<u8>> {
        let prev = self.prev.replace((seq, ts, payload.clone()));
        if !wrap {
            return None;
        }
        let redundant: Vec<RedundantBlock> = prev
            .filter(|(s, _, _)| s + 1 == seq)
            .map(|(_, t, p)| RedundantBlock { pt: opus_pt, timestamp_offset: ts.wrapping_sub(t), payload: p.to_vec() })
            .filter(RedundantBlock::fits)
            .into_iter()
            .collect();
        Some(RedEncoder::encode(opus_pt, payload, &redundant))
    }
}

/// Redundant blocks further back than this are not used (as str0m's own receiver): bounded work per packet.
pub const MAX_RECOVERY_DEPTH: u64 = 8;

/// The receiving side, for a publisher that sends RED (Chromium does once RED is negotiated: str0m's answer lists
/// it first): the primary block is forwarded as plain Opus, and a packet lost on the way in is recovered from the
/// redundant copy in the next — an uplink repair before any subscriber sees the hole.
#[derive(Debug, Default, Clone)]
pub struct RedReceiver {
    highest: Option<u64>,
}

impl RedReceiver {
    /// The Opus packets in the RED payload `payload` received as `seq`/`ts`, oldest first: the redundant blocks that
    /// fill a gap just before `seq` (block `k` places from the end is `seq - k`), then the primary. A malformed
    /// payload gives nothing; a late packet gives its primary only.
    pub fn unwrap(&mut self, seq: u64, ts: u32, payload: &[u8]) -> Vec<(u64, u32, Arc<[u8]>)> {
        let Ok(blocks) = RedDecoder::decode(payload) else { return Vec::new() };
        let Some(primary) = blocks.iter().find(|b| b.is_primary) else { return Vec::new() };
        let mut out = Vec::new();
        let missing_from = self.highest.map_or(seq, |h| h + 1);
        if seq > missing_from {
            let redundant: Vec<_> = blocks.iter().filter(|b| !b.is_primary).collect();
            for (back, b) in (1u64..).zip(redundant.iter().rev()).collect::<Vec<_>>().into_iter().rev() {
                if back > MAX_RECOVERY_DEPTH {
                    continue;
                }
                let Some(s) = seq.checked_sub(back) else { continue };
                if s >= missing_from {
                    out.push((s, ts.wrapping_sub(b.timestamp_offset), Arc::from(b.payload)));
                }
            }
        }
        out.push((seq, ts, Arc::from(primary.payload)));
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_lost_on_the_way_in_is_recovered_from_the_next() {
        let mut h = RedHistory::default();
        let p = |b: u8| -> Arc<[u8]> { vec![b; 60].into() };
        let wrapped: Vec<Vec<u8>> =
            (0..4u8).map(|i| h.wrap(111, 100 + u64::from(i), 960 * u32::from(i), &p(i), true).unwrap()).collect();
        let mut r = RedReceiver::default();
        let seqs = |v: Vec<(u64, u32, Arc<[u8]>)>| v.into_iter().map(|(s, t, x)| (s, t, x[0])).collect::<Vec<_>>();
        assert_eq!(seqs(r.unwrap(100, 0, &wrapped[0])), vec![(100, 0, 0)]);
        // 101 is lost: 102 brings it back, with its own timestamp, before itself.
        assert_eq!(seqs(r.unwrap(102, 1920, &wrapped[2])), vec![(101, 960, 1), (102, 1920, 2)]);
        // 101 arriving late after all: its primary only (a duplicate downstream, which receivers drop).
        assert_eq!(seqs(r.unwrap(101, 960, &wrapped[1])), vec![(101, 960, 1)]);
        assert_eq!(seqs(r.unwrap(103, 2880, &wrapped[3])), vec![(103, 2880, 3)]);
        assert!(r.unwrap(104, 3840, &[0xff, 0x01]).is_empty(), "malformed: nothing");
    }

    #[test]
    fn each_packet_carries_the_one_before() {
        let mut h = RedHistory::default();
        let p = |b: u8| -> Arc<[u8]> { vec![b; 80].into() };
        // The first packet has nothing before it: a RED payload with the primary alone.
        let first = h.wrap(111, 10, 960, &p(1), true).unwrap();
        let blocks = RedDecoder::decode(&first).unwrap();
        assert_eq!(blocks.len(), 1);
        assert!(blocks[0].is_primary && blocks[0].payload == &p(1)[..] && blocks[0].pt == 111);
        let second = h.wrap(111, 11, 1920, &p(2), true).unwrap();
        let blocks = RedDecoder::decode(&second).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!((blocks[0].is_primary, blocks[0].timestamp_offset, blocks[0].payload), (false, 960, &p(1)[..]));
        assert_eq!((blocks[1].is_primary, blocks[1].payload), (true, &p(2)[..]));
        // Not wrapped: nothing returned, but the history moves on.
        assert!(h.wrap(111, 12, 2880, &p(3), false).is_none());
        // After a gap in the written numbers the old packet is not the one before: no redundant block.
        let after_gap = h.wrap(111, 20, 10_560, &p(4), true).unwrap();
        assert_eq!(RedDecoder::decode(&after_gap).unwrap().len(), 1);
    }

    #[test]
    fn red_follows_loss_reports_with_a_hold() {
        let t0 = Instant::now();
        assert!(LossyLink::starting(t0).active(t0 + RED_START - Duration::from_millis(1)));
        assert!(!LossyLink::starting(t0).active(t0 + RED_START), "a link that reports no loss stops");
        let mut l = LossyLink::default();
        assert!(!l.active(t0));
        l.on_report(t0, 0.001);
        assert!(!l.active(t0), "0.1% is not lossy");
        l.on_report(t0, 0.05);
        assert!(l.active(t0 + Duration::from_secs(19)));
        l.on_report(t0 + Duration::from_secs(5), 0.0);
        assert!(l.active(t0 + Duration::from_secs(19)), "a clean report does not end it early");
        assert!(!l.active(t0 + RED_HOLD));
    }
}
