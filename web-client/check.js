// check.js — the pre-meeting link check (/check?token=…): one RTCPeerConnection to the bridge's /ws/check. The bridge
// sends a probe train down (we report what arrives, every 250 ms) and asks for video up at set rates (we cap the
// camera's encoder); it measures, stores the result with the site and sends it back. Test hooks on window.diemcauCheck.
import { t, onLang } from './i18n.js';

const $ = (s) => document.querySelector(s);
const token = new URLSearchParams(location.search).get('token') || '';
const C = (window.diemcauCheck = { state: 'idle', steps: [], result: null, error: null, reports: 0 });
let pc = null, ws = null, sender = null, timer = null, step = null;

function fail(msg) {
  C.state = 'error';
  C.error = msg;
  const e = $('#err');
  e.textContent = msg;
  e.hidden = false;
  $('#go').disabled = false;
  cleanup();
}

function cleanup() {
  clearInterval(timer);
  timer = null;
  try { pc?.close(); } catch { /* already closed */ }
  pc = null;
}

function renderStep() {
  if (!step) return;
  $('#bar').value = step.percent;
  $('#step').textContent = t(step.phase === 'down' ? 'chk.stepDown' : 'chk.stepUp', { kbps: step.kbps, p: step.percent });
}

const kbps = (v, sat) => (v == null ? '–' : (sat ? '' : '≥ ') + Math.round(v) + ' kbit/s');
const pct = (v) => (v == null ? '–' : v.toFixed(1) + ' %');

function renderResult() {
  const r = C.result;
  if (!r) return;
  $('#r-down').textContent = kbps(r.down_kbps, r.down_saturated);
  $('#r-up').textContent = kbps(r.up_kbps, r.up_saturated);
  $('#r-loss').textContent = pct(r.down_loss_pct) + ' / ' + pct(r.up_loss_pct);
  $('#r-rtt').textContent = r.rtt_ms == null ? '–' : Math.round(r.rtt_ms) + ' ms';
  $('#r-rec').textContent = t('prof.' + r.recommended);
  $('#r-rec').className = 'rec rec-' + r.recommended;
  $('#r-advice').textContent = t('adv.' + r.recommended);
  $('#join').href = '/site?token=' + encodeURIComponent(token);
  $('#res').hidden = false;
}

onLang(() => { renderStep(); renderResult(); });

/** Cumulative receive counters of the probe (the inbound video stream) and the candidate pair's RTT. */
async function report() {
  if (!pc || !ws || ws.readyState !== 1) return;
  const stats = await pc.getStats();
  let rx = null, rtt = null;
  stats.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') rx = s;
    if (s.type === 'candidate-pair' && s.nominated && s.currentRoundTripTime != null) rtt = s.currentRoundTripTime * 1000;
  });
  if (!rx) return;
  C.reports++;
  ws.send(JSON.stringify({
    type: 'check_report', rx_packets: rx.packetsReceived || 0, rx_bytes: rx.bytesReceived || 0,
    rx_lost: rx.packetsLost || 0, rtt_ms: rtt,
  }));
}

async function setRate(kbit) {
  if (!sender) return;
  const p = sender.getParameters();
  if (!p.encodings?.length) p.encodings = [{}];
  p.encodings[0].maxBitrate = Math.max(kbit, 30) * 1000;
  try { await sender.setParameters(p); } catch (e) { console.warn('setParameters', e); }
}

async function run() {
  $('#go').disabled = true;
  $('#err').hidden = true;
  $('#res').hidden = true;
  $('#run').hidden = false;
  C.state = 'connecting';
  C.steps = [];
  step = { phase: 'down', kbps: 0, percent: 0 };
  $('#step').textContent = t('chk.connecting');
  let cam = null;
  try {
    cam = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360, frameRate: 15 } });
  } catch { /* no camera: the uplink is not measured, the rest is */ }
  pc = new RTCPeerConnection();
  const track = cam?.getVideoTracks()[0];
  const x = pc.addTransceiver(track || 'video', { direction: 'sendrecv', sendEncodings: [{ maxBitrate: 30000 }] });
  sender = track ? x.sender : null;
  ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/check?token=${encodeURIComponent(token)}`);
  ws.onopen = () => ws.send(JSON.stringify({ type: 'hello', v: 1 }));
  ws.onclose = (e) => {
    if (C.state !== 'done') fail(e.code === 4001 ? t('close.4001') : t('chk.closed', { why: e.reason || e.code }));
  };
  ws.onmessage = async (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === 'welcome') {
      $('#site-name').textContent = m.site_name;
      await pc.setLocalDescription(await pc.createOffer());
      // ICE-lite bridge: send the offer once gathering completes (host candidates only; 1 s at most).
      await new Promise((res) => {
        if (pc.iceGatheringState === 'complete') return res();
        pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && res();
        setTimeout(res, 1000);
      });
      ws.send(JSON.stringify({ type: 'offer', sdp: pc.localDescription.sdp }));
    } else if (m.type === 'answer') {
      await pc.setRemoteDescription({ type: 'answer', sdp: m.sdp });
      timer = setInterval(report, 250);
    } else if (m.type === 'check_step') {
      C.state = 'running';
      C.steps.push(m);
      if (m.kbps > 0) { step = m; renderStep(); }
      if (m.phase === 'up') setRate(m.kbps || 30);
    } else if (m.type === 'check_result') {
      C.state = 'done';
      C.result = m.result;
      $('#bar').value = 100;
      $('#run').hidden = true;
      renderResult();
      cleanup();
      cam?.getTracks().forEach((tr) => tr.stop());
      $('#go').disabled = false;
    } else if (m.type === 'error') {
      fail(m.code === 'no_media' ? t('chk.nomedia') : m.message);
    }
  };
}

$('#go').addEventListener('click', run);
if (!token) fail(t('chk.notoken'));
