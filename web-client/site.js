// site.js — the commune/district/department page: the chair's picture large, self-view small, mute button,
// link quality. All the connection work is in app.js.
import { start, $, D } from './app.js';
import { t } from './i18n.js';

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

start({
  page: 'site',
  onLocal(s) {
    const v = s?.getVideoTracks().length;
    if (v) $('#self').srcObject = s;
    else { $('#self').hidden = true; $('#selfcap').dataset.i18n = 'site.nocam'; $('#selfcap').textContent = t('site.nocam'); }
  },
  // The chair's video arrives on our receive-only video transceiver.
  onMedia(pc) {
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
  onLang() { if (waitKey) setWait(waitKey); renderLayer(); },
});
