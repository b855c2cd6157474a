//! The VP8 RTP payload descriptor (RFC 7741 §4.2) and the start of the VP8 payload header (RFC 6386 §9.1): written by
//! the synthetic publisher, read by the synthetic receiver to find frame starts and keyframes.
//!
//! The receiver's parser is written independently of the bridge's (`diemcau-media/src/vp8.rs`), so a drill also checks
//! that the bridge forwards descriptors a decoder would accept. Input is untrusted: every read is bounds checked.

/// Length of the descriptor we write: X=1, I=1 with a 15-bit PictureID (and with temporal layers, TL0PICIDX and the
/// TID/Y byte: [`TEMPORAL_DESCRIPTOR_LEN`]).
pub(crate) const DESCRIPTOR_LEN: usize = 4;
/// Length of the descriptor with temporal-layer fields.
pub(crate) const TEMPORAL_DESCRIPTOR_LEN: usize = 6;

/// The temporal-layer fields of a frame's descriptor (RFC 7741: L and T).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Temporal {
    /// TL0PICIDX: index of the latest base-layer frame.
    pub(crate) tl0_pic_idx: u8,
    /// TID.
    pub(crate) tid: u8,
    /// Y: the frame references only the base layer.
    pub(crate) sync: bool,
}

/// Writes our payload descriptor: `start` sets S (start of the frame's partition 0), PictureID is 15 bits.
pub(crate) fn write_descriptor(out: &mut Vec<u8>, start: bool, picture_id: u16, temporal: Option<Temporal>) {
    // X=1 (extension follows), N=0, S, PID=0.
    out.push(0x80 | if start { 0x10 } else { 0 });
    // I=1: PictureID present; L and T with temporal layers.
    out.push(if temporal.is_some() { 0xe0 } else { 0x80 });
    // M=1: 15-bit PictureID.
    out.push(0x80 | ((picture_id >> 8) as u8 & 0x7f));
    out.push(picture_id as u8);
    if let Some(t) = temporal {
        out.push(t.tl0_pic_idx);
        out.push((t.tid & 3) << 6 | if t.sync { 0x20 } else { 0 });
    }
}

/// Marks the synthetic frame-reference record that follows the payload header of a frame's first packet.
const FRAME_REF_MAGIC: u8 = 0xd1;

/// Writes the frame-reference record: this frame's number and the number of the frame it is predicted from (`None`
/// for a keyframe). A real decoder knows its references from the bitstream; the synthetic receiver learns them here,
/// in bytes the bridge never touches, and refuses a frame whose reference it did not decode — so a bridge that drops
/// temporal layers wrongly shows up as freezes.
pub(crate) fn write_frame_ref(out: &mut Vec<u8>, frame: u32, reference: Option<u32>) {
    out.push(FRAME_REF_MAGIC);
    out.extend_from_slice(&frame.to_le_bytes());
    out.extend_from_slice(&reference.unwrap_or(u32::MAX).to_le_bytes());
}

/// Writes the VP8 frame tag (3 bytes) and, for a keyframe, the start code and dimensions (7 more bytes).
/// The tag's P bit is 0 for a keyframe, 1 for an interframe.
pub(crate) fn write_payload_header(out: &mut Vec<u8>, keyframe: bool, first_part_size: u32, width: u16, height: u16) {
    let size = first_part_size & 0x7_ffff;
    let p = u8::from(!keyframe);
    // P | version 0 | show_frame 1 | size bits 0..3
    out.push(p | (1 << 4) | (((size & 0x7) as u8) << 5));
    out.push((size >> 3) as u8);
    out.push((size >> 11) as u8);
    if keyframe {
        out.extend_from_slice(&[0x9d, 0x01, 0x2a]);
        out.extend_from_slice(&(width & 0x3fff).to_le_bytes());
        out.extend_from_slice(&(height & 0x3fff).to_le_bytes());
    }
}

/// What the receiver needs to know about one VP8 RTP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Vp8Info {
    /// First packet of a frame (S=1 and partition index 0).
    pub(crate) frame_start: bool,
    /// First packet of a keyframe (a frame start whose payload header has P=0).
    pub(crate) keyframe: bool,
    /// A keyframe's height in pixels (RFC 6386 §9.1: 14 bits after the start code), when the header is complete.
    pub(crate) height: Option<u16>,
    /// PictureID (7 or 15 bits).
    pub(crate) picture_id: Option<u16>,
    /// Temporal layer (TID), when signalled.
    pub(crate) tid: Option<u8>,
    /// The frame-reference record of a frame's first packet: `(frame, reference)`.
    pub(crate) frame_ref: Option<(u32, Option<u32>)>,
}

