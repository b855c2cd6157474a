// ring.js — the incoming-meeting prompt ("Cuộc họp khẩn") and the standby page that waits for it.
// A site's page is rung when the chair convenes a meeting with it: on its standby page (/site?standby=…, socket
// /ws/standby) or on a page already in another meeting (the same `incoming` message on /ws).
import { t, onLang } from './i18n.js';

const $ = (s) => document.querySelector(s);
const params = new URLSearchParams(location.search);
/** The standby token of this page, if it was opened as a standby page (kept across meetings). */
export const standbyToken = params.get('standby') || '';

let ringing = null; // { m, skew, timer, decline }
let audio = null;

/** A two-tone ring every 2 s while the prompt is up (WebAudio; silent until the page may play sound). */
function tone(on) {
  if (!on) { audio?.close?.().catch(() => {}); audio = null; return; }
  try {
    audio = new AudioContext();
    const beep = (at, f) => {
      const o = audio.createOscillator(), g = audio.createGain();
      o.frequency.value = f; g.gain.value = 0.15;
      o.connect(g).connect(audio.destination);
      o.start(audio.currentTime + at); o.stop(audio.currentTime + at + 0.35);
    };
    const ring = () => { if (!audio) return; beep(0, 880); beep(0.45, 660); setTimeout(ring, 2000); };
    ring();
  } catch { audio = null; }
}

const left = () => ringing ? Math.max(0, Math.ceil((ringing.m.until_ms - (Date.now() + ringing.skew)) / 1000)) : 0;

function render() {
  const box = $('#incoming');
  if (!box) return;
  box.hidden = !ringing;
  if (!ringing) return;
  const m = ringing.m;
  $('#inc-title').textContent = m.title;
  $('#inc-chair').textContent = t('inc.chair', { name: m.chair_name });
  $('#inc-left').textContent = t('inc.left', { s: left() });
  if (left() <= 0) stop();
}

function stop() {
  if (ringing) clearInterval(ringing.timer);
  ringing = null;
  tone(false);
  render();
}

/** Shows the prompt for an `incoming` message; `decline(meeting_id)` sends the refusal on the page's socket. */
export function showIncoming(m, decline) {
  if (ringing?.m.meeting_id === m.meeting_id) { ringing.m = m; render(); return; }
  stop();
  ringing = { m, skew: m.now_ms - Date.now(), decline, timer: setInterval(render, 500) };
  window.diemcau = Object.assign(window.diemcau || {}, { incoming: m });
  tone(true);
  render();
}

export function initPrompt() {
  $('#inc-join').onclick = () => {
    if (!ringing) return;
    const q = new URLSearchParams({ token: ringing.m.token });
    if (standbyToken) q.set('standby', standbyToken);
    location.href = '/site?' + q;
  };
  $('#inc-decline').onclick = () => { ringing?.decline(ringing.m.meeting_id); stop(); };
  onLang(render);
}

/** The standby page: one socket to /ws/standby, reconnected with a backoff, that rings the prompt. */
export function standby() {
  initPrompt();
  document.body.classList.add('standby-mode');
  $('#standby').hidden = false;
  const st = $('#sb-state');
  let attempt = 0, ws = null, key = 'sb.connecting';
  const state = (k, cls) => { key = k; st.textContent = t(k); st.className = 'badge ' + cls; };
  onLang(() => { st.textContent = t(key); });
  const connect = () => {
    state(attempt ? 'sb.reconnecting' : 'sb.connecting', 'st-connecting');
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    ws = new WebSocket(`${proto}://${location.host}/ws/standby?token=${encodeURIComponent(standbyToken)}`);
    window.diemcau = Object.assign(window.diemcau || {}, { standbyWs: ws });
    ws.onopen = () => ws.send(JSON.stringify({ type: 'hello', v: 1 }));
    ws.onmessage = (e) => {
      let m;
      try { m = JSON.parse(e.data); } catch { return; }
      if (m.type === 'standby') {
        attempt = 0;
        $('#sb-site').textContent = m.site_name;
        document.title = `${t('sb.title')} — ${m.site_name}`;
        state('sb.ready', 'st-connected');
        window.diemcau.standby = m;
      } else if (m.type === 'incoming') {
        showIncoming(m, (id) => ws?.readyState === 1 && ws.send(JSON.stringify({ type: 'decline', meeting_id: id })));
      }
    };
    ws.onclose = (e) => {
      // A refused token is not retried: the link itself is wrong or expired.
      if (e.code === 4001) { state('sb.badToken', 'st-error'); st.title = e.reason; return; }
      const delay = Math.min(1000 * 2 ** attempt, 30000);
      attempt++;
      state('sb.reconnecting', 'st-reconnecting');
      setTimeout(connect, delay);
    };
  };
  // Keep-alive: a NAT on a 3G link forgets an idle TCP connection.
  setInterval(() => ws?.readyState === 1 && ws.send(JSON.stringify({ type: 'ping' })), 25000);
  connect();
}
