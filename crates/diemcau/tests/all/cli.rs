//! The admin commands of the binary, run as a user would: import a directory, create a meeting, mint a token that the
//! bridge accepts, and clear errors (non-zero exit) on bad input.

use std::path::Path;
use std::process::{Command, Output};

pub(crate) fn diemcau(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diemcau"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("cannot run diemcau: {e}"))
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn import_create_meeting_and_mint_a_token() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("c.toml");
    std::fs::write(&config, format!("[data]\ndir = {:?}\n", dir.path().join("data").display().to_string()))
        .unwrap_or_else(|e| panic!("{e}"));
    let csv = dir.path().join("sites.csv");
    std::fs::write(
        &csv,
        "\u{feff}code,name,kind,parent_code,link_hint\n\
         hg,UBND tỉnh Hà Giang,province,,fibre\n\
         hg-mv,Huyện Mèo Vạc,district,hg,adsl\n\
         hg-mv-xc,Xã Xín Cái,commune,hg-mv,vsat\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let o = diemcau(&config, &["sites", "import", csv.to_str().unwrap_or_default()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("3 inserted, 0 updated"), "{}", stdout(&o));

    let o = diemcau(&config, &["sites", "list"]);
    let list = stdout(&o);
    let id_of = |code: &str| -> String {
        list.lines()
            .find(|l| l.split('\t').nth(1) == Some(code))
            .and_then(|l| l.split('\t').next())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{code} not listed: {list}"))
    };
    let (province, commune) = (id_of("hg"), id_of("hg-mv-xc"));
    assert!(list.contains("Xã Xín Cái"), "{list}");

    let invite = format!("{},{}", id_of("hg-mv"), commune);
    let o = diemcau(&config, &["meeting", "create", "--title", "Họp khẩn", "--chair", &province, "--invite", &invite]);
    assert!(o.status.success(), "{}", stderr(&o));
    let meeting = stdout(&o).split_whitespace().nth(1).unwrap_or_default().to_string();
    assert!(stdout(&o).contains("2 invited"), "{}", stdout(&o));

    let o = diemcau(&config, &["token", "--meeting", &meeting, "--site", &commune, "--role", "site"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let mut lines = out.lines();
    let token = lines.next().unwrap_or_default();
    assert!(lines.next().unwrap_or_default().ends_with(&format!("/site?token={token}")), "{out}");
    // The token verifies with the database's secret and names what was asked.
    let store = diemcau_store::Store::open(&dir.path().join("data/diemcau.sqlite3")).unwrap_or_else(|e| panic!("{e}"));
    let secret = store.secret().unwrap_or_else(|e| panic!("{e}"));
    let claims = diemcau_store::token::verify(&secret, token, 1_700_000_000).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(claims.site_id.to_string(), commune);
    assert_eq!(claims.meeting_id.to_string(), meeting);

    // Refusals: exit code 1 and a message that says what is wrong.
    let o = diemcau(&config, &["token", "--meeting", &meeting, "--site", &province, "--role", "site"]);
    assert!(!o.status.success() && stderr(&o).contains("cannot join"), "{}", stderr(&o));
    let o = diemcau(&config, &["token", "--meeting", &meeting, "--site", &commune, "--role", "boss"]);
    assert!(!o.status.success() && stderr(&o).contains("boss"), "{}", stderr(&o));
    std::fs::write(&csv, "code,name,kind,parent_code,link_hint\nx,Xã X,village,,\n").unwrap_or_else(|e| panic!("{e}"));
    let o = diemcau(&config, &["sites", "import", csv.to_str().unwrap_or_default()]);
    assert!(!o.status.success() && stderr(&o).contains("line 2"), "{}", stderr(&o));
}

#[test]
fn a_bad_config_file_is_named_with_its_key() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[meeting]\ngird_size = 4\n").unwrap_or_else(|e| panic!("{e}"));
    let o = diemcau(&config, &["serve"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("bad.toml") && err.contains("gird_size"), "{err}");
}

#[test]
fn drill_run_writes_reports_and_its_exit_status_says_whether_thresholds_held() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("c.toml");
    // The drill replaces the data directory with a temporary one of its own: this one must stay untouched.
    std::fs::write(&config, format!("[data]\ndir = {:?}\n", dir.path().join("data").display().to_string()))
        .unwrap_or_else(|e| panic!("{e}"));
    let scenario = |name: &str, thresholds: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        let text = format!(
            "name = \"{name}\"\nsites = 4\nduration_s = 5\njoin_spread_s = 1\nmix = \"fibre:100\"\n[chair]\n\
             profile = \"fibre\"\n[thresholds]\n{thresholds}\n"
        );
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    };

    let ok = scenario("ok", "connected_min = 1.0\naudio_continuity_min = 0.5");
    let out = dir.path().join("out-ok");
    let o =
        diemcau(&config, &["drill", "run", ok.to_str().unwrap_or_default(), "--out", out.to_str().unwrap_or_default()]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("drill passed"), "{}", stdout(&o));
    assert!(stderr(&o).contains("joined 4/4"), "progress lines: {}", stderr(&o));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap_or_default()).unwrap_or_default();
    assert_eq!(json["sites"].as_array().map(Vec::len), Some(4), "{json}");
    assert_eq!(json["passed"], true);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap_or_default();
    assert!(html.contains("\"name\":\"ok\"") && html.contains("window.drillReport"), "the report's data is embedded");
    assert!(!dir.path().join("data").exists(), "the drill wrote into the configured data directory");

    // First frame within 0 ms cannot hold: the drill runs, writes its report and exits 3.
    let strict = scenario("strict", "first_frame_max_ms = 0");
    let out = dir.path().join("out-strict");
    let o = diemcau(
        &config,
        &["drill", "run", strict.to_str().unwrap_or_default(), "--out", out.to_str().unwrap_or_default()],
    );
    assert_eq!(o.status.code(), Some(3), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("first_frame_p95_ms") && stdout(&o).contains("FAILED"), "{}", stdout(&o));
    assert!(out.join("report.html").exists());

    // A bad scenario is named with its key, and nothing runs.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"bad\"\nsites = 4\nduration_s = 5\nmix = \"fibre:100\"\n[[event]]\nat_s = 1\nchange = \"warp\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = diemcau(&config, &["drill", "run", bad.to_str().unwrap_or_default(), "--out", "unused"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("bad.toml") && err.contains("event 1") && err.contains("warp"), "{err}");
    assert!(!Path::new("unused").exists());
}

