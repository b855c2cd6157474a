//! Headless Chromium driven through ChromeDriver (WebDriver), with a fake camera and microphone.
//!
//! `scripts/test` installs Debian's `chromium` and `chromium-driver`; a missing browser is a test failure, never a
//! skip. ChromeDriver is started on a free port and ended by its process id when the guard drops.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use thirtyfour::{ChromiumLikeCapabilities, DesiredCapabilities, WebDriver};

/// One browser test at a time: `scripts/test` runs two tests at once, and two sets of Chromium encoders on a 2-core
/// machine starve each other (the bandwidth estimator of `e2e_layers` reads CPU starvation as congestion).
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A ChromeDriver process, killed by pid on drop; holds the one-browser-test lock while it lives.
pub struct ChromeDriver {
    child: Child,
    /// WebDriver URL.
    pub url: String,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn find(candidates: &[&str]) -> Option<String> {
    candidates.iter().find(|p| std::path::Path::new(p).exists()).map(|p| p.to_string())
}

/// Path of the Chromium binary.
pub fn chromium_path() -> anyhow::Result<String> {
    find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"])
        .context("Chromium is not installed: run scripts/test (it installs chromium and chromium-driver)")
}

/// Waits for the one-browser-test turn, for a test as heavy as a browser test (a drill with synthetic sites): run
/// beside one, it starved Chromium's encoder (`e2e_chromium`: no chair frame within 1 s of connecting).
pub async fn heavy_test_turn() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_BROWSER.lock().await
}

impl ChromeDriver {
    /// Starts ChromeDriver and waits until it answers.
    pub async fn start() -> anyhow::Result<ChromeDriver> {
        let turn = ONE_BROWSER.lock().await;
        let bin = find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])
            .context("chromedriver is not installed: run scripts/test (it installs chromium-driver)")?;
        let port = free_port()?;
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        let url = format!("http://127.0.0.1:{port}");
        let driver = ChromeDriver { child, url, _turn: turn };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if reqwest::get(format!("{}/status", driver.url)).await.is_ok() {
                return Ok(driver);
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not answer within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens a new headless Chromium with fake media devices.
    pub async fn browser(&self) -> anyhow::Result<WebDriver> {
        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary(&chromium_path()?)?;
        let profile = tempfile::tempdir()?.keep();
        for arg in [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            "--allow-loopback-in-peer-connection",
            "--autoplay-policy=no-user-gesture-required",
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows",
            "--window-size=1024,768",
        ] {
            caps.add_arg(arg)?;
        }
        caps.add_arg(&format!("--user-data-dir={}", profile.display()))?;
        // For a look inside WebRTC when a test fails, e.g. `DIEMCAU_CHROMIUM_ARGS="--enable-logging
        // --log-file=/tmp/chromium.log --vmodule=*ulpfec*=3"`.
        for arg in std::env::var("DIEMCAU_CHROMIUM_ARGS").unwrap_or_default().split_whitespace() {
            caps.add_arg(arg)?;
        }
        WebDriver::new(&self.url, caps).await.context("opening a Chromium session")
    }
}

/// Runs a script returning a promise in the current page, and returns its JSON result.
pub async fn eval_async(driver: &WebDriver, expr: &str) -> anyhow::Result<serde_json::Value> {
    let script = format!(
        "const done = arguments[arguments.length - 1];
         Promise.resolve().then(() => {expr}).then(v => done({{ok: v}}), e => done({{err: String(e)}}));"
    );
    let ret = driver.execute_async(&script, Vec::new()).await?.json().clone();
    if let Some(err) = ret.get("err") {
        bail!("script failed: {err}");
    }
    Ok(ret.get("ok").cloned().unwrap_or(serde_json::Value::Null))
}

