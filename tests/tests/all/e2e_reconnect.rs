//! Automatic reconnect after a network loss, in headless Chromium: the bridge stops under a chair and a commune page
//! (they see close code 4006) and starts again on the same address and data directory. Without anyone touching them,
//! both pages rejoin with a new peer connection and the commune decodes the chair's video again.

use std::time::{Duration, Instant};

use diemcau_e2e::browser::{ChromeDriver, eval_async, per_site, wait_connected};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_rejoin_after_the_bridge_restarts() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = diemcau::Config::for_tests(dir.path());
    let first = diemcau::start(cfg.clone()).await?;
    let chair_site = first.demo.chair_site_id;
    let addr = first.http_addr;

    let cd = ChromeDriver::start().await?;
    let browser = cd.browser().await?;
    let result = async {
        browser.goto(&first.links.chair).await?;
        let chair = browser.window().await?;
        wait_connected(&browser, "chair").await?;
        let site = browser.new_window().await?;
        browser.switch_to_window(site.clone()).await?;
        browser.goto(&first.links.site).await?;
        wait_connected(&browser, "site").await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while per_site(&browser, false).await?.get(&chair_site).copied().unwrap_or(0) == 0 {
            anyhow::ensure!(Instant::now() < deadline, "site never decoded the chair before the restart");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eval_async(&browser, "(window.__before = window.diemcau.pc, true)").await?;

        // The bridge goes away…
        first.shutdown().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = eval_async(&browser, "window.diemcau.state").await?;
            if st == "reconnecting" {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "site page did not notice the loss (state {st})");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // …and comes back on the same address with the same database (so the same tokens).
        let mut cfg2 = cfg.clone();
        cfg2.http.listen = addr;
        let second = diemcau::start(cfg2).await?;

        let outcome = async {
            wait_connected(&browser, "site after restart").await?;
            let fresh = eval_async(&browser, "window.diemcau.pc !== window.__before").await?;
            anyhow::ensure!(fresh == true, "the site page kept its old peer connection");
            browser.switch_to_window(chair.clone()).await?;
            wait_connected(&browser, "chair after restart").await?;
            browser.switch_to_window(site.clone()).await?;
            let deadline = Instant::now() + Duration::from_secs(20);
            while per_site(&browser, false).await?.get(&chair_site).copied().unwrap_or(0) == 0 {
                anyhow::ensure!(Instant::now() < deadline, "site did not decode the chair after the restart");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // The new bridge counts both as connected members.
            anyhow::ensure!(second.state.member_count() == 2, "members: {}", second.state.member_count());
            Ok(())
        }
        .await;
        second.shutdown().await;
        outcome
    }
    .await;
    let _ = browser.quit().await;
    drop(cd);
    result
}
