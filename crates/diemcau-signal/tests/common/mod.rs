//! What the signalling tests over real sockets share: a bridge on a loopback port, pages as WebSocket clients.
#![allow(dead_code, unreachable_pub)] // each test binary uses part of it; `pub` for the binaries that include it

use std::error::Error;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use diemcau_media::{Media, MediaConfig};
use diemcau_proto::control::ControlState;
use diemcau_proto::{ClientMsg, PROTOCOL_VERSION, Role, ServerMsg};
use diemcau_signal::{AppState, SignalConfig};
use diemcau_store::Store;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

pub type TestResult = Result<(), Box<dyn Error>>;
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub const ADMIN: &str = "adm";

/// A bridge serving on a loopback port, its media events and clock running.
pub struct Bridge {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

pub async fn bridge(db: &Path) -> Result<Bridge, Box<dyn Error>> {
    let store = Arc::new(Store::open(db)?);
    let (media, events) = Media::start(&MediaConfig { shards: 1, ..Default::default() })?;
    let (shutdown, rx) = watch::channel(false);
    let cfg = SignalConfig { admin_token: Some(ADMIN.into()), ..Default::default() };
    let state = AppState::new(store, Arc::new(media), cfg, rx)?;
    tokio::spawn(diemcau_signal::run_media_events(state.clone(), events));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = diemcau_signal::app(state.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Bridge { addr, state, shutdown, server })
}

impl Bridge {
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.server.abort();
    }

    pub fn token(&self, meeting: i64, site: i64, role: Role) -> String {
        self.state.mint_token(meeting, site, role, 3600)
    }

    /// A page joined (hello sent, welcome read).
    pub async fn join(&self, token: &str) -> Result<Ws, Box<dyn Error>> {
        let url = format!("ws://{}/ws?token={token}", self.addr);
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
        send(&mut ws, &ClientMsg::Hello { v: PROTOCOL_VERSION }).await?;
        let first = next(&mut ws).await?;
        assert!(matches!(first, ServerMsg::Welcome { .. }), "{first:?}");
        Ok(ws)
    }

    pub async fn control(
        &self,
        meeting: i64,
        bearer: Option<&str>,
        body: &Value,
    ) -> Result<(u16, Value), Box<dyn Error>> {
        self.post(&format!("/api/meetings/{meeting}/control"), bearer, body).await
    }

    /// `POST path` with a JSON body: the status and the JSON answer.
    pub async fn post(&self, path: &str, bearer: Option<&str>, body: &Value) -> Result<(u16, Value), Box<dyn Error>> {
        let client = reqwest::Client::new();
        let mut req = client.post(format!("http://{}{path}", self.addr)).json(body);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        Ok((status, res.json().await?))
    }
}

pub async fn send(ws: &mut Ws, m: &ClientMsg) -> Result<(), Box<dyn Error>> {
    ws.send(Message::Text(serde_json::to_string(m)?.into())).await?;
    Ok(())
}

/// The next server message (5 s at most).
pub async fn next(ws: &mut Ws) -> Result<ServerMsg, Box<dyn Error>> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next()).await?.ok_or("closed")??;
        match m {
            Message::Text(t) => return Ok(serde_json::from_str(&t)?),
            Message::Close(c) => return Err(format!("closed: {c:?}").into()),
            _ => continue,
        }
    }
}

/// Reads messages until `pick` takes one (8 s at most).
pub async fn wait_for<T>(ws: &mut Ws, mut pick: impl FnMut(&ServerMsg) -> Option<T>) -> Result<T, Box<dyn Error>> {
    let end = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < end {
        let m = next(ws).await?;
        if let Some(t) = pick(&m) {
            return Ok(t);
        }
    }
    Err("timed out waiting for a message".into())
}

pub async fn control_state(ws: &mut Ws) -> Result<ControlState, Box<dyn Error>> {
    wait_for(ws, |m| match m {
        ServerMsg::Control { state } => Some(state.clone()),
        _ => None,
    })
    .await
}
