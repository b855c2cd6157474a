//! A thin tokio shell around [`LinkPair`]: a UDP relay that puts an emulated link between one client and a target.
//!
//! ```text
//! client ──▶ relay socket (127.0.0.1:0) ──[up]──▶ upstream socket ──▶ target
//! client ◀── relay socket               ◀─[down]── upstream socket ◀── target
//! ```
//! One [`UdpRelay`] per emulated site: each has its own upstream socket, so the target (the bridge) sees a distinct
//! address per site, as it would on the field. The client is whoever last sent to the relay socket; replies go there.
//! The task reads the clock once per turn, hands packets and that time to the sans-IO [`LinkPair`], sends what it
//! delivers and sleeps until its next timeout. It stops when the [`UdpRelay`] is dropped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant as TokioInstant;

use crate::{Direction, LinkPair, NetemError, PairStats, Profile, Timeline};

/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 65_535;

/// Counters of a relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Both emulated directions.
    pub link: PairStats,
    /// The client seen last, if any.
    pub client: Option<SocketAddr>,
    /// Socket errors (sends that failed, ICMP errors surfacing on receive); each is logged at debug level.
    pub io_errors: u64,
}

/// A running relay; dropping it stops the relay and closes its sockets.
#[derive(Debug)]
pub struct UdpRelay {
    local: SocketAddr,
    upstream: SocketAddr,
    stats: watch::Receiver<RelayStats>,
    task: JoinHandle<()>,
}

impl UdpRelay {
    /// Binds the client-facing socket on 127.0.0.1:0 and an upstream socket connected to `target`, and starts
    /// relaying through `profile` (client → target uses `up`, target → client `down`), following `timeline` from now.
    /// Must be called inside a tokio runtime.
    pub async fn start(
        target: SocketAddr,
        profile: Profile,
        timeline: Timeline,
        seed: u64,
    ) -> Result<Self, NetemError> {
        let pair = LinkPair::new(TokioInstant::now().into_std(), profile, timeline, seed)?;
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let bind_ip: IpAddr = match target.ip() {
            ip if ip.is_loopback() => ip,
            IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let upstream = UdpSocket::bind((bind_ip, 0)).await?;
        upstream.connect(target).await?;
        let local = client.local_addr()?;
        let upstream_addr = upstream.local_addr()?;
        let (tx, stats) = watch::channel(RelayStats::default());
        let span = tracing::debug_span!("relay", %local, %target);
        tracing::debug!(parent: &span, upstream = %upstream_addr, "relay started");
        let task = tokio::spawn(tracing::Instrument::instrument(run(client, upstream, pair, tx), span));
        Ok(Self { local, upstream: upstream_addr, stats, task })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The address the target sees this relay's packets come from.
    pub fn upstream_addr(&self) -> SocketAddr {
        self.upstream
    }

    /// Counters as of the end of the relay's last turn.
    pub fn stats(&self) -> RelayStats {
        *self.stats.borrow()
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(client: UdpSocket, upstream: UdpSocket, mut pair: LinkPair<Vec<u8>>, stats: watch::Sender<RelayStats>) {
    let mut from_client = vec![0u8; MAX_DATAGRAM];
    let mut from_target = vec![0u8; MAX_DATAGRAM];
    let mut client_addr: Option<SocketAddr> = None;
    let mut io_errors = 0u64;
    loop {
        let wake = pair.poll_timeout();
        // Never used when `wake` is None (the branch is disabled); any instant will do.
        let sleep_until = wake.map_or_else(|| TokioInstant::now() + Duration::from_secs(3600), TokioInstant::from_std);
        let received = tokio::select! {
            r = client.recv_from(&mut from_client) => Some(r.map(|(n, from)| (Direction::Up, n, Some(from)))),
            r = upstream.recv(&mut from_target) => Some(r.map(|n| (Direction::Down, n, None))),
            () = tokio::time::sleep_until(sleep_until), if wake.is_some() => None,
        };
        // The one clock read of this turn.
        let now = TokioInstant::now().into_std();
        match received {
            Some(Ok((dir, n, from))) => {
                if let Some(from) = from {
                    client_addr = Some(from);
                }
                let buf = if dir == Direction::Up { &from_client } else { &from_target };
                let outcome = pair.send(now, dir, n, buf[..n].to_vec());
                tracing::trace!(?dir, bytes = n, ?outcome, "packet");
            }
            Some(Err(e)) => {
                io_errors += 1;
                tracing::debug!(error = %e, "receive failed");
            }
            None => {}
        }
        while let Some((dir, packet)) = pair.poll_deliver(now) {
            let sent = match (dir, client_addr) {
                (Direction::Up, _) => upstream.send(&packet).await.map(drop),
                (Direction::Down, Some(to)) => client.send_to(&packet, to).await.map(drop),
                (Direction::Down, None) => Ok(()),
            };
            if let Err(e) = sent {
                io_errors += 1;
                tracing::debug!(?dir, error = %e, "send failed");
            }
        }
        stats.send_replace(RelayStats { link: pair.stats(), client: client_addr, io_errors });
    }
}
