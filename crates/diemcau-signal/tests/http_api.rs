//! The HTTP side of the signalling service, driven as a value with `tower::ServiceExt::oneshot`: health, the embedded
//! pages, the admin API (auth, validation, CSV import, meetings, tokens) and the statistics endpoint's access rules.
//!
//! The state is the real thing: a SQLite file in a temporary directory seeded with the demo province, and a running
//! data plane with one shard. No socket is opened for HTTP.

use std::error::Error;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use diemcau_media::{Media, MediaConfig, MediaEvent};
use diemcau_proto::Role;
use diemcau_signal::{AppState, SignalConfig};
use diemcau_store::token::{self, Claims};
use diemcau_store::{Demo, NewSite, Store};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt as _;

type TestResult = Result<(), Box<dyn Error>>;

const ADMIN: &str = "adm";
/// Far more than any answer here; `to_bytes` refuses bodies over the limit.
const BODY_LIMIT: usize = 4 << 20;

/// A running app and what the tests need to look behind it.
struct Fixture {
    app: Router,
    state: Arc<AppState>,
    store: Arc<Store>,
    demo: Demo,
    _dir: TempDir,
    _events: mpsc::UnboundedReceiver<MediaEvent>,
    _shutdown: watch::Sender<bool>,
}

fn fixture_with(admin_token: Option<&str>) -> Result<Fixture, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(Store::open(&dir.path().join("db.sqlite3"))?);
    let demo = store.seed_demo()?;
    let (media, events) = Media::start(&MediaConfig { shards: 1, ..Default::default() })?;
    let (shutdown, rx) = watch::channel(false);
    let cfg = SignalConfig { admin_token: admin_token.map(str::to_owned), ..Default::default() };
    let state = AppState::new(store.clone(), Arc::new(media), cfg, rx)?;
    let app = diemcau_signal::app(state.clone());
    Ok(Fixture { app, state, store, demo, _dir: dir, _events: events, _shutdown: shutdown })
}

fn fixture() -> Result<Fixture, Box<dyn Error>> {
    fixture_with(Some(ADMIN))
}

/// What came back from one request.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Result<Value, Box<dyn Error>> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("{} is not JSON ({e}): {:?}", self.status, String::from_utf8_lossy(&self.body)).into())
    }

    /// The `error` field of a JSON error answer.
    fn error(&self) -> Result<String, Box<dyn Error>> {
        let v = self.json()?;
        let msg = v.get("error").and_then(Value::as_str).ok_or_else(|| format!("no `error` in {v}"))?;
        Ok(msg.to_owned())
    }

    fn content_type(&self) -> &str {
        self.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Fixture {
    async fn send(&self, req: Request<Body>) -> Result<Reply, Box<dyn Error>> {
        let res = self.app.clone().oneshot(req).await?;
        let status = res.status();
        let headers = res.headers().clone();
        let body = axum::body::to_bytes(res.into_body(), BODY_LIMIT).await?;
        Ok(Reply { status, headers, body })
    }

    async fn get(&self, uri: &str, bearer: Option<&str>) -> Result<Reply, Box<dyn Error>> {
        let mut b = Request::builder().method(Method::GET).uri(uri);
        if let Some(t) = bearer {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        self.send(b.body(Body::empty())?).await
    }

    async fn post_json(&self, uri: &str, bearer: Option<&str>, body: &Value) -> Result<Reply, Box<dyn Error>> {
        let mut b = Request::builder().method(Method::POST).uri(uri).header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = bearer {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        self.send(b.body(Body::from(serde_json::to_vec(body)?))?).await
    }

    async fn post_csv(&self, csv: &str) -> Result<Reply, Box<dyn Error>> {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/api/sites/import")
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .header(header::CONTENT_TYPE, "text/csv; charset=utf-8")
            .body(Body::from(csv.to_owned()))?;
        self.send(req).await
    }

    fn site_by_code(&self, code: &str) -> Result<Option<diemcau_store::Site>, Box<dyn Error>> {
        Ok(self.store.sites()?.into_iter().find(|s| s.code == code))
    }
}

fn assert_mentions(msg: &str, words: &[&str]) {
    for w in words {
        assert!(msg.contains(w), "{msg:?} should mention {w:?}");
    }
}

// ---- health and pages ----------------------------------------------------------------------------------------

#[tokio::test]
async fn healthz_answers_ok() -> TestResult {
    let f = fixture()?;
    let r = f.get("/healthz", None).await?;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "ok");
    Ok(())
}

#[tokio::test]
async fn pages_are_served_as_html() -> TestResult {
    let f = fixture()?;
    for page in ["/", "/chair", "/site", "/tech", "/check"] {
        let r = f.get(page, None).await?;
        assert_eq!(r.status, StatusCode::OK, "{page}");
        assert!(r.content_type().starts_with("text/html"), "{page}: {}", r.content_type());
        assert!(r.text().to_lowercase().contains("<html"), "{page} is not an HTML page");
    }
    Ok(())
}

#[tokio::test]
async fn static_files_are_served_and_missing_ones_are_404() -> TestResult {
    let f = fixture()?;
    let r = f.get("/static/app.js", None).await?;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.content_type().contains("javascript"), "{}", r.content_type());
    assert!(!r.body.is_empty());

    let r = f.get("/static/nope", None).await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = f.get("/static/..%2FCargo.toml", None).await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "only embedded files are served");
    Ok(())
}

