//! ULPFEC from outside bytes: any sequence of media and FEC packets fed to a `Decoder` never panics, and whatever
//! it recovers is a well-formed RTP packet of the stream. Then a round trip: a group built from the input, one packet
//! dropped, comes back byte for byte from the group's FEC packet.
#![no_main]

use diemcau_fec::{Decoder, MAX_PACKET, RTP_HEADER, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::new();
    let mut rest = data;
    while rest.len() >= 4 {
        let (op, n) = (rest[0], usize::from(u16::from_be_bytes([rest[1], rest[2]])) % (MAX_PACKET + 64));
        let body = &rest[3..(3 + n).min(rest.len())];
        rest = &rest[(3 + n).min(rest.len())..];
        let got = if op & 1 == 0 {
            d.add_media(body)
        } else {
            d.add_fec(u16::from(op) << 4, body)
        };
        for p in got.into_iter().flatten() {
            assert!(p.len() >= RTP_HEADER && p.len() <= MAX_PACKET && p[0] >> 6 == 2);
        }
    }
    // Round trip over packets cut from the input.
    let mut group: Vec<Vec<u8>> = Vec::new();
    for (i, chunk) in data.chunks(200).take(10).enumerate() {
        let mut p = vec![0x80, 96, 0, i as u8, 0, 0, 0, 9, 1, 2, 3, 4];
        p.extend_from_slice(chunk);
        group.push(p);
    }
    if group.len() < 2 {
        return;
    }
    let refs: Vec<&[u8]> = group.iter().map(|p| p.as_slice()).collect();
    let Ok(fec) = encode(&refs) else { return };
    let lost = usize::from(data[0]) % group.len();
    let mut d = Decoder::new();
    for (i, p) in group.iter().enumerate().filter(|(i, _)| *i != lost) {
        assert!(d.add_media(p).is_ok(), "packet {i}");
    }
    assert_eq!(d.add_fec(200, &fec).ok(), Some(vec![group[lost].clone()]));
});
