//! Renegotiation: a client (an independent str0m endpoint) offers audio + video, applies the bridge's answer, then
//! adds a receive-only video transceiver and offers again on the same WebSocket. The bridge answers with every m-line
//! and includes the new slot in its slot map.

use std::time::{Duration, Instant};

use diemcau_proto::{ClientMsg, MediaKind as ProtoKind, Role, ServerMsg};
use futures_util::{SinkExt, StreamExt};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_offer_on_the_same_session_is_answered() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let running = diemcau::start(diemcau::Config::for_tests(dir.path())).await?;
    let token = running.token(Role::Site, running.demo.first_commune_id);
    let url = format!("ws://{}/ws?token={token}", running.http_addr);
    let (mut ws, _) = connect_async(url).await?;
    let send = |m: ClientMsg| Message::Text(serde_json::to_string(&m).unwrap_or_default().into());

    // Reads messages until `pick` returns a value, with a deadline.
    async fn until<T>(
        ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
        mut pick: impl FnMut(ServerMsg) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let msg = tokio::time::timeout_at(deadline, ws.next()).await?;
            match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Some(v) = pick(serde_json::from_str(&t)?) {
                        return Ok(v);
                    }
                }
                Some(Ok(_)) => {}
                other => anyhow::bail!("socket ended: {other:?}"),
            }
        }
    }

    ws.send(send(ClientMsg::Hello { v: diemcau_proto::PROTOCOL_VERSION })).await?;
    until(&mut ws, |m| matches!(m, ServerMsg::Welcome { .. }).then_some(())).await?;

    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    let (offer, pending) = api.apply().ok_or_else(|| anyhow::anyhow!("no offer"))?;
    ws.send(send(ClientMsg::Offer { sdp: offer.to_sdp_string() })).await?;
    let answer = until(&mut ws, |m| if let ServerMsg::Answer { sdp } = m { Some(sdp) } else { None }).await?;
    rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer)?)?;

    let mut api = rtc.sdp_api();
    let new_mid = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().ok_or_else(|| anyhow::anyhow!("no second offer"))?;
    ws.send(send(ClientMsg::Offer { sdp: offer.to_sdp_string() })).await?;
    let answer = until(&mut ws, |m| match m {
        ServerMsg::Answer { sdp } => Some(Ok(sdp)),
        ServerMsg::Error { code, message } => Some(Err(anyhow::anyhow!("{code}: {message}"))),
        _ => None,
    })
    .await??;
    assert_eq!(answer.matches("m=").count(), 3, "{answer}");
    assert!(answer.contains(&format!("a=mid:{new_mid}")), "{answer}");
    rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer)?)?;
    let slots = until(&mut ws, |m| match m {
        ServerMsg::Slots { slots } if slots.iter().any(|s| s.mid == new_mid.to_string()) => Some(slots),
        _ => None,
    })
    .await?;
    let new_slot = slots.iter().find(|s| s.mid == new_mid.to_string()).map(|s| s.kind);
    assert_eq!(new_slot, Some(ProtoKind::Video));
    running.shutdown().await;
    Ok(())
}
