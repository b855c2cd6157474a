//! Just enough of the VP8 RTP payload descriptor (RFC 7741 §4.2) to find frame starts and keyframes.
//!
//! The bridge never decodes video; it only needs to know where a keyframe starts so that a subscriber switched to a
//! new source begins on a picture it can decode. Input is untrusted bytes from the network: every read is bounds
//! checked and a malformed descriptor is simply "not a keyframe".

/// What the bridge needs to know about one VP8 RTP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Info {
    /// First packet of a frame (S=1 and partition index 0).
    pub frame_start: bool,
    /// First packet of a keyframe (frame start with the VP8 payload header's P bit clear).
    pub keyframe: bool,
}

/// Parses the payload descriptor at the start of a VP8 RTP payload. Returns `None` when it is malformed.
pub fn parse(payload: &[u8]) -> Option<Vp8Info> {
    let first = *payload.first()?;
    let mut off = 1usize;
    if first & 0x80 != 0 {
        // X: extension byte follows.
        let ext = *payload.get(off)?;
        off += 1;
        if ext & 0x80 != 0 {
            // I: PictureID, 7 or 15 bits.
            let pid = *payload.get(off)?;
            off += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            // L: TL0PICIDX.
            off += 1;
        }
        if ext & 0x30 != 0 {
            // T or K: TID/Y/KEYIDX byte.
            off += 1;
        }
    }
    let header = *payload.get(off)?;
    let frame_start = first & 0x10 != 0 && first & 0x07 == 0;
    Some(Vp8Info { frame_start, keyframe: frame_start && header & 0x01 == 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_with_picture_id() {
        // X=1 S=1 PID=0 | I=1 | 15-bit picture id | VP8 header P=0
        let p = [0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00];
        assert_eq!(parse(&p), Some(Vp8Info { frame_start: true, keyframe: true }));
    }

    #[test]
    fn inter_frame_and_continuation() {
        assert_eq!(parse(&[0x10, 0x01]), Some(Vp8Info { frame_start: true, keyframe: false }));
        assert_eq!(parse(&[0x00, 0x00]), Some(Vp8Info { frame_start: false, keyframe: false }));
        // S=1 but partition 1: not the start of the frame.
        assert_eq!(parse(&[0x11, 0x00]), Some(Vp8Info { frame_start: false, keyframe: false }));
    }

    #[test]
    fn truncated_is_none() {
        for p in [&[][..], &[0x90], &[0x90, 0x80], &[0x90, 0x80, 0x81], &[0x90, 0x80, 0x81, 0x23], &[0x10]] {
            assert_eq!(parse(p), None, "{p:?}");
        }
    }
}
