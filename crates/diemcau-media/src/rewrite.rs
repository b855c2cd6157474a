//! Sequence-number and timestamp rewriting for one outgoing slot.
//!
//! A slot (one `mid` of one subscriber) carries one source at a time, but the source can change: the chair's grid tile
//! is reused when a site leaves, an audio slot follows whoever is unmuted. The subscriber must see one continuous
//! stream: sequence numbers without a jump, timestamps that move on by the wall-clock time that passed, and — for
//! video — a first picture it can decode, so a switch waits for a keyframe of the new source.
//!
//! Pure: packets and `Instant`s in, the numbers to write out (or "drop") back.

use std::time::Instant;

/// Where the outgoing stream stands.
#[derive(Debug, Clone)]
pub struct SlotRewriter {
    clock_rate: u32,
    video: bool,
    /// The source currently mapped, with the first incoming seq/ts taken and the outgoing values they map to.
    mapping: Option<Mapping>,
    /// Source selected but not yet started (video waits for its keyframe).
    pending_source: Option<u64>,
    last_out_seq: u64,
    last_out_ts: u32,
    last_out_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Mapping {
    source: u64,
    in_seq_base: u64,
    out_seq_base: u64,
    ts_delta: u32,
}

/// An incoming packet as the rewriter sees it.
#[derive(Debug, Clone, Copy)]
pub struct InPacket {
    /// Opaque source identity (the same number for the same publishing track).
    pub source: u64,
    /// Extended sequence number at the source.
    pub seq: u64,
    /// RTP timestamp at the source.
    pub ts: u32,
    /// First packet of a keyframe (video) — audio ignores it.
    pub keyframe: bool,
    /// When the bridge received it.
    pub at: Instant,
}

/// Result of [`SlotRewriter::map`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapped {
    /// Write the packet with these numbers.
    Write {
        /// Extended outgoing sequence number.
        seq: u64,
        /// Outgoing RTP timestamp.
        ts: u32,
    },
    /// Not for this slot (other source, or before the switch point).
    Drop,
    /// The slot waits for a keyframe of its new source: drop, and ask the source for one.
    NeedKeyframe,
}

impl SlotRewriter {
    /// A new slot. `clock_rate` is 90 000 for video, 48 000 for Opus.
    pub fn new(clock_rate: u32, video: bool) -> SlotRewriter {
        SlotRewriter {
            clock_rate,
            video,
            mapping: None,
            pending_source: None,
            last_out_seq: 0,
            last_out_ts: 0,
            last_out_at: None,
        }
    }

    /// Selects the source this slot carries from now on (`None` idles the slot).
    pub fn select(&mut self, source: Option<u64>) {
        match source {
            Some(s) if self.mapping.map(|m| m.source) == Some(s) => self.pending_source = None,
            other => {
                self.pending_source = other;
                if other.is_none() {
                    self.mapping = None;
                }
            }
        }
    }

    /// Stops forwarding but keeps the selected source: its next packet (for video, its next keyframe) starts it
    /// anew, continuing the outgoing numbers. For a paused video, whose source went on sending while nothing was
    /// forwarded: mapping its packets straight through would open a sequence gap the subscriber can never repair and
    /// hand its decoder a delta frame.
    pub fn restart(&mut self) {
        self.pending_source = self.selected();
        self.mapping = None;
    }

    /// The source currently selected (started or waiting for its keyframe).
    pub fn selected(&self) -> Option<u64> {
        self.pending_source.or(self.mapping.map(|m| m.source))
    }

    /// Whether the slot waits for a keyframe of the selected source.
    pub fn waiting_for_keyframe(&self) -> bool {
        self.pending_source.is_some()
    }

    /// Maps one incoming packet.
    pub fn map(&mut self, p: InPacket) -> Mapped {
        if self.pending_source == Some(p.source) {
            if self.video && !p.keyframe {
                // The old source (if any) keeps the slot until this keyframe arrives.
                return Mapped::NeedKeyframe;
            }
            self.start(p);
        }
        let Some(m) = self.mapping else { return Mapped::Drop };
        if m.source != p.source || p.seq < m.in_seq_base {
            return Mapped::Drop;
        }
        let seq = m.out_seq_base + (p.seq - m.in_seq_base);
        let ts = p.ts.wrapping_add(m.ts_delta);
        if seq > self.last_out_seq {
            self.last_out_seq = seq;
            self.last_out_ts = ts;
            self.last_out_at = Some(p.at);
        }
        Mapped::Write { seq, ts }
    }

