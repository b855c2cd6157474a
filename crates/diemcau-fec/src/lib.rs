//! ULPFEC (RFC 5109): XOR forward error correction over RTP packets, as libwebrtc sends and receives it inside RED.
//!
//! An FEC packet protects up to 48 media packets of one stream, named by a mask from a base sequence number. It
//! carries the XOR of their bytes after the 12-byte fixed header: CSRCs, header extensions and payload, as they went
//! on the wire. A receiver that has every protected packet but one rebuilds that one, byte for byte, header
//! included. [`encode`] builds the FEC payload (what follows the RED block header whose PT is ulpfec). A [`Decoder`]
//! takes media and FEC packets as they come and gives back what it recovers, recovering again from what it recovered
//! (two FEC packets over overlapping groups repair two losses).
//!
//! Only FEC level 0 is used (libwebrtc sends no other). Both parsers take outside bytes: they never panic and
//! never allocate more than [`MAX_PACKET`] per packet. See docs/adr/0004-video-fec-toward-lossy-links.md.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

/// Fixed RTP header bytes (not protected: rebuilt from the FEC header's recovery fields and the stream's SSRC).
pub const RTP_HEADER: usize = 12;
/// FEC header bytes (RFC 5109 §7.3).
const FEC_HEADER: usize = 10;
/// Longest RTP packet handled, bytes.
pub const MAX_PACKET: usize = 1500;
/// Most media packets one FEC packet protects (the long mask, L = 1).
pub const MAX_GROUP: usize = 48;
/// How far behind the newest sequence number a packet is kept for recovery.
const KEEP: u16 = 512;

/// Why bytes were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FecError {
    /// Not an RTP packet (shorter than its header, not version 2) or longer than [`MAX_PACKET`].
    #[error("not a usable RTP packet")]
    BadPacket,
    /// No packet, more than [`MAX_GROUP`], two with the same sequence number, or spread over more than the mask.
    #[error("the packets cannot be protected by one FEC packet")]
    BadGroup,
    /// An FEC payload that is too short, uses FEC levels beyond 0 in a way that cannot be read, or protects nothing.
    #[error("malformed FEC payload")]
    BadFec,
}

/// Is `s` within [`KEEP`] of `newest`, either side (mod 2^16)?
fn near(newest: u16, s: u16) -> bool {
    newest.wrapping_sub(s) <= KEEP || s.wrapping_sub(newest) <= KEEP
}

fn seq_of(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[2], p[3]])
}

fn check_rtp(p: &[u8]) -> Result<(), FecError> {
    if p.len() < RTP_HEADER || p.len() > MAX_PACKET || p[0] >> 6 != 2 {
        return Err(FecError::BadPacket);
    }
    Ok(())
}

/// The FEC payload protecting `packets` (whole RTP packets of one stream, as sent). The base is the packet whose
/// sequence number the others follow within the mask; the mask is the long one when they span more than 16.
pub fn encode(packets: &[&[u8]]) -> Result<Vec<u8>, FecError> {
    if packets.is_empty() || packets.len() > MAX_GROUP {
        return Err(FecError::BadGroup);
    }
    for p in packets {
        check_rtp(p)?;
    }
    // The base: the packet from which every other one is 0..48 ahead (mod 2^16).
    let base = packets
        .iter()
        .map(|p| seq_of(p))
        .find(|b| packets.iter().all(|p| usize::from(seq_of(p).wrapping_sub(*b)) < MAX_GROUP))
        .ok_or(FecError::BadGroup)?;
    let mut mask: u64 = 0;
    for p in packets {
        let bit = 1u64 << (47 - usize::from(seq_of(p).wrapping_sub(base)));
        if mask & bit != 0 {
            return Err(FecError::BadGroup);
        }
        mask |= bit;
    }
    let long = mask & 0xFFFF_FFFF != 0;
    let protection = packets.iter().map(|p| p.len() - RTP_HEADER).max().unwrap_or(0);
    let level_header = if long { 8 } else { 4 };
    let mut out = vec![0u8; FEC_HEADER + level_header + protection];
    let (mut b0, mut b1, mut ts, mut len) = (0u8, 0u8, [0u8; 4], 0u16);
    for p in packets {
        b0 ^= p[0];
        b1 ^= p[1];
        for i in 0..4 {
            ts[i] ^= p[4 + i];
        }
        // Bounded by MAX_PACKET.
        len ^= (p.len() - RTP_HEADER) as u16;
        for (o, b) in out[FEC_HEADER + level_header..].iter_mut().zip(&p[RTP_HEADER..]) {
            *o ^= b;
        }
    }
    out[0] = (u8::from(long) << 6) | (b0 & 0x3f);
    out[1] = b1;
    out[2..4].copy_from_slice(&base.to_be_bytes());
    out[4..8].copy_from_slice(&ts);
    out[8..10].copy_from_slice(&len.to_be_bytes());
    out[10..12].copy_from_slice(&(protection as u16).to_be_bytes());
    let mask_bytes = mask.to_be_bytes();
    out[12..12 + level_header - 2].copy_from_slice(&mask_bytes[2..2 + level_header - 2]);
    Ok(out)
}

