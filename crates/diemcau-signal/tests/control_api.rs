//! The meeting's control over real sockets: the app served on a loopback port, pages as WebSocket clients, chair
//! actions through `POST /api/meetings/{id}/control`, a real SQLite file — and the bridge restarted on that file in
//! the middle of a roll call.

mod common;

use std::error::Error;
use std::time::Duration;

use common::*;
use diemcau_proto::control::Outcome;
use diemcau_proto::{ClientMsg, PROTOCOL_VERSION, Role, ServerMsg};
use diemcau_store::Store;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// A meeting of the demo chair with three of its communes.
fn meeting(b: &Bridge) -> Result<(i64, i64, Vec<i64>), Box<dyn Error>> {
    let store = b.state.store();
    let demo = store.demo()?.ok_or("no demo")?;
    let communes: Vec<i64> =
        store.meeting(demo.meeting_id)?.ok_or("demo meeting")?.invited.into_iter().take(3).collect();
    let id = store.create_meeting("Điểm danh thử", demo.chair_site_id, &communes)?;
    Ok((id, demo.chair_site_id, communes))
}

#[tokio::test]
async fn chair_actions_are_refused_for_site_and_technician_tokens() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("db.sqlite3");
    Store::open(&db)?.seed_demo()?;
    let b = bridge(&db).await?;
    let (id, chair, sites) = meeting(&b)?;
    let start = json!({"action": "start_roll_call"});
    // Nobody connected yet: the room is not open.
    let (status, v) = b.control(id, Some(ADMIN), &start).await?;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("not open"), "{v}");
    let _chair_ws = b.join(&b.token(id, chair, Role::Chair)).await?;
    let site_tok = b.token(id, sites[0], Role::Site);
    let (status, v) = b.control(id, Some(&site_tok), &start).await?;
    assert_eq!(status, 403, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("refused for site tokens"), "{v}");
    let (status, _) = b.control(id, Some(&b.token(id, chair, Role::Technician)), &start).await?;
    assert_eq!(status, 403);
    let (status, _) = b.control(id, None, &start).await?;
    assert_eq!(status, 401);
    let (status, _) = b.control(id, Some(&b.token(id + 1, chair, Role::Chair)), &start).await?;
    assert_eq!(status, 403, "a chair token of another meeting");
    let (status, v) = b.control(id, Some(&b.token(id, chair, Role::Chair)), &json!({"action": "dance"})).await?;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap_or("").contains("invalid action"), "{v}");
    let (status, v) = b
        .control(id, Some(&b.token(id, chair, Role::Chair)), &json!({"action": "give_floor", "site_id": 999_999}))
        .await?;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap_or("").contains("not invited"), "{v}");
    // None of that was logged; the chair's start is.
    assert!(b.state.store().control_log(id)?.is_empty());
    let (status, v) = b.control(id, Some(&b.token(id, chair, Role::Chair)), &start).await?;
    assert_eq!((status, v["seq"].as_u64()), (200, Some(1)), "{v}");
    let (status, _) = b.control(id, Some(ADMIN), &start).await?;
    assert_eq!(status, 409, "already in progress");
    assert_eq!(b.state.store().control_log(id)?.len(), 1);
    b.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_roll_call_over_websockets_and_a_restart_in_the_middle_of_the_next() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("db.sqlite3");
    Store::open(&db)?.seed_demo()?;
    let b = bridge(&db).await?;
    let (id, chair, sites) = meeting(&b)?;
    let chair_tok = b.token(id, chair, Role::Chair);
    let mut cw = b.join(&chair_tok).await?;
    let first = control_state(&mut cw).await?;
    assert_eq!(first.seq, 0);
    let mut s0 = b.join(&b.token(id, sites[0], Role::Site)).await?;
    let mut s1 = b.join(&b.token(id, sites[1], Role::Site)).await?;
    // sites[2] never connects.
    let (status, v) = b.control(id, Some(&chair_tok), &json!({"action": "start_roll_call", "seconds": 2})).await?;
    assert_eq!(status, 200, "{v}");
    let until = wait_for(&mut s0, |m| match m {
        ServerMsg::SiteControl { view, .. } => view.called_until_ms,
        _ => None,
    })
    .await?;
    assert!(until > 0);
    // A site that is not the chair cannot start anything by WebSocket either; it answers "Có mặt".
    send(&mut s0, &ClientMsg::Present {}).await?;
    let (site, result, counts) = wait_for(&mut cw, |m| match m {
        ServerMsg::RollCallResult { site_id, result, counts } => Some((*site_id, *result, *counts)),
        _ => None,
    })
    .await?;
    assert_eq!(site, sites[0]);
    // No media flows in this test (pages without a peer connection): present, without media — the check is real.
    assert_eq!(result.outcome, Outcome::PresentNoMedia);
    assert_eq!((counts.called, counts.waiting), (3, 2));
    // The deadline passes: the connected site that did not answer, and the one never connected.
    let done = wait_for(&mut cw, |m| match m {
        ServerMsg::Control { state } if state.roll_call.is_none() && state.rounds == 1 => Some(state.clone()),
        _ => None,
    })
    .await?;
    let outcome = |s: i64| done.results.iter().find(|(x, _)| *x == s).map(|(_, r)| r.outcome);
    assert_eq!(outcome(sites[0]), Some(Outcome::PresentNoMedia));
    assert_eq!(outcome(sites[1]), Some(Outcome::NoAnswer));
    assert_eq!(outcome(sites[2]), Some(Outcome::Offline));
    // The attendance report says the same, as JSON, as CSV with a BOM, and as a page; not to a site.
    let http = reqwest::Client::new();
    let base = format!("http://{}/api/meetings/{id}", b.addr);
    let report: Value = http.get(format!("{base}/attendance")).bearer_auth(&chair_tok).send().await?.json().await?;
    let t = &report["totals"];
    assert_eq!(
        (t["invited"].as_u64(), t["present"].as_u64(), t["present_no_media"].as_u64()),
        (Some(3), Some(1), Some(1))
    );
    assert_eq!((t["no_answer"].as_u64(), t["offline"].as_u64()), (Some(1), Some(1)), "{report}");
    let row0 = report["sites"].as_array().and_then(|a| a.iter().find(|r| r["site_id"] == sites[0])).ok_or("row")?;
    assert!(row0["first_join_ms"].as_i64().is_some() && !row0["group"].as_str().unwrap_or("").is_empty(), "{row0}");
    let res = http.get(format!("{base}/attendance.csv?token={chair_tok}")).send().await?;
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    let bytes = res.bytes().await?;
    assert!(bytes.starts_with("\u{feff}".as_bytes()), "UTF-8 BOM first");
    let mut rd = csv::Reader::from_reader(&bytes[3..]);
    let heads = rd.headers()?.clone();
    let col = |name: &str| heads.iter().position(|h| h == name).ok_or(format!("no column {name}"));
    let (code_col, name_col) = (col("Mã kết quả")?, col("Đơn vị")?);
    let rows: Vec<csv::StringRecord> = rd.records().collect::<Result<_, _>>()?;
    assert_eq!(rows.len(), 3);
    let mut codes: Vec<&str> = rows.iter().map(|r| &r[code_col]).collect();
    codes.sort_unstable();
    assert_eq!(codes, vec!["no_answer", "offline", "present_no_media"]);
    // Vietnamese names come through intact.
    let mut names: Vec<String> = rows.iter().map(|r| r[name_col].to_owned()).collect();
    names.sort();
    let mut want: Vec<String> =
        sites.iter().map(|s| b.state.store().site(*s).ok().flatten().map(|x| x.name).unwrap_or_default()).collect();
    want.sort();
    assert_eq!(names, want);
    assert!(names.iter().any(|n| !n.is_ascii()), "{names:?}");
    let page = http.get(format!("{base}/attendance.html?token={chair_tok}")).send().await?.text().await?;
    assert!(page.contains("Báo cáo điểm danh") && page.contains("data-result=\"offline\""), "{page}");
    let site_tok = b.token(id, sites[0], Role::Site);
    let res = http.get(format!("{base}/attendance")).bearer_auth(&site_tok).send().await?;
    assert_eq!(res.status().as_u16(), 403);

    // Site 1 raises its hand; the chair gives the floor to site 0, locks the meeting and calls again.
    send(&mut s1, &ClientMsg::Hand { raised: true }).await?;
    wait_for(&mut cw, |m| match m {
        ServerMsg::Control { state } if !state.hands.is_empty() => Some(()),
        _ => None,
    })
    .await?;
    let (status, _) = b.control(id, Some(&chair_tok), &json!({"action": "give_floor", "site_id": sites[0]})).await?;
    assert_eq!(status, 200);
    let (status, _) = b.control(id, Some(&chair_tok), &json!({"action": "lock", "locked": true})).await?;
    assert_eq!(status, 200);
    let (status, v) = b.control(id, Some(&chair_tok), &json!({"action": "recall", "seconds": 60})).await?;
    assert_eq!(status, 200, "{v}");
    let before = wait_for(&mut cw, |m| match m {
        ServerMsg::Control { state } if state.roll_call.is_some() => Some(state.clone()),
        _ => None,
    })
    .await?;
    assert_eq!(before.roll_call.as_ref().map(|r| r.sites.clone()), Some(vec![sites[1], sites[2]]));
    assert_eq!(before.floor, Some(sites[0]));
    drop((cw, s0, s1));
    b.stop().await;

    // The bridge restarts on the same file.
    let b = bridge(&db).await?;
    let mut cw = b.join(&b.token(id, chair, Role::Chair)).await?;
    let after = control_state(&mut cw).await?;
    assert_eq!(after, before, "roll call with its deadline, floor, hand queue, mutes and lock restored from the log");
    // Locked: a site that was in may come back, one that never joined may not.
    let mut s1 = b.join(&b.token(id, sites[1], Role::Site)).await?;
    let view = wait_for(&mut s1, |m| match m {
        ServerMsg::SiteControl { view, .. } => Some(view.clone()),
        _ => None,
    })
    .await?;
    assert_eq!(view.hand_position, Some(1));
    assert!(view.called_until_ms.is_some(), "site 1 is still being called after the restart");
    let url = format!("ws://{}/ws?token={}", b.addr, b.token(id, sites[2], Role::Site));
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    send(&mut ws, &ClientMsg::Hello { v: PROTOCOL_VERSION }).await?;
    let closed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await?;
    match closed {
        Some(Ok(Message::Close(Some(f)))) => {
            assert_eq!(u16::from(f.code), diemcau_proto::close::LOCKED);
            assert!(f.reason.contains("locked"), "{}", f.reason);
        }
        other => return Err(format!("expected a close, got {other:?}").into()),
    }
    // The re-call goes on: site 1 answers, in round 2.
    send(&mut s1, &ClientMsg::Present {}).await?;
    let (site, result) = wait_for(&mut cw, |m| match m {
        ServerMsg::RollCallResult { site_id, result, .. } => Some((*site_id, *result)),
        _ => None,
    })
    .await?;
    assert_eq!((site, result.round, result.outcome), (sites[1], 2, Outcome::PresentNoMedia));

    // Everyone leaves; a refused join (locked) does not leave an empty room open behind it.
    drop((cw, s1));
    for _ in 0..50 {
        if b.state.member_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.state.member_count(), 0);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    send(&mut ws, &ClientMsg::Hello { v: PROTOCOL_VERSION }).await?;
    let closed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await?;
    assert!(
        matches!(closed, Some(Ok(Message::Close(Some(ref f)))) if u16::from(f.code) == diemcau_proto::close::LOCKED)
    );
    let (status, v) = b.control(id, Some(&chair_tok), &json!({"action": "mute_all"})).await?;
    assert!(status == 409 && v["error"].as_str().unwrap_or("").contains("not open"), "{status} {v}");
    b.stop().await;
    Ok(())
}
