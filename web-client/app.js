// app.js — the session shared by the chair, site and technician pages: signalling WebSocket, local media,
// RTCPeerConnection (the client always offers; the bridge is ICE-lite, so no trickle: the offer goes once ICE
// gathering completes or after 1 s), periodic stats, link quality, automatic reconnect and the test hooks
// on window.diemcau. Pages pass hooks to start() and draw their own media.
import { t, has, onLang } from './i18n.js';

export const $ = (s, r = document) => r.querySelector(s);
export const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
export const token = new URLSearchParams(location.search).get('token') || '';

const PAGE = { chair: '/chair', site: '/site', technician: '/tech' };
const NO_RETRY = [4001, 4005, 4007]; // close codes after which reconnecting cannot help
const MAX_SDP = 500000; // the bridge refuses messages over 512 KiB

// Test hooks (read by the end-to-end tests through WebDriver); mutated in place, never replaced.
export const D = (window.diemcau = {
  pc: null, ws: null, state: 'connecting', role: null, welcome: null, slots: [], roster: [], stats: null,
  lastError: null, local: null, muted: false, profile: null, weakest: null, videoOn: true, audioOnly: false,
  inboundVideo: () => inbound('video'),
  inboundAudio: () => inbound('audio'),
});

let H = {}; // page hooks: page, onWelcome, onLocal, onMedia, onSlots, onRoster, onStats, onTeardown, onLang
let attempt = 0; // reconnect attempts since the last success (backoff 1, 2, 4 … 15 s)
let timers = {}; // retry, disc, conn, stats, ping
let chain = Promise.resolve(); // negotiation steps run one after another
let gum = null; // getUserMedia promise, made once per page and kept across reconnects
let prev = null; // previous raw stats counters, for 2 s deltas
let banner = null; // [[key, vars] …] shown under the header
let quality = { q: 'unknown' };
let stopped = false;
const slotSite = new Map(); // mid → site_id
const audios = new Map(); // mid → <audio>

/** Sends one signalling message if the socket is open. */
export function send(m) {
  const ws = D.ws;
  if (ws && ws.readyState === 1) ws.send(JSON.stringify(m));
}

/** The site whose media arrives on `mid` (from "slots"; on a site page, the chair by default). */
export function siteOf(mid) {
  const s = slotSite.get(mid);
  return s ?? (D.role === 'site' && D.welcome ? D.welcome.chair_site_id : null);
}

// ---- status display --------------------------------------------------------------------------------------

function setState(s, ...msg) {
  D.state = s;
  banner = msg.length ? msg : null;
  renderState();
  H.onState?.(s);
}

function renderState() {
  const c = $('#conn');
  if (c) { c.textContent = t('state.' + D.state); c.className = 'badge st-' + D.state; }
  const b = $('#banner');
  if (!b) return;
  b.hidden = !banner;
  if (!banner) return;
  b.className = 'banner ' + D.state;
  b.textContent = banner.map(([k, v]) => t(k, v)).join(' — ');
  if (D.state === 'error' || D.state === 'closed') {
    const r = document.createElement('button');
    r.textContent = t('reload');
    r.onclick = () => location.reload();
    b.append(' ', r);
  }
}

/** Records and shows a non-fatal error for a few seconds. */
export function toast(msg, isErr = true) {
  if (isErr) D.lastError = msg;
  const e = $('#toast');
  if (!e) return;
  e.textContent = msg;
  e.hidden = false;
  clearTimeout(e._t);
  e._t = setTimeout(() => (e.hidden = true), 8000);
}

function renderQuality() {
  const e = $('#quality');
  if (!e) return;
  const f = (x) => (x == null ? '–' : Math.round(x * 10) / 10);
  e.className = 'quality q-' + quality.q;
  e.textContent = t('q.' + quality.q);
  e.title = t('q.tip', { rtt: f(quality.rtt), loss: f(quality.loss), kin: f(quality.kin), kout: f(quality.kout) });
}

function renderMute() {
  const b = $('#mute');
  if (!b) return;
  b.textContent = t(D.muted ? 'unmute' : 'mute');
  b.setAttribute('aria-pressed', D.muted);
  b.classList.toggle('on', D.muted);
  const m = $('#micoff');
  if (m) m.hidden = !D.muted;
}