/// Polls `expr` in the current window until it is truthy (`secs` at most); returns its value.
pub async fn wait_js(driver: &WebDriver, expr: &str, secs: u64, what: &str) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = eval_async(driver, expr).await?;
        if !(v.is_null() || v == false || v == 0) {
            return Ok(v);
        }
        anyhow::ensure!(Instant::now() < deadline, "{what}: still {v} after {secs} s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the page's `window.diemcau.state` is `connected` (30 s at most).
pub async fn wait_connected(driver: &WebDriver, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = eval_async(driver, "window.diemcau ? window.diemcau.state : null").await?;
        if st == "connected" {
            return Ok(());
        }
        if Instant::now() > deadline {
            let err = eval_async(driver, "window.diemcau ? window.diemcau.lastError : null").await?;
            bail!("{what} not connected after 30 s (state {st}, last error {err})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Frames decoded (video) or bytes received (audio) per sending site id, summed over the page's inbound streams.
pub async fn per_site(driver: &WebDriver, audio: bool) -> anyhow::Result<HashMap<i64, u64>> {
    let expr = if audio { "window.diemcau.inboundAudio()" } else { "window.diemcau.inboundVideo()" };
    let v = eval_async(driver, expr).await?;
    let mut out = HashMap::new();
    for s in v.as_array().cloned().unwrap_or_default() {
        let Some(site) = s.get("siteId").and_then(|x| x.as_i64()) else { continue };
        let n = if audio { s.get("bytesReceived") } else { s.get("framesDecoded") };
        *out.entry(site).or_insert(0) += n.and_then(|x| x.as_u64()).unwrap_or(0);
    }
    Ok(out)
}

/// Makes the pages opened next in the current window send their WebRTC traffic to `relay` instead of the bridge:
/// every UDP candidate of the bridge's answer is rewritten to the relay's address before the page sees it (a
/// script injected through the DevTools protocol; the page's own code is unchanged). The bridge then sees the relay
/// as the browser's address (a peer-reflexive candidate), as with [`crate::webrtc_site::redirect_candidates`].
pub async fn route_through(driver: &WebDriver, relay: std::net::SocketAddr) -> anyhow::Result<()> {
    use thirtyfour::extensions::cdp::ChromeDevTools;
    let source = format!(
        "(() => {{ const set = RTCPeerConnection.prototype.setRemoteDescription;
           RTCPeerConnection.prototype.setRemoteDescription = function (d) {{
             if (d && d.sdp) d = {{ type: d.type, sdp: d.sdp.replace(
               /^(a=candidate:\\S+ \\d+ udp \\d+ )\\S+ \\d+( typ host)/gim, '$1{ip} {port}$2') }};
             return set.call(this, d);
           }}; }})();",
        ip = relay.ip(),
        port = relay.port()
    );
    ChromeDevTools::new(driver.handle.clone())
        .execute_cdp_with_params("Page.addScriptToEvaluateOnNewDocument", serde_json::json!({ "source": source }))
        .await
        .context("injecting the candidate rewrite")?;
    Ok(())
}

/// Ends an end-to-end test: quits the browser, ends ChromeDriver (by its process id), shuts the bridge down, and
/// returns the test's `result` (the teardown runs whether it failed or not).
pub async fn finish<T>(
    browser: WebDriver,
    cd: ChromeDriver,
    running: diemcau::Running,
    result: anyhow::Result<T>,
) -> anyhow::Result<T> {
    let _ = browser.quit().await;
    // Chromium's processes take a moment to exit after quitting (a roll call's four peer connections longer): the
    // next heavy test, which starts when `cd` gives up the turn, must not share the cores with them (`link_drop`
    // right after `e2e_rollcall` had its ADSL sites stuck at 360p).
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(cd);
    running.shutdown().await;
    result
}

/// The page link of the demo meeting's invited site other than `running.links.site`'s (a second commune).
pub fn second_site_url(running: &diemcau::Running) -> anyhow::Result<String> {
    let meeting = running.state.store().meeting(running.demo.meeting_id)?.context("no demo meeting")?;
    let second = meeting
        .invited
        .iter()
        .copied()
        .find(|id| *id != running.demo.first_commune_id && *id != running.demo.chair_site_id)
        .context("the demo meeting has a single commune")?;
    let token = running.state.mint_token(meeting.id, second, diemcau_proto::Role::Site, 3600);
    Ok(format!("{}/site?token={token}", running.base_url))
}

/// The simulcast layers of the demo chair's camera as the bridge's statistics endpoint reports them
/// (`[{"rid":"q","temporal_layers":3,"kbps":80},…]`; empty before they arrive).
pub async fn chair_layers_in(running: &diemcau::Running) -> anyhow::Result<Vec<serde_json::Value>> {
    let url = format!(
        "{}/api/meetings/{}/stats?token={}",
        running.base_url,
        running.demo.meeting_id,
        running.token(diemcau_proto::Role::Technician, running.demo.chair_site_id)
    );
    let stats: serde_json::Value = reqwest::get(&url).await?.json().await?;
    let chair = stats["peers"].as_array().and_then(|p| p.iter().find(|p| p["role"] == "chair")).cloned();
    Ok(chair.as_ref().and_then(|c| c["layers_in"].as_array()).cloned().unwrap_or_default())
}
