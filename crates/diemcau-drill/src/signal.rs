//! The signalling client: `/ws` over tokio-tungstenite, speaking `diemcau_proto` exactly as the web client does —
//! `hello` → `welcome`, `offer` → `answer`, then `ping` every 10 s and `stats` every 2 s for as long as the meeting
//! lasts, answering a bridge `offer` if one ever comes.
//!
//! Signalling is not the packet path: one async task per site is fine here (a few messages per site per second).
//! Only `ws://` is supported (the workspace's tokio-tungstenite has no TLS feature enabled).

use std::collections::VecDeque;

use diemcau_proto::{ClientMsg, PROTOCOL_VERSION, Role, ServerMsg};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use crate::DrillError;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the bridge said in `welcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The role of this connection.
    pub role: Role,
    /// The meeting.
    pub meeting_id: i64,
    /// This client's site.
    pub site_id: i64,
    /// The chairing site.
    pub chair_site_id: i64,
    /// Video slots a chair offers.
    pub grid_size: u32,
    /// Audio slots a chair offers.
    pub audio_slots: u32,
}

/// `ws_url` (e.g. `ws://127.0.0.1:8080/ws`) with the token as the query string.
pub fn url_with_token(ws_url: &str, token: &str) -> String {
    let sep = if ws_url.contains('?') { '&' } else { '?' };
    format!("{ws_url}{sep}token={token}")
}

/// One site's signalling connection.
pub struct SignalClient {
    ws: Ws,
    backlog: VecDeque<ServerMsg>,
}

impl std::fmt::Debug for SignalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalClient").field("backlog", &self.backlog.len()).finish_non_exhaustive()
    }
}

impl SignalClient {
    /// Connects with `token`, says `hello` and waits for `welcome` (a close before it is [`DrillError::Closed`]).
    pub async fn connect(ws_url: &str, token: &str) -> Result<(Self, Welcome), DrillError> {
        let (ws, _) = connect_async(url_with_token(ws_url, token))
            .await
            .map_err(|e| DrillError::Signal(format!("cannot connect to {ws_url}: {e}")))?;
        let mut client = Self { ws, backlog: VecDeque::new() };
        client.send(&ClientMsg::Hello { v: PROTOCOL_VERSION }).await?;
        loop {
            match client.recv().await? {
                ServerMsg::Welcome { v, role, meeting_id, site_id, chair_site_id, grid_size, audio_slots, .. } => {
                    if v != PROTOCOL_VERSION {
                        return Err(DrillError::Signal(format!(
                            "the bridge speaks protocol {v}, we speak {PROTOCOL_VERSION}"
                        )));
                    }
                    let w = Welcome { role, meeting_id, site_id, chair_site_id, grid_size, audio_slots };
                    return Ok((client, w));
                }
                other => client.backlog.push_back(other),
            }
        }
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &ClientMsg) -> Result<(), DrillError> {
        let text = serde_json::to_string(msg).map_err(|e| DrillError::Signal(format!("cannot encode: {e}")))?;
        self.ws.send(Message::Text(text.into())).await.map_err(|e| DrillError::Signal(format!("send failed: {e}")))
    }

    /// The next server message (unknown types are skipped, as the protocol asks). Cancel-safe.
    pub async fn recv(&mut self) -> Result<ServerMsg, DrillError> {
        if let Some(m) = self.backlog.pop_front() {
            return Ok(m);
        }
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<ServerMsg>(&t) {
                    Ok(m) => return Ok(m),
                    Err(e) => tracing::debug!("skipping a server message we do not know: {e}"),
                },
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) =
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new()));
                    return Err(DrillError::Closed { code, reason });
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(DrillError::Signal(format!("receive failed: {e}"))),
                None => return Err(DrillError::Closed { code: 1006, reason: "connection lost".into() }),
            }
        }
    }

    /// Sends an offer and waits for the answer; other messages meanwhile are kept for [`recv`](Self::recv).
    pub async fn offer(&mut self, sdp: String) -> Result<String, DrillError> {
        self.send(&ClientMsg::Offer { sdp }).await?;
        let mut kept = VecDeque::new();
        let res = loop {
            let msg = match self.backlog.pop_front() {
                Some(m) => m,
                None => match self.recv().await {
                    Ok(m) => m,
                    Err(e) => break Err(e),
                },
            };
            match msg {
                ServerMsg::Answer { sdp } => break Ok(sdp),
                ServerMsg::Error { code, message } => break Err(DrillError::Refused { code, message }),
                other => kept.push_back(other),
            }
        };
        kept.append(&mut self.backlog);
        self.backlog = kept;
        res
    }

    /// Closes the connection normally.
    pub async fn close(mut self) {
        let frame = CloseFrame { code: CloseCode::Normal, reason: "drill over".into() };
        let _ = self.ws.close(Some(frame)).await;
    }
}
