//! A client of Janus' VideoRoom plugin over Janus' WebSocket API (`ws://…:8188`, subprotocol `janus-protocol`), so
//! that the fan-out benchmark can drive Janus with the same synthetic sites it drives the bridge with.
//!
//! Janus' API in brief: a `create` makes a session; `attach` makes a handle on a plugin in it; `message`s carry a
//! plugin `body` (and a `jsep` with an SDP). Janus answers every request with the request's `transaction`:
//! synchronous plugin requests (`create` a room, `destroy` a room) with `success`, asynchronous ones (`join`,
//! `configure`, `start`) with an `ack` first and an `event` later (carrying Janus' SDP, if any). Errors of the core
//! come as `error`, errors of the plugin as an `event`/`success` whose data has `error_code`. Janus may also send, with
//! no transaction, `trickle` (its ICE candidates, only with `full_trickle`), `webrtcup`, `media`, `slowlink`,
//! `hangup`…; those are kept for [`JanusClient::recv`] and [`JanusClient::take_trickles`]. A session dies after 60 s
//! without a request: a spawned task sends `keepalive` every [`KEEPALIVE`].
//!
//! The exchange, per site:
//! - publisher: `join` (`ptype: publisher`) → `joined` with its feed id; `configure` with our offer → Janus' answer
//!   ([`JanusClient::publish`] does both);
//! - subscriber: `join` (`ptype: subscriber`, `streams: [{feed}]`) → `attached` with Janus' *offer*
//!   ([`JanusClient::subscribe`]); `start` with our answer ([`JanusClient::start`]).
//!
//! The message builders and the parser are plain functions of JSON values, unit-tested below; the client only moves
//! them over the socket. Signalling is not the packet path: one task per client is fine.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use crate::DrillError;

/// The WebSocket subprotocol Janus' transport requires.
pub const SUBPROTOCOL: &str = "janus-protocol";
/// The VideoRoom plugin's package name.
pub const VIDEOROOM: &str = "janus.plugin.videoroom";
/// How often the keepalive task pings the session (Janus' default session timeout is 60 s).
pub const KEEPALIVE: Duration = Duration::from_secs(25);
/// How long a request may wait for its answer (or its asynchronous event).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Unrequested messages kept for [`JanusClient::recv`], at most (the oldest are dropped).
const BACKLOG: usize = 4096;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Sink = Arc<Mutex<SplitSink<Ws, Message>>>;

/// A session description in Janus' `jsep` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jsep {
    /// `offer` or `answer`.
    pub kind: String,
    /// The SDP.
    pub sdp: String,
}

impl Jsep {
    /// An offer.
    pub fn offer(sdp: impl Into<String>) -> Self {
        Self { kind: "offer".into(), sdp: sdp.into() }
    }

    /// An answer.
    pub fn answer(sdp: impl Into<String>) -> Self {
        Self { kind: "answer".into(), sdp: sdp.into() }
    }

    /// The JSON object. `trickle: false` tells Janus that our candidates are all in the SDP (str0m puts them there).
    pub fn to_json(&self) -> Value {
        json!({ "type": self.kind, "sdp": self.sdp, "trickle": false })
    }

    fn from_json(v: &Value) -> Option<Self> {
        Some(Self { kind: v.get("type")?.as_str()?.to_owned(), sdp: v.get("sdp")?.as_str()?.to_owned() })
    }
}

/// An ICE candidate Janus trickled for one of its handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrickleCandidate {
    /// The handle (Janus' `sender`).
    pub handle: u64,
    /// `candidate:…` as in an SDP attribute (without `a=`); `None` for Janus' `completed`.
    pub candidate: Option<String>,
    /// The m-line's mid, if Janus gave it.
    pub sdp_mid: Option<String>,
}

