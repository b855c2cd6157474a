//! The patched str0m's ULPFEC (vendor/str0m, docs/adr/0004): a bridge-like `Rtc` sends RED-wrapped video and FEC
//! placeholders to a synthetic site in virtual time; what leaves the bridge (its plaintext RTP, header extensions
//! written) is read back, and each FEC packet rebuilds any one packet of its group
//! byte for byte with `diemcau-fec`. So the FEC is computed over the packets as they go on the wire, which is what a
//! browser's ULPFEC receiver needs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use diemcau_drill::{Datagram, SiteConfig, SyntheticSite};
use diemcau_fec::Decoder;
use diemcau_netem::{Profile, Timeline};
use diemcau_proto::Role;
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RawPacket, RtpWrite, UlpfecConfig};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

const RED: u8 = 118;
const ULPFEC: u8 = 120;

/// The bridge's plaintext RTP as sent, and whether it connected.
fn drain(rtc: &mut Rtc, sent: &mut Vec<Vec<u8>>, down: &mut Vec<Vec<u8>>, connected: &mut bool) -> Instant {
    loop {
        match rtc.poll_output().expect("bridge rtc") {
            Output::Timeout(t) => return t,
            Output::Transmit(t) => down.push(t.contents.into()),
            Output::Event(Event::Connected) => *connected = true,
            Output::Event(Event::RawPacket(p)) => {
                if let RawPacket::RtpTx(_, bytes) = *p {
                    sent.push(bytes);
                }
            }
            Output::Event(_) => {}
        }
    }
}

#[test]
fn fec_over_the_packets_as_sent_rebuilds_any_one_of_its_group() -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let site_addr: SocketAddr = "10.1.0.2:40000".parse()?;
    let bridge_addr: SocketAddr = "10.1.0.1:3478".parse()?;
    let cfg = SiteConfig {
        site_id: 42,
        role: Role::Site,
        profile_name: "fibre".into(),
        profile: Profile::preset("fibre")?,
        timeline: Timeline::default(),
        seed: 7,
        local_addr: site_addr,
        publish: None,
        recv_video_slots: 0,
        recv_audio_slots: 0,
    };
    let (mut site, offer) = SyntheticSite::new(t0, t0, cfg)?;
    let mut rtc = RtcConfig::new()
        .set_ice_lite(true)
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_raw_packets(true)
        .build(t0);
    rtc.add_local_candidate(Candidate::host(bridge_addr, "udp")?);
    let answer = rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer)?)?;
    let video: Mid = offer
        .lines()
        .filter_map(|l| l.strip_prefix("a=mid:"))
        .map(|m| Mid::from(m.trim()))
        .find(|m| rtc.media(*m).is_some_and(|md| md.kind() == MediaKind::Video))
        .ok_or("a video slot")?;
    let vp8: Pt =
        rtc.codec_config().params().iter().find(|p| p.spec().codec == Codec::Vp8).map(|p| p.pt()).ok_or("VP8")?;
    site.apply_answer(t0, &answer.to_sdp_string())?;

    let (mut now, mut connected, mut fec_on) = (t0, false, false);
    let (mut sent, mut up, mut down): (Vec<Vec<u8>>, Vec<Datagram>, Vec<Vec<u8>>) =
        (Vec::new(), Vec::new(), Vec::new());
    let mut timeout = drain(&mut rtc, &mut sent, &mut down, &mut connected);
    let mut seq = 1u64;
    let mut written = 0;
    let end = t0 + Duration::from_secs(10);
    while now < end && written < 40 {
        site.handle_timeout(now, &mut up);
        for d in up.drain(..) {
            rtc.handle_input(Input::Receive(now, Receive::new(Protocol::Udp, site_addr, bridge_addr, &d.bytes)?))?;
        }
        if timeout <= now {
            rtc.handle_input(Input::Timeout(now))?;
        }
        if connected && !fec_on {
            let mut api = rtc.direct_api();
            let tx = api.stream_tx_by_mid(video, None).ok_or("video stream")?;
            tx.set_ulpfec(Some(UlpfecConfig { red: RED.into(), red_rtx: None, ulpfec: ULPFEC.into() }));
            fec_on = true;
        }
        // Once connected: frames of 1 to 3 packets of varying sizes, RED-wrapped, an FEC placeholder after every 4.
        if fec_on && written < 40 {
            let mut api = rtc.direct_api();
            let tx = api.stream_tx_by_mid(video, None).ok_or("video stream")?;
            for i in 0..4u64 {
                let mut payload = vec![*vp8];
                payload.extend((0..(200 + (seq * 97 % 900))).map(|b| (b as u8) ^ (seq as u8)));
                let ts = (written as u32 / 2) * 3000;
                tx.write_rtp(RtpWrite::new(RED.into(), seq.into(), ts, now, payload).marker(i % 2 == 1).nackable(true));
                seq += 1;
                written += 1;
            }
            tx.write_rtp(RtpWrite::new(RED.into(), seq.into(), 0, now, vec![ULPFEC]).nackable(false));
            seq += 1;
        }
        timeout = drain(&mut rtc, &mut sent, &mut down, &mut connected);
        for bytes in down.drain(..) {
            site.handle_datagram(now, bridge_addr, &bytes, &mut up);
        }
        if !up.is_empty() {
            continue;
        }
        now = site.poll_timeout().min(timeout).max(now + Duration::from_micros(50)).min(end);
    }
    assert!(connected, "the site connected");

    // What left the bridge on the RED PT: media (block PT = VP8) and FEC (block PT = ULPFEC), in order.
    let red: Vec<&Vec<u8>> = sent.iter().filter(|p| p.len() > 12 && p[1] & 0x7f == RED).collect();
    let header_len = |p: &[u8]| {
        let mut n = 12 + 4 * usize::from(p[0] & 0x0f);
        if p[0] & 0x10 != 0 {
            n += 4 + 4 * usize::from(u16::from_be_bytes([p[n + 2], p[n + 3]]));
        }
        n
    };
    let unwrap = |p: &[u8]| -> Vec<u8> {
        let h = header_len(p);
        let mut m = p[..h].to_vec();
        m[1] = (m[1] & 0x80) | (p[h] & 0x7f);
        m.extend_from_slice(&p[h + 1..]);
        m
    };
    let (mut groups, mut group): (usize, Vec<Vec<u8>>) = (0, Vec::new());
    let mut with_extensions = 0;
    for p in red {
        let h = header_len(p);
        with_extensions += usize::from(p[0] & 0x10 != 0);
        if p[h] & 0x7f == ULPFEC {
            assert_eq!(group.len(), 4, "one FEC packet per four media packets");
            for lost in 0..group.len() {
                let mut d = Decoder::new();
                for (i, m) in group.iter().enumerate().filter(|(i, _)| *i != lost) {
                    assert_eq!(d.add_media(m).map(|v| v.len()), Ok(0), "media {i}");
                }
                let seq = u16::from_be_bytes([p[2], p[3]]);
                let got = d.add_fec(seq, &p[h + 1..]).map_err(|e| format!("FEC packet {groups}: {e}"))?;
                assert_eq!(got, vec![group[lost].clone()], "group {groups}, packet {lost} rebuilt byte for byte");
            }
            groups += 1;
            group.clear();
        } else {
            assert_eq!(p[h] & 0x7f, *vp8, "media inside RED is VP8");
            group.push(unwrap(p));
        }
    }
    assert!(groups >= 8, "{groups} FEC packets checked");
    assert!(with_extensions > 0, "the packets carry header extensions, protected with them");
    Ok(())
}
