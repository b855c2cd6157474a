// chair.js — the chairing console: own preview, grid of incoming sites (one tile per receiving video slot),
// the roster as a hierarchy with state and mute toggles, and connected/invited counts.
import { start, $, D, send, siteOf, esc, token, toast } from './app.js';
import { t } from './i18n.js';

const grid = $('#grid'), list = $('#roster'), filter = $('#filter');
const tiles = new Map(); // mid → { el, video, name, badge, btn, track }
const bySite = new Map(); // site_id → roster entry
let pending = 0;

// Roster and grid redraws are coalesced (a 2,000-site roster may change many times a second).
const later = () => { if (!pending) pending = setTimeout(() => { pending = 0; renderTiles(); renderRoster(); renderControl(); }, 100); };

function toggleMute(id) {
  const s = bySite.get(id);
  if (!s) return;
  s.muted = !s.muted; // optimistic; the next roster confirms
  send({ type: 'mute_site', site_id: id, muted: s.muted });
  later();
}

// ---- the meeting's control: roll call, floor, hands, mute all, lock (POST /api/meetings/{id}/control) ----
const ctl = { results: new Map(), counts: null, roll_call: null, floor: null, hands: [], muted: [], locked: false, rounds: 0 };
D.ctl = ctl;
/** POSTs JSON to the API with the chair's token; the answer, or null after a toast saying what went wrong. */
async function api(path, body) {
  const r = await fetch(path, {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer ' + token }, body: JSON.stringify(body),
  }).catch(() => null);
  const v = await r?.json().catch(() => null);
  if (!r?.ok) { toast(t('err.server', { msg: v?.error || r?.status || 'network' })); return null; }
  return v;
}
const act = (body) => api(`/api/meetings/${D.welcome?.meeting_id}/control`, body);
const nameOf = (id) => bySite.get(id)?.name || '#' + id;
function renderControl() {
  const rc = ctl.roll_call, c = ctl.counts;
  $('#rc-start').hidden = !!rc;
  $('#rc-cancel').hidden = !rc;
  $('#rc-recall').hidden = !!rc || !ctl.rounds || !c || c.no_answer + c.offline === 0;
  const p = $('#rc-prog');
  p.hidden = !c;
  if (c) {
    p.max = c.called || 1; p.value = c.called - c.waiting;
    const present = c.present_av + c.present_audio_only + c.present_no_media;
    $('#rc-counts').textContent = t('rc.counts', { p: present, n: c.called, av: c.present_av, w: c.waiting, na: c.no_answer, of: c.offline });
  }
  $('#rc-calling').textContent = rc?.calling != null ? t('rc.calling', { name: nameOf(rc.calling) }) : '';
  $('#rc-order').hidden = !oneByOne();
  $('#rc-order').textContent = order.length ? t('rc.order', { n: order.length }) : t('rc.orderNone');
  $('#fl-holder').textContent = ctl.floor != null ? t('floor.holder', { name: nameOf(ctl.floor) }) : t('floor.none');
  $('#fl-take').hidden = ctl.floor == null;
  const now = Date.now();
  $('#hands').innerHTML = ctl.hands.map((h) => `<li data-id="${h.site_id}">${esc(nameOf(h.site_id))} `
    + `<small>${t('floor.waiting', { s: Math.max(0, Math.round((now - h.since_ms) / 1000)) + ' s' })}</small> `
    + `<button class="fl">${t('floor.give')}</button></li>`).join('');
  $('#lock').textContent = t(ctl.locked ? 'ctl.unlock' : 'ctl.lock');
  const q = '?token=' + encodeURIComponent(token), base = `/api/meetings/${D.welcome?.meeting_id}/attendance`;
  $('#rc-report').href = base + '.html' + q;
  $('#rc-csv').href = base + '.csv' + q;
}
function onControl(m) {
  if (m.type === 'control') {
    Object.assign(ctl, m.state);
    ctl.results = new Map(m.state.results);
  } else if (m.type === 'roll_call_result') {
    ctl.results.set(m.site_id, m.result);
    ctl.counts = m.counts;
  }
  later();
}
// One by one: the chair may tick sites on the roster in the order to call them (none ticked: directory order).
const order = [];
D.rcOrder = order;
const oneByOne = () => $('#rc-mode').value === 'one_by_one' && !ctl.roll_call;
$('#rc-mode').addEventListener('change', later);
$('#rc-start').onclick = async () => {
  const secs = Number($('#rc-secs').value) || undefined;
  const chosen = $('#rc-mode').value === 'one_by_one' && order.length ? { order: [...order] } : {};
  if (await act({ action: 'start_roll_call', mode: $('#rc-mode').value, ...(secs ? { seconds: secs } : {}), ...chosen })) order.length = 0;
};
$('#rc-cancel').onclick = () => act({ action: 'cancel_roll_call' });
$('#rc-recall').onclick = () => act({ action: 'recall' });
$('#fl-take').onclick = () => act({ action: 'take_floor' });
$('#mute-all').onclick = () => act({ action: 'mute_all' });
$('#lock').onclick = () => act({ action: 'lock', locked: !ctl.locked });
$('#hands').addEventListener('click', (e) => {
  if (e.target.classList.contains('fl')) act({ action: 'give_floor', site_id: Number(e.target.closest('li').dataset.id) });
});
// Waiting times of raised hands, the countdowns of called sites and of ringing pages tick every second.
setInterval(() => {
  if (ctl.hands.length) renderControl();
  if (ctl.roll_call || [...rings.values()].some((r) => r.status === 'ringing' && r.until_ms > Date.now())) later();
}, 1000);

