//! The UDP relay with real sockets on loopback: delay applied, losses counted, one upstream address per relay, and
//! the relay gone once its handle is dropped. Bounded to well under 2 s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diemcau_netem::relay::UdpRelay;
use diemcau_netem::{LinkConfig, Profile, Timeline};
use tokio::net::UdpSocket;

/// An echo server that remembers who sent to it.
async fn echo() -> (SocketAddr, Arc<Mutex<Vec<SocketAddr>>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind the echo socket");
    let addr = socket.local_addr().expect("its address");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_by_task = seen.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            seen_by_task.lock().expect("not poisoned").push(from);
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn relay_applies_delay_and_counts_losses() {
    let (target, seen) = echo().await;
    // 30 ms up with 30% loss, 20 ms down: 50 ms round trip for the packets that survive.
    let profile = Profile {
        up: LinkConfig { delay_ms: 30, loss: 0.3, ..LinkConfig::default() },
        down: LinkConfig { delay_ms: 20, ..LinkConfig::default() },
    };
    let relay = UdpRelay::start(target, profile.clone(), Timeline::default(), 7).await.unwrap();
    // A second site through its own relay, alive (and idle) for the whole test.
    let other = UdpRelay::start(target, profile, Timeline::default(), 8).await.unwrap();
    assert_ne!(relay.upstream_addr(), other.upstream_addr());

    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    const N: u64 = 40;
    let mut sent_at = HashMap::new();
    for seq in 0..N {
        sent_at.insert(seq, Instant::now());
        client.send_to(&seq.to_be_bytes(), relay.local_addr()).await.unwrap();
    }

    let mut rtts = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(1_200);
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        // Quiet for 250 ms after the last echo: everything that survived is back.
        match tokio::time::timeout(Duration::from_millis(250), client.recv_from(&mut buf)).await {
            Ok(Ok((8, from))) => {
                assert_eq!(from, relay.local_addr());
                let seq = u64::from_be_bytes(buf[..8].try_into().unwrap());
                rtts.push(sent_at[&seq].elapsed());
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => break,
        }
    }
    let stats = relay.stats();
    let (min, max) = (rtts.iter().min().unwrap(), rtts.iter().max().unwrap());
    println!("relay: {} of {N} echoed, RTT {min:?}..{max:?}, {stats:?}", rtts.len());
    assert!(*min >= Duration::from_millis(50), "{min:?}");
    assert!(*max < Duration::from_millis(250), "{max:?}");
    assert_eq!(stats.link.up.sent, N);
    assert!(stats.link.up.dropped_loss > 0 && stats.link.up.dropped_loss < N / 2, "{stats:?}");
    assert_eq!(rtts.len() as u64, N - stats.link.up.dropped_loss);
    assert_eq!(stats.link.down.delivered, rtts.len() as u64);
    assert_eq!((stats.link.up.in_flight, stats.link.down.in_flight, stats.io_errors), (0, 0, 0));
    assert_eq!(stats.client, Some(client.local_addr().unwrap()));
    // The target saw every surviving packet from this relay's own upstream address.
    assert!(seen.lock().unwrap().iter().all(|&from| from == relay.upstream_addr()));

    // Dropping the handle stops the relay and frees its sockets.
    let (port, upstream) = (relay.local_addr(), relay.upstream_addr());
    drop(relay);
    drop(other);
    tokio::time::sleep(Duration::from_millis(20)).await;
    UdpSocket::bind(port).await.expect("the relay's client socket is closed");
    UdpSocket::bind(upstream).await.expect("the relay's upstream socket is closed");
}
