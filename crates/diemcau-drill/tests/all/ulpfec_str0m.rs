//! The patched str0m's ULPFEC (vendor/str0m, docs/adr/0004). The answer names `red`/`ulpfec` only on the bridge's
//! `sendonly` video m-lines; a bridge-like `Rtc` sends RED-wrapped video and FEC placeholders to a synthetic site in
//! virtual time; what leaves the bridge (its plaintext RTP, header extensions written) is read back, and each FEC
//! packet rebuilds any one packet of its group byte for byte with `diemcau-fec`. So the FEC is computed over the
//! packets as they go on the wire, which is what a browser's ULPFEC receiver needs. Behind a lossy link the site
//! rebuilds lost packets from it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use diemcau_drill::{Datagram, SiteConfig, SyntheticSite};
use diemcau_fec::Decoder;
use diemcau_netem::{Profile, Timeline};
use diemcau_proto::Role;
use str0m::change::SdpOffer;
use str0m::format::{Codec, VideoFecPts};
use str0m::media::{MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RawPacket, RtpWrite, UlpfecConfig};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

type BoxError = Box<dyn std::error::Error>;

const RED: u8 = 118;
const RED_RTX: u8 = 119;
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

/// A bridge-like `Rtc` (ICE lite, RTP mode, FEC sender) that answered a receive-only synthetic site behind `profile`.
struct Pair {
    site: SyntheticSite,
    rtc: Rtc,
    answer: String,
    offer: String,
    video: Mid,
    vp8: Pt,
    site_addr: SocketAddr,
    bridge_addr: SocketAddr,
}

fn pair(t0: Instant, profile: Profile) -> Result<Pair, Box<dyn std::error::Error>> {
    let site_addr: SocketAddr = "10.1.0.2:40000".parse()?;
    let bridge_addr: SocketAddr = "10.1.0.1:3478".parse()?;
    let cfg = SiteConfig {
        site_id: 42,
        role: Role::Site,
        profile_name: "test".into(),
        profile,
        timeline: Timeline::default(),
        seed: 7,
        local_addr: site_addr,
        publish: None,
        recv_video_slots: 0,
        recv_audio_slots: 0,
    };
    let (mut site, offer) = SyntheticSite::new(t0, t0, cfg)?;
    let mut config = RtcConfig::new()
        .set_ice_lite(true)
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_raw_packets(true);
    // The bridge's own proposal differs from the site's: the site's payload types must win.
    let ours = VideoFecPts { red: 123.into(), red_rtx: Some(124.into()), ulpfec: 125.into() };
    config.codec_config().set_video_fec(Codec::Vp8, Some(ours), true);
    let mut rtc = config.build(t0);
    rtc.add_local_candidate(Candidate::host(bridge_addr, "udp")?);
    let answer = rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer)?)?.to_sdp_string();
    let video: Mid = offer
        .lines()
        .filter_map(|l| l.strip_prefix("a=mid:"))
        .map(|m| Mid::from(m.trim()))
        .find(|m| rtc.media(*m).is_some_and(|md| md.kind() == MediaKind::Video))
        .ok_or("a video slot")?;
    let vp8: Pt =
        rtc.codec_config().params().iter().find(|p| p.spec().codec == Codec::Vp8).map(|p| p.pt()).ok_or("VP8")?;
    site.apply_answer(t0, &answer)?;
    Ok(Pair { site, rtc, answer, offer, video, vp8, site_addr, bridge_addr })
}

/// The m-line sections of an SDP, each with its `m=` line first.
fn sections(sdp: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in sdp.lines() {
        if l.starts_with("m=") {
            out.push(String::new());
        }
        if let Some(s) = out.last_mut() {
            s.push_str(l.trim());
            s.push('\n');
        }
    }
    out
}

