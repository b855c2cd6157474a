//! End to end in headless Chromium with fake camera and microphone: the bridge on ephemeral ports, one chair page and
//! three commune pages. Each site decodes the chair's video and receives its audio; the chair decodes every site's
//! video. Frames decoded must keep increasing; a joining site decodes its first chair frame within a second; SRTP
//! uses an AEAD-GCM profile; the commune page transfers at most 150 KB. The chair's camera is sent as three simulcast
//! layers, a site's as two, and a site decodes one of the chair's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use diemcau_e2e::browser::{ChromeDriver, eval_async, per_site, wait_connected};
use diemcau_proto::{Role, SiteKind};

/// The simulcast layers a page's camera sends: [[rid, frame width]…] sorted by width (those with frames sent).
const SENT_LAYERS: &str = "window.diemcau.pc.getStats().then((r) => { const o = []; r.forEach((s) => { \
  if (s.type === 'outbound-rtp' && s.kind === 'video' && s.framesSent > 0) o.push([s.rid, s.frameWidth]); }); \
  return o.sort((a, b) => a[1] - b[1]); })";

/// Rids of `layers` (from [`SENT_LAYERS`]) smallest picture first, when their widths differ.
fn rids_by_width(layers: &serde_json::Value) -> Option<String> {
    let l = layers.as_array()?;
    let widths: Vec<u64> = l.iter().map(|x| x[1].as_u64()).collect::<Option<_>>()?;
    if widths.windows(2).any(|w| w[0] >= w[1]) {
        return None;
    }
    Some(l.iter().map(|x| x[0].as_str().unwrap_or("?")).collect::<Vec<_>>().join(","))
}