// ---- emergency convening: pick sites from the directory, POST /api/convene, then where each ring stands ----
const rings = new Map(); // site_id → { status, at_ms, until_ms } of this meeting (if it was convened)
D.rings = rings;
function onRings(list) {
  for (const r of list) rings.set(r.site_id, r);
  $('#ring-again').hidden = rings.size === 0;
  later();
}
/** A not-connected site's ring as a badge: ringing with its seconds left, did not pick up, no page open, declined. */
function ringBadge(s) {
  const r = rings.get(s.site_id);
  if (!r || s.state === 'connected') return '';
  const left = Math.round((r.until_ms - Date.now()) / 1000);
  const st = r.status === 'ringing' && left <= 0 ? 'missed' : r.status;
  return `<span class="ring ring-${st}" data-ring="${st}">${t('ring.' + st, { s: left })}</span>`;
}
$('#ring-again').onclick = async () => {
  const v = await api(`/api/meetings/${D.welcome?.meeting_id}/ring`, {});
  if (v) { onRings(v.rings); toast(t('ring.againDone', { r: v.ringing, u: v.unreachable }), false); }
};

const cv = { dir: null, kids: new Map(), sites: new Set(), subtrees: new Set() };
D.convene = cv;
async function openConvene() {
  $('#convene').hidden = false;
  $('#cv-name').focus();
  if (cv.dir) return renderConvene();
  $('#cv-tree').textContent = t('cv.loading');
  const r = await fetch('/api/sites?token=' + encodeURIComponent(token)).catch(() => null);
  const v = await r?.json().catch(() => null);
  if (!r?.ok || !Array.isArray(v)) { $('#cv-tree').textContent = t('err.server', { msg: v?.error || r?.status || 'network' }); return; }
  cv.dir = v;
  const ids = new Set(v.map((s) => s.id));
  for (const s of v) {
    const p = ids.has(s.parent_id) ? s.parent_id : null;
    if (!cv.kids.has(p)) cv.kids.set(p, []);
    cv.kids.get(p).push(s);
  }
  renderConvene();
}
/** The sites the choice invites (what the bridge will resolve): the ticked ones and every site under a ticked subtree. */
function chosen() {
  const out = new Set(cv.sites), stack = [...cv.subtrees], seen = new Set();
  while (stack.length) {
    const id = stack.pop();
    if (seen.has(id)) continue;
    seen.add(id); out.add(id);
    for (const k of cv.kids.get(id) || []) stack.push(k.id);
  }
  out.delete(D.welcome?.chair_site_id);
  return out;
}
function renderConvene() {
  const q = $('#cv-filter').value.trim().toLowerCase(), chair = D.welcome?.chair_site_id, seen = new Set();
  const row = (s) => `<li data-id="${s.id}"><div class="row"><span class="nm">${esc(s.name)}<small>${t('kind.' + s.kind)} · ${esc(s.code)}</small></span>`
    + (s.id === chair ? '' : `<label><input type="checkbox" class="cv-s"${cv.sites.has(s.id) ? ' checked' : ''}> ${t('cv.site')}</label>`)
    + (cv.kids.has(s.id) ? `<label><input type="checkbox" class="cv-t"${cv.subtrees.has(s.id) ? ' checked' : ''}> ${t('cv.sub')}</label>` : '')
    + '</div>';
  const li = (s) => {
    if (seen.has(s.id)) return '';
    seen.add(s.id);
    const c = cv.kids.get(s.id);
    return row(s) + (c ? `<ul>${c.map(li).join('')}</ul>` : '') + '</li>';
  };
  $('#cv-tree').innerHTML = q
    ? cv.dir.filter((s) => s.name.toLowerCase().includes(q) || s.code.toLowerCase().includes(q)).map((s) => row(s) + '</li>').join('')
    : (cv.kids.get(null) || []).map(li).join('');
  $('#cv-picked').textContent = t('cv.picked', { n: chosen().size });
}
$('#cv-open').onclick = openConvene;
$('#cv-close').onclick = () => { $('#convene').hidden = true; };
$('#cv-filter').addEventListener('input', () => cv.dir && renderConvene());
$('#cv-tree').addEventListener('change', (e) => {
  const id = Number(e.target.closest('li')?.dataset.id), set = e.target.classList.contains('cv-t') ? cv.subtrees : cv.sites;
  if (!id) return;
  if (e.target.checked) set.add(id); else set.delete(id);
  $('#cv-picked').textContent = t('cv.picked', { n: chosen().size });
});
$('#cv-go').onclick = async () => {
  const title = $('#cv-name').value.trim();
  if (!title) return toast(t('cv.noTitle'));
  if (!chosen().size) return toast(t('cv.none'));
  $('#cv-go').disabled = true;
  const v = await api('/api/convene', { title, sites: [...cv.sites], subtrees: [...cv.subtrees] });
  $('#cv-go').disabled = false;
  if (!v) return;
  const res = $('#cv-result');
  res.hidden = false;
  res.textContent = t('cv.done', { n: v.invited.length, r: v.ringing, u: v.unreachable });
  res.dataset.meeting = v.meeting_id;
  const a = $('#cv-enter');
  a.href = v.chair_url;
  a.hidden = false;
};