// ---- admin authentication ------------------------------------------------------------------------------------

#[tokio::test]
async fn admin_api_requires_the_bearer_token() -> TestResult {
    let f = fixture()?;
    let r = f.get("/api/sites", None).await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_mentions(&r.error()?, &["Authorization"]);

    for wrong in ["adx", "ad", "admin", ""] {
        let r = f.get("/api/sites", Some(wrong)).await?;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{wrong:?}");
    }
    let r = f.get("/api/meetings", Some("nope")).await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_mentions(&r.error()?, &["wrong admin token"]);

    // Another scheme is no bearer token.
    let req = Request::builder()
        .uri("/api/sites")
        .header(header::AUTHORIZATION, format!("Basic {ADMIN}"))
        .body(Body::empty())?;
    assert_eq!(f.send(req).await?.status, StatusCode::UNAUTHORIZED);

    // Writes are refused too, and nothing is written.
    let before = f.store.sites()?.len();
    let body = json!({ "code": "x-1", "name": "Xã Một", "kind": "commune" });
    let r = f.post_json("/api/sites", Some("nope"), &body).await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = f.post_json("/api/sites", None, &body).await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(f.store.sites()?.len(), before);
    Ok(())
}

#[tokio::test]
async fn bridge_metrics_are_for_the_admin_and_carry_the_delay_histogram() -> TestResult {
    let f = fixture()?;
    assert_eq!(f.get("/api/bridge/metrics", None).await?.status, StatusCode::UNAUTHORIZED);
    assert_eq!(f.get("/api/bridge/metrics", Some("nope")).await?.status, StatusCode::UNAUTHORIZED);
    let r = f.get("/api/bridge/metrics", Some(ADMIN)).await?;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json()?;
    assert_eq!(v["shards"], 1);
    assert_eq!(v["peers"], 0);
    // Nothing forwarded yet: an empty histogram, no quantiles (the forwarding itself is measured by the benchmark).
    assert_eq!(v["forward_delay"]["count"], 0);
    assert_eq!(v["forward_delay"]["p99_us"], Value::Null);
    assert_eq!(v["forward_delay"]["buckets"], json!([]));
    Ok(())
}

#[tokio::test]
async fn admin_api_is_forbidden_when_disabled() -> TestResult {
    let f = fixture_with(None)?;
    for (method, uri) in [(Method::GET, "/api/sites"), (Method::GET, "/api/meetings")] {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .body(Body::empty())?;
        let r = f.send(req).await?;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri}");
        assert_mentions(&r.error()?, &["disabled", "config", "[admin] token"]);
    }
    let body = json!({ "meeting_id": f.demo.meeting_id, "site_id": f.demo.first_commune_id, "role": "site" });
    let r = f.post_json("/api/tokens", Some(ADMIN), &body).await?;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_mentions(&r.error()?, &["config"]);
    let r = f.post_csv("code,name,kind\nx-1,Xã Một,commune\n").await?;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(f.site_by_code("x-1")?.is_none());
    Ok(())
}