/// A message from Janus, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// Janus received the request and will answer with an `event`.
    Ack {
        /// The request's transaction.
        transaction: String,
    },
    /// A synchronous answer: `data` of the core (`create`, `attach`) or `plugindata.data` of a plugin.
    Success {
        /// The request's transaction.
        transaction: String,
        /// The answer's data (`Null` if none).
        data: Value,
    },
    /// The core refused a request.
    Error {
        /// The request's transaction, if any.
        transaction: Option<String>,
        /// Janus' error code (458 no such session, 459 no such handle, …).
        code: i64,
        /// Janus' explanation.
        reason: String,
    },
    /// A plugin event: the asynchronous answer to a request (with its transaction) or a notification.
    Event {
        /// The request's transaction, if it answers one.
        transaction: Option<String>,
        /// The handle.
        sender: u64,
        /// `plugindata.data`.
        data: Value,
        /// Janus' SDP, if the event carries one.
        jsep: Option<Jsep>,
    },
    /// A trickled candidate, or the end of them.
    Trickle(TrickleCandidate),
    /// Anything else (`webrtcup`, `media`, `slowlink`, `hangup`, `detached`, `timeout`, …).
    Other {
        /// The `janus` field.
        kind: String,
        /// The handle, if any.
        sender: Option<u64>,
    },
}

impl Incoming {
    /// The transaction this message answers, if any (acks included).
    pub fn transaction(&self) -> Option<&str> {
        match self {
            Self::Ack { transaction } | Self::Success { transaction, .. } => Some(transaction),
            Self::Error { transaction, .. } | Self::Event { transaction, .. } => transaction.as_deref(),
            Self::Trickle(_) | Self::Other { .. } => None,
        }
    }
}

/// Classifies one message from Janus.
pub fn parse(text: &str) -> Result<Incoming, DrillError> {
    let v: Value = serde_json::from_str(text).map_err(|e| DrillError::Signal(format!("Janus sent bad JSON: {e}")))?;
    let kind = v
        .get("janus")
        .and_then(Value::as_str)
        .ok_or_else(|| DrillError::Signal(format!("Janus sent a message without `janus`: {text}")))?;
    let transaction = v.get("transaction").and_then(Value::as_str).map(str::to_owned);
    let sender = v.get("sender").and_then(Value::as_u64);
    let need_tx = || DrillError::Signal(format!("Janus sent `{kind}` without a transaction"));
    let plugin_data = || v.get("plugindata").and_then(|p| p.get("data")).cloned();
    Ok(match kind {
        "ack" => Incoming::Ack { transaction: transaction.ok_or_else(need_tx)? },
        "success" => Incoming::Success {
            transaction: transaction.ok_or_else(need_tx)?,
            data: plugin_data().or_else(|| v.get("data").cloned()).unwrap_or(Value::Null),
        },
        "error" => {
            let err = v.get("error");
            Incoming::Error {
                transaction,
                code: err.and_then(|e| e.get("code")).and_then(Value::as_i64).unwrap_or(0),
                reason: err.and_then(|e| e.get("reason")).and_then(Value::as_str).unwrap_or("").to_owned(),
            }
        }
        "event" => Incoming::Event {
            transaction,
            sender: sender.unwrap_or(0),
            data: plugin_data().unwrap_or(Value::Null),
            jsep: v.get("jsep").and_then(Jsep::from_json),
        },
        "trickle" => {
            let c = v.get("candidate");
            let completed = c.and_then(|c| c.get("completed")).and_then(Value::as_bool).unwrap_or(false);
            Incoming::Trickle(TrickleCandidate {
                handle: sender.unwrap_or(0),
                candidate: if completed {
                    None
                } else {
                    c.and_then(|c| c.get("candidate")).and_then(Value::as_str).map(str::to_owned)
                },
                sdp_mid: c.and_then(|c| c.get("sdpMid")).and_then(Value::as_str).map(str::to_owned),
            })
        }
        other => Incoming::Other { kind: other.to_owned(), sender },
    })
}