// ---- connection lifecycle ------------------------------------------------------------------------------

/** Starts the page: hooks = { page: 'site'|'chair'|'technician', on…() }. */
export function start(hooks) {
  H = hooks;
  onLang(() => { renderState(); renderQuality(); renderMute(); H.onLang?.(); });
  renderQuality();
  renderMute();
  const m = $('#mute');
  if (m) m.onclick = () => setMuted(!D.muted, false);
  const s = $('#sound');
  if (s) s.onclick = () => { s.hidden = true; audios.forEach(play); H.onSound?.(); };
  addEventListener('pagehide', () => { stopped = true; teardown(); });
  if (!token) { D.lastError = t('noToken'); setState('error', ['noToken']); return; }
  connect();
}

function connect() {
  clearTimeout(timers.retry);
  if (!attempt) setState('connecting');
  else setState('reconnecting', ['state.reconnecting']);
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = (D.ws = new WebSocket(`${proto}://${location.host}/ws?token=${encodeURIComponent(token)}`));
  ws.onopen = () => send({ type: 'hello', v: 1 });
  ws.onmessage = (e) => {
    if (ws !== D.ws) return;
    let m;
    try { m = JSON.parse(e.data); } catch { return; }
    onMsg(m, ws);
  };
  ws.onclose = (e) => ws === D.ws && onClose(e.code);
  // A socket that opens but never says "welcome" (or never opens) is retried.
  timers.conn = setTimeout(() => ws === D.ws && !D.welcomed && retry(['close.other']), 15000);
  D.welcomed = false;
}

function onClose(code) {
  const key = has('close.' + code) ? 'close.' + code : 'close.other';
  if (stopped) return;
  if (NO_RETRY.includes(code)) {
    teardown();
    D.lastError = t(key);
    setState(code === 4005 ? 'closed' : 'error', [key]);
    return;
  }
  retry([key]);
}

/** Tears the session down and reconnects after a backoff; local media tracks are kept. */
function retry(reason) {
  if (stopped) return;
  teardown();
  D.lastError = t(...reason);
  const delay = Math.min(1000 * 2 ** attempt, 15000);
  attempt++;
  setState('reconnecting', reason, ['retryIn', { s: delay / 1000 }]);
  timers.retry = setTimeout(connect, delay);
}

function teardown() {
  Object.values(timers).forEach((x) => { clearTimeout(x); clearInterval(x); });
  timers = {};
  const ws = D.ws;
  D.ws = null;
  if (ws) {
    ws.onopen = ws.onmessage = ws.onclose = null;
    if (ws.readyState < 2) try { ws.close(1000); } catch { /* ignore */ }
  }
  const pc = D.pc;
  D.pc = null;
  if (pc) { pc.onconnectionstatechange = pc.ontrack = null; pc.close(); }
  prev = null;
  quality = { q: 'unknown' };
  renderQuality();
  D.slots = [];
  slotSite.clear();
  audios.forEach((a) => a.remove());
  audios.clear();
  H.onTeardown?.();
}

function onMsg(m, ws) {
  switch (m.type) {
    case 'welcome': return onWelcome(m, ws);
    case 'answer': return queue((pc) => pc.setRemoteDescription({ type: 'answer', sdp: lowAudio(m.sdp) }).then(() => { syncMedia(); applyVideoOn(); }));
    case 'publish': D.videoOn = !!m.video; return queue(applyVideoOn);
    case 'audio_only': D.audioOnly = !!m.on; return H.onAudioOnly?.(D.audioOnly);
    case 'offer': return queue((pc) => onServerOffer(pc, m.sdp));
    case 'roster': D.roster = m.sites || []; return H.onRoster?.(D.roster);
    case 'slots':
      D.slots = m.slots || [];
      slotSite.clear();
      for (const s of D.slots) slotSite.set(s.mid, s.site_id);
      return H.onSlots?.(D.slots);
    case 'muted':
      setMuted(!!m.muted, true);
      return toast(t(m.muted ? 'muted.byChair' : 'unmuted.byChair'), false);
    case 'error': return toast(t('err.server', { msg: m.message || m.code }));
    // The meeting's control: roll call, floor, hands (chair: the whole state and each answer; site: its view).
    case 'control': case 'site_control': case 'roll_call_result': return H.onControl?.(m);
    // A meeting convened with this site (its page is in another one): the incoming-meeting prompt.
    case 'incoming': return H.onIncoming?.(m);
    // Chair of a convened meeting: where the ringing of its sites stands.
    case 'rings': return H.onRings?.(m.rings || []);
    default: return; // pong and anything newer
  }
}