// ---- sites ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn list_sites_contains_the_demo() -> TestResult {
    let f = fixture()?;
    let r = f.get("/api/sites", Some(ADMIN)).await?;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.content_type().starts_with("application/json"), "{}", r.content_type());
    let v = r.json()?;
    let sites = v.as_array().ok_or("not a list")?;
    assert_eq!(sites.len(), 1 + 3 + 3 + 12, "the demo province");
    let chair = sites.iter().find(|s| s["id"] == json!(f.demo.chair_site_id)).ok_or("the chair site is missing")?;
    assert_eq!(chair["name"], "UBND tỉnh Thái Nguyên");
    assert_eq!(chair["kind"], "province");
    assert_eq!(chair["parent_id"], Value::Null);
    let commune =
        sites.iter().find(|s| s["id"] == json!(f.demo.first_commune_id)).ok_or("the first commune is missing")?;
    assert_eq!(commune["name"], "Xã La Bằng");
    assert_eq!(commune["kind"], "commune");
    assert_eq!(commune["link_hint"], "fibre");
    for s in sites {
        for field in ["id", "code", "name", "kind", "parent_id", "link_hint"] {
            assert!(s.get(field).is_some(), "{field} missing in {s}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn add_site_checks_the_kind() -> TestResult {
    let f = fixture()?;
    let body = json!({ "code": "x-labang2", "name": "Xã La Bằng 2", "kind": "village" });
    let r = f.post_json("/api/sites", Some(ADMIN), &body).await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_mentions(&r.error()?, &["kind", "village", "commune"]);
    assert!(f.site_by_code("x-labang2")?.is_none());
    Ok(())
}

#[tokio::test]
async fn add_site_returns_its_id() -> TestResult {
    let f = fixture()?;
    let body = json!({
        "code": " x-quanchu ", "name": "Xã Quân Chu", "kind": "commune",
        "parent_id": f.demo.chair_site_id, "link_hint": "VSAT"
    });
    let r = f.post_json("/api/sites", Some(ADMIN), &body).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let id = r.json()?["id"].as_i64().ok_or("no id")?;
    let site = f.store.site(id)?.ok_or("not stored")?;
    assert_eq!(site.code, "x-quanchu", "trimmed");
    assert_eq!(site.name, "Xã Quân Chu");
    assert_eq!(site.parent_id, Some(f.demo.chair_site_id));
    assert_eq!(site.link_hint.as_deref(), Some("vsat"), "lower-cased");

    // Optional fields may be left out.
    let r =
        f.post_json("/api/sites", Some(ADMIN), &json!({ "code": "x-2", "name": "Xã Hai", "kind": "commune" })).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json()?["id"].as_i64().is_some_and(|i| i != id));

    // The store's validation reaches the client as a 400 naming the field.
    let r = f
        .post_json("/api/sites", Some(ADMIN), &json!({ "code": "x-quanchu", "name": "Lại", "kind": "commune" }))
        .await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_mentions(&r.error()?, &["code", "x-quanchu", "already used"]);
    let r = f
        .post_json(
            "/api/sites",
            Some(ADMIN),
            &json!({ "code": "x-3", "name": "Xã Ba", "kind": "commune", "parent_id": 999_999 }),
        )
        .await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_mentions(&r.error()?, &["parent_id", "999999"]);
    Ok(())
}

#[tokio::test]
async fn add_site_refuses_unknown_fields() -> TestResult {
    let f = fixture()?;
    let body = json!({ "code": "x-4", "name": "Xã Bốn", "kind": "commune", "population": 5000 });
    let r = f.post_json("/api/sites", Some(ADMIN), &body).await?;
    assert!(r.status.is_client_error(), "{}", r.status);
    assert!(r.text().contains("population"), "the rejection names the field: {}", r.text());
    assert!(f.site_by_code("x-4")?.is_none());
    // A missing field is a client error too.
    let r = f.post_json("/api/sites", Some(ADMIN), &json!({ "code": "x-5", "name": "Xã Năm" })).await?;
    assert!(r.status.is_client_error(), "{}", r.status);
    Ok(())
}

// ---- CSV import ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn import_csv_with_vietnamese_names() -> TestResult {
    let f = fixture()?;
    let csv = "\u{FEFF}code,name,kind,parent_code,link_hint\n\
               h-phubinh,Huyện Phú Bình,district,demo-tinh,adsl\n\
               x-kha-son,\"Xã Kha Sơn, Phú Bình\",commune,h-phubinh,4G\n\
               x-ban-dat,Xã Bàn Đạt,commune,h-phubinh,\n\
               demo-x-labang,Xã La Bằng (đổi tên),commune,demo-h-daitu,vsat\n";
    let r = f.post_csv(csv).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()?, json!({ "inserted": 3, "updated": 1 }));

    let kha_son = f.site_by_code("x-kha-son")?.ok_or("not imported")?;
    assert_eq!(kha_son.name, "Xã Kha Sơn, Phú Bình");
    assert_eq!(kha_son.link_hint.as_deref(), Some("4g"));
    let district = f.site_by_code("h-phubinh")?.ok_or("not imported")?;
    assert_eq!(kha_son.parent_id, Some(district.id));
    assert_eq!(f.site_by_code("x-ban-dat")?.ok_or("not imported")?.link_hint, None);
    let labang = f.store.site(f.demo.first_commune_id)?.ok_or("gone")?;
    assert_eq!(labang.name, "Xã La Bằng (đổi tên)");
    assert_eq!(labang.link_hint.as_deref(), Some("vsat"));

    // The same file again updates every row.
    let r = f.post_csv(csv).await?;
    assert_eq!(r.json()?, json!({ "inserted": 0, "updated": 4 }));
    Ok(())
}

