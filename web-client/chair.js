// chair.js — the chairing console: own preview, grid of incoming sites (one tile per receiving video slot),
// the roster as a hierarchy with state and mute toggles, and connected/invited counts.
import { start, $, D, send, siteOf, esc } from './app.js';
import { t } from './i18n.js';

const grid = $('#grid'), list = $('#roster'), filter = $('#filter');
const tiles = new Map(); // mid → { el, video, name, badge, btn, track }
const bySite = new Map(); // site_id → roster entry
let pending = 0;

// Roster and grid redraws are coalesced (a 2,000-site roster may change many times a second).
const later = () => { if (!pending) pending = setTimeout(() => { pending = 0; renderTiles(); renderRoster(); }, 100); };

function toggleMute(id) {
  const s = bySite.get(id);
  if (!s) return;
  s.muted = !s.muted; // optimistic; the next roster confirms
  send({ type: 'mute_site', site_id: id, muted: s.muted });
  later();
}

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
      + (s.site_id === chair ? '' : `<button class="mt">${t(s.muted ? 'tile.unmute' : 'tile.mute')}</button>`)
      + `</div>${c ? `<ul>${c.map(li).join('')}</ul>` : ''}</li>`;
  };
  let html = (kids.get(null) || []).map(li).join('');
  for (const s of sites) if (!seen.has(s.site_id) && (!q || s.name.toLowerCase().includes(q))) html += li(s);
  list.innerHTML = html;
}

list.addEventListener('click', (e) => {
  if (e.target.classList.contains('mt')) toggleMute(Number(e.target.closest('li').dataset.id));
});
filter.addEventListener('input', later);

start({
  page: 'chair',
  onLocal(s) { if (s?.getVideoTracks().length) $('#self').srcObject = s; },
  onMedia: syncTiles,
  onSlots: later,
  onRoster(sites) {
    bySite.clear();
    for (const s of sites) bySite.set(s.site_id, s);
    later();
  },
  onTeardown() { tiles.forEach((tl) => tl.el.remove()); tiles.clear(); },
  onLang: later,
});
