//! A [`SyntheticSite`] in virtual time against a minimal bridge: a str0m `Rtc` that is ICE-lite and in RTP mode like
//! the bridge's peers, and sends a [`Publisher`]'s packets on the site's slots. Every datagram crosses the site's
//! emulated link; time jumps from one timeout to the next, so 12 s of a 3G or VSAT meeting run in well under a second
//! (DTLS handshake crypto aside). What is measured must match the link: NACK/RTX repairs video loss on 3G; audio is
//! not retransmitted, so VSAT's 5% random loss shows in the audio continuity.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use diemcau_drill::metrics::SiteReport;
use diemcau_drill::{Datagram, Publisher, PublisherConfig, SiteConfig, SyntheticSite};
use diemcau_netem::{Profile, Timeline};
use diemcau_proto::Role;
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

/// The minimal bridge: one `Rtc` that answers and sends synthetic media on the site's two slots once connected.
struct Bridge {
    rtc: Rtc,
    addr: SocketAddr,
    timeout: Instant,
    publisher: Option<Publisher>,
    cfg: PublisherConfig,
    mids: Vec<(Mid, MediaKind)>,
    pts: Vec<(Codec, Pt)>,
}

impl Bridge {
    fn drain(&mut self, now: Instant, to_site: &mut Vec<Vec<u8>>) {
        loop {
            match self.rtc.poll_output().expect("bridge rtc") {
                Output::Timeout(t) => {
                    self.timeout = t;
                    return;
                }
                Output::Transmit(t) => to_site.push(t.contents.into()),
                Output::Event(Event::Connected) => {
                    self.publisher = Some(Publisher::new(self.cfg.clone(), now, 99));
                }
                Output::Event(Event::KeyframeRequest(_)) => {
                    if let Some(p) = &mut self.publisher {
                        p.request_keyframe();
                    }
                }
                Output::Event(_) => {}
            }
        }
    }

    fn publish(&mut self, now: Instant, to_site: &mut Vec<Vec<u8>>) {
        let Some(p) = &mut self.publisher else { return };
        let mut packets = Vec::new();
        p.poll_packets(now, &mut packets);
        let mut api = self.rtc.direct_api();
        for pkt in packets {
            let codec = if pkt.kind == MediaKind::Audio { Codec::Opus } else { Codec::Vp8 };
            let mid = self.mids.iter().find(|(_, k)| *k == pkt.kind).map(|(m, _)| *m).expect("a slot of that kind");
            let pt = self.pts.iter().find(|(c, _)| *c == codec).map(|(_, p)| *p).expect("a payload type");
            let tx = api.stream_tx_by_mid(mid, None).expect("a send stream on the slot");
            tx.write_rtp(
                RtpWrite::new(pt, pkt.seq.into(), pkt.ts, pkt.capture, pkt.payload)
                    .marker(pkt.marker)
                    .nackable(pkt.kind == MediaKind::Video),
            );
        }
        self.drain(now, to_site);
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn run(profile: &str, publish: PublisherConfig, secs: u64, seed: u64) -> Res<(SiteReport, SyntheticSite)> {
    let t0 = Instant::now();
    let site_addr: SocketAddr = "10.1.0.2:40000".parse()?;
    let bridge_addr: SocketAddr = "10.1.0.1:3478".parse()?;
    let cfg = SiteConfig {
        site_id: 42,
        role: Role::Site,
        profile_name: profile.into(),
        profile: Profile::preset(profile)?,
        timeline: Timeline::default(),
        seed,
        local_addr: site_addr,
        publish: None,
        recv_video_slots: 0,
        recv_audio_slots: 0,
    };
    let (mut site, offer) = SyntheticSite::new(t0, t0, cfg)?;
    assert!(offer.contains("a=recvonly") && offer.contains("VP8") && offer.contains("opus"), "{offer}");
    assert!(!offer.contains("H264") && !offer.contains("VP9"), "VP8 and Opus only: {offer}");
    assert!(offer.contains(&format!("{} {}", site_addr.ip(), site_addr.port())), "our host candidate: {offer}");

    let mut rtc = RtcConfig::new()
        .set_ice_lite(true)
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(t0);
    rtc.add_local_candidate(Candidate::host(bridge_addr, "udp")?);
    let answer = rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer)?)?;
    let mids: Vec<(Mid, MediaKind)> = offer
        .lines()
        .filter_map(|l| l.strip_prefix("a=mid:"))
        .map(|m| Mid::from(m.trim()))
        .filter_map(|m| rtc.media(m).map(|md| (m, md.kind())))
        .collect();
    let pts = rtc.codec_config().params().iter().map(|p| (p.spec().codec, p.pt())).collect();
    let mut bridge = Bridge { rtc, addr: bridge_addr, timeout: t0, publisher: None, cfg: publish, mids, pts };
    site.apply_answer(t0, &answer.to_sdp_string())?;