#[tokio::test]
async fn import_csv_bad_line_is_named_and_nothing_is_written() -> TestResult {
    let f = fixture()?;
    let before = f.store.sites()?.len();
    let csv = "code,name,kind,parent_code\n\
               x-tan-kim,Xã Tân Kim,commune,demo-tinh\n\
               x-tan-khanh,Xã Tân Khánh,xã,demo-tinh\n";
    let r = f.post_csv(csv).await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_mentions(&r.error()?, &["line 3", "kind", "xã"]);
    assert_eq!(f.store.sites()?.len(), before, "all or nothing");
    assert!(f.site_by_code("x-tan-kim")?.is_none());

    let r = f.post_csv("code,name,kind\nx-1,Xã Một,commune\nx-2,Xã Hai,commune,extra\n").await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_mentions(&r.error()?, &["line 3"]);

    let r = f.post_csv("code,name,kind,population\n").await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_mentions(&r.error()?, &["line 1", "population"]);

    let r = f.post_csv("").await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_mentions(&r.error()?, &["line 1", "empty"]);

    let r = f.post_csv("code,name,kind\nx-1,Xã \u{1}Một,commune\n").await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_mentions(&r.error()?, &["line 2"]);
    assert_eq!(f.store.sites()?.len(), before);
    Ok(())
}

// ---- meetings ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_meeting_returns_its_id_and_lists_it() -> TestResult {
    let f = fixture()?;
    let invited = [f.demo.first_commune_id, f.demo.chair_site_id, f.demo.first_commune_id];
    let body = json!({ "title": "Họp giao ban tuần", "chair_site_id": f.demo.chair_site_id, "invited": invited });
    let r = f.post_json("/api/meetings", Some(ADMIN), &body).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let id = r.json()?["id"].as_i64().ok_or("no id")?;
    assert_ne!(id, f.demo.meeting_id);

    let r = f.get("/api/meetings", Some(ADMIN)).await?;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json()?;
    let m = v
        .as_array()
        .ok_or("not a list")?
        .iter()
        .find(|m| m["id"] == json!(id))
        .ok_or("the new meeting is not listed")?;
    assert_eq!(m["title"], "Họp giao ban tuần");
    assert_eq!(m["chair_site_id"], json!(f.demo.chair_site_id));
    assert_eq!(m["invited"], json!([f.demo.first_commune_id]), "chair and duplicates dropped");
    Ok(())
}

