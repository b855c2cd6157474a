//! The admin commands of the binary, run as a user would: import a directory, create a meeting, mint a token that the
//! bridge accepts, and clear errors (non-zero exit) on bad input.

use std::path::Path;
use std::process::{Command, Output};

fn diemcau(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diemcau"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("cannot run diemcau: {e}"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
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
