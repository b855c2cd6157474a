// site.js — the commune/district/department page: the chair's picture large, self-view small, mute button,
// link quality. All the connection work is in app.js.
import { start, $, D, send, token } from './app.js';
import { t } from './i18n.js';
import { standby, standbyToken, showIncoming, initPrompt } from './ring.js';

const remote = $('#remote'), wait = $('#wait');
let shown = null; // the receiver track on #remote
let waitKey = 'site.wait';
let layer = null; // height of the chair's picture decoded in the last 2 s

function setWait(key) {
  waitKey = key;
  wait.hidden = !key;
  if (key) wait.textContent = t(key);
}

setWait('site.wait');

/** The chair's picture as it arrives: "360p" (the simulcast layer the bridge chose for our link) or audio only. */
function renderLayer() {
  const e = $('#layer');
  e.hidden = !layer && !D.audioOnly;
  e.textContent = D.audioOnly ? t('site.layerAudio') : layer ? layer + 'p' : '';
  e.title = t('site.layerTip');
  e.dataset.height = D.audioOnly ? 0 : layer ?? '';
}
$('#checklink').href = '/check' + location.search;

// ---- roll call, floor and hand (the bridge's site_control view) ----
let view = null, skew = 0, floorName = null, tick = 0;
/** Seconds left to answer, counted on the bridge's clock (the page's own may be off). */
const left = () => view?.called_until_ms == null ? 0 : Math.max(0, Math.ceil((view.called_until_ms - (Date.now() + skew)) / 1000));
function renderControl() {
  D.control = view;
  const rc = $('#rollcall'), called = !!view?.called_until_ms && left() > 0;
  rc.hidden = !called;
  if (called) $('#rc-left').textContent = t('rc.left', { s: left() });
  if (called && !tick) tick = setInterval(renderControl, 250);
  if (!called && tick) { clearInterval(tick); tick = 0; }
  const r = $('#rc-result');
  r.hidden = !view?.result || called;
  if (view?.result) { r.textContent = t('rc.done', { r: t('out.' + view.result.outcome) }); r.dataset.outcome = view.result.outcome; }
  const f = $('#floor'), mine = view?.floor != null && view.floor === D.welcome?.site_id;
  f.hidden = view?.floor == null;
  f.textContent = mine ? t('floor.you') : t('floor.holder', { name: floorName || '#' + view?.floor });
  $('#floorcap').textContent = floorName || '';
  const h = $('#hand'), up = view?.hand_position != null;
  h.textContent = t(up ? 'hand.lower' : 'hand.raise');
  h.hidden = mine;
  $('#handpos').textContent = up ? t('hand.pos', { n: view.hand_position }) : '';
  const m = $('#mute');
  m.disabled = !!view?.muted_by_chair;
  if (view?.muted_by_chair) m.textContent = t('muted.chairLock');
}
$('#present').onclick = () => { send({ type: 'present' }); $('#present').disabled = true; };
$('#hand').onclick = () => send({ type: 'hand', raised: view?.hand_position == null });

/** The floor holder's picture arrives on our second receive-only video transceiver, shown while a slot fills it. */
let floorTrack = null;
function renderFloorVideo(pc) {
  const xs = (pc || D.pc)?.getTransceivers().filter((x) => x.receiver.track?.kind === 'video' && x.direction === 'recvonly') || [];
  const x = xs[1], on = x && D.slots?.some((s) => s.mid === x.mid && s.site_id != null);
  $('#floorview').hidden = !on;
  if (x && x.receiver.track !== floorTrack) {
    floorTrack = x.receiver.track;
    $('#floorvid').srcObject = new MediaStream([floorTrack]);
    $('#floorvid').play().catch(() => {});
  }
}

if (!token && standbyToken) standby();
else {
  initPrompt();
  start({
    page: 'site',
    // Rung for a convened meeting while in this one: "Tham gia" leaves this meeting for it.
    onIncoming(m) { showIncoming(m, (id) => send({ type: 'decline', meeting_id: id })); },
    onLocal(s) {
      const v = s?.getVideoTracks().length;
      if (v) $('#self').srcObject = s;
      else { $('#self').hidden = true; $('#selfcap').dataset.i18n = 'site.nocam'; $('#selfcap').textContent = t('site.nocam'); }
    },
    onControl(m) {
      if (m.type !== 'site_control') return;
      view = m.view; skew = m.now_ms - Date.now(); floorName = m.floor_name || null;
      $('#present').disabled = false;
      renderControl();
    },
    onSlots() { renderFloorVideo(); },
    // The chair's video arrives on our first receive-only video transceiver.
    onMedia(pc) {
      renderFloorVideo(pc);
      const x = pc.getTransceivers().find((x) => x.receiver.track?.kind === 'video' && x.direction === 'recvonly');
      const tr = x?.receiver.track;
      if (!tr || tr === shown) return;
      shown = tr;
      remote.srcObject = new MediaStream([tr]);
      remote.play().catch(() => {}); // muted video: autoplay is always allowed
    },
    // The bridge paused the chair's video: the link has room for sound only ("Chỉ âm thanh") until it recovers.
    onAudioOnly(on) { setWait(on ? 'site.audioOnly' : D.stats?.frames_decoded > 0 ? null : 'site.wait'); renderLayer(); },
    // No frame decoded in the last 2 s while connected: say it is sound only (weak link) rather than "waiting".
    onStats(s, dFrames) {
      layer = dFrames > 0 && s.height ? s.height : null;
      renderLayer();
      if (dFrames == null || D.audioOnly) return;
      if (dFrames > 0) setWait(null);
      else setWait(s.frames_decoded > 0 ? 'site.audio' : 'site.wait');
    },
    onTeardown() { shown = null; remote.srcObject = null; setWait('site.wait'); layer = null; renderLayer(); },
    onLang() { if (waitKey) setWait(waitKey); renderLayer(); renderControl(); },
  });
}
