//! `diemcau check-link` against a running `serve`, through the emulated links of config/links.toml: the bridge
//! measures what each link carries, recommends a profile, stores the result, and lists it on `/api/link-checks`.

use crate::cli::{diemcau, start_serve, stderr, stdout};

fn result_of(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_default()).unwrap_or_default()
}

#[test]
fn check_link_measures_a_satellite_and_an_adsl_link_and_stores_both() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (_serve, config, port) = start_serve(dir.path(), "[admin]\ntoken = \"adm-secret\"\n");
    let token = |site: &str| {
        let o = diemcau(&config, &["token", "--meeting", "1", "--site", site]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).lines().next().unwrap_or_default().to_string()
    };
    let url = format!("http://127.0.0.1:{port}");

    // One check of `site` through the emulated `link`: the command's output and its JSON result.
    let check = |site: &str, link: &str| {
        let json = dir.path().join(format!("{link}.json"));
        let tok = token(site);
        let args =
            ["check-link", "--url", &url, "--token", &tok, "--link", link, "--json", json.to_str().unwrap_or("")];
        let o = diemcau(&config, &args);
        assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
        let r = result_of(&json);
        (o, r)
    };

    // VSAT: 128 kbit/s each way, 5% loss, 400 ms RTT.
    let (o, vsat) = check("2", "vsat");
    assert!(stderr(&o).contains("chiều xuống (downlink) 64 kbit/s"), "progress: {}", stderr(&o));
    let down = vsat["down_kbps"].as_f64().unwrap_or(0.0);
    assert!((90.0..=135.0).contains(&down), "VSAT downlink {down}: {vsat}");
    assert_eq!(vsat["down_saturated"], true, "{vsat}");
    let up = vsat["up_kbps"].as_f64().unwrap_or(0.0);
    assert!((80.0..=135.0).contains(&up), "VSAT uplink {up}: {vsat}");
    let rtt = vsat["rtt_ms"].as_f64().unwrap_or(0.0);
    assert!((380.0..=650.0).contains(&rtt), "VSAT RTT {rtt}: {vsat}");
    assert!(vsat["down_loss_pct"].as_f64().is_some(), "{vsat}");
    assert_eq!(vsat["recommended"], "audio_only", "{vsat}");

    // ADSL: 8 Mbit/s down, 1 Mbit/s up.
    let (o, adsl) = check("3", "adsl");
    assert!(adsl["down_kbps"].as_f64().unwrap_or(0.0) >= 3000.0, "{adsl}");
    let up = adsl["up_kbps"].as_f64().unwrap_or(0.0);
    assert!((700.0..=1050.0).contains(&up), "ADSL uplink {up}: {adsl}");
    assert_eq!(adsl["up_saturated"], true, "{adsl}");
    assert_eq!(adsl["recommended"], "full", "{adsl}");
    assert!(stdout(&o).contains("Khuyến nghị (profile)    full"), "{}", stdout(&o));
    let adsl_token = token("3");

    // Both stored with their sites, the latest per site, for the technician page.
    let body = http_get(port, "/api/link-checks", "adm-secret");
    let listed: serde_json::Value =
        serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap_or_default();
    let checks = listed["checks"].as_array().cloned().unwrap_or_default();
    assert_eq!(checks.len(), 2, "{listed}");
    assert_eq!(checks[0]["site_id"], 2);
    assert_eq!(checks[0]["result"]["recommended"], "audio_only");
    assert_eq!(checks[1]["site_id"], 3);
    assert_eq!(checks[1]["result"]["recommended"], "full");

    // A bad token: a clear refusal, exit status 1.
    let o = diemcau(&config, &["check-link", "--url", &url, "--token", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("token"), "{}", stderr(&o));
    // A bad link name: named.
    let o = diemcau(&config, &["check-link", "--url", &url, "--token", &adsl_token, "--link", "pigeon"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("pigeon"), "{}", stderr(&o));
}

/// A plain HTTP/1.1 GET with a bearer token; the whole response.
fn http_get(port: u16, path: &str, bearer: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bearer}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap_or_else(|e| panic!("{e}"));
    out
}