#[test]
fn fec_is_negotiated_on_the_lines_it_flows_on_with_the_receivers_payload_types()
-> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let p = pair(t0, Profile::preset("fibre")?)?;
    // The site receives: it names FEC on its recvonly video line, with Chromium's numbers.
    let offer_video: Vec<String> = sections(&p.offer).into_iter().filter(|s| s.starts_with("m=video")).collect();
    assert_eq!(offer_video.len(), 1, "{}", p.offer);
    for l in [
        "a=recvonly",
        "a=rtpmap:118 red/90000",
        "a=rtpmap:119 rtx/90000",
        "a=fmtp:119 apt=118",
        "a=rtpmap:120 ulpfec/90000",
    ] {
        assert!(offer_video[0].contains(l), "offer video line has {l}: {}", offer_video[0]);
    }
    // The bridge answers sendonly with the same numbers, after the primary, and agrees on them.
    let answer_video: Vec<String> = sections(&p.answer).into_iter().filter(|s| s.starts_with("m=video")).collect();
    assert_eq!(answer_video.len(), 1, "{}", p.answer);
    for l in [
        "a=sendonly",
        "a=rtpmap:118 red/90000",
        "a=rtpmap:119 rtx/90000",
        "a=fmtp:119 apt=118",
        "a=rtpmap:120 ulpfec/90000",
    ] {
        assert!(answer_video[0].contains(l), "answer video line has {l}: {}", answer_video[0]);
    }
    assert!(
        !p.answer.contains("red/90000\r\na=rtpmap:118") && !p.answer.contains(":123 "),
        "no PT of the bridge's own"
    );
    let m_line = answer_video[0].lines().next().unwrap_or_default();
    assert!(
        m_line.ends_with(&format!("{} {} 118 119 120", *p.vp8, *p.vp8 + 1)) || m_line.contains(" 118 119 120"),
        "{m_line}"
    );
    let agreed = |rtc: &Rtc| {
        rtc.codec_config().params().iter().find(|c| c.spec().codec == Codec::Vp8).and_then(|c| c.video_fec())
    };
    let chromium = VideoFecPts { red: RED.into(), red_rtx: Some(RED_RTX.into()), ulpfec: ULPFEC.into() };
    assert_eq!(agreed(&p.rtc), Some(chromium), "the bridge agreed on the site's payload types");
    assert_eq!(p.rtc.media(p.video).and_then(|m| m.remote_video_fec()), Some(true));
    // No audio line carries video FEC.
    for s in sections(&p.answer).iter().filter(|s| s.starts_with("m=audio")) {
        assert!(!s.contains("ulpfec") && !s.contains("red/90000"), "{s}");
    }
    Ok(())
}

#[test]
fn a_sendrecv_line_gets_no_fec_so_the_remote_does_not_wrap_its_own_video() -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let site_addr: SocketAddr = "10.1.0.3:40000".parse()?;
    let cfg = SiteConfig {
        site_id: 43,
        role: Role::Site,
        profile_name: "fibre".into(),
        profile: Profile::preset("fibre")?,
        timeline: Timeline::default(),
        seed: 8,
        local_addr: site_addr,
        publish: Some(diemcau_drill::PublisherConfig::default()),
        recv_video_slots: 0,
        recv_audio_slots: 0,
    };
    let (mut site, offer) = SyntheticSite::new(t0, t0, cfg)?;
    assert!(
        sections(&offer).iter().any(|s| s.starts_with("m=video") && s.contains("a=sendrecv") && s.contains("ulpfec")),
        "{offer}"
    );
    let mut config =
        RtcConfig::new().set_ice_lite(true).set_rtp_mode(true).clear_codecs().enable_opus(true, false).enable_vp8(true);
    let ours = VideoFecPts { red: RED.into(), red_rtx: Some(RED_RTX.into()), ulpfec: ULPFEC.into() };
    config.codec_config().set_video_fec(Codec::Vp8, Some(ours), true);
    let mut rtc = config.build(t0);
    rtc.add_local_candidate(Candidate::host("10.1.0.1:3478".parse()?, "udp")?);
    let answer = rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer)?)?.to_sdp_string();
    let video = sections(&answer).into_iter().find(|s| s.starts_with("m=video")).ok_or("video line")?;
    assert!(video.contains("a=sendrecv"), "{video}");
    assert!(!video.contains("ulpfec") && !video.contains("red/90000"), "no FEC on a sendrecv line: {video}");
    site.apply_answer(t0, &answer)?;
    Ok(())
}

/// The length of the CSRC list and header extension after an RTP packet's 12 fixed bytes.
fn ext_len(p: &[u8]) -> usize {
    let mut n = 4 * usize::from(p[0] & 0x0f);
    if p[0] & 0x10 != 0 {
        n += 4 + 4 * usize::from(u16::from_be_bytes([p[12 + n + 2], p[12 + n + 3]]));
    }
    n
}