/// A request of the core: `{"janus": kind, "transaction": …, "session_id"?: …, "handle_id"?: …}`.
pub fn request(kind: &str, transaction: &str, session: Option<u64>, handle: Option<u64>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("janus".into(), kind.into());
    m.insert("transaction".into(), transaction.into());
    if let Some(s) = session {
        m.insert("session_id".into(), s.into());
    }
    if let Some(h) = handle {
        m.insert("handle_id".into(), h.into());
    }
    m
}

/// `attach` to `plugin` in `session`.
pub fn attach(transaction: &str, session: u64, plugin: &str) -> Value {
    let mut m = request("attach", transaction, Some(session), None);
    m.insert("plugin".into(), plugin.into());
    Value::Object(m)
}

/// A plugin `message` on `handle` with `body` and maybe a `jsep`.
pub fn message(transaction: &str, session: u64, handle: u64, body: Value, jsep: Option<&Jsep>) -> Value {
    let mut m = request("message", transaction, Some(session), Some(handle));
    m.insert("body".into(), body);
    if let Some(j) = jsep {
        m.insert("jsep".into(), j.to_json());
    }
    Value::Object(m)
}

/// VideoRoom `create`: a room for `publishers` publishers, VP8 + Opus, no bitrate cap; Janus picks the id if `room`
/// is `None`.
pub fn create_room_body(room: Option<u64>, publishers: u32) -> Value {
    let mut body = json!({
        "request": "create",
        "description": "diemcau fan-out benchmark",
        "publishers": publishers,
        "bitrate": 0,
        "fir_freq": 10,
        "audiocodec": "opus",
        "videocodec": "vp8",
        "notify_joining": false,
        "permanent": false,
    });
    if let (Some(r), Some(m)) = (room, body.as_object_mut()) {
        m.insert("room".into(), r.into());
    }
    body
}

/// VideoRoom `destroy` of `room`.
pub fn destroy_room_body(room: u64) -> Value {
    json!({ "request": "destroy", "room": room, "permanent": false })
}

/// VideoRoom `join` as a publisher.
pub fn publisher_join_body(room: u64, display: &str) -> Value {
    json!({ "request": "join", "ptype": "publisher", "room": room, "display": display })
}

/// VideoRoom `configure` of a publisher sending audio and video (the offer goes in the `jsep`).
pub fn configure_body() -> Value {
    json!({ "request": "configure", "audio": true, "video": true })
}

/// VideoRoom `join` as a subscriber to every stream of `feed`, at the middle simulcast substream (1 of 0–2: the
/// 360p layer of a three-layer publisher, whichever order Janus ranks the rids in; ignored without simulcast).
pub fn subscriber_join_body(room: u64, feed: u64) -> Value {
    json!({ "request": "join", "ptype": "subscriber", "room": room, "streams": [{ "feed": feed, "substream": 1 }] })
}

/// VideoRoom `start` of a subscriber (our answer goes in the `jsep`).
pub fn start_body(room: u64) -> Value {
    json!({ "request": "start", "room": room })
}

/// A VideoRoom answer's data, or its error as [`DrillError::Refused`] (code `videoroom <error_code>`).
pub fn videoroom_data(data: &Value) -> Result<&Value, DrillError> {
    match data.get("error_code") {
        Some(code) => Err(DrillError::Refused {
            code: format!("videoroom {code}"),
            message: data.get("error").and_then(Value::as_str).unwrap_or("").to_owned(),
        }),
        None => Ok(data),
    }
}

/// A publisher in a room: its feed id (what subscribers name) and Janus' answer to its offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The publisher's id in the room.
    pub feed: u64,
    /// Janus' SDP answer.
    pub answer: String,
}

/// One Janus session over one WebSocket, kept alive by a spawned task until [`destroy`](Self::destroy) or drop.
pub struct JanusClient {
    sink: Sink,
    stream: SplitStream<Ws>,
    session: u64,
    next_tx: u64,
    backlog: VecDeque<Incoming>,
    keepalive: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for JanusClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JanusClient")
            .field("session", &self.session)
            .field("backlog", &self.backlog.len())
            .finish_non_exhaustive()
    }
}