/** One tile per receiving video transceiver (our camera's is send-only). */
function syncTiles(pc) {
  for (const x of pc.getTransceivers()) {
    const tr = x.receiver.track;
    if (tr?.kind !== 'video' || x.mid == null || x.direction !== 'recvonly') continue;
    let tl = tiles.get(x.mid);
    if (!tl) {
      const el = document.createElement('div');
      el.className = 'tile';
      el.dataset.mid = x.mid;
      el.innerHTML = '<video autoplay playsinline muted></video><div class="cap"><span class="nm"></span>'
        + '<span class="badge"></span><button class="mt"></button></div>';
      tl = { el, video: el.querySelector('video'), name: el.querySelector('.nm'), badge: el.querySelector('.badge'),
        btn: el.querySelector('.mt') };
      tl.btn.onclick = () => toggleMute(siteOf(x.mid));
      tiles.set(x.mid, tl);
      grid.append(el);
    }
    if (tl.track !== tr) {
      tl.track = tr;
      tl.video.srcObject = new MediaStream([tr]);
      tl.video.play().catch(() => {}); // muted: autoplay allowed
    }
  }
  renderTiles();
}

function renderTiles() {
  for (const [mid, tl] of tiles) {
    const id = siteOf(mid), s = bySite.get(id);
    tl.el.classList.toggle('empty', id == null);
    tl.el.classList.toggle('muted', !!s?.muted);
    tl.el.dataset.site = id ?? '';
    tl.name.textContent = id == null ? t('tile.empty') : s?.name ?? '#' + id;
    tl.badge.hidden = !s;
    if (s) { tl.badge.textContent = t('ps.' + s.state); tl.badge.className = 'badge ps-' + s.state; }
    tl.btn.hidden = id == null;
    tl.btn.textContent = t(s?.muted ? 'tile.unmute' : 'tile.mute');
  }
}

