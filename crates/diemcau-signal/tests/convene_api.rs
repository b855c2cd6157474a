//! Emergency convening over real sockets: standby pages open on `/ws/standby`, the chair convenes a meeting with
//! names, a path and a subtree through `POST /api/convene`, the open pages ring, one accepts and joins, one
//! declines, a page opened late still rings, and the chair sees where each ring stands.

mod common;

use std::collections::HashMap;
use std::error::Error;
use std::time::Duration;

use common::*;
use diemcau_proto::control::{Ring, RingStatus};
use diemcau_proto::{ClientMsg, PROTOCOL_VERSION, Role, ServerMsg, SiteKind};
use diemcau_store::token::{self, STANDBY_MEETING};
use diemcau_store::{NewSite, Store};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// A standby page of `site`, its `standby` message read.
async fn standby(b: &Bridge, token: &str) -> Result<Ws, Box<dyn Error>> {
    let url = format!("ws://{}/ws/standby?token={token}", b.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    send(&mut ws, &ClientMsg::Hello { v: PROTOCOL_VERSION }).await?;
    match next(&mut ws).await? {
        ServerMsg::Standby { .. } => Ok(ws),
        other => Err(format!("expected standby, got {other:?}").into()),
    }
}

/// The close frame a connection ends with after its hello.
async fn refused(url: &str) -> Result<(u16, String), Box<dyn Error>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    send(&mut ws, &ClientMsg::Hello { v: PROTOCOL_VERSION }).await?;
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await? {
        Some(Ok(Message::Close(Some(f)))) => Ok((f.code.into(), f.reason.to_string())),
        other => Err(format!("expected a close, got {other:?}").into()),
    }
}

async fn incoming(ws: &mut Ws) -> Result<(i64, String, String), Box<dyn Error>> {
    wait_for(ws, |m| match m {
        ServerMsg::Incoming { meeting_id, title, token, .. } => Some((*meeting_id, title.clone(), token.clone())),
        _ => None,
    })
    .await
}

