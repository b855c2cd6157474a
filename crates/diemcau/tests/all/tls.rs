//! `[http] tls_cert`/`tls_key` make the bridge serve HTTPS (browsers need it for the camera on a LAN).
//! A real TLS client that trusts only the generated certificate fetches `/healthz` and a page.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn https_get(addr: std::net::SocketAddr, cert_der: Vec<u8>, path: &str) -> anyhow::Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(cert_der))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_the_configured_certificate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem())?;
    std::fs::write(&key_path, cert.signing_key.serialize_pem())?;

    let mut cfg = diemcau::Config::for_tests(dir.path());
    cfg.http.tls_cert = cert_path.display().to_string();
    cfg.http.tls_key = key_path.display().to_string();
    let running = diemcau::start(cfg).await?;
    assert!(running.links.site.starts_with("https://"), "{}", running.links.site);

    let health = https_get(running.http_addr, cert.cert.der().to_vec(), "/healthz").await?;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok"), "{health}");
    let page = https_get(running.http_addr, cert.cert.der().to_vec(), "/site").await?;
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("<html"), "{}", &page[..page.len().min(300)]);
    running.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_missing_certificate_is_a_clear_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = diemcau::Config::for_tests(dir.path());
    cfg.http.tls_cert = dir.path().join("nope.pem").display().to_string();
    cfg.http.tls_key = dir.path().join("nope.key").display().to_string();
    let err = match diemcau::start(cfg).await {
        Ok(_) => anyhow::bail!("started without a certificate"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("nope.pem"), "{err}");
    Ok(())
}