#[tokio::test]
async fn create_meeting_refuses_bad_input() -> TestResult {
    let f = fixture()?;
    let before = f.store.meetings()?.len();
    let r = f
        .post_json("/api/meetings", Some(ADMIN), &json!({ "title": "Họp", "chair_site_id": 999_999, "invited": [] }))
        .await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_mentions(&r.error()?, &["chair_site_id", "999999"]);

    let body =
        json!({ "title": "Họp", "chair_site_id": f.demo.chair_site_id, "invited": [f.demo.first_commune_id, 888_888] });
    let r = f.post_json("/api/meetings", Some(ADMIN), &body).await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_mentions(&r.error()?, &["invited", "888888"]);

    let r = f
        .post_json(
            "/api/meetings",
            Some(ADMIN),
            &json!({ "title": "  ", "chair_site_id": f.demo.chair_site_id, "invited": [] }),
        )
        .await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_mentions(&r.error()?, &["title"]);

    let r = f
        .post_json("/api/meetings", Some(ADMIN), &json!({ "title": "Họp", "chair_site_id": f.demo.chair_site_id }))
        .await?;
    assert!(r.status.is_client_error(), "missing `invited`: {}", r.status);

    let r = f
        .post_json(
            "/api/meetings",
            None,
            &json!({ "title": "Họp", "chair_site_id": f.demo.chair_site_id, "invited": [] }),
        )
        .await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(f.store.meetings()?.len(), before, "nothing was created");
    Ok(())
}

// ---- tokens --------------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_token_for_an_invited_site_verifies() -> TestResult {
    let f = fixture()?;
    let secret = f.store.secret()?;
    let now = unix_now();

    let body = json!({ "meeting_id": f.demo.meeting_id, "site_id": f.demo.first_commune_id, "role": "site" });
    let r = f.post_json("/api/tokens", Some(ADMIN), &body).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json()?;
    let tok = v["token"].as_str().ok_or("no token")?;
    let exp = v["exp"].as_i64().ok_or("no exp")?;
    let claims = token::verify(&secret, tok, now)?;
    assert_eq!(
        claims,
        Claims { meeting_id: f.demo.meeting_id, site_id: f.demo.first_commune_id, role: Role::Site, exp }
    );
    // The default lifetime is the configured one (a day).
    assert!((exp - now - 24 * 3600).abs() <= 5, "exp {exp} now {now}");

    // The chair's site as chair and as technician ("tech" is accepted), with an explicit lifetime.
    for (role, want) in [("chair", Role::Chair), ("technician", Role::Technician), ("tech", Role::Technician)] {
        let body = json!({
            "meeting_id": f.demo.meeting_id, "site_id": f.demo.chair_site_id, "role": role, "ttl_secs": 600
        });
        let r = f.post_json("/api/tokens", Some(ADMIN), &body).await?;
        assert_eq!(r.status, StatusCode::OK, "{role}: {}", r.text());
        let v = r.json()?;
        let claims = token::verify(&secret, v["token"].as_str().ok_or("no token")?, now)?;
        assert_eq!(claims.role, want);
        assert!((claims.exp - now - 600).abs() <= 5);
        // Expired once the lifetime has passed.
        assert!(token::verify(&secret, v["token"].as_str().ok_or("no token")?, now + 601).is_err());
    }
    Ok(())
}

