//! Janus' VideoRoom (Debian `janus` 1.1.2) as the fan-out benchmark's comparison peer, driven by synthetic sites: one
//! publisher offers synthetic VP8 + Opus (`configure`), three subscribers *answer* Janus' offers
//! ([`SyntheticSite::new_answerer`]), media flows for about 5 s and every subscriber must decode frames.
//!
//! Janus runs in its own network namespace behind a veth pair (`scripts/janus/setup`, `start`, `stop`): it skips
//! loopback interfaces when it gathers candidates, so the sites bind the host side of the veth (10.77.0.1) and Janus
//! offers its veth address (10.77.0.2). That needs the `janus` binary and root; without them the test says why it
//! skipped and passes, unless `DIEMCAU_REQUIRE_JANUS=1`, where it fails. The figure of Janus' CPU per subscriber is
//! printed (`janus cost:`).
//!
//! Sites are driven on one thread with non-blocking std sockets, signalling on a Tokio runtime beside it.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use diemcau_drill::janus::JanusClient;
use diemcau_drill::metrics::SiteReport;
use diemcau_drill::{Datagram, PublisherConfig, SiteConfig, SyntheticSite};
use diemcau_netem::{Profile, Timeline};
use diemcau_proto::Role;

const HOST_IP: &str = "10.77.0.1";
const WS_URL: &str = "ws://10.77.0.2:8188";
const SUBSCRIBERS: usize = 3;
const MEDIA_SECS: u64 = 5;

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/janus")
}

/// Why Janus cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    let on_path =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join("janus").is_file())).unwrap_or(false);
    if !on_path {
        return Some("no `janus` binary on PATH (apt-get install janus, or run scripts/janus/setup)".into());
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false);
    if !root {
        return Some("not root: cannot create the network namespace Janus runs in".into());
    }
    None
}

fn skip_or_fail(why: &str) {
    if std::env::var("DIEMCAU_REQUIRE_JANUS").as_deref() == Ok("1") {
        panic!("DIEMCAU_REQUIRE_JANUS=1 but Janus cannot run: {why}");
    }
    eprintln!("janus_videoroom skipped: {why} (set DIEMCAU_REQUIRE_JANUS=1 to make this a failure)");
}

/// Janus started by `scripts/janus/start`; stopped (that PID only) and the namespace deleted on drop.
struct Janus {
    dir: tempfile::TempDir,
    pid: u32,
}

impl Janus {
    fn start() -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let setup = Command::new(scripts().join("setup")).arg(dir.path()).output().map_err(|e| e.to_string())?;
        if !setup.status.success() {
            let _ = Command::new(scripts().join("stop")).arg(dir.path()).output();
            return Err(format!("scripts/janus/setup failed: {}", String::from_utf8_lossy(&setup.stderr)));
        }
        let start = Command::new(scripts().join("start")).arg(dir.path()).output().map_err(|e| e.to_string())?;
        let pid = String::from_utf8_lossy(&start.stdout).trim().parse::<u32>().ok();
        match pid {
            Some(pid) if start.status.success() => Ok(Self { dir, pid }),
            _ => {
                let _ = Command::new(scripts().join("stop")).arg(dir.path()).output();
                Err(format!("scripts/janus/start failed: {}", String::from_utf8_lossy(&start.stderr)))
            }
        }
    }

    /// Janus' user + system CPU time so far.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Fields after the command name (which is in parentheses): state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
        let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        let hz = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<u64>().ok())
            .unwrap_or(100);
        Duration::from_micros(ticks * 1_000_000 / hz)
    }

    fn rss_kb(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        match Command::new(scripts().join("stop")).arg(self.dir.path()).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("scripts/janus/stop: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => eprintln!("scripts/janus/stop: {e}"),
        }
    }
}

enum Cmd {
    Add(Box<SyntheticSite>, UdpSocket),
    Candidate(usize, String),
    Stop,
}