impl Drop for JanusClient {
    fn drop(&mut self) {
        if let Some(k) = &self.keepalive {
            k.abort();
        }
    }
}

impl JanusClient {
    /// Connects to `ws_url` (e.g. `ws://10.77.0.2:8188`), creates a session and starts its keepalive task.
    /// Needs a Tokio runtime.
    pub async fn connect(ws_url: &str) -> Result<Self, DrillError> {
        let mut req = ws_url.into_client_request().map_err(|e| DrillError::Signal(format!("bad URL {ws_url}: {e}")))?;
        req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(SUBPROTOCOL));
        let (ws, _) =
            connect_async(req).await.map_err(|e| DrillError::Signal(format!("cannot connect to {ws_url}: {e}")))?;
        let (sink, stream) = ws.split();
        let sink = Arc::new(Mutex::new(sink));
        let mut client = Self { sink, stream, session: 0, next_tx: 0, backlog: VecDeque::new(), keepalive: None };
        let tx = client.transaction();
        let data = client.call(Value::Object(request("create", &tx, None, None)), &tx, "create").await?;
        client.session = id_of(&data, "create")?;
        client.keepalive = Some(tokio::spawn(keepalive(Arc::clone(&client.sink), client.session)));
        Ok(client)
    }

    /// The session's id.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// Attaches a new handle on the VideoRoom plugin.
    pub async fn attach(&mut self) -> Result<u64, DrillError> {
        let tx = self.transaction();
        let data = self.call(attach(&tx, self.session, VIDEOROOM), &tx, "attach").await?;
        id_of(&data, "attach")
    }

    /// Creates a room (with id `room`, or one Janus picks) and returns its id.
    pub async fn create_room(&mut self, handle: u64, room: Option<u64>, publishers: u32) -> Result<u64, DrillError> {
        let data = self.plugin(handle, create_room_body(room, publishers), None, "create room").await?.0;
        data.get("room").and_then(Value::as_u64).ok_or_else(|| DrillError::Signal(format!("no room in {data}")))
    }

    /// Destroys a room this client created.
    pub async fn destroy_room(&mut self, handle: u64, room: u64) -> Result<(), DrillError> {
        self.plugin(handle, destroy_room_body(room), None, "destroy room").await.map(drop)
    }

    /// Joins `room` as a publisher on `handle` and publishes `offer` (`configure`): Janus' answer and the feed id.
    pub async fn publish(
        &mut self,
        handle: u64,
        room: u64,
        display: &str,
        offer: &str,
    ) -> Result<Published, DrillError> {
        let (joined, _) = self.plugin(handle, publisher_join_body(room, display), None, "publisher join").await?;
        let feed = joined
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| DrillError::Signal(format!("no publisher id in {joined}")))?;
        let (_, jsep) = self.plugin(handle, configure_body(), Some(&Jsep::offer(offer)), "configure").await?;
        let answer = expect_jsep(jsep, "answer", "configure")?;
        Ok(Published { feed, answer })
    }

    /// Joins `room` as a subscriber to `feed` on `handle`: Janus' offer.
    pub async fn subscribe(&mut self, handle: u64, room: u64, feed: u64) -> Result<String, DrillError> {
        let (_, jsep) = self.plugin(handle, subscriber_join_body(room, feed), None, "subscriber join").await?;
        expect_jsep(jsep, "offer", "subscriber join")
    }

    /// Starts a subscription with our `answer` to Janus' offer.
    pub async fn start(&mut self, handle: u64, room: u64, answer: &str) -> Result<(), DrillError> {
        self.plugin(handle, start_body(room), Some(&Jsep::answer(answer)), "start").await.map(drop)
    }

    /// Detaches `handle` (Janus hangs its PeerConnection up).
    pub async fn detach(&mut self, handle: u64) -> Result<(), DrillError> {
        let tx = self.transaction();
        self.call(Value::Object(request("detach", &tx, Some(self.session), Some(handle))), &tx, "detach")
            .await
            .map(drop)
    }

    /// Destroys the session (every handle with it), stops the keepalive and closes the socket.
    pub async fn destroy(mut self) -> Result<(), DrillError> {
        if let Some(k) = self.keepalive.take() {
            k.abort();
        }
        let tx = self.transaction();
        let res = self.call(Value::Object(request("destroy", &tx, Some(self.session), None)), &tx, "destroy").await;
        let _ = self.sink.lock().await.close().await;
        res.map(drop)
    }

    /// The next message no request was waiting for (trickles, `webrtcup`, `hangup`, notifications…).
    pub async fn recv(&mut self) -> Result<Incoming, DrillError> {
        match self.backlog.pop_front() {
            Some(m) => Ok(m),
            None => self.read().await,
        }
    }

    /// Reads what Janus sends for `wait` into the backlog (so that [`take_trickles`](Self::take_trickles) sees it).
    pub async fn pump(&mut self, wait: Duration) -> Result<(), DrillError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.read()).await {
                Err(_) => return Ok(()),
                Ok(m) => self.keep(m?),
            }
        }
    }

    /// Takes the candidates Janus trickled for `handle` so far (`None` marks the end of them).
    pub fn take_trickles(&mut self, handle: u64) -> Vec<Option<String>> {
        let mut out = Vec::new();
        self.backlog.retain(|m| match m {
            Incoming::Trickle(t) if t.handle == handle => {
                out.push(t.candidate.clone());
                false
            }
            _ => true,
        });
        out
    }

    fn transaction(&mut self) -> String {
        self.next_tx += 1;
        format!("dc{}", self.next_tx)
    }

    fn keep(&mut self, m: Incoming) {
        if matches!(m, Incoming::Ack { .. }) {
            return;
        }
        if self.backlog.len() >= BACKLOG {
            self.backlog.pop_front();
        }
        self.backlog.push_back(m);
    }

    /// A plugin request on `handle`: its data (errors of the plugin as [`DrillError::Refused`]) and Janus' JSEP.
    async fn plugin(
        &mut self,
        handle: u64,
        body: Value,
        jsep: Option<&Jsep>,
        what: &str,
    ) -> Result<(Value, Option<Jsep>), DrillError> {
        let tx = self.transaction();
        let msg = message(&tx, self.session, handle, body, jsep);
        let answer = self.exchange(msg, &tx, what).await?;
        let (data, jsep) = match answer {
            Incoming::Success { data, .. } => (data, None),
            Incoming::Event { data, jsep, .. } => (data, jsep),
            other => return Err(DrillError::Signal(format!("unexpected answer to {what}: {other:?}"))),
        };
        videoroom_data(&data)?;
        Ok((data, jsep))
    }

    /// A request of the core: the `data` of its `success`.
    async fn call(&mut self, msg: Value, tx: &str, what: &str) -> Result<Value, DrillError> {
        match self.exchange(msg, tx, what).await? {
            Incoming::Success { data, .. } => Ok(data),
            other => Err(DrillError::Signal(format!("unexpected answer to {what}: {other:?}"))),
        }
    }

    /// Sends `msg` and waits (at most [`REQUEST_TIMEOUT`]) for what answers transaction `tx` other than an `ack`;
    /// a core `error` becomes [`DrillError::Refused`]. Other messages go to the backlog.
    async fn exchange(&mut self, msg: Value, tx: &str, what: &str) -> Result<Incoming, DrillError> {
        send(&self.sink, &msg).await?;
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            let m = tokio::time::timeout_at(deadline, self.read()).await.map_err(|_| {
                DrillError::Signal(format!("Janus did not answer {what} in {} s", REQUEST_TIMEOUT.as_secs()))
            })??;
            match m {
                Incoming::Ack { .. } => {}
                Incoming::Error { code, reason, .. } if m.transaction() == Some(tx) => {
                    return Err(DrillError::Refused { code: format!("janus {code}"), message: reason });
                }
                m if m.transaction() == Some(tx) => return Ok(m),
                m => self.keep(m),
            }
        }
    }

    async fn read(&mut self) -> Result<Incoming, DrillError> {
        loop {
            match self.stream.next().await {
                Some(Ok(Message::Text(t))) => return parse(&t),
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) =
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new()));
                    return Err(DrillError::Closed { code, reason });
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(DrillError::Signal(format!("receive from Janus failed: {e}"))),
                None => return Err(DrillError::Closed { code: 1006, reason: "connection to Janus lost".into() }),
            }
        }
    }
}

