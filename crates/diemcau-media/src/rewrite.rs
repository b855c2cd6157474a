//! Sequence-number, timestamp and VP8 picture-number rewriting for one outgoing slot.
//!
//! A slot (one `mid` of one subscriber) carries one source at a time, but the source can change: the chair's grid tile
//! is reused when a site leaves, an audio slot follows whoever is unmuted, a simulcast slot moves between layers. The
//! subscriber must see one continuous stream: sequence numbers without a jump, timestamps that move on by the
//! wall-clock time that passed, and — for video — a first picture it can decode, so a switch waits for a keyframe of
//! the new source.
//!
//! Temporal layers: a subscriber may receive only the lower temporal layers of a source (7.5 of its 30 frames per
//! second). The frames it does not get are *skipped*: their sequence numbers and PictureIDs are closed up, so what it
//! receives has no hole to NACK and no missing picture for its decoder to wait for (libwebrtc's VP8 reference finder
//! holds every frame after a PictureID it has not seen). TL0PICIDX and KEYIDX are unchanged by skipping and, like the
//! PictureID, continue across a switch of source. (mediasoup's `SeqManager` and LiveKit's VP8 munger do the same.)
//! A skipped packet that arrives late (a repair of a packet lost upstream) after later ones were numbered cannot be
//! closed up any more: if its frame was not skipped it is forwarded (it fills its own number), else dropped.
//!
//! Pure: packets and `Instant`s in, the numbers to write out (or "drop") back.

use std::collections::VecDeque;
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
    /// The last VP8 numbers written (extended PictureID, TL0PICIDX, KEYIDX): the next source continues from them.
    last_out_vp8: (Option<u64>, Option<u8>, Option<u8>),
}

#[derive(Debug, Clone)]
struct Mapping {
    source: u64,
    in_seq_base: u64,
    out_seq_base: u64,
    ts_delta: u32,
    /// Highest incoming sequence number mapped or skipped.
    in_seq_max: u64,
    /// Incoming sequence numbers skipped.
    skipped: Skips,
    /// Incoming sequence numbers after which one outgoing number was inserted (an FEC packet's): the mirror image
    /// of a skip, every later packet's number moves up by one.
    inserted: Skips,
    /// The last packet skipped: `(seq, extended PictureID)` (a loss inside skipped frames is skipped with them).
    last_skip: Option<(u64, Option<u64>)>,
    pid: Option<PidMap>,
    tl0_delta: u8,
    key_delta: u8,
}

/// PictureIDs of one source: extended (no wrap), mapped to the outgoing ones.
#[derive(Debug, Clone)]
struct PidMap {
    in_base: u64,
    out_base: u64,
    /// Highest incoming extended PictureID seen.
    in_max: u64,
    /// Incoming extended PictureIDs of skipped frames.
    skipped: Skips,
}

/// Numbers skipped (incoming, extended), ascending: how many lie below a number. Only the latest [`Skips::KEEP`] are
/// kept one by one; older ones are a count (nothing that old is still mapped).
#[derive(Debug, Clone, Default)]
struct Skips {
    recent: VecDeque<u64>,
    older: u64,
}

impl Skips {
    const KEEP: usize = 1024;

    fn insert(&mut self, n: u64) {
        let i = self.recent.partition_point(|&x| x < n);
        if self.recent.get(i) != Some(&n) {
            self.recent.insert(i, n);
            if self.recent.len() > Self::KEEP {
                self.recent.pop_front();
                self.older += 1;
            }
        }
    }

    /// Like `insert`, but a number may be there several times (two numbers inserted after the same packet).
    fn add(&mut self, n: u64) {
        let i = self.recent.partition_point(|&x| x <= n);
        self.recent.insert(i, n);
        if self.recent.len() > Self::KEEP {
            self.recent.pop_front();
            self.older += 1;
        }
    }

    fn contains(&self, n: u64) -> bool {
        self.recent.binary_search(&n).is_ok()
    }

    fn below(&self, n: u64) -> u64 {
        self.older + self.recent.partition_point(|&x| x < n) as u64
    }
}

/// The VP8 payload descriptor fields of an incoming packet that the rewriter renumbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vp8Numbers {
    /// PictureID as sent.
    pub picture_id: Option<u16>,
    /// It is the 15-bit form (else 7-bit).
    pub long_picture_id: bool,
    /// TL0PICIDX.
    pub tl0_pic_idx: Option<u8>,
    /// KEYIDX (5 bits).
    pub key_idx: Option<u8>,
}