async fn rings(ws: &mut Ws) -> Result<Vec<Ring>, Box<dyn Error>> {
    wait_for(ws, |m| match m {
        ServerMsg::Rings { rings } => Some(rings.clone()),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn a_convened_meeting_rings_the_open_pages_of_the_sites_named() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("d.sqlite3");
    let store = Store::open(&db)?;
    let demo = store.seed_demo()?;
    let by_code: HashMap<String, i64> = store.sites()?.into_iter().map(|s| (s.code, s.id)).collect();
    let id = |code: &str| by_code.get(code).copied().ok_or(format!("no site {code}"));
    // A second "Xã La Bằng", in another district: the name alone is ambiguous.
    let twin = store.insert_site(&NewSite {
        code: "x-labang-2".into(),
        name: "Xã La Bằng".into(),
        kind: SiteKind::Commune,
        parent_id: Some(id("demo-h-vonhai")?),
        link_hint: None,
    })?;
    drop(store);
    let b = bridge(&db).await?;
    let (labang, thansa, dinhhoa) = (id("demo-x-labang")?, id("demo-x-thansa")?, id("demo-h-dinhhoa")?);
    let (phudinh, diemmac, quyky, sangmoc) =
        (id("demo-x-phudinh")?, id("demo-x-diemmac")?, id("demo-x-quyky")?, id("demo-x-sangmoc")?);
    let chair_tok = b.token(demo.meeting_id, demo.chair_site_id, Role::Chair);

    // Standby pages: La Bằng (named by path), Phú Đình (in the subtree), Sảng Mộc (not invited). Quy Kỳ's page is in
    // the demo meeting.
    let mut sb_labang = standby(&b, &b.state.mint_standby(labang, 600)).await?;
    let mut sb_phudinh = standby(&b, &b.state.mint_standby(phudinh, 600)).await?;
    let mut sb_sangmoc = standby(&b, &b.state.mint_standby(sangmoc, 600)).await?;
    let mut in_demo = b.join(&b.token(demo.meeting_id, quyky, Role::Site)).await?;

    // Who may convene, and bad bodies.
    let body = json!({"title": "Họp khẩn: mưa lũ", "sites": ["Huyện Đại Từ / Xã La Bằng", "Xã Thần Sa"],
                      "subtrees": ["demo-h-dinhhoa"], "ring_secs": 60});
    let site_tok = b.token(demo.meeting_id, labang, Role::Site);
    let (status, v) = b.post("/api/convene", Some(&site_tok), &body).await?;
    assert_eq!(status, 403, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("site token"), "{v}");
    let tech_tok = b.token(demo.meeting_id, demo.chair_site_id, Role::Technician);
    assert_eq!(b.post("/api/convene", Some(&tech_tok), &body).await?.0, 403);
    assert_eq!(b.post("/api/convene", None, &body).await?.0, 401);
    let (status, v) = b.post("/api/convene", Some(&chair_tok), &json!({"title": "x", "sites": 5})).await?;
    assert_eq!(status, 400, "{v}");
    let (status, v) = b.post("/api/convene", Some(ADMIN), &json!({"title": "x", "sites": [labang]})).await?;
    assert!(status == 400 && v["error"].as_str().unwrap_or("").contains("chair_site_id"), "{v}");
    let (status, v) =
        b.post("/api/convene", Some(&chair_tok), &json!({"title": "x", "sites": ["Xã La Bằng", "Xã Ma"]})).await?;
    let msg = v["error"].as_str().unwrap_or("").to_string();
    assert_eq!(status, 400, "{v}");
    assert!(msg.contains("demo-x-labang") && msg.contains("x-labang-2") && msg.contains("\"Xã Ma\""), "{msg}");
    let meetings_before = b.state.store().meetings()?.len();

    let (status, v) = b.post("/api/convene", Some(&chair_tok), &body).await?;
    assert_eq!(status, 200, "{v}");
    assert_eq!(b.state.store().meetings()?.len(), meetings_before + 1, "the refused requests created nothing");
    let meeting = v["meeting_id"].as_i64().ok_or("meeting_id")?;
    let invited: Vec<i64> = serde_json::from_value(v["invited"].clone())?;
    let stored = b.state.store().meeting(meeting)?.ok_or("meeting not stored")?;
    assert_eq!(stored.invited, invited);
    assert_eq!(stored.chair_site_id, demo.chair_site_id);
    assert_eq!(&invited[..3], &[labang, thansa, dinhhoa]);
    let mut rest = invited[3..].to_vec();
    rest.sort_unstable();
    let mut want = vec![phudinh, diemmac, quyky, id("demo-x-baolinh")?];
    want.sort_unstable();
    assert_eq!(rest, want, "the subtree is the district and its four communes");
    assert!(!invited.contains(&twin) && !invited.contains(&sangmoc));
    let status_of: HashMap<i64, String> = v["rings"]
        .as_array()
        .ok_or("rings")?
        .iter()
        .map(|r| (r["site_id"].as_i64().unwrap_or(0), r["status"].as_str().unwrap_or("").to_string()))
        .collect();
    for s in [labang, phudinh, quyky] {
        assert_eq!(status_of[&s], "ringing", "site {s}: {v}");
    }
    for s in [thansa, dinhhoa, diemmac] {
        assert_eq!(status_of[&s], "unreachable", "site {s}: {v}");
    }
    assert_eq!((v["ringing"].as_u64(), v["unreachable"].as_u64()), (Some(3), Some(4)));

    // The open pages ring with a token for the new meeting; the page in the demo meeting too.
    let (m, title, tok) = incoming(&mut sb_labang).await?;
    assert_eq!((m, title.as_str()), (meeting, "Họp khẩn: mưa lũ"));
    let claims = token::verify(&b.state.store().secret()?, &tok, 0)?;
    assert_eq!((claims.meeting_id, claims.site_id, claims.role), (meeting, labang, Role::Site));
    assert_eq!(incoming(&mut in_demo).await?.0, meeting);
    let (m2, _, _) = incoming(&mut sb_phudinh).await?;
    assert_eq!(m2, meeting);
    let nothing = tokio::time::timeout(Duration::from_millis(400), next(&mut sb_sangmoc)).await;
    assert!(nothing.is_err(), "a site not invited is not rung: {nothing:?}");

    // The chair of the new meeting joins and sees the rings; La Bằng accepts (joins with the rung token).
    let chair_new = v["chair_token"].as_str().ok_or("chair_token")?;
    let mut cw = b.join(chair_new).await?;
    let first = rings(&mut cw).await?;
    assert_eq!(first.len(), invited.len());
    let _labang_in = b.join(&tok).await?;

    // Phú Đình declines: the chair is told, the log has it.
    send(&mut sb_phudinh, &ClientMsg::Decline { meeting_id: meeting }).await?;
    let change = rings(&mut cw).await?;
    assert_eq!(change.iter().map(|r| (r.site_id, r.status)).collect::<Vec<_>>(), vec![(phudinh, RingStatus::Declined)]);
    let events = b.state.store().session_events(meeting)?;
    assert!(events.iter().any(|e| e.site_id == phudinh && e.event == "declined"), "{events:?}");
    assert!(events.iter().any(|e| e.site_id == labang && e.event == "rung"), "{events:?}");
    // Declining a meeting it was not rung for is refused, and the page stays open.
    send(&mut sb_sangmoc, &ClientMsg::Decline { meeting_id: meeting }).await?;
    assert!(matches!(next(&mut sb_sangmoc).await?, ServerMsg::Error { .. }));
    send(&mut sb_sangmoc, &ClientMsg::Ping {}).await?;
    assert!(matches!(next(&mut sb_sangmoc).await?, ServerMsg::Pong));

    // Điềm Mặc opens its standby page while the ring is on: it rings at once.
    let mut sb_diemmac = standby(&b, &b.state.mint_standby(diemmac, 600)).await?;
    assert_eq!(incoming(&mut sb_diemmac).await?.0, meeting);

    // Ring again: every invited site not in the meeting (La Bằng is).
    let (status, again) = b.post(&format!("/api/meetings/{meeting}/ring"), Some(chair_new), &json!({})).await?;
    assert_eq!(status, 200, "{again}");
    let again_sites: Vec<i64> =
        again["rings"].as_array().ok_or("rings")?.iter().filter_map(|r| r["site_id"].as_i64()).collect();
    assert_eq!(again_sites.len(), invited.len() - 1);
    assert!(!again_sites.contains(&labang));
    assert_eq!(b.post(&format!("/api/meetings/{meeting}/ring"), Some(&site_tok), &json!({})).await?.0, 403);
    b.stop().await;
    Ok(())
}

#[tokio::test]
async fn standby_tokens_are_for_standby_pages_only() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("d.sqlite3");
    let demo = Store::open(&db)?.seed_demo()?;
    let b = bridge(&db).await?;
    let (status, v) =
        b.post("/api/tokens", Some(ADMIN), &json!({"site_id": demo.first_commune_id, "role": "standby"})).await?;
    assert_eq!(status, 200, "{v}");
    let tok = v["token"].as_str().ok_or("token")?;
    assert!(v["url"].as_str().unwrap_or("").starts_with("/site?standby="), "{v}");
    let claims = token::verify(&b.state.store().secret()?, tok, 0)?;
    assert_eq!((claims.meeting_id, claims.site_id), (STANDBY_MEETING, demo.first_commune_id));
    assert!(claims.exp > 80 * 24 * 3600, "a standby link lives for weeks");
    let _page = standby(&b, tok).await?;
    // The standby socket has the limits of every socket: a binary frame, an oversized message, a bad message.
    for (frame, want) in [
        (Message::Binary(vec![1, 2, 3].into()), 4002u16),
        (Message::Text("x".repeat(diemcau_proto::MAX_MESSAGE_BYTES + 1).into()), 4003),
        (Message::Text(r#"{"type":"present"}"#.into()), 0),
        (Message::Text("not json".into()), 4002),
    ] {
        let mut ws = standby(&b, tok).await?;
        ws.send(frame).await?;
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await? {
            Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), want, "{}", f.reason),
            // A well-formed message a standby page does not send: an error, the page stays.
            Some(Ok(Message::Text(t))) => assert!(want == 0 && t.contains("\"error\""), "{t}"),
            other => return Err(format!("expected a close or an error, got {other:?}").into()),
        }
    }
    // Not a meeting token, and the other way round.
    let (code, reason) = refused(&format!("ws://{}/ws?token={tok}", b.addr)).await?;
    assert!(code == 4001 && reason.contains("standby"), "{code} {reason}");
    let meeting_tok = b.token(demo.meeting_id, demo.first_commune_id, Role::Site);
    let (code, reason) = refused(&format!("ws://{}/ws/standby?token={meeting_tok}", b.addr)).await?;
    assert!(code == 4001 && reason.contains("not a standby token"), "{code} {reason}");
    let (status, v) = b.post("/api/tokens", Some(ADMIN), &json!({"site_id": 99_999, "role": "standby"})).await?;
    assert_eq!(status, 404, "{v}");
    let (status, v) = b.post("/api/tokens", Some(ADMIN), &json!({"site_id": 1, "role": "site"})).await?;
    assert!(status == 400 && v["error"].as_str().unwrap_or("").contains("meeting_id"), "{v}");
    // The chair reads the directory (for the console's picker); a site does not.
    let http = reqwest::Client::new();
    let chair_tok = b.token(demo.meeting_id, demo.chair_site_id, Role::Chair);
    let res = http.get(format!("http://{}/api/sites?token={chair_tok}", b.addr)).send().await?;
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.json::<Vec<Value>>().await?.len() >= 16);
    let site_tok = b.token(demo.meeting_id, demo.first_commune_id, Role::Site);
    let res = http.get(format!("http://{}/api/sites?token={site_tok}", b.addr)).send().await?;
    assert_eq!(res.status().as_u16(), 403);
    b.stop().await;
    Ok(())
}
