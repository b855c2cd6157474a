//! The commune's pre-meeting link check in headless Chromium: `/check?token=…` (the link the site page offers), the
//! "start" button, a progress bar through the downlink and uplink steps, the result table with a recommended profile;
//! the result is stored with the site and the technician page lists it.

use std::time::{Duration, Instant};

use diemcau_e2e::browser::{ChromeDriver, eval_async, finish};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_checks_its_link_from_the_browser_and_the_technician_sees_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let running = diemcau::start(diemcau::Config::for_tests(dir.path())).await?;
    let cd = ChromeDriver::start().await?;
    let browser = cd.browser().await?;
    let result = async {
        let check_url = running.links.site.replacen("/site?", "/check?", 1);
        anyhow::ensure!(check_url.contains("/check?token="), "{check_url}");
        browser.goto(&check_url).await?;
        eval_async(&browser, "document.querySelector('#go').click()").await?;
        let deadline = Instant::now() + Duration::from_secs(45);
        let mut percents = Vec::new();
        loop {
            let st = eval_async(&browser, "window.diemcauCheck.state").await?;
            if st == "done" {
                break;
            }
            anyhow::ensure!(
                st != "error",
                "check failed: {}",
                eval_async(&browser, "window.diemcauCheck.error").await?
            );
            anyhow::ensure!(Instant::now() < deadline, "the check did not finish within 45 s (state {st})");
            let p = eval_async(&browser, "document.querySelector('#bar').value").await?;
            percents.push(p.as_f64().unwrap_or(0.0));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // The progress bar moved through the check.
        anyhow::ensure!(percents.iter().any(|p| *p > 0.0 && *p < 100.0), "progress never shown: {percents:?}");
        let r = eval_async(&browser, "window.diemcauCheck.result").await?;
        let steps = eval_async(&browser, "window.diemcauCheck.steps.map(s => s.phase + ':' + s.kbps)").await?;
        // Loopback: every downlink step is carried, and the page reported what arrived.
        let down = r["down_kbps"].as_f64().unwrap_or(0.0);
        anyhow::ensure!(down > 3000.0, "downlink {down} on loopback: {r}");
        anyhow::ensure!(r["down_saturated"] == false, "{r}");
        anyhow::ensure!(steps.to_string().contains("up:150"), "steps {steps}");
        // Chromium's encoder sent the fake camera up: something arrived at the bridge.
        let up = r["up_kbps"].as_f64().unwrap_or(0.0);
        anyhow::ensure!(up > 50.0, "uplink {up}: {r}");
        anyhow::ensure!(r["rtt_ms"].as_f64().is_some_and(|v| v < 100.0), "{r}");
        let rec = r["recommended"].as_str().unwrap_or("").to_string();
        // The page shows it, in Vietnamese by default.
        let shown = eval_async(&browser, "document.querySelector('#r-rec').textContent").await?;
        let want = match rec.as_str() {
            "full" => "Đầy đủ",
            "standard" => "Tiêu chuẩn",
            "low" => "Thấp",
            _ => "Chỉ âm thanh",
        };
        anyhow::ensure!(shown.as_str().unwrap_or("").contains(want), "shown {shown}, recommended {rec}");
        let down_cell = eval_async(&browser, "document.querySelector('#r-down').textContent").await?;
        anyhow::ensure!(down_cell.as_str().unwrap_or("").contains("kbit/s"), "{down_cell}");

        // Stored with the site, and listed for the technician.
        let stored = running.state.store().latest_link_checks(Some(running.demo.first_commune_id))?;
        anyhow::ensure!(stored.len() == 1 && stored[0].result.recommended.as_str() == rec, "{stored:?}");
        browser.goto(&running.links.tech).await?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let rows = eval_async(&browser, "document.querySelectorAll('#checks tbody tr').length").await?;
            if rows == 1 {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the technician page lists {rows} link checks");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }
    .await;
    finish(browser, cd, running, result).await
}