    let end = t0 + Duration::from_secs(secs);
    let mut now = t0;
    let mut up: Vec<Datagram> = Vec::new();
    let mut down: Vec<Vec<u8>> = Vec::new();
    bridge.drain(now, &mut down);
    let mut turns = 0u64;
    while now < end {
        turns += 1;
        assert!(turns < 2_000_000, "virtual time does not advance");
        site.handle_timeout(now, &mut up);
        for d in up.drain(..) {
            assert_eq!(d.addr, bridge.addr);
            let recv = Receive::new(Protocol::Udp, site_addr, bridge.addr, &d.bytes)?;
            bridge.rtc.handle_input(Input::Receive(now, recv))?;
            bridge.drain(now, &mut down);
        }
        if bridge.timeout <= now {
            bridge.rtc.handle_input(Input::Timeout(now))?;
            bridge.drain(now, &mut down);
        }
        if bridge.publisher.as_ref().and_then(Publisher::poll_timeout).is_some_and(|t| t <= now) {
            bridge.publish(now, &mut down);
        }
        for bytes in down.drain(..) {
            site.handle_datagram(now, bridge.addr, &bytes, &mut up);
        }
        if !up.is_empty() {
            continue; // deliver what the link let through at this same instant
        }
        let next = [
            Some(site.poll_timeout()),
            Some(bridge.timeout),
            bridge.publisher.as_ref().and_then(Publisher::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(end);
        now = next.max(now + Duration::from_micros(50)).min(end);
    }
    Ok((site.report(now), site))
}

#[test]
fn a_3g_site_decodes_the_chair_with_video_loss_repaired() {
    let (r, site) = run("3g", PublisherConfig::default(), 12, 5).unwrap();
    let what = serde_json::to_string_pretty(&r).unwrap();
    eprintln!("{what}");
    assert!(r.connected && site.is_connected(), "{what}");
    assert_eq!((r.site_id, r.profile.as_str(), r.role.as_str()), (42, "3g", "site"));
    assert!(r.link.down_dropped > 0, "3G loses 1% on the way down: {what}");
    // 15 fps for ~11 s after connecting, nearly all decoded; repaired packets make up the link's loss.
    assert!(r.video.frames > 150, "{what}");
    assert!(r.video.recovered > 0, "NACK/RTX repaired some video: {what}");
    assert!(r.video.loss_after_repair < 0.002, "{what}");
    assert!(r.first_frame_ms.unwrap() < 2_000.0, "{what}");
    assert!(r.video.freeze_share < 0.05, "{what}");
    // Audio is not retransmitted: 1% random loss shows.
    let cont = r.audio.continuity.unwrap();
    assert!((0.97..1.0).contains(&cont), "{what}");
    assert!(r.audio.lost > 0 && r.audio.lost <= r.audio.expected - r.audio.packets, "{what}");
}

#[test]
fn vsat_audio_only_shows_its_loss_in_continuity() {
    let audio_only = PublisherConfig { video: false, ..PublisherConfig::default() };
    let (r, _) = run("vsat", audio_only, 12, 9).unwrap();
    let what = serde_json::to_string_pretty(&r).unwrap();
    eprintln!("{what}");
    assert!(r.connected, "{what}");
    assert_eq!(r.video.packets, 0);
    // ~400 ms RTT and the DTLS handshake: audio starts within a couple of seconds.
    assert!(r.first_audio_ms.unwrap() < 3_000.0, "{what}");
    let cont = r.audio.continuity.unwrap();
    assert!((0.90..0.99).contains(&cont), "5% random loss, nothing repairs audio: {what}");
    assert!(r.audio.longest_gap_ms.unwrap() >= 20.0, "{what}");
}