impl From<crate::vp8::Vp8Info> for Vp8Numbers {
    fn from(i: crate::vp8::Vp8Info) -> Self {
        Vp8Numbers {
            picture_id: i.picture_id,
            long_picture_id: i.long_picture_id,
            tl0_pic_idx: i.tl0_pic_idx,
            key_idx: i.key_idx,
        }
    }
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
    /// Its VP8 numbers (video).
    pub vp8: Option<Vp8Numbers>,
    /// The subscriber does not get this packet's frame (a temporal layer above its own): close up its numbers.
    pub skip: bool,
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
        /// The VP8 numbers to write into its descriptor (those it carries, renumbered).
        vp8: Option<Vp8Numbers>,
    },
    /// Not for this slot (other source, before the switch point, or skipped).
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
            last_out_vp8: (None, None, None),
        }
    }

    /// Selects the source this slot carries from now on (`None` idles the slot).
    pub fn select(&mut self, source: Option<u64>) {
        match source {
            Some(s) if self.mapping.as_ref().map(|m| m.source) == Some(s) => self.pending_source = None,
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
        self.pending_source.or(self.mapping.as_ref().map(|m| m.source))
    }

    /// Whether the slot waits for a keyframe of the selected source.
    pub fn waiting_for_keyframe(&self) -> bool {
        self.pending_source.is_some()
    }

    /// Maps one incoming packet.
    pub fn map(&mut self, p: InPacket) -> Mapped {
        if self.pending_source == Some(p.source) {
            if self.video && (!p.keyframe || p.skip) {
                // The old source (if any) keeps the slot until this keyframe arrives.
                return Mapped::NeedKeyframe;
            }
            self.start(p);
        }
        let Some(m) = self.mapping.as_mut() else { return Mapped::Drop };
        if m.source != p.source || p.seq < m.in_seq_base || m.skipped.contains(p.seq) {
            return Mapped::Drop;
        }
        let pid = match (m.pid.as_ref(), p.vp8.and_then(|v| v.picture_id.map(|id| (id, v.long_picture_id)))) {
            (Some(map), Some((id, long))) => Some(extend(map.in_max, id, long)),
            _ => None,
        };
        let frame_skipped = match (m.pid.as_ref(), pid) {
            (Some(map), Some(ext)) if ext < map.in_base => return Mapped::Drop,
            (Some(map), Some(ext)) => map.skipped.contains(ext),
            _ => false,
        };
        if p.skip || frame_skipped {
            if p.seq > m.in_seq_max {
                // Packets lost between two skipped packets of the same frame, or of consecutive frames (no other
                // frame lies between), belong to skipped frames too.
                if let Some((last, last_pid)) = m.last_skip
                    && last == m.in_seq_max
                    && pid.is_some_and(|p| last_pid == Some(p) || last_pid.map(|l| l + 1) == Some(p))
                {
                    for s in last + 1..p.seq {
                        m.skipped.insert(s);
                    }
                }
                m.skipped.insert(p.seq);
                m.in_seq_max = p.seq;
                m.last_skip = Some((p.seq, pid));
                if let (Some(map), Some(ext)) = (m.pid.as_mut(), pid)
                    && ext >= map.in_max
                {
                    map.skipped.insert(ext);
                    map.in_max = ext;
                }
                return Mapped::Drop;
            }
            // Too late to close up: its number is already a hole in what the subscriber received. A packet of a
            // frame that was not skipped fills it; one of a skipped frame has nothing to fill.
            if frame_skipped {
                return Mapped::Drop;
            }
        }
        m.in_seq_max = m.in_seq_max.max(p.seq);
        let seq = m.out_seq_base + (p.seq - m.in_seq_base) + m.inserted.below(p.seq) - m.skipped.below(p.seq);
        let ts = p.ts.wrapping_add(m.ts_delta);
        let out_pid = match (m.pid.as_mut(), pid) {
            (Some(map), Some(ext)) => {
                map.in_max = map.in_max.max(ext);
                Some(map.out_base + (ext - map.in_base) - map.skipped.below(ext))
            }
            _ => None,
        };
        let vp8 = p.vp8.map(|v| Vp8Numbers {
            picture_id: out_pid.map(|out| (out & pid_mask(v.long_picture_id)) as u16),
            long_picture_id: v.long_picture_id,
            tl0_pic_idx: v.tl0_pic_idx.map(|t| t.wrapping_add(m.tl0_delta)),
            key_idx: v.key_idx.map(|k| k.wrapping_add(m.key_delta) & 0x1f),
        });
        if seq > self.last_out_seq {
            self.last_out_seq = seq;
            self.last_out_ts = ts;
            self.last_out_at = Some(p.at);
            if let Some(n) = vp8 {
                let (last_pid, tl0, key) = &mut self.last_out_vp8;
                *last_pid = out_pid.or(*last_pid);
                *tl0 = n.tl0_pic_idx.or(*tl0);
                *key = n.key_idx.or(*key);
            }
        }
        Mapped::Write { seq, ts, vp8 }
    }

    /// An outgoing sequence number right after the newest packet written, for a packet the bridge adds to the
    /// stream (an FEC packet): the packets that follow move up by one, a late packet from before keeps its number.
    /// `None` before the first packet of the current source.
    pub fn insert(&mut self) -> Option<u64> {
        let m = self.mapping.as_mut()?;
        // After the newest incoming packet: it maps to `last_out_seq` (or a skip sits in between, which changes
        // nothing: skipped numbers were closed up before it).
        m.inserted.add(m.in_seq_max);
        self.last_out_seq += 1;
        Some(self.last_out_seq)
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
        let v = p.vp8.unwrap_or_default();
        let (last_pid, last_tl0, last_key) = self.last_out_vp8;
        // PictureIDs are extended from the first one (kept above the modulus, so that none goes below zero).
        let pid = v.picture_id.map(|id| {
            let modulus = pid_mask(v.long_picture_id) + 1;
            let in_base = modulus + u64::from(id);
            PidMap {
                in_base,
                out_base: last_pid.map_or(in_base, |l| l + 1),
                in_max: in_base,
                skipped: Skips::default(),
            }
        });
        let delta = |last: Option<u8>, first: Option<u8>| match (last, first) {
            (Some(l), Some(f)) => l.wrapping_add(1).wrapping_sub(f),
            _ => 0,
        };
        self.mapping = Some(Mapping {
            source: p.source,
            in_seq_base: p.seq,
            out_seq_base: out_seq,
            ts_delta: out_ts.wrapping_sub(p.ts),
            in_seq_max: p.seq,
            skipped: Skips::default(),
            inserted: Skips::default(),
            last_skip: None,
            pid,
            tl0_delta: delta(last_tl0, v.tl0_pic_idx),
            key_delta: delta(last_key, v.key_idx),
        });
        self.pending_source = None;
    }
}