/// Drives the sites: every turn reads every socket, runs what is due and sends what the links let through.
fn media_loop(rx: mpsc::Receiver<Cmd>) -> Vec<SiteReport> {
    let mut sites: Vec<(Box<SyntheticSite>, UdpSocket)> = Vec::new();
    let mut out: Vec<Datagram> = Vec::new();
    let mut buf = vec![0u8; 2048];
    loop {
        loop {
            match rx.try_recv() {
                Ok(Cmd::Add(site, sock)) => sites.push((site, sock)),
                Ok(Cmd::Candidate(i, c)) => {
                    if let Some((site, _)) = sites.get_mut(i)
                        && let Err(e) = site.add_remote_candidate(&c)
                    {
                        eprintln!("site {i}: {e}");
                    }
                }
                Ok(Cmd::Stop) | Err(mpsc::TryRecvError::Disconnected) => {
                    let now = Instant::now();
                    return sites.iter().map(|(s, _)| s.report(now)).collect();
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        let now = Instant::now();
        let mut next = now + Duration::from_millis(2);
        for (site, sock) in &mut sites {
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                site.handle_datagram(now, from, &buf[..n], &mut out);
            }
            if site.poll_timeout() <= now {
                site.handle_timeout(now, &mut out);
            }
            for d in out.drain(..) {
                let _ = sock.send_to(&d.bytes, d.addr);
                site.recycle(d.bytes);
            }
            next = next.min(site.poll_timeout());
        }
        let wait = next.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

fn site_config(site_id: i64, local_addr: SocketAddr, publish: Option<PublisherConfig>) -> SiteConfig {
    SiteConfig {
        site_id,
        role: Role::Site,
        profile_name: "fibre".into(),
        profile: Profile::preset("fibre").expect("the fibre preset"),
        timeline: Timeline::default(),
        seed: 7 + site_id as u64,
        local_addr,
        publish,
        recv_video_slots: 0,
        recv_audio_slots: 0,
    }
}

fn socket() -> (UdpSocket, SocketAddr) {
    let sock = UdpSocket::bind((HOST_IP, 0)).expect("bind the host side of the veth pair");
    sock.set_nonblocking(true).expect("non-blocking");
    let addr = sock.local_addr().expect("local address");
    (sock, addr)
}

#[test]
fn janus_videoroom_fans_out_synthetic_media() {
    if let Some(why) = unavailable() {
        skip_or_fail(&why);
        return;
    }
    let janus = match Janus::start() {
        Ok(j) => j,
        Err(why) => {
            skip_or_fail(&why);
            return;
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let (tx, rx) = mpsc::channel();
    let media = std::thread::spawn(move || media_loop(rx));

    let t0 = Instant::now();
    let (mut client, room, pub_handle) = rt.block_on(async {
        let mut client = JanusClient::connect(WS_URL).await.expect("Janus session");
        let h = client.attach().await.expect("attach the publisher");
        let room = client.create_room(h, None, 4).await.expect("create a room");
        (client, room, h)
    });
    let (sock, addr) = socket();
    let (mut publisher, offer) =
        SyntheticSite::new(t0, t0, site_config(1, addr, Some(PublisherConfig::default()))).expect("publisher offer");
    let published =
        rt.block_on(client.publish(pub_handle, room, "synthetic publisher", &offer)).expect("publish to Janus");
    publisher.apply_answer(Instant::now(), &published.answer).expect("Janus' answer");
    for c in client.take_trickles(pub_handle).into_iter().flatten() {
        publisher.add_remote_candidate(&c).expect("Janus' candidate");
    }
    tx.send(Cmd::Add(Box::new(publisher), sock)).expect("media thread");
    rt.block_on(client.pump(Duration::from_millis(500))).expect("Janus");

    let mut handles = Vec::new();
    for i in 0..SUBSCRIBERS {
        let join = Instant::now();
        let h = rt.block_on(client.attach()).expect("attach a subscriber");
        let offer = rt.block_on(client.subscribe(h, room, published.feed)).expect("subscribe");
        let (sock, addr) = socket();
        let (site, answer) =
            SyntheticSite::new_answerer(join, join, site_config(10 + i as i64, addr, None), &offer).expect("answer");
        rt.block_on(client.start(h, room, &answer)).expect("start");
        tx.send(Cmd::Add(Box::new(site), sock)).expect("media thread");
        handles.push((i + 1, h));
    }
    handles.push((0, pub_handle));

    let cpu0 = janus.cpu();
    let w0 = Instant::now();
    let end = w0 + Duration::from_secs(MEDIA_SECS);
    let mut trickled = 0usize;
    while Instant::now() < end {
        rt.block_on(client.pump(Duration::from_millis(250))).expect("Janus");
        for &(i, h) in &handles {
            for c in client.take_trickles(h).into_iter().flatten() {
                tx.send(Cmd::Candidate(i, c)).expect("media thread");
                trickled += 1;
            }
        }
    }
    let cpu = janus.cpu().saturating_sub(cpu0);
    let wall = w0.elapsed();
    let rss = janus.rss_kb();
    tx.send(Cmd::Stop).expect("media thread");
    let reports = media.join().expect("media thread");

    rt.block_on(async {
        for &(_, h) in handles.iter().filter(|(i, _)| *i > 0) {
            let _ = client.detach(h).await;
        }
        let _ = client.destroy_room(pub_handle, room).await;
        client.destroy().await.expect("destroy the session");
    });
    drop(janus);

    let per_sub_s = cpu.as_secs_f64() / wall.as_secs_f64() / SUBSCRIBERS as f64;
    eprintln!(
        "janus cost: {:.1} ms CPU per second of meeting for {SUBSCRIBERS} subscribers ({:.2} ms/s per subscriber, \
         publisher included), RSS {rss} KiB",
        cpu.as_secs_f64() * 1000.0 / wall.as_secs_f64(),
        per_sub_s * 1000.0,
    );
    eprintln!("candidates Janus trickled after the SDP exchange: {trickled}");
    for r in &reports {
        eprintln!(
            "site {}: connected {} connect_ms {:?} first_frame_ms {:?} video packets {} frames {} audio packets {} \
             loss {:.4} error {:?}",
            r.site_id,
            r.connected,
            r.connect_ms,
            r.first_frame_ms,
            r.video.packets,
            r.video.frames,
            r.audio.packets,
            r.loss_after_repair,
            r.error
        );
    }
    assert_eq!(reports.len(), SUBSCRIBERS + 1);
    assert!(reports[0].connected, "the publisher connected to Janus: {:?}", reports[0]);
    for r in &reports[1..] {
        assert!(r.connected, "subscriber {} connected: {r:?}", r.site_id);
        assert!(r.video.frames > 0, "subscriber {} decoded frames through Janus: {r:?}", r.site_id);
        assert!(r.audio.packets > 0, "subscriber {} received audio through Janus: {r:?}", r.site_id);
    }
}

/// What runs without Janus: a [`SyntheticSite::new_answerer`] against a str0m peer that behaves as Janus does towards
/// a subscriber (full ICE and controlling, it offers `sendonly` VP8 + Opus), in virtual time. Its candidate is removed
/// from the offer and trickled through [`SyntheticSite::add_remote_candidate`] instead, as with `full_trickle`.
#[test]
fn an_answering_site_decodes_a_full_ice_offerer() {
    use diemcau_drill::Publisher;
    use str0m::change::SdpAnswer;
    use str0m::format::Codec;
    use str0m::media::{Direction, MediaKind};
    use str0m::net::{Protocol, Receive};
    use str0m::rtp::RtpWrite;
    use str0m::{Candidate, Event, Input, Output, RtcConfig};

    let t0 = Instant::now();
    let site_addr: SocketAddr = "10.77.0.1:40000".parse().expect("address");
    let peer_addr: SocketAddr = "10.77.0.2:20000".parse().expect("address");
    let mut peer =
        RtcConfig::new().set_rtp_mode(true).clear_codecs().enable_opus(true, false).enable_vp8(true).build(t0);
    let cand = Candidate::host(peer_addr, "udp").expect("candidate");
    let cand_line = cand.to_sdp_string();
    peer.add_local_candidate(cand);
    let mut api = peer.sdp_api();
    let audio_mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let video_mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().expect("an offer");
    let offer: String =
        offer.to_sdp_string().split_inclusive("\r\n").filter(|l| !l.starts_with("a=candidate")).collect();
    assert!(!offer.contains("a=candidate"), "{offer}");

    let (mut site, answer) =
        SyntheticSite::new_answerer(t0, t0, site_config(5, site_addr, None), &offer).expect("the site answers");
    assert!(answer.contains("a=recvonly") && !answer.contains("a=sendrecv"), "{answer}");
    assert!(answer.contains(&format!("{} {}", site_addr.ip(), site_addr.port())), "our candidate: {answer}");
    site.add_remote_candidate(&format!("a={cand_line}")).expect("the trickled candidate");
    assert!(site.add_remote_candidate("a=candidate:nonsense").is_err());
    peer.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).expect("answer parses"))
        .expect("answer accepted");
    let pts: Vec<(Codec, str0m::media::Pt)> =
        peer.codec_config().params().iter().map(|p| (p.spec().codec, p.pt())).collect();
    let pt = |c: Codec| pts.iter().find(|(k, _)| *k == c).map(|(_, p)| *p).expect("a payload type");

    let end = t0 + Duration::from_secs(4);
    let mut now = t0;
    let mut peer_timeout = t0;
    let mut publisher: Option<Publisher> = None;
    let mut up: Vec<Datagram> = Vec::new();
    let mut down: Vec<Vec<u8>> = Vec::new();
    let mut packets = Vec::new();
    while now < end {
        site.handle_timeout(now, &mut up);
        for d in up.drain(..) {
            assert_eq!(d.addr, peer_addr);
            let recv = Receive::new(Protocol::Udp, site_addr, peer_addr, &d.bytes).expect("datagram");
            peer.handle_input(Input::Receive(now, recv)).expect("peer input");
        }
        if peer_timeout <= now {
            peer.handle_input(Input::Timeout(now)).expect("peer timeout");
        }
        if let Some(p) = &mut publisher
            && p.poll_timeout().is_some_and(|t| t <= now)
        {
            p.poll_packets(now, &mut packets);
            let mut api = peer.direct_api();
            for pkt in packets.drain(..) {
                let (mid, codec) =
                    if pkt.kind == MediaKind::Audio { (audio_mid, Codec::Opus) } else { (video_mid, Codec::Vp8) };
                let tx = api.stream_tx_by_mid(mid, None).expect("a send stream");
                tx.write_rtp(
                    RtpWrite::new(pt(codec), pkt.seq.into(), pkt.ts, pkt.capture, pkt.payload).marker(pkt.marker),
                );
            }
        }
        loop {
            match peer.poll_output().expect("peer output") {
                Output::Timeout(t) => {
                    peer_timeout = t;
                    break;
                }
                Output::Transmit(t) => down.push(t.contents.into()),
                Output::Event(Event::Connected) => publisher = Some(Publisher::new(PublisherConfig::default(), now, 3)),
                Output::Event(Event::KeyframeRequest(_)) => {
                    if let Some(p) = &mut publisher {
                        p.request_keyframe();
                    }
                }
                Output::Event(_) => {}
            }
        }
        for bytes in down.drain(..) {
            site.handle_datagram(now, peer_addr, &bytes, &mut up);
        }
        if !up.is_empty() {
            continue;
        }
        let next =
            [Some(site.poll_timeout()), Some(peer_timeout), publisher.as_ref().and_then(Publisher::poll_timeout)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(end);
        now = next.max(now + Duration::from_micros(50)).min(end);
    }
    let r = site.report(now);
    assert!(r.connected && site.is_connected(), "{r:?}");
    assert!(r.video.frames > 30, "decoded what the offerer sent: {r:?}");
    assert!(r.audio.packets > 100, "{r:?}");
}