async fn send(sink: &Sink, msg: &Value) -> Result<(), DrillError> {
    let text = msg.to_string();
    sink.lock()
        .await
        .send(Message::Text(text.into()))
        .await
        .map_err(|e| DrillError::Signal(format!("send to Janus failed: {e}")))
}

/// Pings the session every [`KEEPALIVE`] until aborted or the socket fails (Janus acks; the reader skips acks).
async fn keepalive(sink: Sink, session: u64) {
    let mut n = 0u64;
    let mut tick = tokio::time::interval(KEEPALIVE);
    tick.tick().await;
    loop {
        tick.tick().await;
        n += 1;
        let msg = Value::Object(request("keepalive", &format!("ka{n}"), Some(session), None));
        if let Err(e) = send(&sink, &msg).await {
            tracing::debug!("Janus keepalive stopped: {e}");
            return;
        }
    }
}

fn id_of(data: &Value, what: &str) -> Result<u64, DrillError> {
    data.get("id").and_then(Value::as_u64).ok_or_else(|| DrillError::Signal(format!("no id in the answer to {what}")))
}

fn expect_jsep(jsep: Option<Jsep>, kind: &str, what: &str) -> Result<String, DrillError> {
    match jsep {
        Some(j) if j.kind == kind => Ok(j.sdp),
        Some(j) => Err(DrillError::Signal(format!("Janus answered {what} with an SDP {}, not an {kind}", j.kind))),
        None => Err(DrillError::Signal(format!("Janus answered {what} without an SDP {kind}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_requests() {
        let v = Value::Object(request("create", "t1", None, None));
        assert_eq!(v, json!({ "janus": "create", "transaction": "t1" }));
        let v = attach("t2", 7, VIDEOROOM);
        assert_eq!(v, json!({ "janus": "attach", "transaction": "t2", "session_id": 7, "plugin": VIDEOROOM }));
        let v = Value::Object(request("keepalive", "ka1", Some(7), None));
        assert_eq!(v, json!({ "janus": "keepalive", "transaction": "ka1", "session_id": 7 }));
        let v = message("t3", 7, 9, configure_body(), Some(&Jsep::offer("v=0")));
        assert_eq!(
            v,
            json!({
                "janus": "message", "transaction": "t3", "session_id": 7, "handle_id": 9,
                "body": { "request": "configure", "audio": true, "video": true },
                "jsep": { "type": "offer", "sdp": "v=0", "trickle": false },
            })
        );
        let v = message("t4", 7, 9, subscriber_join_body(1234, 55), None);
        assert_eq!(
            v["body"],
            json!({
                "request": "join", "ptype": "subscriber", "room": 1234, "streams": [{ "feed": 55, "substream": 1 }]
            })
        );
        assert!(v.get("jsep").is_none());
        assert_eq!(publisher_join_body(1, "p")["ptype"], "publisher");
        assert_eq!(start_body(1), json!({ "request": "start", "room": 1 }));
        assert_eq!(create_room_body(Some(42), 3)["room"], 42);
        assert!(create_room_body(None, 3).get("room").is_none());
        assert_eq!(create_room_body(None, 3)["videocodec"], "vp8");
        assert_eq!(destroy_room_body(42)["request"], "destroy");
    }

    #[test]
    fn parses_answers() {
        let m = parse(r#"{"janus":"success","transaction":"dc1","data":{"id":4242}}"#).unwrap();
        assert_eq!(m, Incoming::Success { transaction: "dc1".into(), data: json!({ "id": 4242 }) });
        assert_eq!(id_of(&json!({ "id": 4242 }), "create").unwrap(), 4242);

        let m = parse(r#"{"janus":"ack","session_id":1,"transaction":"dc2"}"#).unwrap();
        assert_eq!(m.transaction(), Some("dc2"));
        assert!(matches!(m, Incoming::Ack { .. }));

        let created = r#"{"janus":"success","session_id":1,"transaction":"dc3","sender":9,
            "plugindata":{"plugin":"janus.plugin.videoroom","data":{"videoroom":"created","room":77,"permanent":false}}}"#;
        let Incoming::Success { data, .. } = parse(created).unwrap() else { panic!("not a success") };
        assert_eq!(videoroom_data(&data).unwrap()["room"], 77);

        let offer = r#"{"janus":"event","session_id":1,"transaction":"dc4","sender":9,
            "plugindata":{"plugin":"janus.plugin.videoroom","data":{"videoroom":"attached","room":77}},
            "jsep":{"type":"offer","sdp":"v=0\r\n"}}"#;
        match parse(offer).unwrap() {
            Incoming::Event { transaction, sender, data, jsep } => {
                assert_eq!(transaction.as_deref(), Some("dc4"));
                assert_eq!(sender, 9);
                assert_eq!(data["videoroom"], "attached");
                assert_eq!(expect_jsep(jsep, "offer", "join").unwrap(), "v=0\r\n");
            }
            other => panic!("{other:?}"),
        }
        assert!(expect_jsep(Some(Jsep::answer("x")), "offer", "join").is_err());
        assert!(expect_jsep(None, "offer", "join").is_err());
    }

    #[test]
    fn parses_errors() {
        let m = parse(r#"{"janus":"error","transaction":"dc5","error":{"code":458,"reason":"No such session 3"}}"#);
        assert_eq!(
            m.unwrap(),
            Incoming::Error { transaction: Some("dc5".into()), code: 458, reason: "No such session 3".into() }
        );
        let plugin_err = json!({ "videoroom": "event", "error_code": 426, "error": "No such room (1)" });
        match videoroom_data(&plugin_err) {
            Err(DrillError::Refused { code, message }) => {
                assert_eq!(code, "videoroom 426");
                assert_eq!(message, "No such room (1)");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse("not json").is_err());
        assert!(parse(r#"{"transaction":"x"}"#).is_err());
        assert!(parse(r#"{"janus":"ack"}"#).is_err(), "an ack without its transaction");
    }

    #[test]
    fn parses_notifications() {
        let t = r#"{"janus":"trickle","session_id":1,"sender":9,
            "candidate":{"sdpMid":"0","sdpMLineIndex":0,"candidate":"candidate:1 1 udp 2015363327 10.77.0.2 20000 typ host"}}"#;
        assert_eq!(
            parse(t).unwrap(),
            Incoming::Trickle(TrickleCandidate {
                handle: 9,
                candidate: Some("candidate:1 1 udp 2015363327 10.77.0.2 20000 typ host".into()),
                sdp_mid: Some("0".into()),
            })
        );
        let done = r#"{"janus":"trickle","session_id":1,"sender":9,"candidate":{"completed":true}}"#;
        assert_eq!(
            parse(done).unwrap(),
            Incoming::Trickle(TrickleCandidate { handle: 9, candidate: None, sdp_mid: None })
        );
        let up = parse(r#"{"janus":"webrtcup","session_id":1,"sender":9}"#).unwrap();
        assert_eq!(up, Incoming::Other { kind: "webrtcup".into(), sender: Some(9) });
        assert_eq!(up.transaction(), None);
    }
}