/// Parses the descriptor at the start of a VP8 RTP payload; `None` when it is malformed.
pub(crate) fn parse(payload: &[u8]) -> Option<Vp8Info> {
    let first = *payload.first()?;
    let mut off = 1usize;
    let mut info = Vp8Info::default();
    if first & 0x80 != 0 {
        let ext = *payload.get(off)?;
        off += 1;
        if ext & 0x80 != 0 {
            let pid = *payload.get(off)?;
            if pid & 0x80 != 0 {
                info.picture_id = Some(u16::from(pid & 0x7f) << 8 | u16::from(*payload.get(off + 1)?));
                off += 2;
            } else {
                info.picture_id = Some(u16::from(pid));
                off += 1;
            }
        }
        if ext & 0x40 != 0 {
            off += 1;
        }
        if ext & 0x30 != 0 {
            let b = *payload.get(off)?;
            if ext & 0x20 != 0 {
                info.tid = Some(b >> 6);
            }
            off += 1;
        }
    }
    let frame_start = first & 0x10 != 0 && first & 0x07 == 0;
    if !frame_start {
        // Continuation packets need not carry anything after the descriptor.
        return (off <= payload.len()).then_some(info);
    }
    let header = *payload.get(off)?;
    let keyframe = header & 0x01 == 0;
    let height = if keyframe && payload.get(off + 3..off + 6) == Some(&[0x9d, 0x01, 0x2a][..]) {
        payload.get(off + 8..off + 10).map(|b| u16::from_le_bytes([b[0], b[1]]) & 0x3fff)
    } else {
        None
    };
    let record = off + if keyframe { 10 } else { 3 };
    let frame_ref = match payload.get(record..record + 9) {
        Some(r) if r[0] == FRAME_REF_MAGIC => {
            let frame = u32::from_le_bytes([r[1], r[2], r[3], r[4]]);
            let reference = u32::from_le_bytes([r[5], r[6], r[7], r[8]]);
            Some((frame, (reference != u32::MAX).then_some(reference)))
        }
        _ => None,
    };
    Some(Vp8Info { frame_start, keyframe, height, frame_ref, ..info })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_descriptors_parse_back() {
        for (start, key) in [(true, true), (true, false), (false, false)] {
            for temporal in [None, Some(Temporal { tl0_pic_idx: 9, tid: 2, sync: true })] {
                let mut p = Vec::new();
                write_descriptor(&mut p, start, 0x1234, temporal);
                if start {
                    write_payload_header(&mut p, key, 1000, 640, 360);
                    write_frame_ref(&mut p, 77, (!key).then_some(76));
                }
                p.extend_from_slice(&[0u8; 20]);
                let want = Vp8Info {
                    frame_start: start,
                    keyframe: key,
                    height: (start && key).then_some(360),
                    picture_id: Some(0x1234),
                    tid: temporal.map(|t| t.tid),
                    frame_ref: start.then_some((77, (!key).then_some(76))),
                };
                assert_eq!(parse(&p), Some(want), "{start} {key} {temporal:?}");
            }
        }
        // The bridge's own test vector: X S | I | 15-bit id | P=0.
        let info = parse(&[0x90, 0x80, 0x81, 0x23, 0x10]).expect("valid");
        assert!(info.frame_start && info.keyframe && info.frame_ref.is_none());
    }

    #[test]
    fn keyframe_header_has_start_code_and_size() {
        let mut p = Vec::new();
        write_payload_header(&mut p, true, 0x12345, 640, 360);
        assert_eq!(p.len(), 10);
        assert_eq!(p[0] & 1, 0, "P bit clear on a keyframe");
        let size = u32::from(p[0] >> 5) | u32::from(p[1]) << 3 | u32::from(p[2]) << 11;
        assert_eq!(size, 0x12345);
        assert_eq!(&p[3..6], &[0x9d, 0x01, 0x2a]);
        assert_eq!(u16::from_le_bytes([p[6], p[7]]), 640);
        assert_eq!(u16::from_le_bytes([p[8], p[9]]), 360);
    }

    #[test]
    fn truncated_or_empty_is_none() {
        for p in [&[][..], &[0x90], &[0x90, 0x80], &[0x90, 0x80, 0x81], &[0x90, 0x80, 0x81, 0x23], &[0x10]] {
            assert_eq!(parse(p), None, "{p:?}");
        }
    }
}