async function onWelcome(w, ws) {
  D.welcome = w;
  D.role = w.role;
  D.welcomed = true;
  clearTimeout(timers.conn);
  // A token for another role opened on the wrong page: go to the right one.
  if (H.page && w.role !== H.page && PAGE[w.role]) { stopped = true; teardown(); location.replace(PAGE[w.role] + location.search); return; }
  for (const [id, v] of [['#title', w.meeting_title], ['#site-name', w.site_name]]) { const e = $(id); if (e) e.textContent = v; }
  document.title = `${w.meeting_title} — ${w.site_name}`;
  H.onWelcome?.(w);
  timers.ping = setInterval(() => send({ type: 'ping' }), 10000);
  if (w.role === 'technician') { attempt = 0; setState('connected'); return; }
  if (D.pc) return; // a repeated welcome on the same socket changes nothing
  gum ||= getMedia();
  await gum;
  if (ws !== D.ws) return; // the socket went away while the camera was opening
  if (D.muted) send({ type: 'mute', muted: true }); // keep our own mute across reconnects
  newPc(w);
}

// The chair's camera feeds three layers up to 720p; a site's two up to 360p.
const CAMERA = { chair: { width: 1280, height: 720, frameRate: 15 }, site: { width: 640, height: 360, frameRate: 15 } };

/** Opens camera + mic once per page; falls back to mic only, then to receive-only. */
async function getMedia() {
  const why = (e) => (has('gum.' + e?.name) ? t('gum.' + e.name) : e?.message || String(e));
  try {
    if (!navigator.mediaDevices?.getUserMedia) throw { message: t('gum.insecure') };
    D.local = await navigator.mediaDevices.getUserMedia({ audio: true, video: CAMERA[H.page] || CAMERA.site });
  } catch (e) {
    try {
      D.local = await navigator.mediaDevices.getUserMedia({ audio: true });
      toast(t('gum.nocam', { msg: why(e) }));
    } catch {
      toast(t('gum.fail', { msg: why(e) }));
    }
  }
  D.local?.getAudioTracks().forEach((a) => (a.enabled = !D.muted));
  H.onLocal?.(D.local);
}

// Simulcast: the chair sends 180p/360p/720p (rids q/h/f), a site 180p/360p (q/h, the larger for when it holds the
// floor); the bridge forwards each subscriber the layer its link carries. [rid, scaleResolutionDownBy, kbit/s].
const LAYERS = {
  chair: [['q', 4, 150], ['h', 2, 500], ['f', 1, 1500]],
  site: [['q', 2, 150], ['h', 1, 500]],
};
// What the site's link profile (welcome.profile) allows our camera to send, kbit/s in all. A site on an audio-only
// link still sends a small picture (the chair checks each site's picture at roll call); it receives audio only.
const VIDEO_CAP = { standard: 500, low: 150, audio_only: 64 };
const LOW_AUDIO = ['low', 'audio_only'];
// In a meeting with a satellite or EDGE commune (welcome.weakest_link audio_only), every page sends what such a
// commune can receive in 128 kbit/s: low-bandwidth audio and its 180p layer at this rate, kbit/s, whose two lower
// temporal layers (15 fps, ≈ 40 kbit/s) fit beside the audio (≈ 37 kbit/s with RED). At 100 kbit/s only the 7.5 fps
// base fitted, and with the freezes of a 400 ms RTT a satellite commune saw 4.6–7.4 fps (vsat-video drill).
const WEAK_MEETING_Q_KBPS = 64;
const weakMeeting = () => D.weakest === 'audio_only';
const sendsLowAudio = () => LOW_AUDIO.includes(D.profile) || weakMeeting();

/** On a weak link (profile low or audio_only), or in a meeting with one, the answer asks our Opus encoder for 60 ms
 *  packets at 16 kbit/s with in-band FEC: a third of the packets (and of their headers) of the default 20 ms, and
 *  loss concealed from FEC. */