/// One parsed FEC packet waiting for its group to be complete but one.
#[derive(Debug, Clone)]
struct Fec {
    b0: u8,
    b1: u8,
    ts: [u8; 4],
    len: u16,
    /// The protected sequence numbers.
    seqs: Vec<u16>,
    /// The level-0 payload (XOR of the protected bytes after the fixed header), `protection` bytes.
    xor: Vec<u8>,
}

fn parse_fec(payload: &[u8]) -> Result<Fec, FecError> {
    if payload.len() < FEC_HEADER + 4 || payload[0] & 0x80 != 0 {
        return Err(FecError::BadFec);
    }
    let long = payload[0] & 0x40 != 0;
    let level_header = if long { 8 } else { 4 };
    if payload.len() < FEC_HEADER + level_header {
        return Err(FecError::BadFec);
    }
    let protection = usize::from(u16::from_be_bytes([payload[10], payload[11]]));
    let body = &payload[FEC_HEADER + level_header..];
    if protection > body.len() || protection > MAX_PACKET - RTP_HEADER {
        return Err(FecError::BadFec);
    }
    let mut m = [0u8; 8];
    m[2..2 + level_header - 2].copy_from_slice(&payload[12..12 + level_header - 2]);
    let mask = u64::from_be_bytes(m);
    let base = u16::from_be_bytes([payload[2], payload[3]]);
    let seqs: Vec<u16> = (0..48u16).filter(|i| mask & (1u64 << (47 - i)) != 0).map(|i| base.wrapping_add(i)).collect();
    if seqs.is_empty() {
        return Err(FecError::BadFec);
    }
    Ok(Fec {
        b0: payload[0] & 0x3f,
        b1: payload[1],
        ts: [payload[4], payload[5], payload[6], payload[7]],
        len: u16::from_be_bytes([payload[8], payload[9]]),
        seqs,
        xor: body[..protection].to_vec(),
    })
}

/// The receiving side for one stream (one SSRC): media and FEC packets in, recovered media packets out.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Media packets kept (received or recovered), by sequence number.
    media: BTreeMap<u16, Vec<u8>>,
    /// FEC packets with more than one protected packet still missing.
    fec: Vec<Fec>,
    /// The newest sequence number seen, for forgetting old packets.
    newest: Option<u16>,
    ssrc: [u8; 4],
    recovered: u64,
}

impl Decoder {
    /// A decoder with nothing received.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Packets recovered so far.
    pub fn recovered(&self) -> u64 {
        self.recovered
    }

    /// A media packet as received (its RTP header with the media PT, RED unwrapped). Returns what it lets the
    /// decoder recover. A packet already known is ignored.
    pub fn add_media(&mut self, packet: &[u8]) -> Result<Vec<Vec<u8>>, FecError> {
        check_rtp(packet)?;
        let seq = seq_of(packet);
        self.ssrc.copy_from_slice(&packet[8..12]);
        self.advance(seq);
        if self.media.contains_key(&seq) {
            return Ok(Vec::new());
        }
        self.media.insert(seq, packet.to_vec());
        Ok(self.recover())
    }

    /// An FEC payload (after the RED block header) of this stream, with the sequence number of the RTP packet
    /// that carried it. Returns what it lets the decoder recover.
    pub fn add_fec(&mut self, seq: u16, payload: &[u8]) -> Result<Vec<Vec<u8>>, FecError> {
        let fec = parse_fec(payload)?;
        self.advance(seq);
        let newest = self.newest.unwrap_or(seq);
        if fec.seqs.iter().all(|s| near(newest, *s))
            && fec.seqs.iter().any(|s| !self.media.contains_key(s))
            && self.fec.len() < 4 * MAX_GROUP
        {
            self.fec.push(fec);
        }
        Ok(self.recover())
    }

    fn advance(&mut self, seq: u16) {
        let newer = self.newest.is_none_or(|n| seq.wrapping_sub(n) < 0x8000);
        if !newer {
            return;
        }
        self.newest = Some(seq);
        self.media.retain(|s, _| near(seq, *s));
        self.fec.retain(|f| f.seqs.iter().all(|s| near(seq, *s)));
    }

