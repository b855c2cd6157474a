//! Bad input never harms anyone else: malformed and oversized WebSocket messages, bad tokens, garbage datagrams on the
//! media ports and a peer that vanishes mid-handshake each get their clear refusal, while a chair connected through
//! it all keeps being served.

use std::time::{Duration, Instant};

use diemcau_proto::{ClientMsg, Role, ServerMsg};
use diemcau_store::token::{self, Claims};
use futures_util::{SinkExt, StreamExt};
use str0m::media::{Direction, MediaKind};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(base: &str, token: Option<&str>) -> anyhow::Result<Ws> {
    let url = match token {
        Some(t) => format!("{}/ws?token={t}", base.replace("http://", "ws://")),
        None => format!("{}/ws", base.replace("http://", "ws://")),
    };
    Ok(connect_async(url).await?.0)
}

async fn send(ws: &mut Ws, msg: &ClientMsg) -> anyhow::Result<()> {
    ws.send(Message::Text(serde_json::to_string(msg)?.into())).await?;
    Ok(())
}

/// Next server message (skipping nothing); `Err` when the socket closes first.
async fn next_msg(ws: &mut Ws) -> anyhow::Result<ServerMsg> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await? {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t)?),
            Some(Ok(Message::Close(f))) => anyhow::bail!("closed: {f:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => anyhow::bail!("error: {e}"),
            None => anyhow::bail!("ended"),
        }
    }
}

/// Waits for the close frame and returns (code, reason).
async fn close_of(ws: &mut Ws) -> anyhow::Result<(u16, String)> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await? {
            Some(Ok(Message::Close(Some(f)))) => return Ok((u16::from(f.code), f.reason.to_string())),
            Some(Ok(Message::Close(None))) | None => anyhow::bail!("closed without a code"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => anyhow::bail!("error before the close frame: {e}"),
        }
    }
}

async fn joined(base: &str, token: &str) -> anyhow::Result<Ws> {
    let mut ws = connect(base, Some(token)).await?;
    send(&mut ws, &ClientMsg::Hello { v: diemcau_proto::PROTOCOL_VERSION }).await?;
    match next_msg(&mut ws).await? {
        ServerMsg::Welcome { .. } => Ok(ws),
        other => anyhow::bail!("expected welcome, got {other:?}"),
    }
}

/// Pings and expects the pong, skipping roster/slot updates.
async fn still_served(ws: &mut Ws) -> anyhow::Result<()> {
    send(ws, &ClientMsg::Ping {}).await?;
    loop {
        if let ServerMsg::Pong = next_msg(ws).await? {
            return Ok(());
        }
    }
}

