//! Adaptation in headless Chromium (`[media] adaptive = true`): the chair page sends three simulcast layers; one
//! commune joins directly, another through a netem relay whose downlink carries 200 kbit/s. The bridge's estimator
//! and allocator give the capped site the chair's 180p layer while the uncapped one climbs above it, and each site
//! page shows the resolution it receives.

use std::time::{Duration, Instant};

use diemcau_e2e::browser::{
    ChromeDriver, chair_layers_in, eval_async, finish, route_through, second_site_url, wait_connected,
};
use diemcau_netem::{LinkConfig, Profile, Timeline, relay::UdpRelay};
use thirtyfour::WebDriver;

/// The site page's layer badge: (height it shows, its text).
async fn shown_layer(browser: &WebDriver) -> anyhow::Result<(u64, String)> {
    let v = eval_async(
        browser,
        "(() => { const e = document.querySelector('#layer'); \
         return e.hidden ? [0, ''] : [Number(e.dataset.height) || 0, e.textContent]; })()",
    )
    .await?;
    Ok((v[0].as_u64().unwrap_or(0), v[1].as_str().unwrap_or("").to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_site_receives_a_lower_layer_than_an_uncapped_one() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = diemcau::Config::for_tests(dir.path());
    cfg.media.adaptive = true;
    cfg.media.shards = 1; // one media socket: the relay's target
    let running = diemcau::start(cfg).await?;
    let capped_url = second_site_url(&running)?;
    // 200 kbit/s toward the site with 300 ms of queue, 20 ms each way. Prices are measured, and Chromium's fake camera
    // is cheap: in one run q measured 101 kbit/s, h 283 and f 598 (each in three temporal layers; the demo meeting
    // invites satellite communes, so the chair sends q at 100 and Opus at 16 kbit/s, ≈ 40 with RED). Room for 180p at
    // 30 fps and audio (≈ 141, raised at 162 with the allocator's headroom), not for 360p at 15 fps (≈ 210 → 241).
    // (At 500 kbit/s the capped site received 720p at 15 fps, ≈ 360 kbit/s: right, but not a lower layer.)
    let down = LinkConfig { rate_kbps: Some(200), queue_bytes: 7_500, delay_ms: 20, ..LinkConfig::default() };
    let up = LinkConfig { delay_ms: 20, ..LinkConfig::default() };
    let relay = UdpRelay::start(running.media_addrs[0], Profile { up, down }, Timeline::default(), 5).await?;

    let cd = ChromeDriver::start().await?;
    let browser = cd.browser().await?;
    let result = async {
        browser.goto(&running.links.chair).await?;
        wait_connected(&browser, "chair").await?;
        let open = browser.new_window().await?;
        browser.switch_to_window(open.clone()).await?;
        browser.goto(&running.links.site).await?;
        wait_connected(&browser, "open site").await?;
        let capped = browser.new_window().await?;
        browser.switch_to_window(capped.clone()).await?;
        route_through(&browser, relay.local_addr()).await?;
        browser.goto(&capped_url).await?;
        wait_connected(&browser, "capped site").await?;
        anyhow::ensure!(relay.stats().client.is_some(), "the capped site did not go through the relay");

        // Within 60 s: the capped site shows 180p and the open one a taller picture, held for 3 s running.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut held = 0;
        let (mut a, mut b);
        loop {
            browser.switch_to_window(open.clone()).await?;
            a = shown_layer(&browser).await?;
            browser.switch_to_window(capped.clone()).await?;
            b = shown_layer(&browser).await?;
            held = if b.0 > 0 && b.0 <= 180 && a.0 > b.0 { held + 1 } else { 0 };
            if held >= 3 {
                break;
            }
            if Instant::now() >= deadline {
                let layers = chair_layers_in(&running).await?;
                anyhow::bail!(
                    "open site shows {a:?}, capped site {b:?}; chair's layers {layers:?}; relay {:?}",
                    relay.stats()
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        eprintln!("open site shows {a:?}, capped site {b:?}");
        anyhow::ensure!(b.1 == format!("{}p", b.0), "capped site's badge {b:?}");
        Ok(())
    }
    .await;
    finish(browser, cd, running, result).await
}
