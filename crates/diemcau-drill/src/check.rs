//! The link-check client: what `diemcau check-link` runs from a technician's laptop, and what tests run behind an
//! emulated link. One [`SyntheticSite`] speaks the bridge's `/ws/check` protocol (docs/signalling.md) exactly as the
//! `/check` page does: it offers a `sendrecv` video, reports what arrives of the bridge's probe every 250 ms, and
//! sends video at the rate each uplink step asks. The bridge measures and decides; the result comes back in
//! `check_result` and is stored with the site.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use diemcau_netem::{Profile, Timeline};
use diemcau_proto::{CheckPhase, CheckReport, ClientMsg, LinkCheckResult, Role, ServerMsg};
use tokio::net::UdpSocket;

use crate::error::DrillError;
use crate::publisher::PublisherConfig;
use crate::signal::SignalClient;
use crate::site::{Datagram, SiteConfig, SyntheticSite};

/// How often the client reports what it received.
pub const REPORT_INTERVAL: Duration = Duration::from_millis(250);
/// Video bitrate sent while the downlink is measured (low, so the feedback on the uplink is not delayed).
const IDLE_VIDEO_KBPS: u32 = 30;
/// The whole check may take this long before the client gives up.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Where and how to check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The bridge's link-check WebSocket, e.g. `ws://127.0.0.1:8080/ws/check`.
    pub ws_url: String,
    /// A join token of the site (any meeting it is invited to).
    pub token: String,
    /// An emulated link between this client and the bridge (`fibre` for none worth counting).
    pub profile: Profile,
    /// Seeds the emulated link.
    pub seed: u64,
    /// Local address of the media socket (its ICE host candidate); `None`: the address this machine routes to the
    /// bridge from.
    pub bind_ip: Option<IpAddr>,
}

/// What happens during a check, for a progress display.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckEvent {
    /// The bridge answered; media is connecting.
    Answered,
    /// A step began.
    Step {
        /// Direction.
        phase: CheckPhase,
        /// Rate, kbit/s.
        kbps: u32,
        /// Progress of the whole check.
        percent: u8,
    },
}

/// Runs one link check to the end and returns the bridge's result.
pub async fn run_check(
    opts: &CheckOptions,
    mut on_event: impl FnMut(&CheckEvent),
) -> Result<LinkCheckResult, DrillError> {
    tokio::time::timeout(CHECK_TIMEOUT, check(opts, &mut on_event))
        .await
        .map_err(|_| DrillError::Signal("the link check did not finish within 60 s".into()))?
}

/// The local address this machine uses toward the host of `ws_url` (a connected UDP socket sends nothing).
fn route_to(ws_url: &str) -> Result<IpAddr, DrillError> {
    let rest = ws_url.split_once("://").map(|(_, r)| r).unwrap_or(ws_url);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let bridge = std::net::ToSocketAddrs::to_socket_addrs(&with_port)
        .map_err(|e| DrillError::Config(format!("cannot resolve {authority}: {e}")))?
        .next()
        .ok_or_else(|| DrillError::Config(format!("{authority} has no address")))?;
    let any: IpAddr = if bridge.is_ipv4() { [0, 0, 0, 0].into() } else { std::net::Ipv6Addr::UNSPECIFIED.into() };
    let probe = std::net::UdpSocket::bind(SocketAddr::new(any, 0))?;
    probe.connect(bridge)?;
    Ok(probe.local_addr()?.ip())
}

async fn check(opts: &CheckOptions, on_event: &mut impl FnMut(&CheckEvent)) -> Result<LinkCheckResult, DrillError> {
    let (mut signal, welcome) = SignalClient::connect(&opts.ws_url, &opts.token).await?;
    let ip = match opts.bind_ip {
        Some(ip) => ip,
        None => route_to(&opts.ws_url)?,
    };
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
    let local_addr = socket.local_addr()?;
    let publish = PublisherConfig { audio: false, video_kbps: IDLE_VIDEO_KBPS, ..PublisherConfig::default() };
    let cfg = SiteConfig {
        site_id: welcome.site_id,
        role: Role::Site,
        profile_name: "check".into(),
        profile: opts.profile.clone(),
        timeline: Timeline::default(),
        seed: opts.seed,
        local_addr,
        publish: Some(publish),
        recv_video_slots: 0,
        recv_audio_slots: 0,
    };
    let start = Instant::now();
    let (mut site, offer) = SyntheticSite::new(start, start, cfg)?;
    let answer = signal.offer(offer).await?;
    site.apply_answer(Instant::now(), &answer)?;
    on_event(&CheckEvent::Answered);

    let mut out: Vec<Datagram> = Vec::new();
    let mut buf = vec![0u8; 2048];
    let mut next_report = Instant::now() + REPORT_INTERVAL;
    loop {
        for d in out.drain(..) {
            // A full socket buffer drops the datagram, as a link would.
            let _ = socket.try_send_to(&d.bytes, d.addr);
            site.recycle(d.bytes);
        }
        let wake = site.poll_timeout().min(next_report);
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, from) = r?;
                site.handle_datagram(Instant::now(), from, &buf[..n], &mut out);
            }
            msg = signal.recv() => match msg? {
                ServerMsg::CheckStep { phase, kbps, percent } => {
                    if phase == CheckPhase::Up {
                        site.set_video_kbps(if kbps == 0 { IDLE_VIDEO_KBPS } else { kbps });
                    }
                    on_event(&CheckEvent::Step { phase, kbps, percent });
                }
                ServerMsg::CheckResult { result } => {
                    signal.close().await;
                    return Ok(result);
                }
                ServerMsg::Error { code, message } => return Err(DrillError::Refused { code, message }),
                _ => {}
            },
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                site.handle_timeout(now, &mut out);
                if now >= next_report {
                    next_report = now + REPORT_INTERVAL;
                    if site.is_connected() {
                        let video = site.report(now).video;
                        let report = CheckReport {
                            rx_packets: video.packets,
                            rx_bytes: video.bytes,
                            // As browsers count it: expected minus received, at once.
                            rx_lost: i64::try_from(video.expected.saturating_sub(video.packets)).unwrap_or(0),
                            rtt_ms: None,
                        };
                        signal.send(&ClientMsg::CheckReport(report)).await?;
                    }
                }
            }
        }
    }
}