/// Once connected, `groups` groups sent by the bridge, one every `every`: four RED-wrapped VP8 packets (frames of
/// two, varying sizes) and an FEC placeholder after them; then a second more for the repairs. Returns the
/// bridge's plaintext RTP as sent and the virtual time at the end.
fn send_groups(p: &mut Pair, t0: Instant, groups: u64, every: Duration) -> Result<(Vec<Vec<u8>>, Instant), BoxError> {
    let (site, rtc, video, vp8) = (&mut p.site, &mut p.rtc, p.video, p.vp8);
    let (mut now, mut connected, mut fec_on) = (t0, false, false);
    let (mut sent, mut up, mut down): (Vec<Vec<u8>>, Vec<Datagram>, Vec<Vec<u8>>) =
        (Vec::new(), Vec::new(), Vec::new());
    let mut timeout = drain(rtc, &mut sent, &mut down, &mut connected);
    let (mut seq, mut written, mut next_group) = (1u64, 0u64, t0);
    let mut end = t0 + Duration::from_secs(10) + every * groups as u32;
    while now < end {
        site.handle_timeout(now, &mut up);
        for d in up.drain(..) {
            rtc.handle_input(Input::Receive(now, Receive::new(Protocol::Udp, p.site_addr, p.bridge_addr, &d.bytes)?))?;
        }
        if timeout <= now {
            rtc.handle_input(Input::Timeout(now))?;
        }
        if connected && !fec_on {
            let mut api = rtc.direct_api();
            let tx = api.stream_tx_by_mid(video, None).ok_or("video stream")?;
            tx.set_ulpfec(Some(UlpfecConfig { red: RED.into(), red_rtx: Some(RED_RTX.into()), ulpfec: ULPFEC.into() }));
            fec_on = true;
            next_group = now;
        }
        if fec_on && written < 4 * groups && now >= next_group {
            let mut api = rtc.direct_api();
            let tx = api.stream_tx_by_mid(video, None).ok_or("video stream")?;
            for i in 0..4u64 {
                let mut payload = vec![*vp8];
                // A VP8 descriptor (S = 1 at a frame's start, partition 0) and a body that differs per packet.
                payload.push(if i % 2 == 0 { 0x10 } else { 0x00 });
                payload.extend((0..(200 + (seq * 97 % 900))).map(|b| (b as u8) ^ (seq as u8)));
                let ts = (written as u32 / 2) * 3000;
                tx.write_rtp(RtpWrite::new(RED.into(), seq.into(), ts, now, payload).marker(i % 2 == 1).nackable(true));
                seq += 1;
                written += 1;
            }
            tx.write_rtp(RtpWrite::new(RED.into(), seq.into(), 0, now, vec![ULPFEC]).nackable(false));
            seq += 1;
            next_group = now + every;
            if written == 4 * groups {
                end = now + Duration::from_secs(1);
            }
        }
        timeout = drain(rtc, &mut sent, &mut down, &mut connected);
        for bytes in down.drain(..) {
            site.handle_datagram(now, p.bridge_addr, &bytes, &mut up);
        }
        if !up.is_empty() {
            continue;
        }
        let mut next = site.poll_timeout().min(timeout);
        if fec_on && written < 4 * groups {
            next = next.min(next_group);
        }
        now = next.max(now + Duration::from_micros(50)).min(end);
    }
    assert!(connected, "the site connected");
    Ok((sent, now))
}

#[test]
fn fec_over_the_packets_as_sent_rebuilds_any_one_of_its_group() -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let mut p = pair(t0, Profile::preset("fibre")?)?;
    let (sent, _) = send_groups(&mut p, t0, 10, Duration::from_millis(20))?;
    let vp8 = p.vp8;

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

#[test]
fn behind_a_lossy_link_the_site_rebuilds_lost_video_from_fec() -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    // 10% random loss toward the site, none back (its NACKs and reports all arrive).
    let mut profile = Profile::preset("fibre")?;
    profile.down.loss = 0.10;
    let mut p = pair(t0, profile)?;
    let (sent, end) = send_groups(&mut p, t0, 200, Duration::from_millis(20))?;
    let red_sent = sent.iter().filter(|b| b.len() > 12 && b[1] & 0x7f == RED).count() as u64;
    let fec_sent =
        sent.iter().filter(|b| b.len() > 13 && b[1] & 0x7f == RED && b[12 + ext_len(b)] == ULPFEC).count() as u64;
    let report = p.site.report(end);
    let v = &report.video;
    // Of four media packets and their FEC packet, a lost media packet is rebuilt when the four others came:
    // 0.9⁴ ≈ 66% of the lost media packets. The link dropped ≈ 10% of everything (FEC, resends, RTCP too).
    assert_eq!((red_sent, fec_sent), (1000, 200), "RED packets and FEC packets sent");
    assert!(v.fec_packets >= 150, "FEC packets received: {}", v.fec_packets);
    let dropped = report.link.down_dropped;
    assert!(dropped >= 60, "the link dropped {dropped}");
    assert!(v.fec_recovered * 4 >= dropped, "rebuilt {} of {dropped} dropped", v.fec_recovered);
    // FEC, then RTX for the rest, repair every media packet: the numbers never received are FEC packets lost on
    // the way (not resent: FEC is not nackable).
    assert_eq!(v.lost, fec_sent - v.fec_packets, "{v:?}");
    assert!(v.packets >= 800, "{v:?}");
    Ok(())
}