/// A real offer from an independent str0m client (audio + video sendrecv).
fn str0m_offer() -> anyhow::Result<String> {
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    let (offer, _pending) = api.apply().ok_or_else(|| anyhow::anyhow!("no offer"))?;
    Ok(offer.to_sdp_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_harms_nobody() -> anyhow::Result<()> {
    // Not beside a browser test: its floods of bad datagrams and messages take the cores a Chromium page's encoder
    // needs (a clean-clone run of `e2e_chromium` saw no chair frame within 1 s of a site connecting).
    let _turn = diemcau_e2e::browser::heavy_test_turn().await;
    let dir = tempfile::tempdir()?;
    let running = diemcau::start(diemcau::Config::for_tests(dir.path())).await?;
    let base = running.base_url.clone();
    let demo = running.demo;
    let secret = running.state.store().secret()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;

    // A chair who stays connected through everything below.
    let mut chair = joined(&base, &running.token(Role::Chair, demo.chair_site_id)).await?;

    // Token problems: 4001 with a reason.
    let expired = token::sign(
        &secret,
        &Claims { meeting_id: demo.meeting_id, site_id: demo.first_commune_id, role: Role::Site, exp: now - 10 },
    );
    let not_invited =
        token::sign(&secret, &Claims { meeting_id: demo.meeting_id, site_id: 99_999, role: Role::Site, exp: now + 60 });
    let no_meeting = token::sign(
        &secret,
        &Claims { meeting_id: 4242, site_id: demo.first_commune_id, role: Role::Site, exp: now + 60 },
    );
    let site_as_chair = token::sign(
        &secret,
        &Claims { meeting_id: demo.meeting_id, site_id: demo.first_commune_id, role: Role::Chair, exp: now + 60 },
    );
    let forged = format!("{}x", &running.token(Role::Site, demo.first_commune_id));
    for (tok, needle) in [
        (None, "missing token"),
        (Some("garbage"), "malformed"),
        (Some(expired.as_str()), "expired"),
        (Some(forged.as_str()), "signature"),
        (Some(not_invited.as_str()), "not invited"),
        (Some(no_meeting.as_str()), "does not exist"),
        (Some(site_as_chair.as_str()), "not invited"),
    ] {
        let mut ws = connect(&base, tok).await?;
        let (code, reason) = close_of(&mut ws).await?;
        assert_eq!(code, diemcau_proto::close::BAD_TOKEN, "{tok:?}: {reason}");
        assert!(reason.contains(needle), "{tok:?}: reason {reason:?} should mention {needle:?}");
    }

    let site_token = running.token(Role::Site, demo.first_commune_id);

    // Handshake problems.
    let mut ws = connect(&base, Some(&site_token)).await?;
    send(&mut ws, &ClientMsg::Ping {}).await?;
    assert_eq!(close_of(&mut ws).await?.0, diemcau_proto::close::BAD_MESSAGE);
    let mut ws = connect(&base, Some(&site_token)).await?;
    send(&mut ws, &ClientMsg::Hello { v: 99 }).await?;
    let (code, reason) = close_of(&mut ws).await?;
    assert_eq!(code, diemcau_proto::close::BAD_VERSION);
    assert!(reason.contains("99"), "{reason}");

    // Malformed, binary, oversized and too many messages after a good hello.
    for (payload, want) in [
        (Message::Text("{not json".into()), diemcau_proto::close::BAD_MESSAGE),
        (Message::Text(r#"{"type":"launch_missiles"}"#.into()), diemcau_proto::close::BAD_MESSAGE),
        (Message::Text(r#"{"type":"mute","muted":"maybe"}"#.into()), diemcau_proto::close::BAD_MESSAGE),
        (Message::Binary(vec![0u8; 64].into()), diemcau_proto::close::BAD_MESSAGE),
        (
            Message::Text(format!(r#"{{"type":"offer","sdp":"{}"}}"#, "a".repeat(600 * 1024)).into()),
            diemcau_proto::close::TOO_BIG,
        ),
    ] {
        let mut ws = joined(&base, &site_token).await?;
        ws.send(payload).await?;
        let (code, reason) = close_of(&mut ws).await?;
        assert_eq!(code, want, "reason {reason}");
        assert!(!reason.is_empty());
    }
    let mut ws = joined(&base, &site_token).await?;
    let mut code = None;
    for _ in 0..200 {
        if ws.send(Message::Text(r#"{"type":"ping"}"#.into())).await.is_err() {
            break;
        }
    }
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        if let Message::Close(Some(f)) = m {
            code = Some(u16::from(f.code));
            break;
        }
    }
    assert_eq!(code, Some(diemcau_proto::close::RATE_LIMITED));

    // Refused requests keep the connection: a bad SDP and a site trying a chair action.
    let mut ws = joined(&base, &site_token).await?;
    send(&mut ws, &ClientMsg::Offer { sdp: "v=0 this is not sdp".into() }).await?;
    loop {
        if let ServerMsg::Error { code, message } = next_msg(&mut ws).await? {
            assert_eq!(code, "bad_sdp", "{message}");
            break;
        }
    }
    send(&mut ws, &ClientMsg::MuteSite { site_id: demo.chair_site_id, muted: true }).await?;
    loop {
        if let ServerMsg::Error { code, .. } = next_msg(&mut ws).await? {
            assert_eq!(code, "forbidden");
            break;
        }
    }
    still_served(&mut ws).await?;
    drop(ws);

    // Garbage datagrams on every media port: empty, random, STUN-looking, RTP-looking, DTLS-looking.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for addr in &running.media_addrs {
        for i in 0..2_000usize {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 1_400) as usize;
            let mut buf: Vec<u8> = (0..len).map(|j| (seed >> (j % 56)) as u8).collect();
            match i % 4 {
                0 if len > 20 => buf[..2].copy_from_slice(&[0x00, 0x01]), // STUN binding request type
                1 if len > 12 => buf[0] = 0x80,                           // RTP version 2
                2 if len > 13 => buf[0] = 22,                             // DTLS handshake
                _ => {}
            }
            udp.send_to(&buf, addr).await?;
        }
    }

    // A peer that vanishes mid-handshake: valid offer, answer received, then the connection drops without a word.
    let mut ws = joined(&base, &running.token(Role::Site, demo.first_commune_id)).await?;
    send(&mut ws, &ClientMsg::Offer { sdp: str0m_offer()? }).await?;
    loop {
        if let ServerMsg::Answer { sdp } = next_msg(&mut ws).await? {
            assert!(sdp.contains("a=ice-lite"), "the bridge is ICE-lite");
            break;
        }
    }
    drop(ws);

    // The chair was served throughout, and the bridge still accepts new work.
    still_served(&mut chair).await?;
    let health = reqwest::get(format!("{base}/healthz")).await?;
    assert_eq!(health.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Only the chair is left once the vanished peer is cleaned up.
        if running.state.member_count() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "vanished peers were not cleaned up: {}", running.state.member_count());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut again = joined(&base, &running.token(Role::Site, demo.first_commune_id)).await?;
    send(&mut again, &ClientMsg::Offer { sdp: str0m_offer()? }).await?;
    loop {
        if let ServerMsg::Answer { .. } = next_msg(&mut again).await? {
            break;
        }
    }
    still_served(&mut chair).await?;
    running.shutdown().await;
    Ok(())
}