function lowAudio(sdp) {
  if (!sendsLowAudio()) return sdp;
  const lines = sdp.split('\r\n');
  const out = [];
  let audio = false, opus = null;
  for (const l of lines) {
    if (l.startsWith('m=')) audio = l.startsWith('m=audio');
    if (audio && l.startsWith('a=rtpmap:') && /opus\/48000/i.test(l)) opus = l.slice(9).split(' ')[0];
    if (audio && l.startsWith('a=ptime:')) continue;
    if (audio && opus && l.startsWith(`a=fmtp:${opus} `)) {
      const kept = l.slice(`a=fmtp:${opus} `.length).split(';').filter((p) => !/^(maxaveragebitrate|useinbandfec|ptime|maxptime)=/.test(p));
      out.push(`a=fmtp:${opus} ` + [...kept, 'maxaveragebitrate=16000', 'useinbandfec=1', 'ptime=60', 'maxptime=60'].join(';'));
      out.push('a=ptime:60');
      continue;
    }
    out.push(l);
  }
  return out.join('\r\n');
}

/** Our camera's encodings: the role's simulcast layers, lowest first, each active while the bridge wants our video
 *  ("publish") and its rate fits in the link profile's cap (the lowest layer always does, at most at the cap). Each
 *  in three temporal layers (L1T3: 7.5 / 15 / 30 fps at 30 fps), which the bridge forwards separately. */
function encodings() {
  const layers = LAYERS[D.role] || LAYERS.site;
  const cap = VIDEO_CAP[D.profile];
  let left = cap == null ? Infinity : cap;
  return layers.map(([rid, scale, kbps], i) => {
    if (i === 0 && weakMeeting()) kbps = Math.min(kbps, WEAK_MEETING_Q_KBPS);
    const fits = i === 0 || kbps <= left;
    const rate = Math.min(kbps, left);
    if (fits) left -= rate;
    return {
      rid, scaleResolutionDownBy: scale, maxBitrate: Math.max(rate, 16) * 1000, active: D.videoOn && fits,
      scalabilityMode: 'L1T3',
    };
  });
}

/** Dynacast and the link profile: encode only the layers that fit, and none while nobody receives our camera. */
async function applyVideoOn() {
  const s = D.pc?.getSenders().find((x) => x.track?.kind === 'video');
  const p = s?.getParameters();
  if (!p?.encodings?.length) return; // not negotiated yet: applied after the answer
  const want = encodings();
  let changed = false;
  for (const e of p.encodings) {
    const w = want.find((x) => x.rid === e.rid) || want[0];
    if (e.active !== w.active || e.maxBitrate !== w.maxBitrate) changed = true;
    e.active = w.active;
    e.maxBitrate = w.maxBitrate;
  }
  if (!changed) return;
  try { await s.setParameters(p); } catch (e) { console.warn('setParameters', e); } // never worth a reconnect
}