/** A site's roll-call result as a badge, while a roll call runs or after one. */
function resultBadge(id) {
  const r = ctl.results.get(id);
  const called = ctl.roll_call && (ctl.roll_call.mode === 'all_at_once' ? ctl.roll_call.sites.includes(id) && !r : ctl.roll_call.calling === id);
  if (called) return `<span class="rc rc-waiting">${t('rc.left', { s: Math.max(0, Math.round((ctl.roll_call.deadline_ms - Date.now()) / 1000)) })}</span>`;
  return r ? `<span class="rc rc-${r.outcome}" data-outcome="${r.outcome}">${t('out.' + r.outcome)}</span>` : '';
}

/** One by one, before the start: a box to tick the site into the calling order, with its place. */
function orderBox(id) {
  if (!oneByOne()) return '';
  const i = order.indexOf(id);
  return `<label class="ord" title="${t('rc.orderTip')}"><input type="checkbox" class="ord-x"${i >= 0 ? ' checked' : ''}>${i >= 0 ? i + 1 : ''}</label>`;
}

/** The roster as a tree by parent_id (or a flat list of matches while filtering), plus the counts. */
function renderRoster() {
  const sites = D.roster, chair = D.welcome?.chair_site_id;
  const invited = sites.filter((s) => s.site_id !== chair);
  const on = invited.filter((s) => s.state === 'connected').length;
  $('#counts').textContent = t('chair.count', { c: on, n: invited.length });
  const q = filter.value.trim().toLowerCase();
  const kids = new Map();
  for (const s of sites) {
    const p = q ? null : bySite.has(s.parent_id) ? s.parent_id : null;
    if (q && !s.name.toLowerCase().includes(q)) continue;
    if (!kids.has(p)) kids.set(p, []);
    kids.get(p).push(s);
  }
  const seen = new Set(); // guards against parent_id cycles
  const li = (s) => {
    if (seen.has(s.site_id)) return '';
    seen.add(s.site_id);
    const c = kids.get(s.site_id);
    return `<li class="ps-${s.state}${s.muted ? ' muted' : ''}" data-id="${s.site_id}"><div class="row">`
      + `<span class="dot"></span><span class="nm">${esc(s.name)}<small>${t('kind.' + s.kind)} · ${t('ps.' + s.state)}`
      + `${s.muted ? ' · ' + t('micOff') : ''}</small></span>`
      + (s.site_id === chair ? '' : orderBox(s.site_id) + ringBadge(s) + resultBadge(s.site_id) + `<button class="mt">${t(s.muted ? 'tile.unmute' : 'tile.mute')}</button>`
        + (ctl.floor === s.site_id ? '' : `<button class="fl">${t('floor.give')}</button>`))
      + `</div>${c ? `<ul>${c.map(li).join('')}</ul>` : ''}</li>`;
  };
  let html = (kids.get(null) || []).map(li).join('');
  for (const s of sites) if (!seen.has(s.site_id) && (!q || s.name.toLowerCase().includes(q))) html += li(s);
  list.innerHTML = html;
}

list.addEventListener('change', (e) => {
  if (!e.target.classList.contains('ord-x')) return;
  const id = Number(e.target.closest('li').dataset.id), i = order.indexOf(id);
  if (e.target.checked && i < 0) order.push(id);
  if (!e.target.checked && i >= 0) order.splice(i, 1);
  later();
});
list.addEventListener('click', (e) => {
  if (e.target.classList.contains('mt')) toggleMute(Number(e.target.closest('li').dataset.id));
  if (e.target.classList.contains('fl')) act({ action: 'give_floor', site_id: Number(e.target.closest('li').dataset.id) });
});
filter.addEventListener('input', later);

start({
  page: 'chair',
  onLocal(s) { if (s?.getVideoTracks().length) $('#self').srcObject = s; },
  onMedia: syncTiles,
  onSlots: later,
  onControl,
  onRings,
  onRoster(sites) {
    bySite.clear();
    for (const s of sites) bySite.set(s.site_id, s);
    later();
  },
  onTeardown() { tiles.forEach((tl) => tl.el.remove()); tiles.clear(); },
  onLang() { later(); if (cv.dir) renderConvene(); },
});