#[test]
fn bench_fanout_measures_the_bridge_child_and_writes_rows() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "").unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("fanout.json");
    let work = dir.path().join("work");
    let o = diemcau(
        &config,
        &[
            "bench",
            "fanout",
            "--steps",
            "4",
            "--settle",
            "1",
            "--window",
            "3",
            "--swarm-threads",
            "1",
            "--work-dir",
            work.to_str().unwrap_or_default(),
            "--out",
            out.to_str().unwrap_or_default(),
        ],
    );
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let rows: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap_or_default()).unwrap_or_default();
    let row = &rows[0];
    assert_eq!(row["system"], "diemcau", "{rows}");
    assert_eq!(row["subscribers"], 4);
    assert_eq!(row["connected"], 4, "{row}");
    assert_eq!(row["receiving"], 4, "{row}");
    // The bridge child forwarded to 4 subscribers during the window: CPU, memory and its own delay histogram.
    assert!(row["cpu_s_per_sub_s"].as_f64().is_some_and(|c| c > 0.0), "{row}");
    assert!(row["rss_kb"].as_u64().is_some_and(|kb| kb > 1000), "{row}");
    let (p50, p99) = (row["fwd_p50_ms"].as_f64().unwrap_or(-1.0), row["fwd_p99_ms"].as_f64().unwrap_or(-1.0));
    assert!(p50 > 0.0 && p99 >= p50, "{row}");
    assert!(row["delivered_ratio"].as_f64().is_some_and(|d| d > 0.95), "{row}");
    assert!(stdout(&o).contains("diemcau\t4\t4"), "{}", stdout(&o));
    // The bridge ran to the end of the benchmark without a panic.
    let log = std::fs::read_to_string(work.join("diemcau-bridge.log")).unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");
}

/// Kills the child it holds (our own `serve`, by its PID) when dropped.
pub(crate) struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `diemcau serve` on loopback with its data in `dir` (and `extra` TOML appended to its config); the bridge is
/// ended when the returned guard drops.
pub(crate) fn start_serve(dir: &Path, extra: &str) -> (Serve, std::path::PathBuf, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n[media]\nport = 0\n[data]\ndir = {:?}\n{extra}",
            dir.join("data").display().to_string()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(env!("CARGO_BIN_EXE_diemcau"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start serve: {e}"));
    let serve = Serve(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "the bridge did not listen within 20 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    (serve, config, port)
}

#[test]
fn swarm_joins_a_running_bridge_and_reports_per_profile() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (_serve, config, _) = start_serve(dir.path(), "");
    // No chair publishes: the sites join, connect and receive nothing — the report says so, per profile.
    let out = dir.path().join("swarm.json");
    let o = diemcau(
        &config,
        &[
            "swarm",
            "--meeting",
            "1",
            "--sites",
            "4",
            "--mix",
            "fibre:50,3g:50",
            "--duration",
            "4",
            "--join-spread",
            "1",
            "--out",
            out.to_str().unwrap_or_default(),
        ],
    );
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("joined 4/4"), "progress: {}", stderr(&o));
    let table = stdout(&o);
    assert!(table.lines().any(|l| l.starts_with("fibre\t2\t2\t0")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("3g\t2\t2\t0")), "{table}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap_or_default()).unwrap_or_default();
    assert_eq!(json["sites"].as_array().map(Vec::len), Some(4), "{json}");

    // More sites than the meeting invites: refused before anything joins.
    let o = diemcau(&config, &["swarm", "--meeting", "1", "--sites", "500", "--duration", "1"]);
    assert!(!o.status.success() && stderr(&o).contains("invites only"), "{}", stderr(&o));
}