#[tokio::test]
async fn create_token_refuses_what_cannot_join() -> TestResult {
    let f = fixture()?;
    let outsider = f.store.insert_site(&NewSite {
        code: "x-ngoai".into(),
        name: "Xã Ngoài".into(),
        kind: diemcau_proto::SiteKind::Commune,
        parent_id: None,
        link_hint: None,
    })?;
    let m = f.demo.meeting_id;

    let r = f
        .post_json("/api/tokens", Some(ADMIN), &json!({ "meeting_id": m, "site_id": outsider, "role": "site" }))
        .await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_mentions(&r.error()?, &[&format!("site {outsider}"), &format!("meeting {m}")]);

    // An invited site is not the chair.
    let body = json!({ "meeting_id": m, "site_id": f.demo.first_commune_id, "role": "chair" });
    let r = f.post_json("/api/tokens", Some(ADMIN), &body).await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_mentions(&r.error()?, &["chair"]);

    let body = json!({ "meeting_id": m, "site_id": f.demo.chair_site_id, "role": "admin" });
    let r = f.post_json("/api/tokens", Some(ADMIN), &body).await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_mentions(&r.error()?, &["role", "admin"]);

    for ttl in [0, -5, 400 * 24 * 3600] {
        let body = json!({ "meeting_id": m, "site_id": f.demo.first_commune_id, "role": "site", "ttl_secs": ttl });
        let r = f.post_json("/api/tokens", Some(ADMIN), &body).await?;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "ttl {ttl}");
        assert_mentions(&r.error()?, &["ttl_secs"]);
    }

    let body = json!({ "meeting_id": 999_999, "site_id": f.demo.first_commune_id, "role": "site" });
    let r = f.post_json("/api/tokens", Some(ADMIN), &body).await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_mentions(&r.error()?, &["meeting 999999"]);

    let body = json!({ "meeting_id": m, "site_id": f.demo.first_commune_id, "role": "site", "admin": true });
    let r = f.post_json("/api/tokens", Some(ADMIN), &body).await?;
    assert!(r.status.is_client_error(), "unknown field: {}", r.status);
    Ok(())
}

// ---- statistics ----------------------------------------------------------------------------------------------

fn stats_uri(meeting: i64) -> String {
    format!("/api/meetings/{meeting}/stats")
}

#[tokio::test]
async fn stats_refuse_missing_and_bad_tokens() -> TestResult {
    let f = fixture()?;
    let uri = stats_uri(f.demo.meeting_id);

    let r = f.get(&uri, None).await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_mentions(&r.error()?, &["missing token"]);

    let r = f.get(&format!("{uri}?token=garbage"), None).await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_mentions(&r.error()?, &["malformed"]);

    let r = f.get(&uri, Some("garbage.garbage")).await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Signed with another installation's secret.
    let claims = Claims {
        meeting_id: f.demo.meeting_id,
        site_id: f.demo.chair_site_id,
        role: Role::Chair,
        exp: unix_now() + 60,
    };
    let forged = token::sign(b"another installation's secret...", &claims);
    let r = f.get(&format!("{uri}?token={forged}"), None).await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_mentions(&r.error()?, &["signature"]);

    let expired = f.state.mint_token(f.demo.meeting_id, f.demo.chair_site_id, Role::Chair, -1);
    let r = f.get(&format!("{uri}?token={expired}"), None).await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_mentions(&r.error()?, &["expired"]);
    Ok(())
}

#[tokio::test]
async fn stats_are_not_for_sites_or_other_meetings() -> TestResult {
    let f = fixture()?;
    let uri = stats_uri(f.demo.meeting_id);

    let site = f.state.mint_token(f.demo.meeting_id, f.demo.first_commune_id, Role::Site, 60);
    let r = f.get(&format!("{uri}?token={site}"), None).await?;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_mentions(&r.error()?, &["chair", "technician"]);
    let r = f.get(&uri, Some(&site)).await?;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let other = f.store.create_meeting("Họp khác", f.demo.chair_site_id, &[f.demo.first_commune_id])?;
    for role in [Role::Chair, Role::Technician] {
        let tok = f.state.mint_token(other, f.demo.chair_site_id, role, 60);
        let r = f.get(&format!("{uri}?token={tok}"), None).await?;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{role:?}");
        assert_mentions(&r.error()?, &["another meeting"]);
        // The same token is good for its own meeting.
        let r = f.get(&format!("{}?token={tok}", stats_uri(other)), None).await?;
        assert_eq!(r.status, StatusCode::OK, "{role:?}: {}", r.text());
        assert_eq!(r.json()?["meeting_id"], json!(other));
    }
    Ok(())
}