/// Chair frames per site, and (chair frames, chair audio bytes) on each site page.
type Sample = (HashMap<i64, u64>, Vec<(u64, u64)>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chair_and_three_sites_see_each_other() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let running = diemcau::start(diemcau::Config::for_tests(dir.path())).await?;
    let meeting = running.demo.meeting_id;
    let chair_site = running.demo.chair_site_id;
    let communes: Vec<i64> = running
        .state
        .store()
        .invited_sites(meeting)?
        .into_iter()
        .filter(|s| s.kind == SiteKind::Commune)
        .map(|s| s.id)
        .take(3)
        .collect();
    assert_eq!(communes.len(), 3);

    let cd = ChromeDriver::start().await?;
    let browser = cd.browser().await?;
    let result = async {
        browser.goto(&running.links.chair).await?;
        let chair = browser.window().await?;
        wait_connected(&browser, "chair").await?;
        let mut sites = Vec::new();
        let mut first_frame = Vec::new();
        for id in &communes {
            let w = browser.new_window().await?;
            browser.switch_to_window(w.clone()).await?;
            let url = format!("{}/site?token={}", running.base_url, running.token(Role::Site, *id));
            browser.goto(&url).await?;
            wait_connected(&browser, &format!("site {id}")).await?;
            // A newly joined site gets a keyframe of the chair within a second of its media connecting.
            let joined = Instant::now();
            while per_site(&browser, false).await?.get(&chair_site).copied().unwrap_or(0) == 0 {
                anyhow::ensure!(
                    joined.elapsed() < Duration::from_secs(1),
                    "site {id}: no chair frame decoded within 1 s of connecting"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            first_frame.push(joined.elapsed());
            // Media is encrypted with an AEAD-GCM SRTP profile.
            let cipher = eval_async(
                &browser,
                "window.diemcau.pc.getStats().then(r => { let c = null; \
                 r.forEach(s => { if (s.type === 'transport' && s.srtpCipher) c = s.srtpCipher; }); return c; })",
            )
            .await?;
            anyhow::ensure!(
                // Chromium 156 names it SRTP_AEAD_AES_256_GCM, 148 AEAD_AES_256_GCM.
                cipher
                    .as_str()
                    .is_some_and(|c| c.trim_start_matches("SRTP_").starts_with("AEAD_AES_") && c.ends_with("_GCM")),
                "site {id}: SRTP cipher {cipher}"
            );
            // The commune page loads over the same weak link: everything it transfers stays ≤ 150 KB.
            let weight = eval_async(
                &browser,
                "performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')) \
                 .reduce((sum, e) => sum + (e.transferSize || 0), 0)",
            )
            .await?
            .as_f64()
            .unwrap_or(f64::MAX);
            anyhow::ensure!(weight > 0.0 && weight <= 150.0 * 1024.0, "site page transferred {weight} bytes");
            sites.push((*id, w));
        }
        eprintln!("time from connected to first decoded chair frame per site: {first_frame:?}");

        // Simulcast: the chair's camera goes out as 180p/360p/720p (rids q/h/f), a site's as 180p/360p (q/h).
        // (Widths are compared, not fixed: Chromium may scale all layers down when the machine is busy.)
        for (w, want) in [(&chair, "q,h,f"), (&sites[0].1, "q,h")] {
            browser.switch_to_window(w.clone()).await?;
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let layers = eval_async(&browser, SENT_LAYERS).await?;
                if rids_by_width(&layers).as_deref() == Some(want) {
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "layers sent {layers}, expected {want}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }

        // Every page decodes what it should, and keeps decoding.
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut first: Option<Sample> = None;
        loop {
            browser.switch_to_window(chair.clone()).await?;
            let chair_video = per_site(&browser, false).await?;
            let mut site_media = Vec::new();
            for (_, w) in &sites {
                browser.switch_to_window(w.clone()).await?;
                let v = per_site(&browser, false).await?.get(&chair_site).copied().unwrap_or(0);
                let a = per_site(&browser, true).await?.get(&chair_site).copied().unwrap_or(0);
                site_media.push((v, a));
            }
            let all_flowing = communes.iter().all(|c| chair_video.get(c).copied().unwrap_or(0) > 0)
                && site_media.iter().all(|(v, a)| *v > 0 && *a > 0);
            match &first {
                None if all_flowing => first = Some((chair_video.clone(), site_media.clone())),
                Some((v0, s0)) => {
                    let chair_grew = communes.iter().all(|c| chair_video.get(c) > v0.get(c));
                    let sites_grew = site_media.iter().zip(s0).all(|((v, a), (v0, a0))| v > v0 && a > a0);
                    if chair_grew && sites_grew {
                        break;
                    }
                }
                None => {}
            }
            if Instant::now() > deadline {
                let raw_site = eval_async(&browser, "window.diemcau.inboundVideo()").await?;
                let slots = eval_async(&browser, "window.diemcau.slots").await?;
                let pc = eval_async(&browser, "window.diemcau.pc && window.diemcau.pc.connectionState").await?;
                let stats = reqwest::get(format!(
                    "{}/api/meetings/{meeting}/stats?token={}",
                    running.base_url,
                    running.token(Role::Technician, chair_site)
                ))
                .await?
                .text()
                .await?;
                anyhow::bail!(
                    "last site page: inbound video {raw_site}, slots {slots}, pc {pc}; bridge stats {stats}; \
                     media did not flow everywhere within 40 s: chair frames per site {chair_video:?}, \
                     sites (chair frames, chair audio bytes) {site_media:?}, first sample {first:?}"
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }

        // A site decodes one of the chair's layers: which one is the adaptation's choice (on loopback it climbs from
        // 180p toward 720p; e2e_layers.rs checks the choice against a capped link). The page's other receive-only
        // video section (the floor holder's) is idle: only the stream with decoded frames is the chair's.
        browser.switch_to_window(chair.clone()).await?;
        let chair_layers = eval_async(&browser, SENT_LAYERS).await?;
        browser.switch_to_window(sites[0].1.clone()).await?;
        let got = eval_async(
            &browser,
            "window.diemcau.pc.getStats().then((r) => { let w = null; r.forEach((s) => { \
             if (s.type === 'inbound-rtp' && s.kind === 'video' && s.framesDecoded > 0) w = s.frameWidth; }); \
             return w; })",
        )
        .await?;
        let widths: Vec<serde_json::Value> =
            chair_layers.as_array().map(|l| l.iter().map(|x| x[1].clone()).collect()).unwrap_or_default();
        anyhow::ensure!(
            widths.len() == 3 && widths.contains(&got),
            "site decodes width {got}, chair sends {chair_layers}"
        );

        // The technician page lists the four peers and its live charts draw.
        let tech = browser.new_window().await?;
        browser.switch_to_window(tech).await?;
        browser.goto(&running.links.tech).await?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v = eval_async(
                &browser,
                "window.diemcau.techCharts ? { charts: window.diemcau.techCharts(), \
                 rows: document.querySelectorAll('tbody tr[data-site]').length } : null",
            )
            .await?;
            let series = v["charts"]["series"].as_u64().unwrap_or(0);
            if series >= 3 {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "technician charts did not draw: {v}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    // The technician's statistics see the four peers with traffic while they are still connected.
    let stats: serde_json::Value = reqwest::get(format!(
        "{}/api/meetings/{meeting}/stats?token={}",
        running.base_url,
        running.token(Role::Technician, chair_site)
    ))
    .await?
    .json()
    .await?;
    let _ = browser.quit().await;
    drop(cd);
    running.shutdown().await;
    result?;
    let peers = stats["peers"].as_array().cloned().unwrap_or_default();
    assert_eq!(peers.len(), 4, "{stats}");
    assert!(peers.iter().all(|p| p["state"] == "connected" && p["packets_in"].as_u64() > Some(0)), "{stats}");
    Ok(())
}
