//! Just enough of the VP8 RTP payload descriptor (RFC 7741 §4.2) to find frame starts, keyframes and temporal layers.
//!
//! The bridge never decodes video. It needs to know where a keyframe starts (a subscriber switched to a new source
//! begins on a picture it can decode), and, when the publisher encodes temporal layers (Chromium's simulcast: L1T3),
//! each frame's layer (TID), whether it is a layer sync point (Y), and the PictureID / TL0PICIDX / KEYIDX it carries,
//! which the bridge renumbers per subscriber when it drops frames or switches layers ([`crate::rewrite`]). Input is
//! untrusted bytes from the network: every read is bounds checked and a malformed descriptor is `None`.

/// What the bridge needs to know about one VP8 RTP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Info {
    /// First packet of a frame (S=1 and partition index 0).
    pub frame_start: bool,
    /// First packet of a keyframe (frame start with the VP8 payload header's P bit clear).
    pub keyframe: bool,
    /// PictureID (7 or 15 bits, as sent).
    pub picture_id: Option<u16>,
    /// The PictureID is the 15-bit form (M=1).
    pub long_picture_id: bool,
    /// TL0PICIDX: running index of the temporal base layer's frames.
    pub tl0_pic_idx: Option<u8>,
    /// Temporal layer of the frame (TID), when the T bit is set.
    pub tid: Option<u8>,
    /// KEYIDX (5 bits), when the K bit is set.
    pub key_idx: Option<u8>,
    /// Layer sync (Y): the frame references only the base layer, so forwarding its layer may start here.
    pub layer_sync: bool,
}

/// Parses the payload descriptor at the start of a VP8 RTP payload. Returns `None` when it is malformed.
pub fn parse(payload: &[u8]) -> Option<Vp8Info> {
    let first = *payload.first()?;
    let mut off = 1usize;
    let mut info = Vp8Info::default();
    if first & 0x80 != 0 {
        // X: extension byte follows.
        let ext = *payload.get(off)?;
        off += 1;
        if ext & 0x80 != 0 {
            // I: PictureID, 7 or 15 bits.
            let pid = *payload.get(off)?;
            if pid & 0x80 != 0 {
                let low = *payload.get(off + 1)?;
                info.picture_id = Some(u16::from(pid & 0x7f) << 8 | u16::from(low));
                info.long_picture_id = true;
                off += 2;
            } else {
                info.picture_id = Some(u16::from(pid));
                off += 1;
            }
        }
        if ext & 0x40 != 0 {
            // L: TL0PICIDX.
            info.tl0_pic_idx = Some(*payload.get(off)?);
            off += 1;
        }
        if ext & 0x30 != 0 {
            // T or K: the TID/Y/KEYIDX byte.
            let b = *payload.get(off)?;
            if ext & 0x20 != 0 {
                info.tid = Some(b >> 6);
                info.layer_sync = b & 0x20 != 0;
            }
            if ext & 0x10 != 0 {
                info.key_idx = Some(b & 0x1f);
            }
            off += 1;
        }
    }
    let header = *payload.get(off)?;
    info.frame_start = first & 0x10 != 0 && first & 0x07 == 0;
    info.keyframe = info.frame_start && header & 0x01 == 0;
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_with_picture_id() {
        // X=1 S=1 PID=0 | I=1 | 15-bit picture id | VP8 header P=0
        let p = [0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00];
        let info = parse(&p).expect("valid");
        assert!(info.frame_start && info.keyframe);
        assert_eq!((info.picture_id, info.tl0_pic_idx, info.tid), (Some(0x123), None, None));
    }

    #[test]
    fn temporal_layer_fields() {
        // X=1 S=1 | I=1 L=1 T=1 | 7-bit picture id 5 | TL0PICIDX 200 | TID=2 Y=1 | VP8 header P=1
        let p = [0x90, 0xe0, 0x05, 200, 0b1010_0000, 0x01];
        let info = parse(&p).expect("valid");
        assert_eq!((info.picture_id, info.tl0_pic_idx, info.tid, info.layer_sync), (Some(5), Some(200), Some(2), true));
        assert!(info.frame_start && !info.keyframe);
        // K without T: the byte is there, no TID.
        let p = [0x80, 0x10, 0x1f, 0x01];
        assert_eq!(parse(&p).map(|i| (i.tid, i.key_idx)), Some((None, Some(0x1f))));
    }

    #[test]
    fn inter_frame_and_continuation() {
        let start = parse(&[0x10, 0x01]).expect("valid");
        assert!(start.frame_start && !start.keyframe);
        let cont = parse(&[0x00, 0x00]).expect("valid");
        assert!(!cont.frame_start && !cont.keyframe);
        // S=1 but partition 1: not the start of the frame.
        assert!(!parse(&[0x11, 0x00]).expect("valid").frame_start);
    }

    #[test]
    fn truncated_is_none() {
        for p in [
            &[][..],
            &[0x90],
            &[0x90, 0x80],
            &[0x90, 0x80, 0x81],
            &[0x90, 0x80, 0x81, 0x23],
            &[0x10],
            &[0x90, 0xe0, 0x05, 200],
            &[0x90, 0xe0, 0x05, 200, 0x40],
        ] {
            assert_eq!(parse(p), None, "{p:?}");
        }
    }
}