#[tokio::test]
async fn stats_for_chair_technician_and_admin() -> TestResult {
    let f = fixture()?;
    let m = f.demo.meeting_id;
    let uri = stats_uri(m);
    let chair = f.state.mint_token(m, f.demo.chair_site_id, Role::Chair, 60);
    let tech = f.state.mint_token(m, f.demo.technician_site_id, Role::Technician, 60);

    let replies = [
        ("chair via ?token=", f.get(&format!("{uri}?token={chair}"), None).await?),
        ("technician via ?token=", f.get(&format!("{uri}?token={tech}"), None).await?),
        ("technician via bearer", f.get(&uri, Some(&tech)).await?),
        ("admin bearer", f.get(&uri, Some(ADMIN)).await?),
    ];
    for (who, r) in replies {
        assert_eq!(r.status, StatusCode::OK, "{who}: {}", r.text());
        assert!(r.content_type().starts_with("application/json"), "{who}");
        let v = r.json()?;
        assert_eq!(v["meeting_id"], json!(m), "{who}");
        assert_eq!(v["peers"], json!([]), "{who}: nobody is connected");
        assert_eq!(v["bridge"]["shards"], json!(1), "{who}");
        assert!(v["bridge"].get("peers").is_none(), "{who}: other meetings' peer counts are not shown");
    }
    assert_eq!(f.state.member_count(), 0);

    // The bearer header is tried as the admin token first: with it, a site token in the query does not matter.
    let site = f.state.mint_token(m, f.demo.first_commune_id, Role::Site, 60);
    let r = f.get(&format!("{uri}?token={site}"), Some(ADMIN)).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    Ok(())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[tokio::test]
async fn authorization_comes_before_the_body_and_is_case_insensitive() -> TestResult {
    let f = fixture()?;
    // No token and a bad body: the caller learns nothing about the body's schema.
    let r = f.post_json("/api/sites", None, &json!({ "nonsense": true })).await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert!(!r.text().contains("expected one of"), "{}", r.text());
    // Authorized with a bad body: a JSON error in the API's shape.
    let r = f.post_json("/api/sites", Some(ADMIN), &json!({ "nonsense": true })).await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_mentions(&r.error()?, &["invalid JSON body", "nonsense"]);
    // "bearer" in lower case is the same scheme.
    let req = Request::builder()
        .method(Method::GET)
        .uri("/api/sites")
        .header(header::AUTHORIZATION, format!("bearer {ADMIN}"))
        .body(Body::empty())?;
    assert_eq!(f.send(req).await?.status, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn stats_check_the_meeting_and_the_chairing_site() -> TestResult {
    let f = fixture()?;
    let r = f.get(&stats_uri(424_242), Some(ADMIN)).await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    // A technician token naming a commune instead of the chairing site.
    let tok = f.state.mint_token(f.demo.meeting_id, f.demo.first_commune_id, Role::Technician, 60);
    let r = f.get(&format!("{}?token={tok}", stats_uri(f.demo.meeting_id)), None).await?;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_mentions(&r.error()?, &["chairing site"]);
    Ok(())
}

#[tokio::test]
async fn stats_query_is_validated() -> TestResult {
    let f = fixture()?;
    let base = stats_uri(f.demo.meeting_id);
    for (q, needle) in
        [("sort=colour", "sort"), ("order=sideways", "order"), ("limit=0", "limit"), ("limit=100000", "limit")]
    {
        let r = f.get(&format!("{base}?{q}"), Some(ADMIN)).await?;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {}", r.text());
        assert_mentions(&r.error()?, &[needle]);
    }
    let r = f.get(&format!("{base}?sort=loss&order=desc&offset=0&limit=50"), Some(ADMIN)).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json()?;
    assert_eq!((v["total"].as_u64(), v["limit"].as_u64()), (Some(0), Some(50)));
    Ok(())
}