fn pid_mask(long: bool) -> u64 {
    if long { 0x7fff } else { 0x7f }
}

/// `id` (7 or 15 bits) extended to the nearest value of `near`'s neighbourhood.
fn extend(near: u64, id: u16, long: bool) -> u64 {
    let modulus = pid_mask(long) + 1;
    let base = near - near % modulus + u64::from(id) % modulus;
    // The candidate in the same, the previous or the next cycle closest to `near`.
    [base.checked_sub(modulus), Some(base), Some(base + modulus)]
        .into_iter()
        .flatten()
        .min_by_key(|c| c.abs_diff(near))
        .unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn inserted_numbers_move_later_packets_up_and_leave_late_ones_alone() {
        let t0 = Instant::now();
        let mut r = SlotRewriter::new(90_000, true);
        r.select(Some(1));
        let seq = |m: Mapped| match m {
            Mapped::Write { seq, .. } => seq,
            other => panic!("{other:?}"),
        };
        assert_eq!(r.insert(), None, "nothing written yet");
        let a = seq(r.map(pkt(1, 100, 0, true, t0)));
        let b = seq(r.map(pkt(1, 101, 0, false, t0)));
        // 102 is late; 103 came first.
        let d = seq(r.map(pkt(1, 103, 3000, false, t0)));
        assert_eq!((a, b, d), (1, 2, 4));
        assert_eq!(r.insert(), Some(5), "the FEC packet follows the newest written");
        assert_eq!(seq(r.map(pkt(1, 102, 0, false, t0))), 3, "a late packet keeps its number");
        assert_eq!(seq(r.map(pkt(1, 104, 3000, false, t0))), 6);
        assert_eq!(r.insert(), Some(7));
        assert_eq!(r.insert(), Some(8), "two in a row");
        assert_eq!(seq(r.map(pkt(1, 105, 6000, false, t0))), 9);
        // A new source continues after the last number, inserted ones included.
        r.select(Some(2));
        assert_eq!(seq(r.map(pkt(2, 7, 50, true, t0 + Duration::from_millis(33)))), 10);
        assert_eq!(seq(r.map(pkt(2, 8, 50, false, t0 + Duration::from_millis(33)))), 11);
    }

    fn pkt(source: u64, seq: u64, ts: u32, keyframe: bool, at: Instant) -> InPacket {
        InPacket { source, seq, ts, keyframe, at, vp8: None, skip: false }
    }

    fn w(seq: u64, ts: u32) -> Mapped {
        Mapped::Write { seq, ts, vp8: None }
    }

    /// A VP8 packet of frame `pid` (15-bit PictureID) with TL0PICIDX `tl0`; `skip` as the shard decides.
    fn vp8(source: u64, seq: u64, pid: u16, tl0: u8, keyframe: bool, skip: bool, at: Instant) -> InPacket {
        let n = Vp8Numbers { picture_id: Some(pid), long_picture_id: true, tl0_pic_idx: Some(tl0), key_idx: None };
        InPacket { source, seq, ts: u32::from(pid) * 3000, keyframe, at, vp8: Some(n), skip }
    }

    /// The (seq, PictureID, TL0PICIDX) written, or `None` when dropped.
    fn out(m: Mapped) -> Option<(u64, u16, u8)> {
        match m {
            Mapped::Write { seq, vp8: Some(v), .. } => Some((seq, v.picture_id?, v.tl0_pic_idx?)),
            _ => None,
        }
    }

    #[test]
    fn skipped_frames_leave_no_hole_in_sequence_numbers_or_picture_ids() {
        let t0 = Instant::now();
        let mut r = SlotRewriter::new(90_000, true);
        r.select(Some(1));
        // L1T3 at 30 fps, the subscriber takes TID 0 only: frames 100 (key, TID0, 2 packets), 101 (TID2), 102 (TID1,
        // 2 packets), 103 (TID2), 104 (TID0).
        assert_eq!(out(r.map(vp8(1, 10, 100, 7, true, false, t0))), Some((1, 100, 7)));
        assert_eq!(out(r.map(vp8(1, 11, 100, 7, false, false, t0))), Some((2, 100, 7)));
        assert_eq!(r.map(vp8(1, 12, 101, 7, false, true, t0)), Mapped::Drop);
        assert_eq!(r.map(vp8(1, 13, 102, 7, false, true, t0)), Mapped::Drop);
        // Packet 14 (the rest of frame 102) was lost upstream; 15 is frame 103's.
        assert_eq!(r.map(vp8(1, 15, 103, 7, false, true, t0)), Mapped::Drop);
        assert_eq!(out(r.map(vp8(1, 16, 104, 8, false, false, t0))), Some((3, 101, 8)));
        // The repair of 14 arrives: its frame was skipped, so it is dropped (its number was never used).
        assert_eq!(r.map(vp8(1, 14, 102, 7, false, true, t0)), Mapped::Drop);
        assert_eq!(out(r.map(vp8(1, 17, 104, 8, false, false, t0))), Some((4, 101, 8)));
        // Now the subscriber takes every layer again: the numbers go on by one.
        assert_eq!(out(r.map(vp8(1, 18, 105, 8, false, false, t0))), Some((5, 102, 8)));
    }

    #[test]
    fn a_late_packet_of_a_frame_not_skipped_fills_its_hole() {
        let t0 = Instant::now();
        let mut r = SlotRewriter::new(90_000, true);
        r.select(Some(1));
        assert_eq!(out(r.map(vp8(1, 10, 100, 7, true, false, t0))), Some((1, 100, 7)));
        // 11 (frame 101, TID2) lost upstream; the subscriber then drops TID2, frame 102 is TID0.
        assert_eq!(out(r.map(vp8(1, 12, 102, 8, false, false, t0))), Some((3, 102, 8)));
        // 11's repair: too late to close up, and frame 101 was not skipped: written where its hole is.
        assert_eq!(out(r.map(vp8(1, 11, 101, 7, false, true, t0))), Some((2, 101, 7)));
    }

    #[test]
    fn picture_ids_continue_across_a_layer_switch_and_wrap() {
        let t0 = Instant::now();
        let mut r = SlotRewriter::new(90_000, true);
        r.select(Some(1));
        assert_eq!(out(r.map(vp8(1, 10, 0x7ffe, 200, true, false, t0))), Some((1, 0x7ffe, 200)));
        assert_eq!(out(r.map(vp8(1, 11, 0x7fff, 255, false, false, t0))), Some((2, 0x7fff, 255)));
        assert_eq!(out(r.map(vp8(1, 12, 0, 0, false, false, t0))), Some((3, 0, 0)), "both wrap");
        // Another layer with its own numbers: at its keyframe the slot continues from the last written.
        r.select(Some(2));
        assert_eq!(r.map(vp8(2, 500, 4000, 90, false, false, t0)), Mapped::NeedKeyframe);
        assert_eq!(out(r.map(vp8(2, 501, 4001, 91, true, false, t0))), Some((4, 1, 1)));
        assert_eq!(out(r.map(vp8(2, 502, 4002, 92, false, false, t0))), Some((5, 2, 2)));
        // A skipped keyframe cannot start a switch.
        r.select(Some(1));
        assert_eq!(r.map(vp8(1, 40, 20, 5, true, true, t0)), Mapped::NeedKeyframe);
    }

    #[test]
    fn many_skips_keep_counting() {
        let t0 = Instant::now();
        let mut r = SlotRewriter::new(90_000, true);
        r.select(Some(1));
        assert_eq!(out(r.map(vp8(1, 0, 0, 0, true, false, t0))), Some((1, 0, 0)));
        // 5,000 frames of one packet, three of four skipped: far more than Skips keeps one by one.
        let mut written = 1;
        for f in 1..5_000u64 {
            let skip = f % 4 != 0;
            let m = r.map(vp8(1, f, (f & 0x7fff) as u16, (f / 4) as u8, false, skip, t0));
            if skip {
                assert_eq!(m, Mapped::Drop);
            } else {
                written += 1;
                assert_eq!(out(m), Some((written, (written - 1) as u16, (f / 4) as u8)), "frame {f}");
            }
        }
    }

    #[test]
    fn video_waits_for_keyframe_then_continues() {
        let t0 = Instant::now();
        let mut r = SlotRewriter::new(90_000, true);
        r.select(Some(7));
        assert_eq!(r.map(pkt(7, 500, 1000, false, t0)), Mapped::NeedKeyframe);
        assert_eq!(r.map(pkt(7, 501, 4000, true, t0)), w(1, 4000));
        assert_eq!(r.map(pkt(7, 502, 4000, false, t0)), w(2, 4000));
        // A hole upstream stays a hole (the subscriber NACKs it, the repair maps to the same number).
        assert_eq!(r.map(pkt(7, 504, 7000, false, t0)), w(4, 7000));
        assert_eq!(r.map(pkt(7, 503, 4000, false, t0)), w(3, 4000));
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
        assert_eq!(r.map(pkt(1, 100, 50_000, true, t0)), w(1, 50_000));
        r.select(Some(2));
        assert!(r.waiting_for_keyframe());
        // Until the new source's keyframe, the old source keeps the slot (no black gap).
        assert_eq!(r.map(pkt(1, 101, 53_000, false, t0)), w(2, 53_000));
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(r.map(pkt(2, 9000, 7, false, t1)), Mapped::NeedKeyframe);
        assert_eq!(r.map(pkt(2, 9001, 7, true, t1)), w(3, 53_000 + 9_000));
        assert_eq!(r.map(pkt(1, 102, 56_000, false, t1)), Mapped::Drop);
        assert_eq!(r.selected(), Some(2));
    }

    #[test]
    fn a_restarted_slot_resumes_at_a_keyframe_without_a_sequence_gap() {
        let t0 = Instant::now();
        let mut r = SlotRewriter::new(90_000, true);
        r.select(Some(5));
        assert_eq!(r.map(pkt(5, 10, 900, true, t0)), w(1, 900));
        assert_eq!(r.map(pkt(5, 11, 900, false, t0)), w(2, 900));
        r.restart();
        assert_eq!(r.selected(), Some(5), "the source stays selected");
        assert!(r.waiting_for_keyframe());
        // Packets 12..=400 went by unforwarded; the next delta frame must not be written as seq 391.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(r.map(pkt(5, 400, 180_900, false, t1)), Mapped::NeedKeyframe);
        assert_eq!(r.map(pkt(5, 401, 186_900, true, t1)), w(3, 900 + 180_000));
        assert_eq!(r.map(pkt(5, 402, 186_900, false, t1)), w(4, 900 + 180_000));
    }

    #[test]
    fn audio_switches_at_once_and_timestamps_wrap() {
        let t0 = Instant::now();
        let mut r = SlotRewriter::new(48_000, false);
        r.select(Some(1));
        assert_eq!(r.map(pkt(1, 65_535, u32::MAX - 100, false, t0)), w(1, u32::MAX - 100));
        assert_eq!(r.map(pkt(1, 65_536, 859, false, t0)), w(2, 859));
        r.select(Some(3));
        let t1 = t0 + Duration::from_millis(20);
        assert_eq!(r.map(pkt(3, 5, 0, false, t1)), w(3, 859 + 960));
        r.select(None);
        assert_eq!(r.map(pkt(3, 6, 960, false, t1)), Mapped::Drop);
    }
}