    fn start(&mut self, p: InPacket) {
        let (out_seq, out_ts) = match self.last_out_at {
            // Continue where the previous source left off, moved on by the time that passed (at least one tick).
            Some(at) => {
                let elapsed = p.at.saturating_duration_since(at);
                let ticks = (elapsed.as_secs_f64() * f64::from(self.clock_rate)) as u64;
                (self.last_out_seq + 1, self.last_out_ts.wrapping_add(ticks.clamp(1, u64::from(u32::MAX / 2)) as u32))
            }
            // First source ever: start low so the extended sequence number needs no rollover signalling.
            None => (1, p.ts),
        };
        self.mapping = Some(Mapping {
            source: p.source,
            in_seq_base: p.seq,
            out_seq_base: out_seq,
            ts_delta: out_ts.wrapping_sub(p.ts),
        });
        self.pending_source = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pkt(source: u64, seq: u64, ts: u32, keyframe: bool, at: Instant) -> InPacket {
        InPacket { source, seq, ts, keyframe, at }
    }

    #[test]
    fn video_waits_for_keyframe_then_continues() {
        let t0 = Instant::now();
        let mut r = SlotRewriter::new(90_000, true);
        r.select(Some(7));
        assert_eq!(r.map(pkt(7, 500, 1000, false, t0)), Mapped::NeedKeyframe);
        assert_eq!(r.map(pkt(7, 501, 4000, true, t0)), Mapped::Write { seq: 1, ts: 4000 });
        assert_eq!(r.map(pkt(7, 502, 4000, false, t0)), Mapped::Write { seq: 2, ts: 4000 });
        // A hole upstream stays a hole (the subscriber NACKs it, the repair maps to the same number).
        assert_eq!(r.map(pkt(7, 504, 7000, false, t0)), Mapped::Write { seq: 4, ts: 7000 });
        assert_eq!(r.map(pkt(7, 503, 4000, false, t0)), Mapped::Write { seq: 3, ts: 4000 });
        // Older than the switch point: dropped.
        assert_eq!(r.map(pkt(7, 499, 1000, false, t0)), Mapped::Drop);
        // Other sources are not for this slot.
        assert_eq!(r.map(pkt(8, 10, 1, true, t0)), Mapped::Drop);
    }

    #[test]
    fn switch_keeps_sequence_and_time_continuous() {
        let t0 = Instant::now();
        let mut r = SlotRewriter::new(90_000, true);
        r.select(Some(1));
        assert_eq!(r.map(pkt(1, 100, 50_000, true, t0)), Mapped::Write { seq: 1, ts: 50_000 });
        r.select(Some(2));
        assert!(r.waiting_for_keyframe());
        // Until the new source's keyframe, the old source keeps the slot (no black gap).
        assert_eq!(r.map(pkt(1, 101, 53_000, false, t0)), Mapped::Write { seq: 2, ts: 53_000 });
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(r.map(pkt(2, 9000, 7, false, t1)), Mapped::NeedKeyframe);
        assert_eq!(r.map(pkt(2, 9001, 7, true, t1)), Mapped::Write { seq: 3, ts: 53_000 + 9_000 });
        assert_eq!(r.map(pkt(1, 102, 56_000, false, t1)), Mapped::Drop);
        assert_eq!(r.selected(), Some(2));
    }

    #[test]
    fn a_restarted_slot_resumes_at_a_keyframe_without_a_sequence_gap() {
        let t0 = Instant::now();
        let mut r = SlotRewriter::new(90_000, true);
        r.select(Some(5));
        assert_eq!(r.map(pkt(5, 10, 900, true, t0)), Mapped::Write { seq: 1, ts: 900 });
        assert_eq!(r.map(pkt(5, 11, 900, false, t0)), Mapped::Write { seq: 2, ts: 900 });
        r.restart();
        assert_eq!(r.selected(), Some(5), "the source stays selected");
        assert!(r.waiting_for_keyframe());
        // Packets 12..=400 went by unforwarded; the next delta frame must not be written as seq 391.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(r.map(pkt(5, 400, 180_900, false, t1)), Mapped::NeedKeyframe);
        assert_eq!(r.map(pkt(5, 401, 186_900, true, t1)), Mapped::Write { seq: 3, ts: 900 + 180_000 });
        assert_eq!(r.map(pkt(5, 402, 186_900, false, t1)), Mapped::Write { seq: 4, ts: 900 + 180_000 });
    }

    #[test]
    fn audio_switches_at_once_and_timestamps_wrap() {
        let t0 = Instant::now();
        let mut r = SlotRewriter::new(48_000, false);
        r.select(Some(1));
        assert_eq!(r.map(pkt(1, 65_535, u32::MAX - 100, false, t0)), Mapped::Write { seq: 1, ts: u32::MAX - 100 });
        assert_eq!(r.map(pkt(1, 65_536, 859, false, t0)), Mapped::Write { seq: 2, ts: 859 });
        r.select(Some(3));
        let t1 = t0 + Duration::from_millis(20);
        assert_eq!(r.map(pkt(3, 5, 0, false, t1)), Mapped::Write { seq: 3, ts: 859 + 960 });
        r.select(None);
        assert_eq!(r.map(pkt(3, 6, 960, false, t1)), Mapped::Drop);
    }
}