    /// Recovers every packet some FEC packet misses alone, again and again while that repairs more.
    fn recover(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let mut progress = false;
            let mut i = 0;
            while i < self.fec.len() {
                let missing: Vec<u16> =
                    self.fec[i].seqs.iter().copied().filter(|s| !self.media.contains_key(s)).collect();
                match missing.as_slice() {
                    [] => {
                        self.fec.swap_remove(i);
                    }
                    [lost] => {
                        let fec = self.fec.swap_remove(i);
                        if let Some(p) = self.rebuild(&fec, *lost) {
                            self.media.insert(*lost, p.clone());
                            self.recovered += 1;
                            out.push(p);
                            progress = true;
                        }
                    }
                    _ => i += 1,
                }
            }
            if !progress {
                return out;
            }
        }
    }

    /// Packet `lost` from `fec` and the group's other packets (all present).
    fn rebuild(&self, fec: &Fec, lost: u16) -> Option<Vec<u8>> {
        let (mut b0, mut b1, mut ts, mut len) = (fec.b0, fec.b1, fec.ts, fec.len);
        let mut body = fec.xor.clone();
        for s in fec.seqs.iter().filter(|s| **s != lost) {
            let p = self.media.get(s)?;
            b0 ^= p[0];
            b1 ^= p[1];
            for i in 0..4 {
                ts[i] ^= p[4 + i];
            }
            len ^= (p.len() - RTP_HEADER) as u16;
            // A protected packet longer than the protection length means the FEC packet is not what it claims.
            if p.len() - RTP_HEADER > body.len() {
                return None;
            }
            for (o, b) in body.iter_mut().zip(&p[RTP_HEADER..]) {
                *o ^= b;
            }
        }
        let len = usize::from(len);
        if len > body.len() {
            return None;
        }
        let mut p = Vec::with_capacity(RTP_HEADER + len);
        p.push(0x80 | (b0 & 0x3f));
        p.push(b1);
        p.extend_from_slice(&lost.to_be_bytes());
        p.extend_from_slice(&ts);
        p.extend_from_slice(&self.ssrc);
        p.extend_from_slice(&body[..len]);
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTP packet: PT 96, `seq`, a timestamp per frame of 3, the marker on the frame's last, a one-byte-header
    /// extension on some, and a payload whose length varies.
    fn pkt(seq: u16) -> Vec<u8> {
        let ext = seq.is_multiple_of(3);
        let mut p = vec![0x80 | if ext { 0x10 } else { 0 }, 96 | if seq % 3 == 2 { 0x80 } else { 0 }];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq / 3) * 3000).to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        if ext {
            p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, seq as u8, 0, 0]);
        }
        p.extend((0..(100 + usize::from(seq) * 37 % 900)).map(|i| (i as u8).wrapping_mul(seq as u8 | 1)));
        p
    }

    fn decoder_with(received: &[u16]) -> Decoder {
        let mut d = Decoder::new();
        for s in received {
            assert_eq!(d.add_media(&pkt(*s)), Ok(vec![]));
        }
        d
    }

    #[test]
    fn one_loss_in_a_group_comes_back_byte_for_byte() {
        let group: Vec<Vec<u8>> = (100..104).map(pkt).collect();
        let refs: Vec<&[u8]> = group.iter().map(|p| p.as_slice()).collect();
        let fec = encode(&refs).unwrap();
        for lost in 100..104u16 {
            let mut d = decoder_with(&(100..104).filter(|s| *s != lost).collect::<Vec<_>>());
            assert_eq!(d.add_fec(104, &fec), Ok(vec![pkt(lost)]), "lost {lost}");
            assert_eq!(d.recovered(), 1);
        }
        // FEC first, the loss's neighbours after: recovered when the last of them comes.
        let mut d = Decoder::new();
        assert_eq!(d.add_fec(104, &fec), Ok(vec![]));
        for s in [100, 101] {
            assert_eq!(d.add_media(&pkt(s)), Ok(vec![]));
        }
        assert_eq!(d.add_media(&pkt(103)), Ok(vec![pkt(102)]));
        // Nothing lost: nothing to recover, and the FEC packet is not kept.
        let mut d = decoder_with(&[100, 101, 102, 103]);
        assert_eq!(d.add_fec(104, &fec), Ok(vec![]));
        assert!(d.fec.is_empty());
    }

    #[test]
    fn two_losses_need_two_fec_packets_and_are_recovered_in_turn() {
        let a: Vec<Vec<u8>> = (10..14).map(pkt).collect();
        let b: Vec<Vec<u8>> = (12..16).map(pkt).collect();
        let fa = encode(&a.iter().map(|p| p.as_slice()).collect::<Vec<_>>()).unwrap();
        let fb = encode(&b.iter().map(|p| p.as_slice()).collect::<Vec<_>>()).unwrap();
        // 11 and 13 lost: fa alone misses two; fb misses only 13 → 13, then fa misses only 11 → 11.
        let mut d = decoder_with(&[10, 12, 14, 15]);
        assert_eq!(d.add_fec(16, &fa), Ok(vec![]));
        let got = d.add_fec(17, &fb).unwrap();
        assert_eq!(got, vec![pkt(13), pkt(11)]);
        // Two losses under one FEC packet only: not recoverable, and nothing made up.
        let mut d = decoder_with(&[10, 13]);
        assert_eq!(d.add_fec(14, &fa), Ok(vec![]));
    }

    #[test]
    fn long_masks_and_sequence_wraparound() {
        let seqs: Vec<u16> = (0..30u16).map(|i| 65_530u16.wrapping_add(i)).filter(|s| s % 2 == 0).collect();
        let group: Vec<Vec<u8>> = seqs.iter().map(|s| pkt(*s)).collect();
        // Given in any order.
        let mut refs: Vec<&[u8]> = group.iter().map(|p| p.as_slice()).collect();
        refs.reverse();
        let fec = encode(&refs).unwrap();
        assert_eq!(fec[0] & 0x40, 0x40, "the long mask for a span of 30");
        assert_eq!(u16::from_be_bytes([fec[2], fec[3]]), 65_530, "the base is the oldest, across the wrap");
        let lost = seqs[7];
        let mut d = decoder_with(&seqs.iter().copied().filter(|s| *s != lost).collect::<Vec<_>>());
        assert_eq!(d.add_fec(20, &fec), Ok(vec![pkt(lost)]));
        // A short group gets the short mask.
        let short = encode(&[pkt(5).as_slice(), pkt(9).as_slice()]).unwrap();
        assert_eq!(short[0] & 0x40, 0);
        assert_eq!(short.len(), FEC_HEADER + 4 + pkt(5).len().max(pkt(9).len()) - RTP_HEADER);
    }

    #[test]
    fn groups_that_cannot_be_protected_are_refused() {
        assert_eq!(encode(&[]), Err(FecError::BadGroup));
        assert_eq!(encode(&[pkt(1).as_slice(), pkt(1).as_slice()]), Err(FecError::BadGroup));
        assert_eq!(encode(&[pkt(1).as_slice(), pkt(49).as_slice()]), Err(FecError::BadGroup));
        assert_eq!(encode(&[&[0x80, 96, 0, 1][..]]), Err(FecError::BadPacket));
        let mut v1 = pkt(3);
        v1[0] = 0x40;
        assert_eq!(encode(&[v1.as_slice()]), Err(FecError::BadPacket));
    }

    #[test]
    fn malformed_fec_is_refused_and_a_lying_one_recovers_nothing() {
        let mut d = decoder_with(&[1, 2]);
        assert_eq!(d.add_fec(3, &[0; 5]), Err(FecError::BadFec));
        // A mask of nothing.
        assert_eq!(d.add_fec(3, &[0; 14]), Err(FecError::BadFec));
        // Protection length beyond the bytes given.
        let mut f = encode(&[pkt(1).as_slice(), pkt(2).as_slice(), pkt(3).as_slice()]).unwrap();
        f[10] = 0xff;
        assert_eq!(d.add_fec(4, &f), Err(FecError::BadFec));
        // A protection length shorter than a protected packet: refused at recovery, nothing invented.
        let mut f = encode(&[pkt(1).as_slice(), pkt(2).as_slice(), pkt(3).as_slice()]).unwrap();
        let short = (pkt(1).len().min(pkt(2).len()) - RTP_HEADER - 1) as u16;
        f[10..12].copy_from_slice(&short.to_be_bytes());
        assert_eq!(d.add_fec(4, &f), Ok(vec![]));
        assert_eq!(d.add_media(&[1, 2, 3]), Err(FecError::BadPacket));
    }

    #[test]
    fn old_packets_are_forgotten() {
        let mut d = decoder_with(&[1, 2, 3]);
        let _ = d.add_media(&pkt(2000)).unwrap();
        assert_eq!(d.media.len(), 1, "only what is within {KEEP} of the newest");
        let fec = encode(&[pkt(1).as_slice(), pkt(2).as_slice()]).unwrap();
        assert_eq!(d.add_fec(2001, &fec), Ok(vec![]));
        assert!(d.fec.is_empty(), "an FEC packet for a forgotten group is dropped");
    }
}