function newPc(w) {
  const pc = (D.pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' }));
  const streams = D.local ? [D.local] : [];
  D.profile = w.profile || null;
  D.weakest = w.weakest_link || null;
  D.videoOn = true; // a new peer connection starts sending; the bridge says "publish" when nobody watches
  const audio = sendsLowAudio() ? { sendEncodings: [{ maxBitrate: 16000 }] } : {};
  // Our own mic (or an empty sender): the bridge sends audio back on it too (the chair's, on a site page).
  pc.addTransceiver(D.local?.getAudioTracks()[0] || 'audio', { direction: 'sendrecv', streams, ...audio });
  // Our camera, simulcast, send only (the bridge's answer to a simulcast section carries no stream of its own); a
  // site receives the chair's picture on a receive-only section of its own.
  const cam = D.local?.getVideoTracks()[0];
  if (cam) pc.addTransceiver(cam, { direction: 'sendonly', streams, sendEncodings: encodings() });
  if (w.role !== 'chair') {
    pc.addTransceiver('video', { direction: 'recvonly' }); // the chair's picture
    // The floor holder's picture and voice, when the chair gives a site the floor.
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
  }
  else {
    for (let i = 0; i < w.grid_size; i++) pc.addTransceiver('video', { direction: 'recvonly' });
    for (let i = 0; i < w.audio_slots; i++) pc.addTransceiver('audio', { direction: 'recvonly' });
  }
  pc.onconnectionstatechange = () => onPcState(pc);
  pc.ontrack = syncMedia;
  queue(async () => {
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    syncMedia(); // mids are known now
    await gathered(pc);
    const sdp = pc.localDescription.sdp;
    // Candidates are a convenience for an ICE-lite bridge (it learns our address from STUN): drop them if too big.
    send({ type: 'offer', sdp: sdp.length < MAX_SDP ? sdp : offer.sdp });
  });
  timers.conn = setTimeout(() => pc === D.pc && pc.connectionState !== 'connected' && retry(['media.timeout']), 30000);
  timers.stats = setInterval(() => collect(pc), 2000);
}

/** Resolves when ICE gathering completes, or after `ms`. */
function gathered(pc, ms = 1000) {
  return new Promise((res) => {
    if (pc.iceGatheringState === 'complete') return res();
    const done = () => { clearTimeout(tm); pc.removeEventListener('icegatheringstatechange', chk); res(); };
    const chk = () => pc.iceGatheringState === 'complete' && done();
    const tm = setTimeout(done, ms);
    pc.addEventListener('icegatheringstatechange', chk);
  });
}

/** Bridge-initiated renegotiation: answer it. */
async function onServerOffer(pc, sdp) {
  await pc.setRemoteDescription({ type: 'offer', sdp });
  await pc.setLocalDescription(await pc.createAnswer());
  await gathered(pc);
  send({ type: 'answer', sdp: pc.localDescription.sdp });
  syncMedia();
}

/** Runs negotiation step `f(pc)` after the previous ones, on the current pc only. */
function queue(f) {
  const pc = D.pc;
  if (!pc) return;
  chain = chain
    .then(() => pc === D.pc && f(pc))
    .catch((e) => pc === D.pc && retry(['neg.fail', { msg: e?.message || e }]));
}

function onPcState(pc) {
  if (pc !== D.pc) return;
  const s = pc.connectionState;
  clearTimeout(timers.disc);
  if (s === 'connected') {
    attempt = 0;
    clearTimeout(timers.conn);
    setState('connected');
  } else if (s === 'failed') retry(['media.failed']);
  else if (s === 'disconnected') timers.disc = setTimeout(() => pc === D.pc && retry(['media.failed']), 5000);
}

// ---- media elements -----------------------------------------------------------------------------------

/** Plays a media element; shows the "Enable sound" button if the autoplay policy refuses. */
export function play(el) {
  const p = el.play();
  p?.catch((e) => { if (e.name === 'NotAllowedError') { const s = $('#sound'); if (s) s.hidden = false; } });
}

/** One hidden <audio> per receiving audio transceiver, then the page's own video handling. */
function syncMedia() {
  const pc = D.pc;
  if (!pc) return;
  const box = $('#audios') || document.body;
  for (const x of pc.getTransceivers()) {
    const tr = x.receiver.track;
    if (tr?.kind !== 'audio' || x.mid == null || audios.get(x.mid)?._track === tr) continue;
    audios.get(x.mid)?.remove();
    const a = document.createElement('audio');
    a.autoplay = true;
    a._track = tr;
    a.srcObject = new MediaStream([tr]);
    box.append(a);
    audios.set(x.mid, a);
    play(a);
  }
  H.onMedia?.(pc);
}

export function setMuted(m, fromServer) {
  D.muted = m;
  D.local?.getAudioTracks().forEach((a) => (a.enabled = !m));
  if (!fromServer) send({ type: 'mute', muted: m });
  renderMute();
}

// ---- statistics ---------------------------------------------------------------------------------------

const r1 = (x) => (x == null || !isFinite(x) ? null : Math.round(x * 10) / 10);

/** Every 2 s: totals and rates from getStats(), sent to the bridge and shown as link quality. */
async function collect(pc) {
  if (pc !== D.pc) return;
  let rep;
  try { rep = await pc.getStats(); } catch { return; }
  let fd = 0, samples = 0, concealed = 0, lost = 0, recv = 0, bin = 0, bout = 0, vbytes = 0, pair = null, alt = null, rrtt = null, height = null;
  rep.forEach((s) => {
    if (s.type === 'inbound-rtp') {
      lost += s.packetsLost || 0;
      recv += s.packetsReceived || 0;
      bin += (s.bytesReceived || 0) + (s.headerBytesReceived || 0);
      if (s.kind === 'video') { fd += s.framesDecoded || 0; vbytes += s.bytesReceived || 0; height = Math.max(height || 0, s.frameHeight || 0) || height; }
      else { samples += (s.totalSamplesReceived || 0) - (s.concealedSamples || 0); concealed += s.concealedSamples || 0; }
    } else if (s.type === 'outbound-rtp') bout += (s.bytesSent || 0) + (s.headerBytesSent || 0);
    else if (s.type === 'transport' && s.selectedCandidatePairId) pair = rep.get(s.selectedCandidatePairId);
    else if (s.type === 'candidate-pair' && (s.selected || (s.nominated && s.state === 'succeeded'))) alt = s;
    else if (s.type === 'remote-inbound-rtp' && s.roundTripTime != null) rrtt = s.roundTripTime;
  });
  pair ||= alt;
  const rttS = pair?.currentRoundTripTime ?? rrtt;
  const now = performance.now(), p = prev;
  prev = { now, lost, recv, bin, bout, fd, vbytes, stall: 0, kf: p?.kf || 0 };
  const dt = p ? (now - p.now) / 1000 : 0;
  const kin = p && dt > 0 ? ((bin - p.bin) * 8) / dt / 1000 : null;
  const kout = p && dt > 0 ? ((bout - p.bout) * 8) / dt / 1000 : null;
  const dl = p ? Math.max(0, lost - p.lost) : 0, dr = p ? Math.max(0, recv - p.recv) : 0;
  const loss = !p ? null : dl + dr > 0 ? (100 * dl) / (dl + dr) : 0;
  const rtt = rttS == null ? null : rttS * 1000;
  const st = {
    frames_decoded: fd, audio_samples: Math.max(0, Math.round(samples)), packets_lost: Math.round(lost),
    rtt_ms: r1(rtt), kbps_in: r1(kin), kbps_out: r1(kout), audio_concealed: Math.round(concealed),
    // The picture decoded since the last report, for the attendance report's lowest layer (0: audio only).
    height: D.audioOnly ? 0 : p && fd > p.fd && height ? height : null,
  };
  send({ type: 'stats', ...st });
  // Video bytes arriving but nothing decoded for 4 s: the decoder needs a keyframe (at most one ask per 10 s).
  if (p) {
    prev.stall = vbytes > p.vbytes && fd === p.fd ? p.stall + 1 : 0;
    if (prev.stall >= 2 && now - prev.kf > 10000) { prev.kf = now; send({ type: 'request_keyframe' }); }
  }
  quality = { q: grade(rtt, loss, kin), rtt, loss, kin, kout };
  D.stats = { ...st, loss_pct: r1(loss), quality: quality.q, height };
  renderQuality();
  H.onStats?.(D.stats, p ? fd - p.fd : null);
}

/** good / medium / poor from the last 2 s (the inbound rate counts only on a site, which always expects the chair). */
function grade(rtt, loss, kin) {
  if (loss == null) return 'unknown';
  const k = D.role === 'site' ? kin : null;
  if (rtt > 400 || loss > 8 || (k != null && k < 24)) return 'poor';
  if (rtt > 150 || loss > 2 || (k != null && k < 150)) return 'medium';
  return 'good';
}

/** Test hook: per receiving transceiver of `kind`, its inbound-rtp counters and the site it carries. */
async function inbound(kind) {
  const pc = D.pc;
  if (!pc) return [];
  const out = [];
  await Promise.all(
    pc.getTransceivers()
      .filter((x) => x.mid != null && x.receiver.track?.kind === kind)
      .map(async (x) => {
        const rep = await x.receiver.getStats();
        rep.forEach((s) => {
          if (s.type !== 'inbound-rtp') return;
          const o = { mid: x.mid, bytesReceived: s.bytesReceived || 0, siteId: siteOf(x.mid) };
          if (kind === 'video') o.framesDecoded = s.framesDecoded || 0;
          else o.totalSamplesReceived = s.totalSamplesReceived || 0;
          out.push(o);
        });
      }),
  );
  return out.sort((a, b) => a.mid.localeCompare(b.mid, 'en', { numeric: true }));
}
